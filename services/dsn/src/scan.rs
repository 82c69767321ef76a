//! Generic reading of human-readable bounce notices.
//!
//! Instead of one parser per MTA, the notice is read with a few layout rules that cover the
//! families seen in the wild:
//!
//! * a line that *starts* with the address and carries the error after it (`<a@b>: 550 ...`
//!   Postfix/qmail/Yahoo, `a@b: ...` OpenSMTPD, `a@b [User unknown]`, Sendmail's
//!   `550 <a@b>... User unknown`), the error continuing on the following lines of the paragraph;
//! * an address alone on a line (Exim, Gmail, Exchange), the error on the indented lines below it
//!   or in a "technical details" section of the notice;
//! * an address introduced by a phrase (`Recipient address: a@b`, `wasn't delivered to a@b`,
//!   `RCPT TO:<a@b>`, `Could not be delivered to: <a@b>`).
//!
//! Addresses known to be the sender (report headers, `MAIL FROM:<...>`) are never recipients.

use crate::address;
use crate::patterns::{self, captures};
use crate::smtp::{self, Command};

/// At most this many lines of a notice are scanned.
const MAX_LINES: usize = 4000;
/// Lines longer than this are not searched for recipients.
const MAX_LINE_BYTES: usize = 4096;

/// A recipient found in the notice with its error text.
#[derive(Debug, Clone)]
pub(crate) struct TextRecord {
    pub recipient: String,
    pub diagnostic: String,
    pub command: Option<Command>,
    pub remote_mta: Option<String>,
}

/// What a notice says.
#[derive(Debug, Clone, Default)]
pub(crate) struct NoticeScan {
    pub records: Vec<TextRecord>,
    /// An error text that belongs to no address in particular ("Technical details of permanent
    /// failure: ..."), used for recipients whose own block carries none.
    pub global_diagnostic: Option<String>,
    /// The command of the global diagnostic.
    pub global_command: Option<Command>,
    /// Every error reply of an SMTP transcript in the notice (`<<< 421 4.7.0 ...`), in order.
    pub transcript_replies: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Error text on the same line and the paragraph below.
    Block,
    /// Sendmail's `550 <a@b>... text` with the transcript above it.
    Summary,
    /// The address alone; the error is on the lines below.
    Bare,
    /// `Sentence: <addr>`: the reporting MTA's own verdict about a local address, as final as a
    /// rejection at RCPT TO.
    Verdict,
}

struct Candidate {
    line: usize,
    address: String,
    inline: String,
    layout: Layout,
}

/// Header names of a returned message that may appear in a notice; addresses on such lines are
/// not recipients.
const HEADER_LINE_PREFIXES: &[&str] = &[
    "from:",
    "to:",
    "cc:",
    "bcc:",
    "reply-to:",
    "return-path:",
    "sender:",
    "subject:",
    "date:",
    "message-id:",
    "received:",
    "errors-to:",
    "x-",
    "list-",
    "in-reply-to:",
    "references:",
    "delivered-to:",
    "envelope-to:",
    "for <",
    "by ",
    "with ",
    "(envelope-from",
];

fn is_header_like(lower_trimmed: &str) -> bool {
    HEADER_LINE_PREFIXES.iter().any(|prefix| lower_trimmed.starts_with(prefix))
}

