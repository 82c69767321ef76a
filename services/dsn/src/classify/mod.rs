//! The one classifier from (status, reply code, diagnostic text, command) to a [`Reason`].
//!
//! The decision follows the model of the sisimai project, the reference for these labels:
//!
//! 1. a few *decisive* statements settle the reason whatever else the report says;
//! 2. then reasons are tried in a fixed order of specificity, each accepting either its own status
//!    code or its phrases (with extra care for "user unknown": it counts as such only when the
//!    status says so or the text answered RCPT TO; at DATA time it is a content filter);
//! 3. then the status code alone, then the remaining phrase lists, then the status class
//!    (X.6 content, X.7 security), then the action (a delayed report is "expired");
//! 4. otherwise "onhold" when there is text and "undefined" when there is none.
//!
//! Text wins over generic status codes (X.0.0, X.7.1, X.5.0) whenever it is specific.

mod phrases;
mod providers;
mod status;

use crate::model::Action;
use crate::reason::Reason;
use crate::smtp::Command;

use phrases::Phrases;
pub(crate) use status::reason_of_status;

/// How the remote failure was reported (`Diagnostic-Code: <type>; ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiagnosticType {
    /// An SMTP reply, or unknown.
    Smtp,
    /// A local delivery agent (`X-Unix`): pipes, procmail, maildrop.
    Unix,
    /// Another non-SMTP type (`X-Postfix`, `X-Outbound-Mail-Relay`).
    Other,
}

/// Everything known about one failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evidence<'a> {
    pub status: Option<&'a str>,
    pub reply_code: Option<u16>,
    pub diagnostic: &'a str,
    pub command: Option<Command>,
    pub action: Option<Action>,
    pub diagnostic_type: DiagnosticType,
    /// The failed recipient, for provider-specific rules.
    pub recipient: Option<&'a str>,
    /// The remote MTA host name, for provider-specific rules.
    pub remote_mta: Option<&'a str>,
}

/// Reasons for which the status code alone is not trusted and the text is consulted again.
const RETRY_WITH_TEXT: &[Reason] = &[
    Reason::Undefined,
    Reason::OnHold,
    Reason::SystemError,
    Reason::SecurityError,
    Reason::Expired,
    Reason::NetworkError,
    Reason::HostUnknown,
    Reason::UserUnknown,
];

/// Phrase lists consulted after the ordered checks, in this order.
const SECOND_PASS: &[&Phrases] = &[
    &phrases::MAILBOX_FULL,
    &phrases::AUTH_FAILURE,
    &phrases::BAD_REPUTATION,
    &phrases::SPEEDING,
    &phrases::SPAM_DETECTED,
    &phrases::VIRUS_DETECTED,
    &phrases::POLICY_VIOLATION,
    &phrases::NO_RELAYING,
    &phrases::FAILED_STARTTLS,
    &phrases::SYSTEM_ERROR,
    &phrases::NOT_ACCEPT,
    &phrases::NETWORK_ERROR,
    &phrases::SUSPEND,
    &phrases::CONTENT_ERROR,
    &phrases::SYSTEM_FULL,
    &phrases::EXPIRED,
    &phrases::SECURITY_ERROR,
    &phrases::MAILER_ERROR,
];

/// Lower-cases, straightens quotes and collapses whitespace.
pub(crate) fn normalize_text(text: &str) -> String {
    let mut normalized = String::with_capacity(text.len());
    let mut last_was_space = true;
    for character in text.chars().take(8192) {
        let character = match character {
            '\u{2018}' | '\u{2019}' | '\u{201b}' | '`' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            other => other,
        };
        if character.is_whitespace() {
            if !last_was_space {
                normalized.push(' ');
            }
            last_was_space = true;
        } else {
            normalized.extend(character.to_lowercase());
            last_was_space = false;
        }
    }
    normalized.truncate(normalized.trim_end().len());
    normalized
}

