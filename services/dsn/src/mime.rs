//! A small, bounded MIME walker.
//!
//! It turns a raw message into its top-level headers and a flat list of the parts a bounce parser
//! cares about (text, delivery-status, feedback-report, returned headers), decoded to UTF-8. It
//! tolerates bare LFs, missing boundaries, unterminated multiparts and broken encodings, and it
//! stops at the configured depth and part count instead of failing.

use crate::decode;
use crate::model::Limits;

/// Header values longer than this are cut (a 50 MB header line must not be copied around).
const MAX_HEADER_VALUE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Default)]
pub(crate) struct Headers {
    /// (lower-case name, unfolded and RFC 2047-decoded value) in message order.
    fields: Vec<(String, String)>,
}

impl Headers {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
    }

    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter(move |(field, _)| field == name).map(|(_, value)| value.as_str())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// A parsed `Content-Type`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContentType {
    /// `type/subtype`, lower case.
    pub mime_type: String,
    /// Parameters with lower-case names and unquoted values.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub(crate) fn parse(value: &str) -> ContentType {
        let mut pieces = split_params(value);
        let mime_type = pieces.first().map(|first| first.trim().to_ascii_lowercase()).unwrap_or_default();
        let params = pieces
            .drain(1.min(pieces.len())..)
            .filter_map(|piece| {
                let (name, value) = piece.split_once('=')?;
                let value = value.trim().trim_matches('"').trim();
                Some((name.trim().to_ascii_lowercase(), value.to_owned()))
            })
            .collect();
        ContentType { mime_type, params }
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Splits `a; b="x;y"; c` on semicolons outside quotes.
fn split_params(value: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (index, character) in value.char_indices() {
        match character {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                pieces.push(&value[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces
}

/// One decoded leaf part.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// `type/subtype`, lower case (`text/plain`, `message/delivery-status`, `message/rfc822`, ...).
    pub mime_type: String,
    /// For `message/rfc822` and `text/rfc822-headers`: the returned message's headers. For other
    /// parts: the part's own MIME headers.
    pub headers: Headers,
    /// Decoded text of text-like parts (HTML converted to text); empty otherwise.
    pub text: String,
    /// Set for parts inside a returned `message/rfc822`.
    pub inside_original: bool,
    /// Parts of one `multipart/alternative` share an id.
    pub alternative_group: Option<usize>,
    /// For `message/rfc822`: the attached message itself (at most [`MAX_ATTACHED_BYTES`]), so that a
    /// forwarded report can be read.
    pub attached: Vec<u8>,
}

/// An attached message larger than this is not kept for re-parsing.
pub(crate) const MAX_ATTACHED_BYTES: usize = 4 * 1024 * 1024;

/// A message split into what the bounce parser needs.
#[derive(Debug, Default)]
pub(crate) struct Message {
    pub headers: Headers,
    pub top_type: ContentType,
    pub parts: Vec<Part>,
    pub problems: Vec<String>,
}

struct Walker<'l> {
    limits: &'l Limits,
    parts: Vec<Part>,
    problems: Vec<String>,
    num_entities: usize,
    next_group: usize,
    reported_depth: bool,
    reported_parts: bool,
}

impl Walker<'_> {
    fn problem(&mut self, problem: String) {
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }
}

/// Parses a whole message within `limits` (the caller has already truncated it to `max_bytes`).
pub(crate) fn parse_message(raw: &[u8], limits: &Limits) -> Message {
    let mut walker = Walker {
        limits,
        parts: Vec::new(),
        problems: Vec::new(),
        num_entities: 0,
        next_group: 0,
        reported_depth: false,
        reported_parts: false,
    };
    let (headers, body, header_problem) = split_entity(raw);
    if let Some(problem) = header_problem {
        walker.problem(problem);
    }
    let top_type = ContentType::parse(headers.get("content-type").unwrap_or("text/plain"));
    walk_body(&mut walker, &headers, &top_type, body, 0, false, None);
    Message { headers, top_type, parts: walker.parts, problems: walker.problems }
}

/// Parses only the header block of `raw` (used for `text/rfc822-headers` and returned messages).
pub(crate) fn parse_headers_only(raw: &[u8]) -> Headers {
    split_entity(raw).0
}

/// Splits an entity into its parsed headers and its body.
fn split_entity(raw: &[u8]) -> (Headers, &[u8], Option<String>) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut raw_values: Vec<Vec<u8>> = Vec::new();
    let mut offset = 0;
    let mut body_start = raw.len();
    let mut problem = None;
    while offset < raw.len() {
        let line_end = memchr::memchr(b'\n', &raw[offset..]).map_or(raw.len(), |position| offset + position);
        let next = (line_end + 1).min(raw.len());
        let line = trim_cr(&raw[offset..line_end]);
        if line.is_empty() {
            body_start = next;
            break;
        }
        if (line[0] == b' ' || line[0] == b'\t')
            && let Some(last) = raw_values.last_mut()
        {
            if last.len() < MAX_HEADER_VALUE_BYTES {
                last.push(b' ');
                last.extend_from_slice(&line[..line.len().min(MAX_HEADER_VALUE_BYTES)]);
            }
            offset = next;
            continue;
        }
        match header_name(line) {
            Some((name, value)) => {
                if value.len() > MAX_HEADER_VALUE_BYTES {
                    problem = Some(format!("header {name} longer than {MAX_HEADER_VALUE_BYTES} bytes was cut"));
                }
                fields.push((name, String::new()));
                raw_values.push(value[..value.len().min(MAX_HEADER_VALUE_BYTES)].to_vec());
            }
            None if fields.is_empty() && line.starts_with(b"From ") => {}
            None => {
                // Not a header line: the header block ended without the blank line.
                body_start = offset;
                break;
            }
        }
        offset = next;
    }
    for ((_, value), raw_value) in fields.iter_mut().zip(raw_values) {
        let text = decode::charset_decode(&raw_value, None);
        *value = decode::encoded_words(text.trim());
    }
    (Headers { fields }, &raw[body_start.min(raw.len())..], problem)
}

