//! Putting it together: which kind of report a message is, and its records.

use crate::address;
use crate::arf;
use crate::autoreply;
use crate::decode;
use crate::mime::{self, Headers, Message};
use crate::model::{BounceRecord, Limits, OriginalReferences, Report, ReportKind};
use crate::notice;
use crate::patterns::{self, captures};
use crate::reason::Reason;
use crate::records::{self, Context};
use crate::rfc3464::{self, DsnFields};
use crate::scan;

/// At most this many messages of an mbox are read.
const MAX_MBOX_MESSAGES: usize = 32;

/// Parses one report within `limits`. An mbox holding several reports gives the records of all.
pub(crate) fn parse(raw: &[u8], limits: &Limits) -> Report {
    let mut problems = Vec::new();
    let raw = if raw.len() > limits.max_bytes {
        problems.push(format!("input of {} bytes truncated to {} bytes", raw.len(), limits.max_bytes));
        &raw[..limits.max_bytes]
    } else {
        raw
    };
    let messages = split_mbox(raw);
    let mut reports = messages.iter().take(MAX_MBOX_MESSAGES).map(|message| parse_one(message, limits, true));
    let Some(mut report) = reports.next() else {
        return parse_one(raw, limits, true);
    };
    for other in reports {
        if report.kind == ReportKind::Unknown {
            report.kind = other.kind;
        }
        report.records.extend(other.records);
        report.problems.extend(other.problems);
    }
    if messages.len() > MAX_MBOX_MESSAGES {
        report.problems.push(format!("mbox with more than {MAX_MBOX_MESSAGES} messages; the rest was ignored"));
    }
    problems.append(&mut report.problems);
    report.problems = problems;
    report
}

/// Splits an mbox into its messages; anything else is one message.
fn split_mbox(raw: &[u8]) -> Vec<&[u8]> {
    let Some(regex) = patterns::MBOX_FROM_LINE.as_ref() else {
        return vec![raw];
    };
    let prefix = &raw[..raw.len().min(1 << 20)];
    if memchr::memmem::find(prefix, b"\nFrom ").is_none() {
        return vec![raw];
    }
    let text = String::from_utf8_lossy(prefix);
    // Offsets are only valid in the lossy copy when the prefix was valid UTF-8.
    if !matches!(text, std::borrow::Cow::Borrowed(_)) {
        return vec![raw];
    }
    let starts: Vec<usize> = regex
        .find_iter(&text)
        .map(|found| found.start())
        .filter(|start| *start == 0 || text[..*start].ends_with("\n\n") || text[..*start].ends_with("\r\n\r\n"))
        .collect();
    if starts.iter().filter(|start| **start > 0).count() == 0 {
        return vec![raw];
    }
    let mut messages = Vec::new();
    let mut previous = 0;
    for start in starts.into_iter().filter(|start| *start > 0) {
        messages.push(&raw[previous..start]);
        previous = start;
    }
    messages.push(&raw[previous..]);
    messages
}