/// Decides the reason of one failure.
pub(crate) fn decide(evidence: &Evidence<'_>) -> Reason {
    if evidence.status.is_some_and(|status| status.starts_with("2.")) || evidence.action == Some(Action::Delivered) {
        return Reason::Delivered;
    }
    let text = normalize_text(evidence.diagnostic);
    let domain = evidence.recipient.map(|recipient| crate::address::domain_of(recipient).to_ascii_lowercase());
    let remote_host = evidence.remote_mta.map(str::to_ascii_lowercase);
    let destination = providers::Destination {
        domain: domain.as_deref().unwrap_or(""),
        remote_host: remote_host.as_deref().unwrap_or(""),
    };
    if let Some(reason) = providers::reason_for(&destination, &text) {
        return reason;
    }
    if let Some(decisive) = phrases::DECISIVE.iter().find(|phrases| phrases.matches(&text)) {
        return decisive.reason;
    }
    let by_status = evidence.status.and_then(reason_of_status);
    if evidence.diagnostic_type != DiagnosticType::Unix
        && let Some(reason) = ordered_checks(evidence, &text, by_status)
    {
        return reason;
    }
    if let Some(reason) = by_status {
        let trusted = !RETRY_WITH_TEXT.contains(&reason) && evidence.diagnostic_type == DiagnosticType::Smtp;
        if trusted {
            return reason;
        }
    }
    if let Some(found) = SECOND_PASS.iter().find(|phrases| phrases.matches(&text)) {
        return found.reason;
    }
    let status = evidence.status.unwrap_or("");
    if evidence.command == Some(Command::Mail) && matches!(by_status, None | Some(Reason::SecurityError)) {
        // Refused at MAIL FROM with nothing more specific said: the sender was rejected.
        return Reason::Rejected;
    }
    if status.starts_with("5.6") || status.starts_with("4.6") {
        return Reason::ContentError;
    }
    if status.starts_with("5.7") || status.starts_with("4.7") {
        return Reason::SecurityError;
    }
    if evidence.diagnostic_type == DiagnosticType::Unix {
        return Reason::MailerError;
    }
    if evidence.reply_code.is_some_and(|code| (500..=503).contains(&code)) && phrases::SYNTAX_ERROR.matches(&text) {
        return Reason::SyntaxError;
    }
    if let Some(reason) = by_status {
        return reason;
    }
    if evidence.action == Some(Action::Delayed) {
        return Reason::Expired;
    }
    if evidence.command == Some(Command::Connect) && !text.is_empty() {
        return Reason::Blocked;
    }
    if text.is_empty() { Reason::Undefined } else { Reason::OnHold }
}

/// The ordered first pass: each reason accepts its status code or its phrases.
fn ordered_checks(evidence: &Evidence<'_>, text: &str, by_status: Option<Reason>) -> Option<Reason> {
    let status_is = |reason: Reason| by_status == Some(reason);
    let command = evidence.command;
    let simple: [(&Phrases, bool); 6] = [
        (&phrases::MAILBOX_FULL, true),
        (&phrases::MESG_TOO_BIG, true),
        (&phrases::EXCEED_LIMIT, true),
        (&phrases::SUSPEND, false),
        (&phrases::HAS_MOVED, false),
        (&phrases::NO_RELAYING, false),
    ];
    for (phrases, status_counts) in simple {
        if (status_counts && status_is(phrases.reason)) || phrases.matches(text) {
            return Some(phrases.reason);
        }
    }
    if status_is(Reason::AuthFailure) || phrases::AUTH_FAILURE.matches(text) {
        return Some(Reason::AuthFailure);
    }
    if is_user_unknown(text, by_status, command) {
        return Some(Reason::UserUnknown);
    }
    if is_filtered(text, by_status, command) {
        return Some(Reason::Filtered);
    }
    for phrases in [&phrases::REQUIRE_PTR, &phrases::NOT_COMPLIANT_RFC, &phrases::BAD_REPUTATION] {
        if phrases.matches(text) {
            return Some(phrases.reason);
        }
    }
    if is_rejected(text, by_status, command) {
        return Some(Reason::Rejected);
    }
    if is_host_unknown(text, by_status, evidence.status) {
        return Some(Reason::HostUnknown);
    }
    if status_is(Reason::SpamDetected) || phrases::SPAM_DETECTED.matches(text) {
        return Some(Reason::SpamDetected);
    }
    for phrases in [&phrases::SPEEDING, &phrases::TOO_MANY_CONN] {
        if phrases.matches(text) {
            return Some(phrases.reason);
        }
    }
    if status_is(Reason::Blocked) || phrases::BLOCKED.matches(text) {
        return Some(Reason::Blocked);
    }
    None
}

/// "User unknown" is trusted when the status says so (and no other cause is named), or when the
/// rejection answered RCPT TO.
fn is_user_unknown(text: &str, by_status: Option<Reason>, command: Option<Command>) -> bool {
    if by_status == Some(Reason::UserUnknown) {
        let other_cause = [
            &phrases::NO_RELAYING,
            &phrases::BLOCKED,
            &phrases::MAILBOX_FULL,
            &phrases::HAS_MOVED,
            &phrases::NOT_ACCEPT,
        ]
        .iter()
        .any(|phrases| phrases.matches(text))
            || (phrases::REJECTED.matches(text) && !phrases::USER_UNKNOWN.matches(text));
        return !other_cause;
    }
    command == Some(Command::Rcpt) && phrases::USER_UNKNOWN.matches(text)
}

