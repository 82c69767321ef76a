//! Quoted-printable body encoding (RFC 2045 6.7) that is safe for SMTP and DKIM.

/// Quoted-printable (RFC 2045 6.7) with CRLF line breaks: any CR, LF or CRLF in `text`
/// becomes one CRLF; lines are ≤ 76 chars with soft breaks; `=`, non-printables, trailing
/// whitespace, a `.` starting a line and `F` of a line-starting `From ` are encoded.
pub(super) fn write_quoted_printable(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = text.as_bytes();
    let mut column = 0;
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'\r' || byte == b'\n' {
            out.extend_from_slice(b"\r\n");
            column = 0;
            index += if byte == b'\r' && bytes.get(index + 1) == Some(&b'\n') { 2 } else { 1 };
            continue;
        }
        let at_line_end = matches!(bytes.get(index + 1), None | Some(b'\r' | b'\n'));
        let must_encode = |column: usize| match byte {
            b'=' => true,
            b' ' | b'\t' => at_line_end,
            b'.' => column == 0,
            b'F' => column == 0 && bytes[index..].starts_with(b"From "),
            33..=126 => false,
            _ => true,
        };
        let mut encode = must_encode(column);
        let width = if encode { 3 } else { 1 };
        let line_limit = if at_line_end { 76 } else { 75 };
        if column + width > line_limit {
            out.extend_from_slice(b"=\r\n");
            column = 0;
            encode = must_encode(0);
        }
        if encode {
            out.extend_from_slice(&[b'=', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0f)]]);
            column += 3;
        } else {
            out.push(byte);
            column += 1;
        }
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted_printable(text: &str) -> String {
        let mut out = Vec::new();
        write_quoted_printable(&mut out, text);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn quoted_printable_encodes_equals_non_ascii_and_trailing_whitespace() {
        assert_eq!(quoted_printable("a=b ü \nx\t"), "a=3Db =C3=BC=20\r\nx=09");
    }

    #[test]
    fn quoted_printable_normalises_every_line_ending_to_crlf() {
        assert_eq!(quoted_printable("a\nb\rc\r\nd\n\r"), "a\r\nb\r\nc\r\nd\r\n\r\n");
    }

    #[test]
    fn quoted_printable_protects_leading_dots_and_from_lines() {
        assert_eq!(quoted_printable(".\n.x\nFrom me\nFromage"), "=2E\r\n=2Ex\r\n=46rom me\r\nFromage");
        let long = format!("{}.{}", "a".repeat(75), "b");
        assert_eq!(quoted_printable(&long), format!("{}=\r\n=2Eb", "a".repeat(75)));
    }

    #[test]
    fn quoted_printable_lines_stay_within_76_characters() {
        let text = "ü".repeat(100) + &"x ".repeat(100) + "\n" + &"=".repeat(90);
        let encoded = quoted_printable(&text);
        for line in encoded.split("\r\n") {
            assert!(line.len() <= 76, "{line:?}");
        }
    }
}
