//! What mail servers say, per reason. Lower-case substrings of diagnostics (matched on
//! whitespace-collapsed, lower-cased text) and ordered pairs of substrings.
//!
//! These are generic: each phrase is what some MTA or provider sends for that kind of failure,
//! collected from public documentation and the behaviour of real servers, not from one file.

use std::sync::OnceLock;

use regex::Regex;

use crate::reason::Reason;

mod recipient;
mod sender;
mod transport;

pub(crate) use recipient::*;
pub(crate) use sender::*;
pub(crate) use transport::*;

/// Substrings and ordered substring pairs (`first ... second`) that indicate one reason.
pub(crate) struct Phrases {
    pub reason: Reason,
    pub substrings: &'static [&'static str],
    pub pairs: &'static [(&'static str, &'static str)],
    /// All substrings as one automaton, built on first use.
    pub matcher: OnceLock<Option<Regex>>,
}

impl Phrases {
    pub(crate) fn matches(&self, text: &str) -> bool {
        let matcher = self.matcher.get_or_init(|| {
            let alternation: Vec<String> = self.substrings.iter().map(|phrase| regex::escape(phrase)).collect();
            Regex::new(&alternation.join("|")).ok()
        });
        let substring_found = match matcher {
            Some(matcher) => matcher.is_match(text),
            None => self.substrings.iter().any(|phrase| text.contains(phrase)),
        };
        substring_found
            || self.pairs.iter().any(|(first, second)| {
                text.find(first).is_some_and(|position| text[position + first.len()..].contains(second))
            })
    }
}

/// Statements that settle the reason whatever the status code says: an MTA's own wording for a
/// specific condition, or a provider's documented message. Checked first, in this order.
pub(crate) static DECISIVE: [Phrases; 13] = [
    Phrases {
        reason: Reason::Filtered,
        substrings: &["550 : user unknown", "550 :user unknown"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::UserUnknown,
        substrings: &[
            "not listed in domino directory",
            "not listed in public name & address book",
            "the recipient name is not recognized",
            "dd this user doesn't have a ",
            "recipient address rejected: user unknown in",
            "resolver.adr.recipnotfound",
            "resolver.adr.recipientnotfound",
            "remote server returned unknown recipient",
        ],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::BadReputation,
        substrings: &[
            "temporarily deferred due to unexpected volume or user complaints",
            "temporarily deferred due to user complaints",
            "due to unresolvable rfc.5321 domain",
            " will be permanently deferred",
        ],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::PolicyViolation,
        substrings: &["message not accepted for policy reasons", "not accepted for policy reasons"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::MailboxFull,
        substrings: &["mailbox is full: retry timeout exceeded"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::NetworkError,
        substrings: &["wasn't able to establish an smtp connection", "network error on destination mxs"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::Expired,
        substrings: &[
            "retry timeout exceeded",
            "delivery retry timeout exceeded",
            "envelope expired",
            "did not accept our requests to connect",
            "message expired",
            "delivery time expired",
            "could not send message for past",
        ],
        pairs: &[("delivery failed ", " attempts")],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::HostUnknown,
        substrings: &["couldn't find any host named", "dns lookup failure: host"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::Blocked,
        substrings: &["my name was rejected", "service refuse"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::Suspend,
        substrings: &["vdelivermail: account is locked", "account is locked email bounced"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::TooManyConn,
        substrings: &["ip frequency limited", "frequency limited"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::SystemError,
        substrings: &["unable to deliver message after multiple retries", "queue file write error"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
    Phrases {
        reason: Reason::Rejected,
        substrings: &["groups.google.com/support", "you are not allowed to post to this mailing list"],
        pairs: &[],
        matcher: OnceLock::new(),
    },
];
