//! Lenient decoders: transfer encodings, charsets, RFC 2047 encoded words and HTML to text.
//!
//! Everything here accepts arbitrary bytes and never fails: undecodable input is passed through
//! or replaced, because a half-readable bounce is still worth parsing.

use encoding_rs::Encoding;

/// Decodes base64, skipping every byte outside the alphabet (line breaks, garbage) and stopping at
/// padding.
pub(crate) fn base64(input: &[u8]) -> Vec<u8> {
    let mut output = Vec::with_capacity(input.len() / 4 * 3);
    let mut accumulator: u32 = 0;
    let mut num_bits = 0u32;
    for &byte in input {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                // Padding ends a group; a new group may follow in sloppy input.
                accumulator = 0;
                num_bits = 0;
                continue;
            }
            _ => continue,
        };
        accumulator = (accumulator << 6) | u32::from(value);
        num_bits += 6;
        if num_bits >= 8 {
            num_bits -= 8;
            output.push(((accumulator >> num_bits) & 0xff) as u8);
        }
    }
    output
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes quoted-printable; `=XX` escapes and soft line breaks are removed, anything invalid is
/// kept literally. With `underscore_is_space` it decodes the RFC 2047 "Q" variant.
pub(crate) fn quoted_printable(input: &[u8], underscore_is_space: bool) -> Vec<u8> {
    let mut output = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        let byte = input[index];
        if byte == b'=' {
            let next = input.get(index + 1).copied();
            let after = input.get(index + 2).copied();
            match (next, after) {
                (Some(b'\r'), Some(b'\n')) => index += 3,
                (Some(b'\n'), _) => index += 2,
                (Some(high), Some(low)) => match (hex_value(high), hex_value(low)) {
                    (Some(high), Some(low)) => {
                        output.push(high << 4 | low);
                        index += 3;
                    }
                    _ => {
                        output.push(byte);
                        index += 1;
                    }
                },
                _ => {
                    // "=" followed by trailing whitespace up to the line end is a soft break too.
                    let rest = &input[index + 1..];
                    let blanks = rest.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
                    if blanks > 0 && matches!(rest.get(blanks), None | Some(b'\r') | Some(b'\n')) {
                        index += 1 + blanks;
                    } else {
                        output.push(byte);
                        index += 1;
                    }
                }
            }
        } else if byte == b'_' && underscore_is_space {
            output.push(b' ');
            index += 1;
        } else {
            output.push(byte);
            index += 1;
        }
    }
    output
}

/// Applies a Content-Transfer-Encoding by name; unknown encodings pass through.
pub(crate) fn transfer_decode(body: &[u8], encoding: &str) -> Vec<u8> {
    let encoding = encoding.trim().to_ascii_lowercase();
    if encoding.contains("base64") {
        base64(body)
    } else if encoding.contains("quoted-printable") {
        quoted_printable(body, false)
    } else {
        body.to_vec()
    }
}

/// Decodes bytes in the named charset. Without a usable charset, valid UTF-8 is taken as is,
/// ISO-2022-JP is recognised by its escape sequences and anything else is decoded as
/// windows-1252 (which maps every byte).
pub(crate) fn charset_decode(bytes: &[u8], charset: Option<&str>) -> String {
    let label = charset.map(|name| name.trim().trim_matches('"').to_ascii_lowercase());
    let encoding = label.as_deref().and_then(|name| Encoding::for_label(name.as_bytes()));
    match encoding {
        Some(encoding) if encoding != encoding_rs::UTF_8 => {
            // A declared 7-bit charset on valid UTF-8 text is a common lie: keep the UTF-8.
            if (encoding == encoding_rs::WINDOWS_1252 || label.as_deref() == Some("us-ascii"))
                && std::str::from_utf8(bytes).is_ok()
            {
                return String::from_utf8_lossy(bytes).into_owned();
            }
            let (text, _, _) = encoding.decode(bytes);
            text.into_owned()
        }
        _ => guess_decode(bytes),
    }
}

fn guess_decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            if memchr::memmem::find(bytes, b"\x1b$B").is_some() || memchr::memmem::find(bytes, b"\x1b$@").is_some() {
                let (decoded, _, _) = encoding_rs::ISO_2022_JP.decode(bytes);
                decoded.into_owned()
            } else {
                text.to_owned()
            }
        }
        Err(_) => {
            let (decoded, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            decoded.into_owned()
        }
    }
}

/// Decodes RFC 2047 encoded words (`=?charset?B?...?=`) in a header value. Whitespace between
/// two adjacent encoded words is dropped, as the RFC requires.
pub(crate) fn encoded_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_owned();
    }
    let mut output = String::with_capacity(value.len());
    let mut rest = value;
    let mut pending_blank = String::new();
    let mut previous_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match decode_one_word(candidate) {
            Some((decoded, consumed)) => {
                if !(previous_was_word && before.trim().is_empty()) {
                    output.push_str(&pending_blank);
                    output.push_str(before);
                }
                pending_blank.clear();
                output.push_str(&decoded);
                rest = &candidate[consumed..];
                previous_was_word = true;
            }
            None => {
                output.push_str(&pending_blank);
                pending_blank.clear();
                output.push_str(before);
                output.push_str("=?");
                rest = &candidate[2..];
                previous_was_word = false;
            }
        }
        let blanks = rest.len() - rest.trim_start().len();
        if previous_was_word && blanks > 0 {
            pending_blank.push_str(&rest[..blanks]);
            rest = &rest[blanks..];
        }
    }
    output.push_str(&pending_blank);
    output.push_str(rest);
    output
}

