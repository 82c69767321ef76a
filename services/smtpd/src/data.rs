//! Decoding of DATA content: end-of-data detection, dot-unstuffing and the size limit.
//!
//! Only `<CRLF>.<CRLF>` ends the data, and only a dot after CRLF is a stuffing dot. A bare LF is
//! kept as message content, so a client cannot smuggle a second message past a relay that reads
//! `<LF>.<LF>` differently (the "SMTP smuggling" attack). A client that ends its data with bare
//! LFs only is therefore never finished, and runs into the idle timeout.

use bytes::BytesMut;

/// Index of the first `needle` in `haystack`, eight bytes at a time (the classic SWAR memchr:
/// no per-byte branch on long lines, and no unsafe code).
pub(crate) fn find_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let repeated_needle = ONES * u64::from(needle);
    let (words, rest) = haystack.as_chunks::<8>();
    for (word_index, word) in words.iter().enumerate() {
        let xored = u64::from_le_bytes(*word) ^ repeated_needle;
        let has_zero_byte = xored.wrapping_sub(ONES) & !xored & HIGHS != 0;
        if has_zero_byte {
            let offset = word_index * 8;
            return word.iter().position(|&byte| byte == needle).map(|index| offset + index);
        }
    }
    let offset = words.len() * 8;
    rest.iter().position(|&byte| byte == needle).map(|index| offset + index)
}

/// Where the decoder stands in the line structure of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At the start of a line (after CRLF, or at the very start of the data).
    LineStart,
    /// Inside a line; `after_cr` tells whether the last byte was CR.
    MidLine { after_cr: bool },
    /// Saw `.` at a line start and held it back.
    Dot,
    /// Saw `.` CR at a line start and held both back.
    DotCr,
}

/// Decodes DATA content chunk by chunk into a message buffer of bounded size.
#[derive(Debug)]
pub(crate) struct DataDecoder {
    state: LineState,
    max_message_bytes: usize,
    overflowed: bool,
}

