//! Builds RFC 5322 / MIME messages by hand, fast and with every byte under our control.
//!
//! A [`MessageTemplate`] is made once per mailing: it validates sender, extra headers and
//! attachments and pre-encodes the attachments, so [`MessageTemplate::build`] per recipient
//! only encodes the rendered text and copies bytes. Output uses CRLF everywhere, no line
//! exceeds 998 bytes (headers fold at 78 where they can, QP and base64 lines are ≤ 76) and
//! text parts are quoted-printable with a leading `.` encoded, so SMTP dot-stuffing and
//! bare-LF handling cannot change what DKIM signed. Merge data reaches headers only through
//! the `header` submodule, which turns every control character into a space: a header can
//! never be injected.

mod header;
mod quoted_printable;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sendwerk_core::EmailAddress;

use crate::render::RenderedContent;
use header::{is_valid_message_id, write_checked_header, write_mailbox, write_unstructured};
use quoted_printable::write_quoted_printable;

/// Why a message cannot be built; names the header or attachment at fault, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("header name {name:?} is not a valid field name (printable ASCII without ':')")]
    InvalidHeaderName { name: String },
    #[error("header {name} is set by sendwerk and cannot be given")]
    ReservedHeader { name: String },
    #[error("header {name} {reason}")]
    InvalidHeaderValue { name: String, reason: &'static str },
    #[error("attachment {filename:?}: {reason}")]
    InvalidAttachment { filename: String, reason: &'static str },
    #[error("message id {0:?} is not of the form local@domain in printable ASCII")]
    InvalidMessageId(String),
    #[error("the content has neither an HTML nor a text part")]
    NoBody,
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// A display name and address, e.g. `"Shop, Inc." <news@shop.example>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

/// A file sent with every message of a mailing. With a `content_id` it is an inline image
/// the HTML references as `cid:<content_id>` (sent in multipart/related).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
    pub content_id: Option<String>,
}

/// Everything about a mailing's messages that is the same for every recipient.
pub struct MessageTemplate {
    from_header: Vec<u8>,
    reply_to_header: Vec<u8>,
    extra_headers: Vec<u8>,
    inline_parts: Vec<Vec<u8>>,
    attachment_parts: Vec<Vec<u8>>,
    num_attachment_bytes: usize,
    max_message_bytes: usize,
}

impl fmt::Debug for MessageTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageTemplate")
            .field("from", &String::from_utf8_lossy(&self.from_header))
            .field("num_inline_parts", &self.inline_parts.len())
            .field("num_attachment_parts", &self.attachment_parts.len())
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl MessageTemplate {
    /// Validates and pre-encodes the per-mailing parts of the message.
    pub fn new(
        from: Mailbox,
        reply_to: Option<Mailbox>,
        extra_headers: Vec<(String, String)>,
        attachments: Vec<Attachment>,
        max_message_bytes: usize,
    ) -> Result<Self, MimeError> {
        let mut from_header = Vec::new();
        write_mailbox(&mut from_header, "From", &from);
        let mut reply_to_header = Vec::new();
        if let Some(reply_to) = &reply_to {
            write_mailbox(&mut reply_to_header, "Reply-To", reply_to);
        }
        let mut extra = Vec::new();
        for (name, value) in &extra_headers {
            write_checked_header(&mut extra, name, value)?;
        }
        let mut inline_parts = Vec::new();
        let mut attachment_parts = Vec::new();
        for attachment in &attachments {
            let part = encode_attachment(attachment)?;
            match attachment.content_id {
                Some(_) => inline_parts.push(part),
                None => attachment_parts.push(part),
            }
        }
        let num_attachment_bytes = inline_parts.iter().chain(&attachment_parts).map(Vec::len).sum();
        if num_attachment_bytes > max_message_bytes {
            return Err(MimeError::TooLarge { size: num_attachment_bytes, limit: max_message_bytes });
        }
        Ok(Self {
            from_header,
            reply_to_header,
            extra_headers: extra,
            inline_parts,
            attachment_parts,
            num_attachment_bytes,
            max_message_bytes,
        })
    }

    /// Builds one recipient's complete message (headers and body, CRLF line endings).
    /// `message_id` is given without angle brackets; `per_message_headers` (e.g.
    /// `List-Unsubscribe`) are validated like the mailing's extra headers.
    pub fn build(
        &self,
        to: &EmailAddress,
        content: &RenderedContent,
        per_message_headers: &[(&str, &str)],
        message_id: &str,
        date: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<u8>, MimeError> {
        if !is_valid_message_id(message_id) {
            return Err(MimeError::InvalidMessageId(message_id.to_owned()));
        }
        if content.html.is_none() && content.text.is_none() {
            return Err(MimeError::NoBody);
        }
        let text_len = content.html.as_ref().map_or(0, String::len) + content.text.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(2048 + self.num_attachment_bytes + text_len * 5 / 4);
        out.extend_from_slice(date.format("Date: %a, %d %b %Y %H:%M:%S +0000\r\n").to_string().as_bytes());
        out.extend_from_slice(&self.from_header);
        out.extend_from_slice(b"To: ");
        out.extend_from_slice(to.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.reply_to_header);
        write_unstructured(&mut out, "Subject", &content.subject);
        out.extend_from_slice(b"Message-ID: <");
        out.extend_from_slice(message_id.as_bytes());
        out.extend_from_slice(b">\r\nMIME-Version: 1.0\r\n");
        out.extend_from_slice(&self.extra_headers);
        for (name, value) in per_message_headers {
            write_checked_header(&mut out, name, value)?;
        }
        self.write_body(&mut out, content);
        if out.len() > self.max_message_bytes {
            return Err(MimeError::TooLarge { size: out.len(), limit: self.max_message_bytes });
        }
        Ok(out)
    }

    /// Writes the top-level Content-Type and the body: mixed(related(alternative)).
    fn write_body(&self, out: &mut Vec<u8>, content: &RenderedContent) {
        let boundary_base = random_boundary_base();
        let related = content.html.is_some() && !self.inline_parts.is_empty();
        let loose_inline: &[Vec<u8>] = if related { &[] } else { &self.inline_parts };
        let mixed = !self.attachment_parts.is_empty() || !loose_inline.is_empty();
        if mixed {
            open_multipart(out, "mixed", None, &boundary_base, 'm');
        }
        if related {
            let root_type = if content.text.is_some() { "multipart/alternative" } else { "text/html" };
            open_multipart(out, "related", Some(root_type), &boundary_base, 'r');
        }
        match (&content.text, &content.html) {
            (Some(text), Some(html)) => {
                open_multipart(out, "alternative", None, &boundary_base, 'a');
                write_text_part(out, "plain", text);
                next_part(out, &boundary_base, 'a');
                write_text_part(out, "html", html);
                close_multipart(out, &boundary_base, 'a');
            }
            (Some(text), None) => write_text_part(out, "plain", text),
            (None, Some(html)) => write_text_part(out, "html", html),
            (None, None) => {}
        }
        if related {
            for part in &self.inline_parts {
                next_part(out, &boundary_base, 'r');
                out.extend_from_slice(part);
            }
            close_multipart(out, &boundary_base, 'r');
        }
        if mixed {
            for part in self.attachment_parts.iter().chain(loose_inline) {
                next_part(out, &boundary_base, 'm');
                out.extend_from_slice(part);
            }
            close_multipart(out, &boundary_base, 'm');
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A new globally unique Message-ID (without angle brackets) such as
/// `3f2c…e1@mail.example.com`.
pub fn generate_message_id(domain: &str) -> String {
    format!("{}@{domain}", uuid::Uuid::new_v4().simple())
}

/// `=_sw_` + 24 random alphanumerics. `=_` cannot occur in quoted-printable (`=` is always
/// followed by hex digits or a line break) nor in base64, so no body line can equal a
/// boundary; part header lines start with a field name or whitespace, never `--`.
fn random_boundary_base() -> String {
    let random: String = rand::rng().sample_iter(&Alphanumeric).take(24).map(char::from).collect();
    format!("=_sw_{random}")
}

/// Writes a multipart entity's headers and its first delimiter; each level gets its own
/// suffix so no boundary is a prefix of another.
fn open_multipart(out: &mut Vec<u8>, subtype: &str, root_type: Option<&str>, base: &str, level: char) {
    out.extend_from_slice(b"Content-Type: multipart/");
    out.extend_from_slice(subtype.as_bytes());
    out.extend_from_slice(b";\r\n");
    if let Some(root_type) = root_type {
        out.extend_from_slice(format!(" type=\"{root_type}\";\r\n").as_bytes());
    }
    out.extend_from_slice(format!(" boundary=\"{base}_{level}\"\r\n\r\n--{base}_{level}\r\n").as_bytes());
}

fn next_part(out: &mut Vec<u8>, base: &str, level: char) {
    out.extend_from_slice(format!("\r\n--{base}_{level}\r\n").as_bytes());
}

fn close_multipart(out: &mut Vec<u8>, base: &str, level: char) {
    out.extend_from_slice(format!("\r\n--{base}_{level}--").as_bytes());
}

fn write_text_part(out: &mut Vec<u8>, subtype: &str, text: &str) {
    out.extend_from_slice(b"Content-Type: text/");
    out.extend_from_slice(subtype.as_bytes());
    out.extend_from_slice(b"; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    write_quoted_printable(out, text);
}

/// RFC 2045 token characters (plus `@` for Content-IDs such as `image001.png@01D9`).
fn is_token(value: &str, allow_at: bool) -> bool {
    const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";
    !value.is_empty()
        && value.bytes().all(|b| (33..=126).contains(&b) && (!TSPECIALS.contains(&b) || (allow_at && b == b'@')))
}

/// Validates an attachment and encodes it as a complete MIME part (headers, blank line,
/// base64 in 76-char CRLF lines).
fn encode_attachment(attachment: &Attachment) -> Result<Vec<u8>, MimeError> {
    let invalid = |reason| MimeError::InvalidAttachment { filename: attachment.filename.clone(), reason };
    let filename = attachment.filename.as_str();
    if filename.trim().is_empty() || filename.len() > 255 {
        return Err(invalid("file name must be 1 to 255 bytes"));
    }
    if filename.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(invalid("file name contains a control character or path separator"));
    }
    let content_type = attachment.content_type.trim().to_ascii_lowercase();
    let type_is_valid =
        content_type.split_once('/').is_some_and(|(kind, subtype)| is_token(kind, false) && is_token(subtype, false));
    if !type_is_valid {
        return Err(invalid("content type is not of the form type/subtype"));
    }
    let content_id = attachment.content_id.as_deref();
    if content_id.is_some_and(|id| id.len() > 200 || !is_token(id, true)) {
        return Err(invalid("content id may contain only letters, digits and !#$%&'*+-.^_`{|}~@"));
    }
    let filename_param = |param: &str| {
        if filename.bytes().all(|b| (32..=126).contains(&b)) {
            format!(" {param}=\"{}\"", filename.replace('\\', "\\\\").replace('"', "\\\""))
        } else {
            let encoded: String = filename
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z'
                    | b'A'..=b'Z'
                    | b'0'..=b'9'
                    | b'!'
                    | b'#'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~' => char::from(b).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!(" {param}*=utf-8''{encoded}")
        }
    };
    let disposition = if content_id.is_some() { "inline" } else { "attachment" };
    let mut part = format!(
        "Content-Type: {content_type};\r\n{}\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: {disposition};\r\n{}\r\n",
        filename_param("name"),
        filename_param("filename"),
    )
    .into_bytes();
    if let Some(id) = content_id {
        part.extend_from_slice(format!("Content-ID: <{id}>\r\n").as_bytes());
    }
    part.extend_from_slice(b"\r\n");
    let encoded = BASE64.encode(&attachment.content);
    part.reserve(encoded.len() + encoded.len() / 38 + 2);
    for line in encoded.as_bytes().chunks(76) {
        part.extend_from_slice(line);
        part.extend_from_slice(b"\r\n");
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_cannot_appear_in_encoded_content() {
        let base = random_boundary_base();
        assert_eq!(base.len(), 29);
        let mut encoded = Vec::new();
        write_quoted_printable(&mut encoded, &format!("--{base}_a\n=_sw_ {base}"));
        assert!(!String::from_utf8_lossy(&encoded).contains("=_"));
        assert!(!BASE64.encode(base.as_bytes()).contains("=_"));
    }
}