/// A recipient refused outside RCPT TO (at DATA, or we cannot tell) is the recipient's filter.
fn is_filtered(text: &str, by_status: Option<Reason>, command: Option<Command>) -> bool {
    if by_status == Some(Reason::Suspend) {
        return false;
    }
    let says_so = phrases::FILTERED.matches(text) || phrases::USER_UNKNOWN.matches(text);
    if by_status == Some(Reason::Filtered) {
        return says_so;
    }
    !matches!(command, Some(Command::Rcpt) | Some(Command::Mail)) && says_so
}

/// The sender address was refused: by status, or by text at MAIL FROM (or at DATA, or when
/// nothing else is known).
fn is_rejected(text: &str, by_status: Option<Reason>, command: Option<Command>) -> bool {
    if by_status == Some(Reason::Rejected) {
        return true;
    }
    match command {
        Some(Command::Mail) => phrases::REJECTED.matches(text),
        Some(Command::Data) => by_status != Some(Reason::UserUnknown) && phrases::REJECTED.matches(text),
        _ => {
            matches!(by_status, None | Some(Reason::OnHold) | Some(Reason::Undefined))
                && phrases::REJECTED.matches(text)
        }
    }
}

/// A 5.1.2/5.4.4 status is a missing host unless the text blames DNS trouble instead; by text,
/// only a permanent failure is a missing host (a temporary one is a DNS or network problem).
fn is_host_unknown(text: &str, by_status: Option<Reason>, status: Option<&str>) -> bool {
    if by_status == Some(Reason::HostUnknown) {
        return !phrases::NETWORK_ERROR.matches(text);
    }
    !status.is_some_and(|status| status.starts_with('4')) && phrases::HOST_UNKNOWN.matches(text)
}

/// Whether a reason makes the address itself bad, given how permanent the failure was.
pub(crate) fn is_hard(reason: Reason, status: Option<&str>, reply_code: Option<u16>) -> bool {
    let permanent = || match status {
        Some(status) => status.starts_with('5'),
        None => reply_code.is_none_or(|code| code >= 500),
    };
    reason.is_hard_by_default() && (reason != Reason::NotAccept || permanent())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(status: Option<&str>, diagnostic: &str, command: Option<Command>) -> Reason {
        decide(&Evidence {
            status,
            reply_code: None,
            diagnostic,
            command,
            action: Some(Action::Failed),
            diagnostic_type: DiagnosticType::Smtp,
            recipient: None,
            remote_mta: None,
        })
    }

    #[test]
    fn user_unknown_at_rcpt_is_userunknown_but_at_data_is_filtered() {
        assert_eq!(smtp(Some("5.0.0"), "550 User unknown", Some(Command::Rcpt)), Reason::UserUnknown);
        assert_eq!(smtp(Some("5.0.0"), "550 User unknown", Some(Command::Data)), Reason::Filtered);
        assert_eq!(smtp(Some("5.1.1"), "550 User unknown", Some(Command::Data)), Reason::UserUnknown);
    }

    #[test]
    fn specific_text_wins_over_a_generic_security_status() {
        assert_eq!(smtp(Some("5.7.1"), "Client host blocked using zen.spamhaus.org", None), Reason::Blocked);
        assert_eq!(smtp(Some("5.7.1"), "nothing specific", None), Reason::SecurityError);
    }

    #[test]
    fn statuses_decide_when_the_text_says_nothing() {
        assert_eq!(smtp(Some("5.2.2"), "", None), Reason::MailboxFull);
        assert_eq!(smtp(Some("4.4.7"), "", None), Reason::Expired);
        assert_eq!(smtp(None, "", None), Reason::Undefined);
        assert_eq!(smtp(None, "something odd", None), Reason::OnHold);
    }

    #[test]
    fn notaccept_is_hard_only_when_permanent() {
        assert!(is_hard(Reason::NotAccept, Some("5.1.10"), None));
        assert!(!is_hard(Reason::NotAccept, Some("4.0.0"), None));
        assert!(is_hard(Reason::UserUnknown, Some("4.1.1"), None));
        assert!(!is_hard(Reason::MailboxFull, Some("5.2.2"), None));
    }
}