impl DataDecoder {
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        Self { state: LineState::LineStart, max_message_bytes, overflowed: false }
    }

    /// True once the message exceeded the limit; its content has been thrown away and the rest
    /// is only scanned for the end of the data.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Decodes `input` into `message`. Returns how many input bytes were consumed and whether
    /// the end-of-data line was seen (then the bytes after it are left unconsumed).
    pub(crate) fn decode(&mut self, input: &[u8], message: &mut BytesMut) -> (usize, bool) {
        let mut position = 0;
        while position < input.len() {
            match self.state {
                LineState::LineStart => {
                    if input[position] == b'.' {
                        self.state = LineState::Dot;
                        position += 1;
                    } else {
                        self.state = LineState::MidLine { after_cr: false };
                    }
                }
                LineState::Dot => {
                    if input[position] == b'\r' {
                        self.state = LineState::DotCr;
                        position += 1;
                    } else {
                        // A stuffing dot: dropped.
                        self.state = LineState::MidLine { after_cr: false };
                    }
                }
                LineState::DotCr => {
                    if input[position] == b'\n' {
                        return (position + 1, true);
                    }
                    // The dot was a stuffing dot; the CR is content.
                    self.append(message, b"\r");
                    self.state = LineState::MidLine { after_cr: true };
                }
                LineState::MidLine { after_cr } => {
                    let rest = &input[position..];
                    match find_byte(b'\n', rest) {
                        Some(index) => {
                            let ends_with_crlf = if index == 0 { after_cr } else { rest[index - 1] == b'\r' };
                            self.append(message, &rest[..=index]);
                            position += index + 1;
                            self.state = if ends_with_crlf {
                                LineState::LineStart
                            } else {
                                LineState::MidLine { after_cr: false }
                            };
                        }
                        None => {
                            self.append(message, rest);
                            position = input.len();
                            self.state = LineState::MidLine { after_cr: rest.last() == Some(&b'\r') };
                        }
                    }
                }
            }
        }
        (input.len(), false)
    }

    fn append(&mut self, message: &mut BytesMut, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if message.len() + bytes.len() > self.max_message_bytes {
            self.overflowed = true;
            message.clear();
            return;
        }
        message.extend_from_slice(bytes);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Feeds `input` in pieces of at most `piece_len` bytes; returns message, overflow flag and
    /// the number of bytes consumed, or None when the end was never seen.
    fn decode_in_pieces(input: &[u8], piece_len: usize, limit: usize) -> Option<(Vec<u8>, bool, usize)> {
        let mut decoder = DataDecoder::new(limit);
        let mut message = BytesMut::new();
        let mut consumed_total = 0;
        for piece in input.chunks(piece_len.max(1)) {
            let (consumed, finished) = decoder.decode(piece, &mut message);
            consumed_total += consumed;
            if finished {
                return Some((message.to_vec(), decoder.overflowed(), consumed_total));
            }
            assert_eq!(consumed, piece.len());
        }
        None
    }

    /// The straightforward line-by-line reference decoder.
    fn reference_decode(input: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut message = Vec::new();
        let mut position = 0;
        while position <= input.len() {
            let line_end =
                input[position..].windows(2).position(|pair| pair == b"\r\n").map(|index| position + index + 2)?;
            let line = &input[position..line_end];
            if line == b".\r\n" {
                return Some((message, line_end));
            }
            message.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            position = line_end;
        }
        None
    }

    fn dot_stuff(message: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut at_line_start = true;
        for (index, &byte) in message.iter().enumerate() {
            if at_line_start && byte == b'.' {
                wire.push(b'.');
            }
            wire.push(byte);
            at_line_start = byte == b'\n' && index > 0 && message[index - 1] == b'\r';
        }
        wire.extend_from_slice(b".\r\n");
        wire
    }

    #[test]
    fn find_byte_agrees_with_a_plain_search() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in 0..80 {
            let haystack: Vec<u8> = (0..len).map(|_| rng.random_range(0..4u8) * 60).collect();
            for needle in [0u8, 60, 120, 180, 255] {
                let expected = haystack.iter().position(|&byte| byte == needle);
                assert_eq!(find_byte(needle, &haystack), expected, "{haystack:?} {needle}");
            }
        }
    }

    #[test]
    fn dot_stuffed_lines_are_unstuffed_and_the_end_marker_is_found() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nNEXT COMMAND";
        for piece_len in 1..input.len() {
            let (message, overflowed, consumed) = decode_in_pieces(input, piece_len, 1024).unwrap();
            assert_eq!(message, b"Subject: x\r\n\r\n.leading dot\r\n");
            assert!(!overflowed);
            assert_eq!(&input[consumed..], b"NEXT COMMAND");
        }
    }

    #[test]
    fn an_empty_message_ends_at_the_first_line() {
        let (message, _, consumed) = decode_in_pieces(b".\r\nQUIT\r\n", 3, 10).unwrap();
        assert!(message.is_empty());
        assert_eq!(consumed, 3);
    }

    #[test]
    fn bare_lf_is_content_and_does_not_end_the_data() {
        let input = b"a\n.\nb\n..c\r\n.x\r\n.\r\n";
        let (message, _, _) = decode_in_pieces(input, 2, 1024).unwrap();
        assert_eq!(message, b"a\n.\nb\n..c\r\nx\r\n");
        assert!(decode_in_pieces(b"line\n.\n", 1, 1024).is_none());
    }

    #[test]
    fn a_stuffing_dot_before_cr_keeps_the_cr() {
        let (message, _, _) = decode_in_pieces(b".\r\r\n.\rx\r\n.\r\n", 1, 1024).unwrap();
        assert_eq!(message, b"\r\r\n\rx\r\n");
    }

    #[test]
    fn oversize_message_is_discarded_but_the_end_is_still_found() {
        let mut input = b"0123456789\r\n".repeat(10);
        input.extend_from_slice(b".\r\nRSET\r\n");
        let (message, overflowed, consumed) = decode_in_pieces(&input, 7, 50).unwrap();
        assert!(overflowed);
        assert!(message.is_empty());
        assert_eq!(&input[consumed..], b"RSET\r\n");
    }

    #[test]
    fn a_message_of_exactly_the_limit_is_accepted() {
        let (message, overflowed, _) = decode_in_pieces(b"12345678\r\n.\r\n", 4, 10).unwrap();
        assert!(!overflowed);
        assert_eq!(message, b"12345678\r\n");
    }

    #[test]
    fn random_content_round_trips_through_dot_stuffing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let alphabet = b".\r\nab";
        for _ in 0..2000 {
            let len = rng.random_range(0..40);
            let mut message: Vec<u8> = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            message.extend_from_slice(b"\r\n");
            let wire = dot_stuff(&message);
            let piece_len = rng.random_range(1..8);
            let (decoded, _, consumed) = decode_in_pieces(&wire, piece_len, 1 << 20).unwrap();
            assert_eq!(decoded, message, "wire {wire:?}");
            assert_eq!(consumed, wire.len());
        }
    }

    #[test]
    fn random_wire_bytes_decode_like_the_reference_decoder() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let alphabet = b".\r\nx";
        for _ in 0..5000 {
            let len = rng.random_range(0..30);
            let wire: Vec<u8> = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let piece_len = rng.random_range(1..6);
            let expected = reference_decode(&wire);
            let actual = decode_in_pieces(&wire, piece_len, 1 << 20).map(|(message, _, consumed)| (message, consumed));
            assert_eq!(actual, expected, "wire {wire:?}");
        }
    }
}
