//! SMTP vocabulary found in diagnostics: enhanced status codes, reply codes and the command a
//! rejection answered.

/// The SMTP command that a rejection answered, as far as the report tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// Rejected at connection time or after HELO/EHLO.
    Connect,
    Mail,
    Rcpt,
    Data,
}

/// Every `class.subject.detail` status code (class 2, 4 or 5) in `text`, in order.
pub(crate) fn status_codes(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut codes = Vec::new();
    let mut index = 0;
    while index + 5 <= bytes.len() {
        let byte = bytes[index];
        if matches!(byte, b'2' | b'4' | b'5') && bytes[index + 1] == b'.' {
            let before_ok = index == 0 || !(bytes[index - 1].is_ascii_digit() || bytes[index - 1] == b'.');
            if before_ok && let Some((code, length)) = parse_status_at(&bytes[index..]) {
                codes.push(code);
                index += length;
                continue;
            }
        }
        index += 1;
    }
    codes
}

/// Parses `X.Y.Z` at the start of `bytes`; Y is 0-7 (the RFC 3463 subjects), Z has 1-3 digits.
fn parse_status_at(bytes: &[u8]) -> Option<(String, usize)> {
    let subject_len = bytes[2..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    if subject_len == 0 || subject_len > 2 {
        return None;
    }
    let subject: u32 = std::str::from_utf8(&bytes[2..2 + subject_len]).ok()?.parse().ok()?;
    if subject > 7 || bytes.get(2 + subject_len) != Some(&b'.') {
        return None;
    }
    let detail_start = 3 + subject_len;
    let detail_len = bytes[detail_start..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    if detail_len == 0 || detail_len > 3 {
        return None;
    }
    let end = detail_start + detail_len;
    // "5.1.1.2" or "5.1.10.3" is a version number or an address, not a status code.
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let code = std::str::from_utf8(&bytes[..end]).ok()?.to_owned();
    Some((code, end))
}

/// The first status code at the start of a `Status:` field value ("5.0.0 (permanent failure)").
pub(crate) fn status_field(value: &str) -> Option<String> {
    status_codes(value).into_iter().next()
}

/// Whether a status is only a class (`5.0.0`, `4.0.0`), carrying no detail.
pub(crate) fn is_generic(status: &str) -> bool {
    status.ends_with(".0.0")
}

/// Picks the status of a record: the last code in the diagnostic wins over the `Status:` field,
/// unless it is only a class code and the field is more specific.
pub(crate) fn prefer_status(field: Option<&str>, diagnostic: &str) -> Option<String> {
    let in_diagnostic = status_codes(diagnostic).pop();
    match (field, in_diagnostic) {
        (Some(field), Some(found)) => {
            // A class-only code in the text does not override a specific field, and a success
            // field is not overridden by an old error quoted in the text.
            let keep_field =
                (is_generic(&found) && !is_generic(field)) || (field.starts_with('2') && !found.starts_with('2'));
            if keep_field { Some(field.to_owned()) } else { Some(found) }
        }
        (Some(field), None) => Some(field.to_owned()),
        (None, found) => found,
    }
}

/// The SMTP reply code of a diagnostic: the one right before `status` when there is one, else the
/// first three-digit 2xx/4xx/5xx number that stands like a reply code.
pub(crate) fn reply_code(diagnostic: &str, status: Option<&str>) -> Option<u16> {
    let candidates = reply_code_candidates(diagnostic);
    if let Some(status) = status
        && let Some(position) = diagnostic.rfind(status)
    {
        let paired = candidates
            .iter()
            .rev()
            .find(|(offset, _)| *offset < position && position - *offset <= 8)
            .map(|(_, code)| *code);
        if paired.is_some() {
            return paired;
        }
    }
    candidates.first().map(|(_, code)| *code)
}

fn reply_code_candidates(text: &str) -> Vec<(usize, u16)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut index = 0;
    while index + 3 <= bytes.len() {
        let window = &bytes[index..index + 3];
        let starts_ok = index == 0
            || matches!(
                bytes[index - 1],
                b' ' | b'\t' | b'\n' | b':' | b'\'' | b'"' | b'(' | b'[' | b'<' | b'#' | b'>' | b'=' | b'-' | b';'
            );
        let ends_ok = bytes
            .get(index + 3)
            .is_none_or(|next| matches!(next, b' ' | b'-' | b'\t' | b'\n' | b':' | b'\r' | b'.' | b',' | b')'));
        if starts_ok && ends_ok && matches!(window[0], b'2' | b'4' | b'5') && window[1..].iter().all(u8::is_ascii_digit)
        {
            // "550-5.7.1" and "550 5.1.1" count; a dotted "5.1" does not.
            let is_dotted = bytes.get(index + 3) == Some(&b'.') && bytes.get(index + 4).is_some_and(u8::is_ascii_digit);
            let before_dot = index > 0 && bytes[index - 1] == b'.';
            if !is_dotted && !before_dot {
                if let Ok(code) = std::str::from_utf8(window).unwrap_or("0").parse::<u16>()
                    && (200..=599).contains(&code)
                    && code % 100 <= 59
                {
                    found.push((index, code));
                }
                index += 3;
                continue;
            }
        }
        index += 1;
    }
    found
}

/// The command a rejection answered, from the phrases MTAs use to say so.
pub(crate) fn command_in(text: &str) -> Option<Command> {
    let lower = text.to_ascii_lowercase();
    // A transcript: the last command sent before the first error reply.
    if let Some(command) = transcript_command(&lower) {
        return Some(command);
    }
    const PHRASES: &[(&str, Command)] = &[
        ("in reply to rcpt to command", Command::Rcpt),
        ("in reply to rcpt to", Command::Rcpt),
        ("in reply to mail from command", Command::Mail),
        ("in reply to end of data command", Command::Data),
        ("in reply to data command", Command::Data),
        ("in reply to ehlo command", Command::Connect),
        ("in reply to helo command", Command::Connect),
        ("after rcpt to", Command::Rcpt),
        ("after rcpt command", Command::Rcpt),
        ("rcpt to response", Command::Rcpt),
        ("did not like our rcpt to", Command::Rcpt),
        ("smtp:rcpt", Command::Rcpt),
        ("[rcpt_to]", Command::Rcpt),
        ("in rcpt to", Command::Rcpt),
        ("does not like recipient", Command::Rcpt),
        ("after mail from", Command::Mail),
        ("sender was rejected", Command::Mail),
        ("[mail_from]", Command::Mail),
        ("after end of data", Command::Data),
        ("after data", Command::Data),
        ("did not like our final data", Command::Data),
        ("did not like our data", Command::Data),
        ("failed after i sent the message", Command::Data),
        ("for text command", Command::Data),
        ("[data]", Command::Data),
        ("after initial connection", Command::Connect),
        ("refused to talk to me", Command::Connect),
        ("my name was rejected", Command::Connect),
        ("after ehlo", Command::Connect),
        ("after helo", Command::Connect),
    ];
    PHRASES.iter().find(|(phrase, _)| lower.contains(phrase)).map(|(_, command)| *command)
}

fn command_word(line: &str) -> Option<Command> {
    let word = line.trim_start();
    if word.starts_with("rcpt") {
        Some(Command::Rcpt)
    } else if word.starts_with("mail") {
        Some(Command::Mail)
    } else if word.starts_with("data") || word.starts_with("bdat") || word == "." {
        Some(Command::Data)
    } else if word.starts_with("ehlo") || word.starts_with("helo") {
        Some(Command::Connect)
    } else {
        None
    }
}

/// `>>> RCPT To:<...>` / `<<< 550 ...` (Sendmail, Courier, EZweb) and `In: DATA` / `Out: 451`
/// (Postfix SMTP server) transcripts: the last command before the first 4xx/5xx reply.
fn transcript_command(lower: &str) -> Option<Command> {
    let mut last_command = None;
    for line in lower.lines() {
        let line = line.trim_start();
        if let Some(sent) = line.strip_prefix(">>>").or_else(|| line.strip_prefix("in:")) {
            if let Some(command) = command_word(sent) {
                last_command = Some(command);
            }
        } else if let Some(reply) = line.strip_prefix("<<<").or_else(|| line.strip_prefix("out:")) {
            let reply = reply.trim_start();
            if (reply.starts_with('4') || reply.starts_with('5')) && last_command.is_some() {
                return last_command;
            }
        } else if let Some(rest) = line.strip_prefix("sent <<<") {
            if let Some(command) = command_word(rest) {
                last_command = Some(command);
            }
        } else if line.starts_with("received >>>") && last_command.is_some() {
            return last_command;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_skip_ip_addresses_and_versions() {
        assert_eq!(status_codes("host 192.0.2.5 said 550 5.1.1 user (#5.5.0) v4.16.55.1"), vec!["5.1.1", "5.5.0"]);
        assert_eq!(status_codes("550 5.7.509 Access denied 5.1.351"), vec!["5.7.509", "5.1.351"]);
    }

    #[test]
    fn the_last_specific_code_of_a_diagnostic_wins_over_a_class_only_field() {
        assert_eq!(
            prefer_status(Some("5.0.0"), "5.1.0 - Unknown address error 550-'5.7.1 <a@b.c>... Access denied'"),
            Some("5.7.1".to_owned())
        );
        assert_eq!(prefer_status(Some("5.1.1"), "550 5.0.0 no"), Some("5.1.1".to_owned()));
        assert_eq!(prefer_status(None, "no code"), None);
    }

    #[test]
    fn the_reply_code_paired_with_the_status_is_chosen() {
        let text = "554 4.4.7 Message expired: unable to deliver in 840 minutes.<421 4.4.2 Connection timed out>";
        assert_eq!(reply_code(text, Some("4.4.2")), Some(421));
        assert_eq!(reply_code("host mx [192.0.2.250]: 550 5.7.0 no", None), Some(550));
    }

    #[test]
    fn commands_are_read_from_postfix_exim_and_sendmail_phrasing() {
        assert_eq!(command_in("550 x (in reply to RCPT TO command)"), Some(Command::Rcpt));
        assert_eq!(command_in("SMTP error from remote mail server after end of data:"), Some(Command::Data));
        assert_eq!(command_in(">>> MAIL From:<a@b.c>\n<<< 553 no\n>>> DATA\n<<< 503 x"), Some(Command::Mail));
    }
}