fn find_candidate(line: &str, index: usize) -> Option<Candidate> {
    if line.len() > MAX_LINE_BYTES || !line.contains('@') {
        return None;
    }
    let lower = line.trim_start().trim_start_matches(['*', '-', '>', ' ', '\t']).to_ascii_lowercase();
    if is_header_like(&lower) {
        return None;
    }
    let candidate = |address: Option<regex::Match<'_>>, inline: String, layout: Layout| {
        let address = address.and_then(|matched| address::normalize(matched.as_str()))?;
        let layout = if layout == Layout::Block && inline.is_empty() { Layout::Bare } else { layout };
        Some(Candidate { line: index, address, inline, layout })
    };
    let attempts: [(&std::sync::LazyLock<Option<regex::Regex>>, Layout); 5] = [
        (&patterns::SENDMAIL_SUMMARY, Layout::Summary),
        (&patterns::ANGLE_LINE, Layout::Block),
        (&patterns::BARE_LINE, Layout::Bare),
        (&patterns::ADDRESS_COLON_TEXT, Layout::Block),
        (&patterns::ADDRESS_SPACE_TEXT, Layout::Block),
    ];
    for (regex, layout) in attempts {
        if let Some(found) = captures(regex, line) {
            let inline = found.get(2).map(|matched| matched.as_str().trim().to_owned()).unwrap_or_default();
            return candidate(found.get(1), inline, layout);
        }
    }
    // "System contact: postmaster@..." and "please contact <support@...>" name helpers.
    let names_a_helper = ["contact", "assistance", "questions"].iter().any(|word| lower.contains(word));
    if names_a_helper {
        return None;
    }
    if let Some(found) = captures(&patterns::TEXT_COLON_ADDRESS, line) {
        // The sentence before the address is the error ("Unknown user", "Mailbox is full").
        let sentence = found.get(1).map(|matched| matched.as_str().trim().to_owned()).unwrap_or_default();
        return candidate(found.get(2), sentence, Layout::Verdict);
    }
    let found = captures(&patterns::LABELLED, line)?;
    // "sender address <a@b>", "from address", "return address": the other side.
    let before = found.get(0).map_or("", |whole| &line[..whole.start()]).to_ascii_lowercase();
    let before = before.trim_end();
    if ["sender", "from", "return", "reply", "envelope"].iter().any(|word| before.ends_with(word)) {
        return None;
    }
    let inline = found.get(2).map(|matched| matched.as_str().trim().to_owned()).unwrap_or_default();
    let inline = inline.trim_start_matches(['>', '.', ',', ')']).trim().to_owned();
    candidate(found.get(1), inline, Layout::Block)
}

/// Lines of a Sendmail-style transcript above a summary line: `<<<` replies and `>>>` commands.
fn transcript_above(lines: &[&str], summary_line: usize, floor: usize) -> (Vec<String>, String) {
    let mut replies = Vec::new();
    let mut transcript = Vec::new();
    let mut index = summary_line;
    while index > floor {
        index -= 1;
        let line = lines[index].trim();
        if line.is_empty() || line.starts_with("-----") {
            break;
        }
        transcript.push(line.to_owned());
        if let Some(reply) = line.strip_prefix("<<<") {
            replies.push(reply.trim().to_owned());
        }
        if line.to_ascii_lowercase().contains("while talking to") {
            break;
        }
    }
    replies.reverse();
    transcript.reverse();
    (replies, transcript.join("\n"))
}

/// The lines from `start` up to a blank line, `stop_at` or `limit` lines.
fn paragraph_from(lines: &[&str], start: usize, stop_at: usize, limit: usize) -> Vec<String> {
    lines
        .iter()
        .take(stop_at)
        .skip(start)
        .take(limit)
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.trim().to_owned())
        .collect()
}

/// Replies of an SMTP transcript (`<<< 550 ...`, `Out: 451 ...`) among some lines: the errors.
fn transcript_errors(parts: &[String]) -> Vec<String> {
    parts
        .iter()
        .filter_map(|part| {
            let lower = part.to_ascii_lowercase();
            let reply = if lower.starts_with("<<<") {
                part.get(3..)
            } else if lower.starts_with("out:") {
                part.get(4..)
            } else if lower.starts_with("received >>>") {
                part.get(12..)
            } else {
                None
            }?;
            let reply = reply.trim();
            (reply.starts_with('4') || reply.starts_with('5')).then(|| reply.to_owned())
        })
        .collect()
}

/// How much a diagnostic says: SMTP codes make it better evidence than prose.
fn evidence_weight(diagnostic: &str) -> usize {
    let has_status = !smtp::status_codes(diagnostic).is_empty();
    let has_reply = smtp::reply_code(diagnostic, None).is_some();
    usize::from(!diagnostic.is_empty()) + usize::from(has_reply) + 2 * usize::from(has_status)
}