/// Parses one message; with `open_attached`, a report forwarded as an attachment is read when the
/// message itself names no recipient.
fn parse_one(raw: &[u8], limits: &Limits, open_attached: bool) -> Report {
    let mut problems = Vec::new();
    let message = mime::parse_message(raw, limits);
    problems.extend(message.problems.iter().cloned());
    let (notice_text, pasted_original) = notice::notice_and_pasted_original(&message);
    let original_headers = returned_headers(&message).or(pasted_original.as_ref());
    let dsn = delivery_status_fields(&message);
    let original = original_references(&message, original_headers, &dsn);
    let reporting_mta = dsn.reporting_mta.clone().or_else(|| reporting_mta_in(&notice_text));
    let mut report = Report {
        kind: ReportKind::Unknown,
        records: Vec::new(),
        feedback_type: None,
        original,
        reporting_mta,
        problems,
    };

    if let Some(feedback) = arf::detect(&message, original_headers) {
        report.kind = ReportKind::Feedback;
        report.feedback_type = feedback.feedback_type;
        report.reporting_mta = report.reporting_mta.or(feedback.reporting_mta);
        report.records = arf::complaint_records(feedback.recipients);
        return report;
    }
    if let Some(json) =
        message.parts.iter().filter(|part| !part.inside_original).find_map(|part| arf::ses_json(&part.text))
    {
        arf::apply_ses_json(&mut report, json);
        return report;
    }

    let excluded = sender_addresses(&message.headers, original_headers, &notice_text);
    let scan = scan::scan(&notice_text, &excluded);
    let failed_recipients: Vec<String> = message
        .headers
        .get_all("x-failed-recipients")
        .flat_map(|value| address::find_all(value).into_iter().map(|found| found.address))
        .collect();
    let subject = message.headers.get("subject").unwrap_or("").to_lowercase();
    let context = Context {
        scan: &scan,
        notice: &notice_text,
        failed_recipients: &failed_recipients,
        delayed: says_delayed(&subject, &notice_text),
    };

    if dsn.recipients.iter().any(|recipient| recipient.address().is_some() || !failed_recipients.is_empty()) {
        report.kind = ReportKind::DeliveryStatus;
        report.records = records::from_dsn(&dsn.recipients, &context);
    }
    let is_bounce = !report.records.is_empty() || looks_like_bounce(&message, &subject, &notice_text);
    if report.records.is_empty() && !is_bounce && autoreply::is_auto_reply(&message.headers) {
        report.kind = ReportKind::AutoReply;
        report.records = auto_reply_record(&message.headers, &notice_text);
        return report;
    }
    if report.records.is_empty()
        && open_attached
        && let Some(mut forwarded) = forwarded_report(&message, limits)
    {
        forwarded.original.verp_recipients = report.original.verp_recipients;
        forwarded.problems.splice(0..0, report.problems);
        return forwarded;
    }
    if report.records.is_empty() && is_bounce {
        report.kind = ReportKind::DeliveryStatus;
        report.records = records::from_notice(&context);
        if report.records.is_empty() {
            // The recipient is only named in the returned message (or its headers quoted in the
            // notice): take it when it is unambiguous.
            let mut fallback: Vec<String> = original_headers
                .map(|headers| headers.get_all("to").flat_map(address::find_all).map(|found| found.address).collect())
                .unwrap_or_default();
            if fallback.is_empty() {
                fallback = quoted_to_lines(&notice_text, &excluded);
            }
            fallback.dedup_by(|left, right| address::same(left, right));
            if fallback.len() == 1 {
                let recipient = fallback.remove(0);
                report.records.push(records::from_fallback_address(recipient, &context));
            }
        }
        if report.records.is_empty() {
            report.problems.push("a delivery report without a recognisable recipient".to_owned());
        }
    }
    if report.kind == ReportKind::Unknown {
        report.problems.push("no delivery report, complaint or auto-reply recognised".to_owned());
    }
    report
}

/// A delivery report attached to the message (a bounce forwarded by a relay or a person).
fn forwarded_report(message: &Message, limits: &Limits) -> Option<Report> {
    let attached = message.parts.iter().find(|part| {
        let content_type = part.headers.get("content-type").unwrap_or("").to_ascii_lowercase();
        let from = part.headers.get("from").unwrap_or("").to_ascii_lowercase();
        part.mime_type == "message/rfc822"
            && !part.attached.is_empty()
            && (content_type.contains("report-type") || from.contains("mailer-daemon") || from.contains("postmaster"))
    })?;
    let report = parse_one(&attached.attached, limits, false);
    (!report.records.is_empty()).then_some(report)
}

/// `To: a@b` lines of returned headers quoted inside the notice.
fn quoted_to_lines(notice_text: &str, excluded: &[String]) -> Vec<String> {
    notice_text
        .lines()
        .filter(|line| line.trim_start().get(..3).is_some_and(|name| name.eq_ignore_ascii_case("to:")))
        .flat_map(address::find_all)
        .map(|found| found.address)
        .filter(|found| !excluded.iter().any(|sender| address::same(sender, found)))
        .collect()
}

/// Headers of the first returned message (`message/rfc822`, else `text/rfc822-headers`).
fn returned_headers(message: &Message) -> Option<&Headers> {
    let with_headers = |kind: &str| {
        message.parts.iter().find(|part| part.mime_type == kind && !part.headers.is_empty()).map(|part| &part.headers)
    };
    with_headers("message/rfc822").or_else(|| with_headers("text/rfc822-headers"))
}

