//! The bounce-reason vocabulary shared by the DSN parser and the SMTP-time classifier.

use serde::{Deserialize, Serialize};

/// Why a message was not (or was) delivered. The names follow the vocabulary of the labelled bounce
/// corpus (`shared/corpus/bounces/README.md`), which is the vocabulary of the sisimai project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The mailbox does not exist at the destination.
    UserUnknown,
    /// The destination domain does not exist or has no usable mail exchanger.
    HostUnknown,
    /// The mailbox has moved and there is no forwarding address.
    HasMoved,
    /// The destination does not accept mail at all (null MX, "host does not accept mail").
    NotAccept,
    /// The mailbox is over quota.
    MailboxFull,
    /// The message exceeds a per-mailbox or administrative limit.
    ExceedLimit,
    /// The mailbox is disabled, suspended or locked.
    Suspend,
    /// The message is too big for the receiving system.
    MesgTooBig,
    /// The receiving side rejected the message as spam.
    SpamDetected,
    /// The receiving side found a virus or malware.
    VirusDetected,
    /// The sending IP or host is blocked (blocklists, "not accepting connections").
    Blocked,
    /// The sender's reputation is too poor.
    BadReputation,
    /// The sending host needs a valid reverse DNS (PTR) record.
    RequirePtr,
    /// SPF, DKIM or DMARC authentication failed.
    AuthFailure,
    /// The message broke a local policy of the receiver.
    PolicyViolation,
    /// The message is not RFC compliant (duplicate or malformed headers).
    NotCompliantRfc,
    /// The content of the message (MIME, headers) was refused.
    ContentError,
    /// The recipient's filter refused the message.
    Filtered,
    /// The sender address was refused.
    Rejected,
    /// The receiving host refused to relay.
    NoRelaying,
    /// Authentication or another security requirement was not met.
    SecurityError,
    /// The sender sends too fast.
    Speeding,
    /// Too many connections or recipients at once.
    TooManyConn,
    /// Delivery was given up after the retry period.
    Expired,
    /// Connection or DNS problems on the way to the destination.
    NetworkError,
    /// The reporting or receiving mail system failed internally.
    SystemError,
    /// The receiving mail system is out of space.
    SystemFull,
    /// The local delivery agent (procmail, a pipe) failed.
    MailerError,
    /// STARTTLS could not be negotiated.
    FailedStartTls,
    /// The SMTP dialogue had a syntax error.
    SyntaxError,
    /// There is an error text, but not enough detail to decide.
    OnHold,
    /// Nothing to decide on.
    Undefined,
    /// An ARF complaint (feedback loop report).
    Feedback,
    /// An auto-reply (vacation, out of office): not a bounce.
    Vacation,
    /// A success DSN.
    Delivered,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 35] = [
        Reason::UserUnknown,
        Reason::HostUnknown,
        Reason::HasMoved,
        Reason::NotAccept,
        Reason::MailboxFull,
        Reason::ExceedLimit,
        Reason::Suspend,
        Reason::MesgTooBig,
        Reason::SpamDetected,
        Reason::VirusDetected,
        Reason::Blocked,
        Reason::BadReputation,
        Reason::RequirePtr,
        Reason::AuthFailure,
        Reason::PolicyViolation,
        Reason::NotCompliantRfc,
        Reason::ContentError,
        Reason::Filtered,
        Reason::Rejected,
        Reason::NoRelaying,
        Reason::SecurityError,
        Reason::Speeding,
        Reason::TooManyConn,
        Reason::Expired,
        Reason::NetworkError,
        Reason::SystemError,
        Reason::SystemFull,
        Reason::MailerError,
        Reason::FailedStartTls,
        Reason::SyntaxError,
        Reason::OnHold,
        Reason::Undefined,
        Reason::Feedback,
        Reason::Vacation,
        Reason::Delivered,
    ];

    /// The name used in the corpus labels, e.g. `"userunknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UserUnknown => "userunknown",
            Reason::HostUnknown => "hostunknown",
            Reason::HasMoved => "hasmoved",
            Reason::NotAccept => "notaccept",
            Reason::MailboxFull => "mailboxfull",
            Reason::ExceedLimit => "exceedlimit",
            Reason::Suspend => "suspend",
            Reason::MesgTooBig => "mesgtoobig",
            Reason::SpamDetected => "spamdetected",
            Reason::VirusDetected => "virusdetected",
            Reason::Blocked => "blocked",
            Reason::BadReputation => "badreputation",
            Reason::RequirePtr => "requireptr",
            Reason::AuthFailure => "authfailure",
            Reason::PolicyViolation => "policyviolation",
            Reason::NotCompliantRfc => "notcompliantrfc",
            Reason::ContentError => "contenterror",
            Reason::Filtered => "filtered",
            Reason::Rejected => "rejected",
            Reason::NoRelaying => "norelaying",
            Reason::SecurityError => "securityerror",
            Reason::Speeding => "speeding",
            Reason::TooManyConn => "toomanyconn",
            Reason::Expired => "expired",
            Reason::NetworkError => "networkerror",
            Reason::SystemError => "systemerror",
            Reason::SystemFull => "systemfull",
            Reason::MailerError => "mailererror",
            Reason::FailedStartTls => "failedstarttls",
            Reason::SyntaxError => "syntaxerror",
            Reason::OnHold => "onhold",
            Reason::Undefined => "undefined",
            Reason::Feedback => "feedback",
            Reason::Vacation => "vacation",
            Reason::Delivered => "delivered",
        }
    }

    /// Parses a corpus label (`"userunknown"`); `None` for anything else.
    pub fn from_label(label: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.as_str().eq_ignore_ascii_case(label.trim()))
    }

    /// Whether this reason means "the address itself is bad" when the failure is permanent.
    ///
    /// True for userunknown, hostunknown, hasmoved and notaccept. For notaccept the caller must
    /// also check that the failure was permanent (a 5.x.x status or a 5xx reply): a temporary
    /// "does not accept mail" is soft. [`crate::classify`] applies that rule.
    pub fn is_hard_by_default(self) -> bool {
        matches!(self, Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved | Reason::NotAccept)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_label() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_label(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn serde_uses_the_corpus_vocabulary() {
        let json = serde_json::to_string(&Reason::RequirePtr).unwrap_or_default();
        assert_eq!(json, "\"requireptr\"");
    }
}