/// Scans a notice; `excluded` are addresses that cannot be recipients (the sender's), unless
/// nothing else is found.
pub(crate) fn scan(notice: &str, excluded: &[String]) -> NoticeScan {
    let lines: Vec<&str> = notice.lines().take(MAX_LINES).collect();
    let all: Vec<Candidate> =
        lines.iter().enumerate().filter_map(|(index, line)| find_candidate(line, index)).collect();
    let is_excluded = |candidate: &Candidate| excluded.iter().any(|sender| address::same(sender, &candidate.address));
    let candidates: Vec<Candidate> = if all.iter().all(is_excluded) {
        all
    } else {
        all.into_iter().filter(|candidate| !is_excluded(candidate)).collect()
    };
    let mut records: Vec<TextRecord> = Vec::new();
    for (position, candidate) in candidates.iter().enumerate() {
        let other_address = |other: &&Candidate| !address::same(&other.address, &candidate.address);
        let next_line = candidates.iter().skip(position + 1).find(other_address).map_or(lines.len(), |next| next.line);
        let floor = candidates[..position].iter().rev().find(other_address).map_or(0, |previous| previous.line + 1);
        let (mut parts, context) = match candidate.layout {
            Layout::Summary => {
                let (replies, transcript) = transcript_above(&lines, candidate.line, floor);
                let parts = if replies.is_empty() { vec![lines[candidate.line].trim().to_owned()] } else { replies };
                (parts, transcript)
            }
            Layout::Block | Layout::Bare | Layout::Verdict => {
                let mut parts = Vec::new();
                if !candidate.inline.is_empty() {
                    parts.push(candidate.inline.clone());
                }
                let mut below = paragraph_from(&lines, candidate.line + 1, next_line, 24);
                let mut end = candidate.line + 1 + below.len();
                let wants_more = |below: &[String]| {
                    below.is_empty() && candidate.layout != Layout::Block
                        || below.last().is_some_and(|line| line.ends_with(':'))
                };
                // The error may be in the next paragraph ("did not like our RCPT TO:", "because:").
                for _ in 0..3 {
                    if !wants_more(&below) {
                        break;
                    }
                    let mut start = end;
                    while start < next_line.min(end + 4) && lines[start].trim().is_empty() {
                        start += 1;
                    }
                    let more = paragraph_from(&lines, start, next_line, 24);
                    if more.is_empty() {
                        break;
                    }
                    end = start + more.len();
                    below.extend(more);
                }
                parts.extend(below);
                let context = parts.join("\n");
                let errors = transcript_errors(&parts);
                if !errors.is_empty() {
                    parts = errors;
                }
                (parts, context)
            }
        };
        parts.retain(|part| !part.is_empty());
        let diagnostic = strip_boilerplate(&parts.join(" "));
        let context_text = format!("{context}\n{diagnostic}");
        let remote_mta = captures(&patterns::REMOTE_HOST, &context_text)
            .or_else(|| captures(&patterns::TALKING_TO, &context_text))
            .and_then(|found| found.get(1))
            .map(|host| host.as_str().to_ascii_lowercase());
        let mut command = smtp::command_in(&context_text);
        if candidate.layout == Layout::Verdict && command.is_none() && smtp::reply_code(&diagnostic, None).is_none() {
            command = Some(Command::Rcpt);
        }
        let record = TextRecord { recipient: candidate.address.clone(), command, diagnostic, remote_mta };
        match records.iter_mut().find(|existing| address::same(&existing.recipient, &record.recipient)) {
            Some(existing) => {
                if evidence_weight(&record.diagnostic) > evidence_weight(&existing.diagnostic) {
                    let command = record.command.or(existing.command);
                    let remote_mta = record.remote_mta.clone().or(existing.remote_mta.take());
                    *existing = TextRecord { command, remote_mta, ..record };
                } else {
                    existing.command = existing.command.or(record.command);
                }
            }
            None => records.push(record),
        }
    }
    let (global_diagnostic, global_command) = global_diagnostic(&lines);
    let transcript_replies = transcript_errors(&lines.iter().map(|line| line.trim().to_owned()).collect::<Vec<_>>());
    NoticeScan { records, global_diagnostic, global_command, transcript_replies }
}

/// Words that only repeat the address or say nothing about the cause.
fn strip_boilerplate(diagnostic: &str) -> String {
    let trimmed = diagnostic.trim().trim_start_matches(['.', ':', ',']).trim();
    let lower = trimmed.to_ascii_lowercase();
    let empty_phrases = ["", "(unrecoverable error)", "(transient failure)", "(permanent failure)"];
    if empty_phrases.contains(&lower.as_str()) {
        return String::new();
    }
    trimmed.to_owned()
}

