//! Phrases about the way there: networks, queues, local systems and delivery agents.

use std::sync::OnceLock;

use super::Phrases;
use crate::reason::Reason;

pub(crate) static SYSTEM_ERROR: Phrases = Phrases {
    reason: Reason::SystemError,
    substrings: &[
        "aliasing/forwarding loop broken",
        "can't create user output file",
        "could not load drd for domain",
        "internal error reading data",
        "internal server error: operation now in progress",
        "interrupted system call",
        "it encountered an error while being processed",
        "it would create a mail loop",
        "local configuration error",
        "local error in processing",
        "loop was found in the mail exchanger",
        "loops back to myself",
        "mail system configuration error",
        "recipient deferred because there is no mdb",
        "remote server is misconfigured",
        "server configuration error",
        "service currently unavailable",
        "system config error",
        "temporary local problem",
        "timeout waiting for input",
        "transaction failed ",
        "internal error",
        "system error",
        "insufficient permission",
        "delivery to file forbidden",
        "delivery to pipe forbidden",
        "local delivery failed",
        "lmtp error after ",
    ],
    pairs: &[],
    matcher: OnceLock::new(),
};

pub(crate) static NETWORK_ERROR: Phrases = Phrases {
    reason: Reason::NetworkError,
    substrings: &[
        "could not connect and send the mail to",
        "dns records for the destination computer could not be found",
        "hop count exceeded - possible mail loop",
        "host is unreachable",
        "host name lookup failure",
        "host not found, try again",
        "mail forwarding loop for ",
        "malformed name server reply",
        "malformed or unexpected name server reply",
        "maximum forwarding loop count exceeded",
        "message looping",
        "message probably in a routing loop",
        "no route to host",
        "too many hops",
        "unable to resolve route ",
        "unrouteable mail domain",
        "responded with code nxdomain",
        "had no relevant answers",
        "dns error",
        "network error",
        "temporary failure in name resolution",
    ],
    pairs: &[],
    matcher: OnceLock::new(),
};

pub(crate) static CONTENT_ERROR: Phrases = Phrases {
    reason: Reason::ContentError,
    substrings: &[
        "improper use of 8-bit data in message header",
        "message header size, or recipient list, exceeds policy limit",
        "message mime complexity exceeds the policy maximum",
        "routing loop detected -- too many received: headers",
        "this message contain invalid mime headers",
        "this message contain improperly-formatted binary content",
        "this message contain text that uses unnecessary base64 encoding",
        "headers too large",
        "media error",
        "invalid mime",
        "too many \"received\" headers",
    ],
    pairs: &[],
    matcher: OnceLock::new(),
};

pub(crate) static SYSTEM_FULL: Phrases = Phrases {
    reason: Reason::SystemFull,
    substrings: &["mail system full", "requested mail action aborted: exceeded storage allocation", "system full"],
    pairs: &[],
    matcher: OnceLock::new(),
};

pub(crate) static EXPIRED: Phrases = Phrases {
    reason: Reason::Expired,
    substrings: &[
        "could not find a gateway for",
        "delivery attempts will continue to be",
        "delivery time expired",
        "failed to deliver to domain ",
        "giving up on",
        "have been failing for a long time",
        "has been delayed",
        "it has not been collected after",
        "message expired after sitting in queue for",
        "message expired, cannot connect to remote server",
        "message expired, connection refulsed",
        "message timed out",
        "retry time not reached for any host after a long failure period",
        "server did not respond",
        "this message has been in the queue too long",
        "unable to deliver message after",
        "was not reachable within the allowed queue period",
        "your message could not be delivered for more than",
        "connection timed out",
        "host not reachable",
        "timed out",
        "queue too long",
        "all hosts have been failing for a long time",
        "maximum delivery attempts",
        "has been frozen",
        "was frozen on arrival",
    ],
    pairs: &[("could not be delivered for", " days")],
    matcher: OnceLock::new(),
};

pub(crate) static MAILER_ERROR: Phrases = Phrases {
    reason: Reason::MailerError,
    substrings: &[
        "x-unix; ",
        "command died with status",
        "command output:",
        "exit code",
        "pipe to |",
        "procmail: ",
        "bin/procmail",
        "mailer error",
        "error in processing. server replied",
    ],
    pairs: &[],
    matcher: OnceLock::new(),
};

pub(crate) static SYNTAX_ERROR: Phrases = Phrases {
    reason: Reason::SyntaxError,
    substrings: &[
        "syntax error",
        "command unrecognized",
        "unrecognized command",
        "command not recognized",
        "bad sequence of commands",
        "line too long",
    ],
    pairs: &[],
    matcher: OnceLock::new(),
};