/// The delivery-status fields: from `message/delivery-status` parts, else from text parts that
/// carry them (vendors paste them; broken multiparts leave them in the preamble).
fn delivery_status_fields(message: &Message) -> DsnFields {
    let own_parts = message.parts.iter().filter(|part| !part.inside_original);
    let mut fields = DsnFields::default();
    let mut found_part = false;
    for part in own_parts.clone().filter(|part| part.mime_type == "message/delivery-status") {
        found_part = true;
        merge(&mut fields, rfc3464::parse(&part.text));
    }
    if !found_part || fields.recipients.is_empty() {
        for part in own_parts.filter(|part| part.mime_type.starts_with("text/plain") || part.mime_type == "text/") {
            if rfc3464::contains_dsn_fields(&part.text) {
                let (notice_part, _) = notice::cut_at_original(&part.text);
                merge(&mut fields, rfc3464::parse(notice_part));
            }
        }
    }
    fields
}

fn merge(into: &mut DsnFields, from: DsnFields) {
    into.reporting_mta = into.reporting_mta.take().or(from.reporting_mta);
    into.original_message_id = into.original_message_id.take().or(from.original_message_id);
    into.recipients.extend(from.recipients);
}

fn original_references(message: &Message, original: Option<&Headers>, dsn: &DsnFields) -> OriginalReferences {
    let mut verp_recipients: Vec<String> = Vec::new();
    for name in ["x-original-to", "delivered-to", "envelope-to", "x-envelope-to", "to"] {
        for value in message.headers.get_all(name) {
            for found in address::find_all(value) {
                if !verp_recipients.iter().any(|known| address::same(known, &found.address)) {
                    verp_recipients.push(found.address);
                }
            }
        }
    }
    let message_id = original
        .and_then(|headers| headers.get("message-id"))
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
        .filter(|id| !id.is_empty())
        .or_else(|| dsn.original_message_id.clone());
    let sendwerk_ref = original
        .and_then(|headers| headers.get("x-sendwerk-ref"))
        .map(str::to_owned)
        .or_else(|| sendwerk_ref_in_text(message));
    let return_path = original.and_then(|headers| headers.get("return-path")).and_then(address::first);
    OriginalReferences { verp_recipients, sendwerk_ref, message_id, return_path }
}

/// An `X-Sendwerk-Ref:` line pasted into a text part (returned headers inside the notice; the
/// notice itself is made of these parts' lines).
fn sendwerk_ref_in_text(message: &Message) -> Option<String> {
    for text in message.parts.iter().map(|part| part.text.as_str()) {
        for line in text.lines() {
            let trimmed = line.trim_start();
            let is_ref = trimmed.get(..15).is_some_and(|name| name.eq_ignore_ascii_case("x-sendwerk-ref:"));
            if let Some(value) = trimmed.get(15..).filter(|_| is_ref).map(str::trim)
                && !value.is_empty()
            {
                return Some(value.to_owned());
            }
        }
    }
    None
}

