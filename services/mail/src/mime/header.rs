//! Header field writing: folding, RFC 2047 encoded words, display names and validation of
//! caller-supplied fields. Untrusted text reaches headers only through these functions.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Mailbox, MimeError};

/// Preferred header line length (RFC 5322 2.1.1 says SHOULD ≤ 78).
const FOLD_AT: usize = 78;
/// Hard header line limit (RFC 5322 says MUST ≤ 998).
const MAX_LINE: usize = 998;
/// Bytes per encoded word: 45 bytes → 60 base64 chars → `=?UTF-8?B?` + 60 + `?=` = 72 ≤ 75.
const MAX_ENCODED_WORD_BYTES: usize = 45;
/// Headers sendwerk writes itself, or that would be dangerous to let callers set.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "dkim-signature",
    "return-path",
    "received",
    "sender",
    "reply-to",
];

/// Replaces every control character (CR, LF, TAB, NUL, DEL, C1, U+2028/9) with a space.
fn without_controls(value: &str) -> String {
    value.chars().map(|c| if c.is_control() || c == '\u{2028}' || c == '\u{2029}' { ' ' } else { c }).collect()
}

/// Writes an unstructured header (Subject) from untrusted text: control characters become
/// spaces; pure ASCII is folded at spaces, anything else becomes RFC 2047 encoded words.
pub(super) fn write_unstructured(out: &mut Vec<u8>, name: &str, value: &str) {
    let clean = without_controls(value);
    let has_long_word = clean.split(' ').any(|word| word.len() > FOLD_AT - 8);
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    if clean.is_ascii() && !clean.contains("=?") && !has_long_word {
        write_folded_ascii(out, name.len() + 1, &clean);
    } else {
        write_encoded_words(out, name.len() + 1, &clean);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes ` value` folded before whitespace so lines stay ≤ 78 where possible; returns the
/// longest line length written.
fn write_folded_ascii(out: &mut Vec<u8>, start_column: usize, value: &str) -> usize {
    let mut column = start_column;
    let mut longest = column;
    let bytes = value.as_bytes();
    let mut segment_start = 0;
    let mut first = true;
    while segment_start < bytes.len() || first {
        // A segment is a run of whitespace followed by a run of non-whitespace.
        let word_start =
            segment_start + bytes[segment_start..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        let word_end = word_start + bytes[word_start..].iter().take_while(|b| !matches!(b, b' ' | b'\t')).count();
        let segment = &bytes[segment_start..word_end];
        let separator: &[u8] = if first { b" " } else { b"" };
        let width = separator.len() + segment.len();
        if !first && word_end > word_start && column > start_column && column + width > FOLD_AT {
            out.extend_from_slice(b"\r\n");
            column = 0;
        }
        out.extend_from_slice(separator);
        out.extend_from_slice(segment);
        column += width;
        longest = longest.max(column);
        segment_start = word_end;
        first = false;
    }
    longest
}

/// Writes ` =?UTF-8?B?…?=` words (≤ 75 chars each, split on character boundaries), one per
/// line so every line is ≤ 78; returns the column after the last word.
fn write_encoded_words(out: &mut Vec<u8>, start_column: usize, value: &str) -> usize {
    let mut column = start_column;
    let mut rest = value;
    while !rest.is_empty() {
        let budget_chars = FOLD_AT.saturating_sub(column + 1 + 12);
        let budget_bytes = (budget_chars / 4 * 3).min(MAX_ENCODED_WORD_BYTES);
        if budget_bytes < 4 {
            out.extend_from_slice(b"\r\n");
            column = 0;
            continue;
        }
        let mut split = 0;
        for (offset, c) in rest.char_indices() {
            if offset + c.len_utf8() > budget_bytes {
                break;
            }
            split = offset + c.len_utf8();
        }
        let (word, tail) = rest.split_at(split);
        let encoded = BASE64.encode(word);
        out.extend_from_slice(b" =?UTF-8?B?");
        out.extend_from_slice(encoded.as_bytes());
        out.extend_from_slice(b"?=");
        column += 1 + 12 + encoded.len();
        rest = tail;
        if !rest.is_empty() {
            out.extend_from_slice(b"\r\n");
            column = 0;
        }
    }
    column
}

/// Writes `Name: display name <address>` with the display name sanitised and quoted or
/// encoded as needed.
pub(super) fn write_mailbox(out: &mut Vec<u8>, header: &str, mailbox: &Mailbox) {
    const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~ ";
    out.extend_from_slice(header.as_bytes());
    out.push(b':');
    let address = mailbox.address.as_str();
    let name = mailbox.name.as_deref().map(without_controls).unwrap_or_default();
    let name = name.trim();
    let mut column = header.len() + 1;
    if !name.is_empty() {
        if !name.is_ascii() || name.contains("=?") || name.len() > 60 {
            column = write_encoded_words(out, column, name);
        } else if name.chars().all(|c| c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(c)) {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            column += 1 + name.len();
        } else {
            let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
            out.extend_from_slice(format!(" \"{quoted}\"").as_bytes());
            column += 3 + quoted.len();
        }
        if column + address.len() + 3 > FOLD_AT {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!(" <{address}>\r\n").as_bytes());
    } else {
        out.extend_from_slice(format!(" {address}\r\n").as_bytes());
    }
}

/// Validates a caller-supplied header and appends it, folded.
pub(super) fn write_checked_header(out: &mut Vec<u8>, name: &str, value: &str) -> Result<(), MimeError> {
    let name_is_valid =
        !name.is_empty() && name.len() <= 76 && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !name_is_valid {
        return Err(MimeError::InvalidHeaderName { name: name.to_owned() });
    }
    let lowercase = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lowercase.as_str()) || lowercase.starts_with("content-") {
        return Err(MimeError::ReservedHeader { name: name.to_owned() });
    }
    let invalid = |reason| MimeError::InvalidHeaderValue { name: name.to_owned(), reason };
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(invalid("contains a line break or control character"));
    }
    if !value.is_ascii() {
        return Err(invalid("contains non-ASCII characters"));
    }
    let start = out.len();
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    let longest = write_folded_ascii(out, name.len() + 1, value);
    if longest > MAX_LINE {
        out.truncate(start);
        return Err(invalid("has a word too long for one header line (998 bytes)"));
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

pub(super) fn is_valid_message_id(message_id: &str) -> bool {
    const FORBIDDEN: &[u8] = b"<>()[]\\\",;:";
    let Some((left, right)) = message_id.split_once('@') else {
        return false;
    };
    !left.is_empty()
        && !right.is_empty()
        && message_id.len() <= 250
        && !right.contains('@')
        && message_id.bytes().all(|b| (33..=126).contains(&b) && !FORBIDDEN.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::generate_message_id;
    use sendwerk_core::EmailAddress;

    #[test]
    fn long_non_ascii_subjects_become_short_encoded_words_on_short_lines() {
        let mut out = Vec::new();
        write_unstructured(&mut out, "Subject", &"Grüße 🎉 ".repeat(20));
        let header = String::from_utf8(out).expect("ascii");
        assert!(header.is_ascii());
        for line in header.trim_end().split("\r\n") {
            assert!(line.len() <= 78, "{line:?}");
            let word = line.trim_start_matches("Subject:").trim();
            assert!(word.starts_with("=?UTF-8?B?") && word.ends_with("?=") && word.len() <= 75, "{word}");
        }
    }

    #[test]
    fn ascii_subjects_fold_at_spaces() {
        let mut out = Vec::new();
        write_unstructured(&mut out, "Subject", &"word ".repeat(30));
        let header = String::from_utf8(out).expect("ascii");
        assert!(header.split("\r\n").all(|line| line.len() <= 78), "{header}");
        assert_eq!(header.replace("\r\n", ""), format!("Subject: {}\r\n", "word ".repeat(30)).replace("\r\n", ""));
    }

    #[test]
    fn display_names_are_quoted_or_encoded() {
        let address = EmailAddress::parse("news@shop.example").expect("valid");
        let cases = [
            (Some("Shop"), "From: Shop <news@shop.example>\r\n"),
            (Some("Shop, Inc."), "From: \"Shop, Inc.\" <news@shop.example>\r\n"),
            (Some("a \"b\" \\"), "From: \"a \\\"b\\\" \\\\\" <news@shop.example>\r\n"),
            (Some("Café"), "From: =?UTF-8?B?Q2Fmw6k=?= <news@shop.example>\r\n"),
            (Some("  "), "From: news@shop.example\r\n"),
            (None, "From: news@shop.example\r\n"),
        ];
        for (name, expected) in cases {
            let mut out = Vec::new();
            let mailbox = Mailbox { name: name.map(String::from), address: address.clone() };
            write_mailbox(&mut out, "From", &mailbox);
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
    }

    #[test]
    fn reserved_or_malformed_headers_are_rejected_by_name() {
        let cases = [
            ("Bcc", "x@example.com", MimeError::ReservedHeader { name: "Bcc".into() }),
            ("content-type", "text/plain", MimeError::ReservedHeader { name: "content-type".into() }),
            ("X-A:B", "v", MimeError::InvalidHeaderName { name: "X-A:B".into() }),
            ("X A", "v", MimeError::InvalidHeaderName { name: "X A".into() }),
            (
                "X-Tag",
                "a\r\nBcc: x@y",
                MimeError::InvalidHeaderValue {
                    name: "X-Tag".into(),
                    reason: "contains a line break or control character",
                },
            ),
            (
                "X-Tag",
                "grüße",
                MimeError::InvalidHeaderValue { name: "X-Tag".into(), reason: "contains non-ASCII characters" },
            ),
        ];
        for (name, value, expected) in cases {
            assert_eq!(write_checked_header(&mut Vec::new(), name, value), Err(expected));
        }
        let mut out = Vec::new();
        write_checked_header(&mut out, "X-Campaign", "spring\tsale").expect("tab is allowed");
        assert_eq!(out, b"X-Campaign: spring\tsale\r\n");
    }

    #[test]
    fn message_ids_must_be_local_at_domain_without_specials() {
        assert!(is_valid_message_id(&generate_message_id("mail.example.com")));
        for bad in ["", "no-at", "a@b@c", "a b@c", "<a@b>", "a@b\r\nX: y"] {
            assert!(!is_valid_message_id(bad), "{bad:?}");
        }
    }
}
