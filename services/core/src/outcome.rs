use std::fmt;

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. `5.1.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    /// Parses `x.y.z` with class 2, 4 or 5 and subject/detail of at most three digits.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.split('.');
        let class: u8 = parse_digits(parts.next()?, 1)?.try_into().ok()?;
        let subject = parse_digits(parts.next()?, 3)?;
        let detail = parse_digits(parts.next()?, 3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Self { class, subject, detail })
    }
}

fn parse_digits(raw: &str, max_len: usize) -> Option<u16> {
    if raw.is_empty() || raw.len() > max_len || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A reply from an SMTP server: the three-digit code, the enhanced status code when the server
/// gave one at the start of its text, and the text (lines joined with a space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced: Option<EnhancedStatus>,
    pub text: String,
}

impl SmtpReply {
    /// Builds a reply from its code and text lines, taking an enhanced status code off the front
    /// of the first line when present (`"5.1.1 user unknown"`).
    pub fn from_lines<S: AsRef<str>>(code: u16, lines: &[S]) -> Self {
        let joined = lines.iter().map(|line| line.as_ref().trim()).collect::<Vec<_>>().join(" ");
        let (enhanced, text) = match joined.split_once(' ') {
            Some((first, rest)) => match EnhancedStatus::parse(first) {
                Some(status) => (Some(status), rest.trim().to_owned()),
                None => (None, joined.clone()),
            },
            None => match EnhancedStatus::parse(&joined) {
                Some(status) => (Some(status), String::new()),
                None => (None, joined.clone()),
            },
        };
        Self { code, enhanced, text }
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(status) => write!(f, "{} {} {}", self.code, status, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// What became of one SMTP transaction for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The server took responsibility for the message (2xx after the final dot).
    Delivered(SmtpReply),
    /// Try again later: a 4xx reply, or no usable reply at all (connection refused or lost,
    /// timeout, TLS failure), described by `detail`.
    TemporaryFailure { reply: Option<SmtpReply>, detail: String },
    /// The server refused the message for good (5xx); never retried.
    PermanentFailure(SmtpReply),
    /// The whole message went out but no reply came (the connection broke or timed out after
    /// the final dot): the server may have taken it. Retried like a temporary failure, and
    /// recorded as `outcome-unknown`, because a duplicate delivery is possible.
    Unknown { detail: String },
}

/// The one classifier of SMTP replies into outcomes. The basic code decides, as RFC 5321 says
/// clients must: 2xx delivered, 4xx temporary, 5xx permanent. Anything else (a 1xx/3xx where a
/// final reply belongs, or an out-of-range code) is a protocol error and treated as temporary,
/// so a confused server never makes us drop a recipient for good.
pub fn classify_smtp_reply(reply: SmtpReply) -> DeliveryOutcome {
    match reply.code / 100 {
        2 => DeliveryOutcome::Delivered(reply),
        5 => DeliveryOutcome::PermanentFailure(reply),
        4 => DeliveryOutcome::TemporaryFailure { detail: reply.to_string(), reply: Some(reply) },
        _ => DeliveryOutcome::TemporaryFailure { detail: format!("unexpected smtp reply {reply}"), reply: Some(reply) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_is_taken_off_the_reply_text() {
        let reply = SmtpReply::from_lines(550, &["5.1.1 <x@example.com>: user unknown"]);
        assert_eq!(reply.enhanced, EnhancedStatus::parse("5.1.1"));
        assert_eq!(reply.text, "<x@example.com>: user unknown");
        assert_eq!(reply.to_string(), "550 5.1.1 <x@example.com>: user unknown");
    }

    #[test]
    fn replies_without_enhanced_status_keep_their_text() {
        let reply = SmtpReply::from_lines(451, &["try again later", "really"]);
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.text, "try again later really");
    }

    #[test]
    fn classifier_follows_the_basic_reply_code() {
        let delivered = classify_smtp_reply(SmtpReply::from_lines(250, &["2.0.0 ok"]));
        assert!(matches!(delivered, DeliveryOutcome::Delivered(_)));
        let temporary = classify_smtp_reply(SmtpReply::from_lines(451, &["4.3.0 later"]));
        assert!(matches!(temporary, DeliveryOutcome::TemporaryFailure { .. }));
        let permanent = classify_smtp_reply(SmtpReply::from_lines(550, &["5.1.1 unknown"]));
        assert!(matches!(permanent, DeliveryOutcome::PermanentFailure(_)));
        let odd = classify_smtp_reply(SmtpReply::from_lines(354, &["go on"]));
        assert!(matches!(odd, DeliveryOutcome::TemporaryFailure { .. }));
    }

    #[test]
    fn malformed_enhanced_codes_are_not_taken() {
        for raw in ["3.1.1", "5.1", "5.1.1.1", "5.1234.1", "a.b.c", ""] {
            assert_eq!(EnhancedStatus::parse(raw), None, "{raw}");
        }
    }
}

/// Whether a temporary reply asks us to slow down for the whole destination (`421` closing the
/// channel, or a `4xx` naming rate limits, throttling or too many connections/messages), as
/// opposed to a problem with one recipient.
pub fn is_slow_down(reply: &SmtpReply) -> bool {
    if reply.code == 421 {
        return true;
    }
    if reply.code / 100 != 4 {
        return false;
    }
    let text = reply.text.to_ascii_lowercase();
    // Not "try again later": greylisting and busy mailboxes say that about one recipient.
    const NEEDLES: [&str; 8] = [
        "rate limit",
        "ratelimit",
        "too many",
        "slow down",
        "throttl",
        "exceeded the rate",
        "sending rate",
        "frequency",
    ];
    NEEDLES.iter().any(|needle| text.contains(needle))
}

#[cfg(test)]
mod slow_down_tests {
    use super::*;

    #[test]
    fn rate_limit_replies_mean_slow_down_and_mailbox_problems_do_not() {
        let slow = |code, text: &str| is_slow_down(&SmtpReply::from_lines(code, &[text]));
        assert!(slow(421, "4.7.0 closing connection"));
        assert!(slow(451, "4.7.1 Too many messages, slow down"));
        assert!(slow(450, "4.2.1 rate limit exceeded"));
        assert!(!slow(452, "4.2.2 mailbox full"));
        assert!(!slow(451, "4.3.0 local error in processing"));
        assert!(!slow(451, "4.7.1 greylisted, please try again later"));
        assert!(!slow(550, "5.7.1 too many recipients"));
    }
}