fn reporting_mta_in(notice_text: &str) -> Option<String> {
    const INTROS: &[&str] = &[
        "this is the mail system at host ",
        "this is the postfix program at host ",
        "this is the qmail-send program at ",
        "generating server: ",
        "delivery status notification from ",
        "mail agent v0.13 at ",
        "message from ",
    ];
    let lower = decode::prefix(notice_text, 8192).to_ascii_lowercase();
    INTROS.iter().find_map(|intro| {
        let start = lower.find(intro)? + intro.len();
        let host: String =
            lower[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-').collect();
        let host = host.trim_end_matches('.').to_owned();
        host.contains('.').then_some(host)
    })
}

/// Addresses that belong to the sender side and can never be the failed recipient.
fn sender_addresses(headers: &Headers, original: Option<&Headers>, notice_text: &str) -> Vec<String> {
    let mut senders: Vec<String> = Vec::new();
    let mut add = |value: &str| {
        for found in address::find_all(value) {
            if !senders.iter().any(|known| address::same(known, &found.address)) {
                senders.push(found.address);
            }
        }
    };
    for name in ["from", "to", "reply-to", "return-path", "sender"] {
        headers.get_all(name).for_each(&mut add);
    }
    // The reporting system's own contacts.
    if let Some(domain) = headers.get("from").and_then(address::first).map(|from| address::domain_of(&from).to_owned())
    {
        for local in ["postmaster", "mailer-daemon", "hostmaster", "abuse"] {
            add(&format!("{local}@{domain}"));
        }
    }
    if let Some(original) = original {
        for name in ["from", "return-path", "sender", "reply-to"] {
            original.get_all(name).for_each(&mut add);
        }
    }
    for line in notice_text.lines().take(4000).filter(|line| line.contains('@')) {
        if let Some(found) = captures(&patterns::SENDER_MENTION, line).and_then(|found| found.get(1)) {
            add(found.as_str());
        }
    }
    senders
}

fn says_delayed(subject: &str, notice_text: &str) -> bool {
    const SUBJECT_WORDS: &[&str] = &["delay", "warning", "still being retried", "will retry", "not yet been delivered"];
    const NOTICE_PHRASES: &[&str] = &[
        "this is a warning message only",
        "this is a warning only",
        "has been delayed",
        "is delayed for more than",
        "will be retried",
        "will keep trying",
        "only a temporary failure report",
        "you do not need to resend your message",
        "delivery incomplete",
        "message will be retried",
        "has not yet been delivered",
    ];
    let lower = decode::prefix(notice_text, 16384).to_ascii_lowercase();
    SUBJECT_WORDS.iter().any(|word| subject.contains(word))
        || NOTICE_PHRASES.iter().any(|phrase| lower.contains(phrase))
}

/// Signs that a message without delivery-status fields is a bounce.
fn looks_like_bounce(message: &Message, subject: &str, notice_text: &str) -> bool {
    if message.top_type.param("report-type").is_some_and(|kind| kind.eq_ignore_ascii_case("delivery-status")) {
        return true;
    }
    if message.headers.get("x-failed-recipients").is_some() {
        return true;
    }
    let from = message.headers.get("from").unwrap_or("").to_ascii_lowercase();
    const SENDERS: &[&str] =
        &["mailer-daemon", "postmaster", "mail delivery", "mail.delivery", "mailerdaemon", "mail-daemon", "mdaemon"];
    if SENDERS.iter().any(|sender| from.contains(sender)) {
        return true;
    }
    const SUBJECTS: &[&str] = &[
        "undeliver",
        "undelivered",
        "returned mail",
        "failure notice",
        "delivery status notification",
        "delivery failure",
        "delivery failed",
        "mail delivery",
        "non recapitabile",
        "mail system error",
        "returned to sender",
        "delivery report",
        "non-deliver",
        "nondeliver",
        "could not send",
        "delivery notification",
        "delayed mail",
        "message not delivered",
        "unzustellbar",
        "delivery status",
        "delivery problem",
        "user unknown",
        "non-delivery",
        "nondelivery",
        "failed delivery",
        "bounced mail",
        "mail error",
    ];
    if SUBJECTS.iter().any(|phrase| subject.contains(phrase)) {
        return true;
    }
    const NOTICE: &[&str] = &[
        "could not be delivered",
        "was not delivered",
        "wasn't delivered",
        "delivery has failed",
        "unable to deliver",
        "undeliverable",
        "following address(es) failed",
        "failed permanently",
        "error delivering",
        "rejected by a remote mail server",
        "permanent fatal errors",
    ];
    let lower = decode::prefix(notice_text, 16384).to_ascii_lowercase();
    NOTICE.iter().any(|phrase| lower.contains(phrase))
}

fn auto_reply_record(headers: &Headers, notice_text: &str) -> Vec<BounceRecord> {
    let recipient = headers.get("from").and_then(address::first);
    let summary = records::collapse(notice_text);
    vec![BounceRecord {
        recipient,
        action: None,
        status: None,
        reply_code: None,
        diagnostic: (!summary.is_empty()).then(|| summary.chars().take(200).collect()),
        remote_mta: None,
        reason: Reason::Vacation,
        hard: false,
    }]
}