/// `Name: value` → (lower-case name, value bytes) when the name is a plausible header name.
fn header_name(line: &[u8]) -> Option<(String, &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    let name = &line[..colon];
    if name.is_empty() || name.len() > 76 || !name.iter().all(|byte| byte.is_ascii_graphic() && *byte != b':') {
        return None;
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    Some((name, &line[colon + 1..]))
}

pub(crate) fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn walk_body(
    walker: &mut Walker<'_>,
    headers: &Headers,
    content_type: &ContentType,
    body: &[u8],
    depth: usize,
    inside_original: bool,
    alternative_group: Option<usize>,
) {
    walker.num_entities += 1;
    if walker.num_entities > walker.limits.max_parts {
        if !walker.reported_parts {
            walker.reported_parts = true;
            let problem = format!("more than {} MIME parts; the rest was ignored", walker.limits.max_parts);
            walker.problem(problem);
        }
        return;
    }
    let mime_type = content_type.mime_type.as_str();
    if mime_type.starts_with("multipart/") {
        if depth >= walker.limits.max_depth {
            if !walker.reported_depth {
                walker.reported_depth = true;
                let problem = format!("MIME nesting deeper than {} levels was not opened", walker.limits.max_depth);
                walker.problem(problem);
            }
            return;
        }
        let boundary = content_type
            .param("boundary")
            .filter(|boundary| !boundary.is_empty())
            .map(str::to_owned)
            .or_else(|| guess_boundary(body));
        let (pieces, terminated) =
            boundary.as_deref().map(|boundary| split_multipart(body, boundary)).unwrap_or_default();
        if !pieces.is_empty() && !terminated {
            walker.problem(format!("{mime_type} without its closing delimiter (truncated?)"));
        }
        if pieces.is_empty() {
            walker.problem(format!("{mime_type} without boundary delimiters: read as text"));
            push_text(walker, headers, "text/plain", body, None, inside_original, alternative_group);
            return;
        }
        let group = if mime_type == "multipart/alternative" {
            walker.next_group += 1;
            Some(walker.next_group)
        } else {
            alternative_group
        };
        for piece in pieces {
            let (part_headers, part_body, problem) = split_entity(piece);
            if let Some(problem) = problem {
                walker.problem(problem);
            }
            let default_type = if mime_type == "multipart/digest" { "message/rfc822" } else { "text/plain" };
            let part_type = ContentType::parse(part_headers.get("content-type").unwrap_or(default_type));
            walk_body(walker, &part_headers, &part_type, part_body, depth + 1, inside_original, group);
        }
        return;
    }
    let encoding = headers.get("content-transfer-encoding").unwrap_or("");
    match mime_type {
        "message/rfc822"
        | "message/global"
        | "message/partial"
        | "text/rfc822-headers"
        | "text/rfc822-header"
        | "message/rfc822-headers" => {
            let decoded = decode::transfer_decode(body, encoding);
            let original = parse_headers_only(&decoded);
            let text = if original.is_empty() { decode::charset_decode(&decoded, None) } else { String::new() };
            let kind = if mime_type.starts_with("message/rfc822") || mime_type == "message/global" {
                "message/rfc822"
            } else {
                "text/rfc822-headers"
            };
            let attached =
                if kind == "message/rfc822" && decoded.len() <= MAX_ATTACHED_BYTES { decoded } else { Vec::new() };
            walker.parts.push(Part {
                mime_type: kind.to_owned(),
                headers: original,
                text,
                inside_original: true,
                alternative_group,
                attached,
            });
        }
        _ if mime_type.starts_with("text/")
            || mime_type.starts_with("message/")
            || mime_type.is_empty()
            || mime_type == "application/json" =>
        {
            let decoded = decode::transfer_decode(body, encoding);
            let charset = content_type.param("charset");
            push_text(walker, headers, mime_type, &decoded, charset, inside_original, alternative_group);
        }
        _ => {}
    }
}

fn push_text(
    walker: &mut Walker<'_>,
    headers: &Headers,
    mime_type: &str,
    bytes: &[u8],
    charset: Option<&str>,
    inside_original: bool,
    alternative_group: Option<usize>,
) {
    let mut text = decode::charset_decode(bytes, charset);
    if mime_type == "text/html" {
        text = decode::html_to_text(&text);
    }
    let mime_type = if mime_type.is_empty() { "text/plain" } else { mime_type };
    walker.parts.push(Part {
        mime_type: mime_type.to_owned(),
        headers: headers.clone(),
        text,
        inside_original,
        alternative_group,
        attached: Vec::new(),
    });
}

/// A multipart without a boundary parameter: take the first `--token` line as the delimiter.
fn guess_boundary(body: &[u8]) -> Option<String> {
    body.split(|byte| *byte == b'\n').take(200).find_map(|line| {
        let line = trim_cr(line);
        let token = line.strip_prefix(b"--")?;
        let valid = token.len() >= 6
            && token.len() <= 70
            && token.iter().all(|byte| byte.is_ascii_graphic() || *byte == b' ')
            && !token.starts_with(b"-");
        valid.then(|| String::from_utf8_lossy(token).trim().to_owned())
    })
}

/// Splits a multipart body on `--boundary` lines; returns the bodies of the parts (without the
/// preamble and the epilogue) and whether the closing delimiter was seen. An unterminated last
/// part runs to the end of the input.
fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> (Vec<&'a [u8]>, bool) {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut pieces = Vec::new();
    let mut current_start: Option<usize> = None;
    let mut offset = 0;
    let finder = memchr::memmem::Finder::new(delimiter);
    while offset < body.len() {
        // Jump to the next occurrence of the delimiter, then check that it starts a line.
        let Some(found) = finder.find(&body[offset..]) else {
            break;
        };
        let position = offset + found;
        let at_line_start = position == 0 || body[position - 1] == b'\n';
        let line_end = memchr::memchr(b'\n', &body[position..]).map_or(body.len(), |end| position + end);
        if !at_line_start {
            offset = position + delimiter.len();
            continue;
        }
        let rest = trim_cr(&body[position + delimiter.len()..line_end]);
        let closing = rest.starts_with(b"--");
        let rest_blank = rest.iter().skip(if closing { 2 } else { 0 }).all(|byte| byte.is_ascii_whitespace());
        if !rest_blank {
            offset = line_end;
            continue;
        }
        if let Some(start) = current_start {
            let mut end = position;
            // The line break before the delimiter belongs to the delimiter.
            if end > start && body[end - 1] == b'\n' {
                end -= 1;
                if end > start && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            pieces.push(&body[start..end.max(start)]);
        }
        if closing {
            return (pieces, true);
        }
        current_start = Some((line_end + 1).min(body.len()));
        offset = line_end;
    }
    if let Some(start) = current_start {
        pieces.push(&body[start..]);
    }
    (pieces, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_found_with_bare_lf_and_crlf() {
        let raw = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\nContent-Type: text/plain\n\nworld\n--b1--\nepilogue";
        let message = parse_message(raw, &Limits::default());
        let texts: Vec<&str> = message.parts.iter().map(|part| part.text.as_str()).collect();
        assert_eq!(texts, vec!["hello", "world"]);
    }

    #[test]
    fn multipart_without_delimiters_is_read_as_text() {
        let raw = b"Content-Type: multipart/report; boundary=\"x\"\n\nFinal-Recipient: rfc822; a@b.example\n";
        let message = parse_message(raw, &Limits::default());
        assert_eq!(message.parts.len(), 1);
        assert!(message.parts[0].text.contains("Final-Recipient"));
        assert!(!message.problems.is_empty());
    }

    #[test]
    fn returned_message_headers_are_parsed() {
        let raw = b"Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nMessage-ID: <x@y>\nTo: a@b.example\n\nbody\n--b--\n";
        let message = parse_message(raw, &Limits::default());
        assert_eq!(message.parts[0].mime_type, "message/rfc822");
        assert_eq!(message.parts[0].headers.get("message-id"), Some("<x@y>"));
    }

    #[test]
    fn folded_and_encoded_headers_are_unfolded_and_decoded() {
        let raw = b"Subject: =?utf-8?B?SGVsbG8=?=\n =?utf-8?Q?_2?=\nX-A: b\n\nbody";
        let message = parse_message(raw, &Limits::default());
        assert_eq!(message.headers.get("subject"), Some("Hello 2"));
    }
}
