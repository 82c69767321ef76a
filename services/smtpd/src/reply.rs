//! SMTP replies: what a handler answers, and how a reply is written on the wire.

use std::borrow::Cow;

/// What happens to the connection once a reply has been chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionAction {
    /// Send the reply and go on reading commands.
    KeepOpen,
    /// Send the reply, then close the connection.
    CloseAfterReply,
    /// Close the connection without sending anything (simulates a lost connection).
    CloseWithoutReply,
}

/// A single-line SMTP reply: `code [enhanced] text`.
///
/// Text is borrowed when static, so the common replies allocate nothing. CR and LF in the text
/// are replaced by spaces when written, so a handler cannot inject extra reply lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<Cow<'static, str>>,
    text: Cow<'static, str>,
    action: ConnectionAction,
}

impl Reply {
    /// A reply with an enhanced status code (RFC 3463), e.g. `Reply::new(550, "5.1.1", "user unknown")`.
    pub fn new(code: u16, enhanced: impl Into<Cow<'static, str>>, text: impl Into<Cow<'static, str>>) -> Self {
        Self { code, enhanced: Some(enhanced.into()), text: text.into(), action: ConnectionAction::KeepOpen }
    }

    /// A reply without an enhanced status code.
    pub fn without_enhanced_code(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self { code, enhanced: None, text: text.into(), action: ConnectionAction::KeepOpen }
    }

    /// `250 2.0.0 ok`.
    pub const fn ok() -> Self {
        Self::fixed(250, "2.0.0", "ok")
    }

    /// Closes the connection without sending any reply, as if the connection had been lost.
    pub const fn drop_connection() -> Self {
        let mut reply = Self::fixed(421, "4.4.2", "connection dropped");
        reply.action = ConnectionAction::CloseWithoutReply;
        reply
    }

    /// Sends this reply and then closes the connection.
    #[must_use]
    pub fn and_close(mut self) -> Self {
        self.action = ConnectionAction::CloseAfterReply;
        self
    }

    /// A reply built at compile time from static text.
    pub(crate) const fn fixed(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Self {
            code,
            enhanced: Some(Cow::Borrowed(enhanced)),
            text: Cow::Borrowed(text),
            action: ConnectionAction::KeepOpen,
        }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced_code(&self) -> Option<&str> {
        self.enhanced.as_deref()
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// A 2xx reply: the command was accepted.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub(crate) fn closes_after_reply(&self) -> bool {
        self.action == ConnectionAction::CloseAfterReply
    }

    pub(crate) fn closes_without_reply(&self) -> bool {
        self.action == ConnectionAction::CloseWithoutReply
    }
}

/// Sent instead of a handler's reply whose code is not a final 2xx, 4xx or 5xx code.
const INVALID_HANDLER_REPLY: Reply = Reply::fixed(451, "4.3.0", "local error in processing");

/// Appends `reply` as one CRLF-terminated line. The enhanced code is only sent to clients that
/// said EHLO, as RFC 2034 asks.
pub(crate) fn write_reply(out: &mut Vec<u8>, reply: &Reply, with_enhanced_code: bool) {
    let is_final_code = matches!(reply.code, 200..=299 | 400..=599);
    let reply = if is_final_code {
        reply
    } else {
        tracing::warn!(code = reply.code, "handler returned an invalid reply code");
        &INVALID_HANDLER_REPLY
    };
    write_code(out, reply.code, b' ');
    if with_enhanced_code && let Some(enhanced) = &reply.enhanced {
        write_sanitized(out, enhanced);
        out.push(b' ');
    }
    write_sanitized(out, &reply.text);
    out.extend_from_slice(b"\r\n");
}

/// Appends a three-digit code followed by `separator` (`b' '` for a last line, `b'-'` otherwise).
pub(crate) fn write_code(out: &mut Vec<u8>, code: u16, separator: u8) {
    let digits = [b'0' + (code / 100 % 10) as u8, b'0' + (code / 10 % 10) as u8, b'0' + (code % 10) as u8, separator];
    out.extend_from_slice(&digits);
}

/// Appends `text` with CR and LF replaced by spaces.
pub(crate) fn write_sanitized(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|byte| if byte == b'\r' || byte == b'\n' { b' ' } else { byte }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn written(reply: &Reply, with_enhanced_code: bool) -> String {
        let mut out = Vec::new();
        write_reply(&mut out, reply, with_enhanced_code);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn reply_is_written_as_one_crlf_line() {
        let reply = Reply::new(550, "5.1.1", "user unknown");
        assert_eq!(written(&reply, true), "550 5.1.1 user unknown\r\n");
        assert_eq!(written(&reply, false), "550 user unknown\r\n");
    }

    #[test]
    fn line_breaks_in_reply_text_cannot_inject_lines() {
        let reply = Reply::without_enhanced_code(250, "ok\r\n250 injected");
        assert_eq!(written(&reply, true), "250 ok  250 injected\r\n");
    }

    #[test]
    fn invalid_reply_codes_become_a_local_error() {
        assert_eq!(written(&Reply::new(354, "2.0.0", "go on"), true), "451 4.3.0 local error in processing\r\n");
        assert_eq!(written(&Reply::new(1000, "2.0.0", "x"), true), "451 4.3.0 local error in processing\r\n");
    }

    #[test]
    fn only_2xx_replies_are_positive() {
        assert!(Reply::ok().is_positive());
        assert!(!Reply::new(451, "4.3.0", "later").is_positive());
        assert!(Reply::drop_connection().closes_without_reply());
        assert!(Reply::new(421, "4.3.0", "bye").and_close().closes_after_reply());
    }
}