/// Phrases after which a notice states the error for all its recipients. The text follows on the
/// same line or in the next paragraph.
const GLOBAL_INTROS: &[&str] = &[
    "the error that the other server returned was:",
    "technical details of permanent failure:",
    "technical details of temporary failure:",
    "the response from the remote server was:",
    "the response was:",
    "remote server returned '",
    "the reason for the problem:",
    "diagnostic code:",
    "remote host said:",
    "-------server message",
    "technical details:",
    "(reason:",
    "reason:",
    "because:",
    "failure reasons",
    "address(es) failed:",
    "following address failed:",
    "failed:",
];

static ANY_GLOBAL_INTRO: std::sync::LazyLock<Option<regex::Regex>> =
    std::sync::LazyLock::new(|| patterns::any_of(GLOBAL_INTROS));

fn global_diagnostic(lines: &[&str]) -> (Option<String>, Option<Command>) {
    // Only the few lines holding some intro are searched intro by intro.
    let with_intro: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| ANY_GLOBAL_INTRO.as_ref().is_none_or(|regex| regex.is_match(line)))
        .map(|(index, line)| (index, line.to_ascii_lowercase()))
        .collect();
    for intro in GLOBAL_INTROS {
        for (index, lower) in &with_intro {
            let index = *index;
            let line = lines[index];
            let Some(position) = lower.find(intro) else {
                continue;
            };
            if *intro == "failed:" && !lower.trim_end().ends_with("failed:") {
                continue;
            }
            let rest = line.get(position + intro.len()..).unwrap_or("").trim();
            let rest = rest.trim_end_matches([')', '\'']).trim();
            let mut collected: Vec<String> = Vec::new();
            if !rest.is_empty() {
                collected.push(rest.to_owned());
            }
            // The following paragraph (after blank lines when the intro line carries nothing).
            let mut below = index + 1;
            if collected.is_empty() {
                while below < lines.len() && lines[below].trim().is_empty() && below < index + 4 {
                    below += 1;
                }
            }
            collected.extend(
                lines
                    .iter()
                    .skip(below)
                    .take(16)
                    .take_while(|line| !line.trim().is_empty())
                    .map(|line| line.trim().to_owned()),
            );
            let text = collected.join(" ");
            if text.trim().is_empty() {
                continue;
            }
            let context: String = lines.iter().skip(index).take(20).copied().collect::<Vec<_>>().join("\n");
            return (Some(text), smtp::command_in(&context));
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipients(scan: &NoticeScan) -> Vec<&str> {
        scan.records.iter().map(|record| record.recipient.as_str()).collect()
    }

    #[test]
    fn postfix_paragraphs_give_recipient_error_and_command() {
        let notice = "The mail system\n\n<a@b.example>: host mx.b.example[192.0.2.1] said: 550 5.1.1\n    <a@b.example>: User unknown (in reply to RCPT TO command)\n";
        let scan = scan(notice, &[]);
        assert_eq!(recipients(&scan), vec!["a@b.example"]);
        assert!(scan.records[0].diagnostic.contains("User unknown"));
        assert_eq!(scan.records[0].command, Some(Command::Rcpt));
        assert_eq!(scan.records[0].remote_mta.as_deref(), Some("mx.b.example"));
    }

    #[test]
    fn sendmail_summary_lines_take_the_remote_reply_from_the_transcript() {
        let notice = "While talking to smtp.example.edu:\n>>> RCPT To:<h@example.edu>\n<<< 550 <h@example.edu>... Mailbox gone\n550 <h@example.edu>... User unknown\n";
        let scan = scan(notice, &[]);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.records[0].diagnostic, "550 <h@example.edu>... Mailbox gone");
        assert_eq!(scan.records[0].command, Some(Command::Rcpt));
    }

    #[test]
    fn a_bare_address_uses_the_technical_details_of_the_notice() {
        let notice = "Delivery to the following recipient failed permanently:\n\n     a@b.example\n\nTechnical details of permanent failure:\nThe recipient server did not accept our requests.\n";
        let scan = scan(notice, &[]);
        assert_eq!(recipients(&scan), vec!["a@b.example"]);
        assert_eq!(scan.global_diagnostic.as_deref(), Some("The recipient server did not accept our requests."));
    }

    #[test]
    fn the_sender_is_not_a_recipient_when_another_address_is_named() {
        let scan = scan(
            "<me@home.example>: sent by\n\n<you@there.example>: 550 no such user\n",
            &["me@home.example".to_owned()],
        );
        assert_eq!(recipients(&scan), vec!["you@there.example"]);
    }
}