/// Decodes one `=?charset?enc?text?=` at the start of `word`; returns the text and bytes used.
fn decode_one_word(word: &str) -> Option<(String, usize)> {
    let body = word.strip_prefix("=?")?;
    let charset_end = body.find('?')?;
    let charset = &body[..charset_end];
    let after_charset = &body[charset_end + 1..];
    let mut encoding_chars = after_charset.chars();
    let encoding = encoding_chars.next()?;
    if !encoding.is_ascii() || encoding_chars.next()? != '?' {
        return None;
    }
    let payload_and_rest = &after_charset[2..];
    let payload_end = payload_and_rest.find("?=")?;
    let payload = &payload_and_rest[..payload_end];
    if payload.contains(char::is_whitespace) || charset.len() > 40 {
        return None;
    }
    let bytes = match encoding {
        'B' | 'b' => base64(payload.as_bytes()),
        'Q' | 'q' => quoted_printable(payload.as_bytes(), true),
        _ => return None,
    };
    // RFC 2231 language suffix: "utf-8*ja".
    let charset = charset.split('*').next().unwrap_or(charset);
    let consumed = 2 + charset_end + 1 + 2 + payload_end + 2;
    Some((charset_decode(&bytes, Some(charset)), consumed))
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
pub(crate) fn prefix(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Turns HTML into plain text: tags dropped, block elements become line breaks, the common
/// entities decoded, `<style>`/`<script>`/`<head>` content removed.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut output = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut index = 0;
    let bytes = html.as_bytes();
    while index < bytes.len() {
        if bytes[index] == b'<' {
            let Some(tag_len) = lower[index..].find('>') else {
                break;
            };
            let tag = &lower[index + 1..index + tag_len];
            let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            index += tag_len + 1;
            if matches!(name.as_str(), "style" | "script" | "head" | "title") && !tag.starts_with('/') {
                let closing = format!("</{name}");
                match lower[index..].find(&closing) {
                    Some(end) => {
                        index += end;
                        if let Some(close) = lower[index..].find('>') {
                            index += close + 1;
                        }
                    }
                    None => break,
                }
                continue;
            }
            if matches!(name.as_str(), "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "table" | "td" | "pre") {
                output.push('\n');
            }
            continue;
        }
        let next_tag = lower[index..].find('<').map_or(bytes.len(), |offset| index + offset);
        output.push_str(&decode_entities(&html[index..next_tag]));
        index = next_tag;
    }
    output
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        output.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let end = candidate.find(';').filter(|end| *end <= 10);
        let decoded = end.and_then(|end| entity_char(&candidate[1..end]).map(|c| (c, end + 1)));
        match decoded {
            Some((character, consumed)) => {
                output.push(character);
                rest = &candidate[consumed..];
            }
            None => {
                output.push('&');
                rest = &candidate[1..];
            }
        }
    }
    output.push_str(rest);
    output
}

fn entity_char(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_ignores_line_breaks_and_garbage() {
        assert_eq!(base64(b"aGVs\r\nbG8=\n"), b"hello");
        assert_eq!(base64(b"aGVsbG8"), b"hello");
    }

    #[test]
    fn quoted_printable_joins_soft_breaks_and_keeps_broken_escapes() {
        assert_eq!(quoted_printable(b"a=3Db=\r\nc =ZZ", false), b"a=bc =ZZ");
    }

    #[test]
    fn encoded_words_are_decoded_and_adjacent_words_joined() {
        assert_eq!(encoded_words("=?UTF-8?B?SGVsbG8=?= =?utf-8?Q?_cat?= x"), "Hello cat x");
        assert_eq!(
            encoded_words("=?iso-2022-jp?B?VW5kZWxpdmVyYWJsZTogGyRCJUslYyE8JXMbKEI=?="),
            "Undeliverable: ニャーン"
        );
    }

    #[test]
    fn html_loses_tags_and_styles_but_keeps_text() {
        let text = html_to_text("<html><head><style>p{}</style></head><p>a &lt;b&gt;</p><br>c&#39;d</html>");
        assert_eq!(text.split_whitespace().collect::<Vec<_>>(), vec!["a", "<b>", "c'd"]);
    }

    #[test]
    fn unknown_charsets_fall_back_to_utf8() {
        assert_eq!(charset_decode("ü".as_bytes(), Some("UFT-8")), "ü");
        assert_eq!(charset_decode(b"\xfc", Some("iso-8859-1")), "ü");
    }
}
