//! Compiled regular expressions shared by the text scanners.
//!
//! Each is compiled once on first use. The patterns are constants covered by a unit test, so a
//! compile failure cannot happen at run time; should it ever, the pattern simply matches nothing
//! (no panic in a parser that faces the internet).

use std::sync::LazyLock;

use regex::Regex;

fn compile(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

/// An address-like token for use inside larger patterns.
macro_rules! addr {
    () => {
        r"[A-Za-z0-9._%+\-!#$&*=?^`{|}~/]+@[A-Za-z0-9][A-Za-z0-9.\-]*\.[A-Za-z0-9\-]+"
    };
}

/// `<addr>` (or `[addr]`, `[SMTP:addr]`) at the start of a line, optionally `(expanded from ...)`,
/// optionally `:` and text (Postfix, qmail, Yahoo, Sendmail's address list, Amavis, MailEnable).
pub(crate) static ANGLE_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(concat!(
        r"(?i)^\s*(?:[*\-]\s*)?[<\[](?:smtp:)?(",
        addr!(),
        r")[>\]](?:\s*\((?:expanded|generated) from:?[^)]*\))?\s*(?:\.\.\.)?\s*:?\s*(.*)$"
    ))
});

/// Sendmail's own summary line: `550 5.1.1 <addr>... User unknown`.
pub(crate) static SENDMAIL_SUMMARY: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(concat!(r"^\s*[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?<?(", addr!(), r")>?\.\.\.\s*(.*)$"))
});

/// An address alone on a line, perhaps bulleted, quoted, after a display name, with a mailto
/// link or a comment.
pub(crate) static BARE_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(concat!(
        r#"^\s*(?:[*•\-]{1,2}\s*)?(?:"[^"]*"\s+)?"?<?("#,
        addr!(),
        r#")>?"?(?:\s*<mailto:[^>]*>)?(?:\s*\([^)]*\)(?:<mailto:[^>]*>)?)?\s*:?\s*$"#
    ))
});

/// `addr: text` at the start of a line (OpenSMTPD, SurfControl).
pub(crate) static ADDRESS_COLON_TEXT: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(concat!(r"^\s*(", addr!(), r"):\s+(\S.*)$")));

/// `addr text` at the start of a line (Zoho, X1, Exchange 2003 `addr on <date>`).
pub(crate) static ADDRESS_SPACE_TEXT: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(concat!(r"^\s*(", addr!(), r")\s+([^\s<(].*)$")));

/// `Some sentence: <addr>` (the address ends the line): IMail's `Unknown user: a@b`, KDDI's
/// `Could not be delivered to: <a@b>`, `User's mailbox is full: <a@b>`.
pub(crate) static TEXT_COLON_ADDRESS: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(concat!(r"^\s*([^<>@:]{4,120}):\s*<?(", addr!(), r")>?\s*\.?\s*$")));

/// An address introduced by a phrase anywhere in a line.
pub(crate) static LABELLED: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(concat!(
        r"(?i)\b(?:recipient\s+address|recipient|addressed\s+to|original-recipient|final-recipient|address",
        r"|unknown\s+user|delivery\s+failed\s+\d+\s+attempts|could\s+not\s+be\s+delivered\s+to",
        r"|was\s+not\s+delivered\s+to|wasn't\s+delivered\s+to|delivering\s+your\s+(?:message|mail)\s+to",
        r"|your\s+message\s+to|message\s+to|generated\s+(?:by|from)|rcpt\s+to|rcpt|delivery\s+to|mail\s+to",
        r"|not\s+reach|undeliverable\s+to|smtp|local\s+mailbox|mailbox)",
        r#"(?:(?:\s*[:=]\s*(?:rfc822;\s*)?|\s+)[<\['"]?|[<\['"])(?:smtp:)?("#,
        addr!(),
        r#")[>\]'"]?(.*)$"#
    ))
});

/// `host mx.example.com[192.0.2.1] said:` (Postfix) and `host mx.example.com [192.0.2.1]:` (Exim).
pub(crate) static REMOTE_HOST: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(r"(?i)\bhost:?\s+([A-Za-z0-9][A-Za-z0-9.\-]*\.[A-Za-z]{2,})\s*\[[0-9A-Fa-f.:]+\]"));

/// `... while talking to mx.example.com.:` (Sendmail).
pub(crate) static TALKING_TO: LazyLock<Option<Regex>> =
    LazyLock::new(|| compile(r"(?i)while talking to ([A-Za-z0-9][A-Za-z0-9.\-]*[A-Za-z0-9])\.?:"));

/// `MAIL FROM:<addr>` and `envelope-from <addr>`: the sender, never a failed recipient.
pub(crate) static SENDER_MENTION: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(concat!(
        r"(?i)(?:mail from:\s*|envelope-from\s*|x-postfix-sender:\s*rfc822;\s*|^from:.*?)<?(",
        addr!(),
        r")>?"
    ))
});

/// The `From ` separator line of an mbox file (`From sender Thu Apr 29 23:34:45 2015`).
pub(crate) static MBOX_FROM_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    compile(r"(?m)^From \S+\s+(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ")
});

/// One case-insensitive regular expression matching any of `phrases` literally.
pub(crate) fn any_of(phrases: &[&str]) -> Option<Regex> {
    let alternation: Vec<String> = phrases.iter().map(|phrase| regex::escape(phrase)).collect();
    compile(&format!("(?i){}", alternation.join("|")))
}

/// Runs `regex` on `text` if it compiled.
pub(crate) fn captures<'t>(regex: &LazyLock<Option<Regex>>, text: &'t str) -> Option<regex::Captures<'t>> {
    regex.as_ref().and_then(|regex| regex.captures(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for regex in [
            &ANGLE_LINE,
            &SENDMAIL_SUMMARY,
            &BARE_LINE,
            &ADDRESS_COLON_TEXT,
            &ADDRESS_SPACE_TEXT,
            &LABELLED,
            &TEXT_COLON_ADDRESS,
            &REMOTE_HOST,
            &TALKING_TO,
            &SENDER_MENTION,
            &MBOX_FROM_LINE,
        ] {
            assert!(regex.is_some());
        }
    }

    #[test]
    fn recipient_lines_of_common_mtas_are_recognised() {
        let postfix = captures(&ANGLE_LINE, "<a@b.example> (expanded from <c@d.example>): user unknown");
        assert_eq!(postfix.and_then(|c| c.get(2)).map(|m| m.as_str()), Some("user unknown"));
        let sendmail = captures(&SENDMAIL_SUMMARY, "550 5.1.1 <a@b.example>... User unknown");
        assert_eq!(sendmail.and_then(|c| c.get(1)).map(|m| m.as_str()), Some("a@b.example"));
        assert!(captures(&BARE_LINE, "   * a@b.example").is_some());
        assert!(captures(&BARE_LINE, "a@b.example<mailto:a@b.example>").is_some());
        assert!(captures(&BARE_LINE, "\"a@b.example\":").is_some());
        let gmail = captures(&LABELLED, "Your message wasn't delivered to a@b.example because x");
        assert_eq!(gmail.and_then(|c| c.get(1)).map(|m| m.as_str()), Some("a@b.example"));
    }
}
