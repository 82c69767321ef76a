//! The human-readable notice of a report and the original message returned with it.
//!
//! Most non-standard bounces are one text part: a notice, then a separator line, then the returned
//! message. This module finds the notice text of a parsed message, cuts it at the separator and
//! reads the returned headers after it.

use std::sync::LazyLock;

use regex::Regex;

use crate::mime::{self, Headers, Message, Part};
use crate::patterns;

/// Separator lines after which MTAs paste the returned message (matched case-insensitively
/// anywhere in a line).
const ORIGINAL_MARKERS: &[&str] = &[
    "this is a copy of the message",
    "below this line is a copy of the message",
    "enclosed is a copy of the message",
    "----- original message -----",
    "-----original message-----",
    "original message follows",
    "header of the original message is following",
    "------- returned message --------",
    "----- unsent message follows -----",
    "----- message header follows -----",
    "message headers follow",
    "original message headers:",
    "included is a copy of the message header",
    "-------original message",
    "-------original mail info",
    "below is a copy of the original message",
    "the original message headers are included",
    "original message header follows",
    "the headers of your message were",
    "content-type: message/rfc822",
    "content-type: text/rfc822-headers",
    "------ original message header ------",
    "--- original message ---",
    "start of returned message",
    "returned message follows",
    "unsent message below",
];

/// Header names that start a pasted original message when they follow a blank line.
const ORIGINAL_HEADER_STARTS: &[&str] =
    &["return-path:", "received:", "message-id:", "dkim-signature:", "domainkey-signature:", "x-received:"];

/// The notice: text parts outside the returned message, plain text preferred over HTML, cut at
/// the returned-message separator. Also returns the headers found after the separator.
pub(crate) fn notice_and_pasted_original(message: &Message) -> (String, Option<Headers>) {
    let mut notice = String::new();
    let mut pasted_original = None;
    let plain_groups: Vec<usize> = message
        .parts
        .iter()
        .filter(|part| part.mime_type == "text/plain")
        .filter_map(|part| part.alternative_group)
        .collect();
    let has_plain = message.parts.iter().any(|part| is_notice_part(part) && part.mime_type == "text/plain");
    for part in &message.parts {
        if !is_notice_part(part) {
            continue;
        }
        if part.mime_type == "text/html" {
            let plain_sibling = part.alternative_group.is_some_and(|group| plain_groups.contains(&group));
            if plain_sibling || (has_plain && part.alternative_group.is_none()) {
                continue;
            }
        }
        if looks_like_header_block(&part.text) && !notice.is_empty() {
            // A text/plain part holding only the returned headers (Messaging Server).
            if pasted_original.is_none() {
                pasted_original = Some(mime::parse_headers_only(part.text.trim_start().as_bytes()));
            }
            continue;
        }
        let (before, after) = cut_at_original(&part.text);
        if let Some(after) = after
            && pasted_original.is_none()
        {
            let headers = mime::parse_headers_only(after.trim_start().as_bytes());
            if !headers.is_empty() {
                pasted_original = Some(headers);
            }
        }
        if !notice.is_empty() {
            notice.push('\n');
        }
        notice.push_str(before);
        if notice.len() > 256 * 1024 {
            break;
        }
    }
    (notice, pasted_original)
}

fn is_notice_part(part: &Part) -> bool {
    !part.inside_original
        && matches!(part.mime_type.as_str(), "text/plain" | "text/html" | "text/enriched" | "text/x-aol" | "text/")
}

/// Whether a text starts with a block of at least three header fields of a message.
fn looks_like_header_block(text: &str) -> bool {
    let mut num_fields = 0;
    let mut has_message_header = false;
    for line in text.trim_start().lines().take(6) {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        let Some((name, _)) = lower.split_once(':') else {
            return false;
        };
        if name.is_empty() || name.contains(' ') {
            return false;
        }
        has_message_header |= ORIGINAL_HEADER_STARTS.iter().any(|start| lower.starts_with(start))
            || lower.starts_with("from:")
            || lower.starts_with("date:");
        num_fields += 1;
    }
    num_fields >= 3 && has_message_header
}

static ANY_MARKER: LazyLock<Option<Regex>> = LazyLock::new(|| patterns::any_of(ORIGINAL_MARKERS));

/// Splits a text part at the first returned-message separator.
pub(crate) fn cut_at_original(text: &str) -> (&str, Option<&str>) {
    // The first separator line, found in one pass.
    let marker_line_start = ANY_MARKER
        .as_ref()
        .and_then(|regex| regex.find(text))
        .map(|found| text[..found.start()].rfind('\n').map_or(0, |newline| newline + 1));
    let mut offset = 0;
    let mut previous_blank = false;
    for (num_lines, line) in text.split_inclusive('\n').enumerate() {
        if marker_line_start == Some(offset) {
            return (&text[..offset], Some(&text[offset + line.len()..]));
        }
        if marker_line_start.is_some_and(|start| offset > start) {
            break;
        }
        let trimmed = line.trim();
        // A pasted header block without a separator: "Return-Path:" or "Received:" at column 0
        // after a blank line, followed by another header line.
        let starts_header = trimmed.len() >= 8
            && ORIGINAL_HEADER_STARTS
                .iter()
                .any(|start| trimmed.get(..start.len()).is_some_and(|head| head.eq_ignore_ascii_case(start)));
        if previous_blank && num_lines > 2 && starts_header {
            let rest = &text[offset..];
            if looks_like_header_block(rest) {
                return (&text[..offset], Some(rest));
            }
        }
        previous_blank = trimmed.is_empty();
        offset += line.len();
    }
    (text, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_is_cut_at_the_qmail_separator() {
        let text =
            "<a@b.example>:\nno mailbox here\n\n--- Below this line is a copy of the message.\n\nTo: x@y.example\n";
        let (before, after) = cut_at_original(text);
        assert!(before.contains("no mailbox"));
        assert!(after.is_some_and(|after| after.contains("To: x@y.example")));
    }

    #[test]
    fn a_pasted_header_block_without_separator_is_recognised() {
        let text = "Unknown user: a@b.example\n\n\nReturn-Path: <s@c.example>\nReceived: from x\nMessage-ID: <1@c>\n";
        let (before, after) = cut_at_original(text);
        assert_eq!(before.trim(), "Unknown user: a@b.example");
        assert!(after.is_some());
    }
}
