//! sendwerk-dsn: reading bounces, complaints and auto-replies.
//!
//! This crate owns two things:
//!
//! * [`parse_report`]: turns a raw inbound report into a [`Report`]: RFC 3464 delivery status
//!   notifications (`multipart/report; report-type=delivery-status`), RFC 5965 ARF complaints,
//!   RFC 3834 auto-replies and the non-standard notices of common MTAs and providers (Postfix,
//!   Sendmail, Exim, qmail, Exchange/Office 365, Gmail, Yahoo, Amazon SES, Domino, Courier,
//!   OpenSMTPD and many more), with one record per recipient;
//! * [`classify`]: the one classifier from SMTP reply code, enhanced status code and diagnostic
//!   text to a bounce [`Reason`] and hard/soft, shared with the sender so that a 550 at RCPT TO and
//!   a DSN a day later land in the same model.
//!
//! It is a pure library: it must never do I/O, spawn tasks, log or read the clock. Its input
//! comes from the open internet, so it never panics, bounds its time and memory with [`Limits`]
//! and reports what it could not read in [`Report::problems`] instead of failing.
//!
//! Formats are recognised by layout rules, not by MTA-specific parsers or by memorised samples:
//! see the `scan` module for the notice layouts and `classify` for the decision order.
//!
//! The dev corpus score (recipient F1, status and reason agreement, per MTA family) is printed by
//! `cargo test -p sendwerk-dsn --test corpus -- --nocapture`; the speed by
//! `cargo run --release -p sendwerk-dsn --example bench`; the parsed JSON of any file by
//! `cargo run -p sendwerk-dsn --example parse -- bounce.eml`.

mod address;
mod arf;
mod autoreply;
mod classify;
mod decode;
mod mime;
mod model;
mod notice;
mod patterns;
mod reason;
mod records;
mod report;
mod rfc3464;
mod scan;
mod smtp;

pub use model::{Action, BounceRecord, Limits, OriginalReferences, Report, ReportKind};
pub use reason::Reason;
pub use records::MAX_DIAGNOSTIC_CHARS;

/// Parses a raw report with the default [`Limits`]. Never panics.
pub fn parse_report(raw: &[u8]) -> Report {
    parse_report_with_limits(raw, &Limits::default())
}

/// Parses a raw report within `limits`. Input beyond the limits is ignored and noted in
/// [`Report::problems`].
pub fn parse_report_with_limits(raw: &[u8], limits: &Limits) -> Report {
    report::parse(raw, limits)
}

/// Classifies one failure: an SMTP reply seen by the sender, or one recipient of a report.
///
/// `status` is an enhanced status code such as `"5.1.1"` (a code found in `diagnostic` is used
/// when `status` is `None`). Returns the reason and whether the address itself is bad (hard).
///
/// Unlike inside a report, where the rejecting command is often unknown, a "user unknown" text
/// here is taken at face value unless the text itself says the rejection came after DATA.
pub fn classify(reply_code: Option<u16>, status: Option<&str>, diagnostic: &str) -> (Reason, bool) {
    let status = status.map(str::to_owned).or_else(|| smtp::prefer_status(None, diagnostic));
    let reply_code = reply_code.or_else(|| smtp::reply_code(diagnostic, status.as_deref()));
    let evidence = classify::Evidence {
        status: status.as_deref(),
        reply_code,
        diagnostic,
        command: smtp::command_in(diagnostic).or(Some(smtp::Command::Rcpt)),
        action: None,
        diagnostic_type: classify::DiagnosticType::Smtp,
        recipient: None,
        remote_mta: None,
    };
    let reason = classify::decide(&evidence);
    (reason, classify::is_hard(reason, status.as_deref(), reply_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_smtp_time_user_unknown_is_a_hard_userunknown() {
        assert_eq!(
            classify(Some(550), Some("5.1.1"), "550 5.1.1 <a@b.example>: user unknown"),
            (Reason::UserUnknown, true)
        );
        assert_eq!(
            classify(Some(550), None, "550 Requested action not taken: mailbox unavailable"),
            (Reason::UserUnknown, true)
        );
    }

    #[test]
    fn an_smtp_time_quota_or_greylist_is_soft() {
        assert_eq!(classify(Some(452), Some("4.2.2"), "452 4.2.2 Mailbox full"), (Reason::MailboxFull, false));
        assert_eq!(classify(Some(421), None, "421 Too many connections from your host"), (Reason::TooManyConn, false));
    }

    #[test]
    fn garbage_never_panics_and_yields_an_unknown_report() {
        let report = parse_report(b"\x00\xff garbage");
        assert_eq!(report.kind, ReportKind::Unknown);
        assert!(report.records.is_empty());
    }
}
