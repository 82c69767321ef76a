//! The records a parsed report is turned into.

use serde::Serialize;

use crate::reason::Reason;

/// Bounds on the work done for one report. Input beyond them is ignored and flagged in
/// [`Report::problems`], never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Larger input is truncated to this many bytes (default 10 MiB).
    pub max_bytes: usize,
    /// At most this many MIME parts are looked at (default 200).
    pub max_parts: usize,
    /// Multiparts and attached messages nested deeper than this are not opened (default 8).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 10 * 1024 * 1024, max_parts: 200, max_depth: 8 }
    }
}

/// What kind of report a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// A bounce, delay or success notification (RFC 3464 or a vendor format).
    DeliveryStatus,
    /// An ARF (RFC 5965) complaint or a comparable feedback-loop report.
    Feedback,
    /// An RFC 3834 auto-reply (vacation, out of office): not a bounce.
    AutoReply,
    /// Nothing recognisable.
    Unknown,
}

impl ReportKind {
    /// The name it is stored and serialised under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeliveryStatus => "delivery_status",
            Self::Feedback => "feedback",
            Self::AutoReply => "auto_reply",
            Self::Unknown => "unknown",
        }
    }
}

/// The `Action:` of one recipient (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

/// One recipient of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BounceRecord {
    /// The failed (or delayed, delivered) address, domain lower-cased. `None` only for a complaint
    /// that names nobody.
    pub recipient: Option<String>,
    pub action: Option<Action>,
    /// RFC 3463 enhanced status code such as `5.1.1`, when the report carries one.
    pub status: Option<String>,
    /// The SMTP reply code such as 550, when the report carries one.
    pub reply_code: Option<u16>,
    /// The remote server's text (Diagnostic-Code or the vendor's equivalent), whitespace collapsed
    /// and at most [`crate::MAX_DIAGNOSTIC_CHARS`] characters.
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    pub reason: Reason,
    /// True when the address itself is bad: userunknown, hostunknown, hasmoved, and notaccept when
    /// the failure is permanent.
    pub hard: bool,
}

/// What identifies the message that bounced, for matching the report to a sent message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OriginalReferences {
    /// Envelope and header addresses of the report itself (X-Original-To, Delivered-To, To,
    /// Envelope-To): where the report was sent, which is the VERP return path.
    pub verp_recipients: Vec<String>,
    /// The value of an `X-Sendwerk-Ref:` header of the returned original message.
    pub sendwerk_ref: Option<String>,
    /// The Message-ID of the returned original message, without angle brackets.
    pub message_id: Option<String>,
    /// The Return-Path of the returned original message.
    pub return_path: Option<String>,
}

/// A parsed report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub kind: ReportKind,
    /// One record per recipient; empty for unknown messages.
    pub records: Vec<BounceRecord>,
    /// The ARF Feedback-Type (abuse, fraud, opt-out, ...), lower-cased.
    pub feedback_type: Option<String>,
    pub original: OriginalReferences,
    pub reporting_mta: Option<String>,
    /// Why parsing was partial (truncated input, too many parts, malformed MIME, no recipient
    /// found, ...). Non-empty with empty `records` means the report deserves a human look.
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::ReportKind;

    #[test]
    fn a_report_kind_is_stored_under_its_serialised_name() {
        for kind in [ReportKind::DeliveryStatus, ReportKind::Feedback, ReportKind::AutoReply, ReportKind::Unknown] {
            assert_eq!(serde_json::to_value(kind).ok(), Some(serde_json::Value::from(kind.as_str())));
        }
    }
}
