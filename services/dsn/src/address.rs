//! Finding and normalising e-mail addresses in free text.

/// An address found in a text, with its byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    /// Normalised: domain lower-cased.
    pub address: String,
}

fn is_local_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b".!#$%&*+-/=?^_`{|}~".contains(&byte)
}

fn is_domain_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-'
}

/// Every plausible address in `text`, in order.
pub(crate) fn find_all(text: &str) -> Vec<Found> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut search_from = 0;
    while let Some(offset) = memchr::memchr(b'@', &bytes[search_from..]) {
        let at = search_from + offset;
        search_from = at + 1;
        let mut start = at;
        while start > 0 && is_local_char(bytes[start - 1]) && at - start < 128 {
            start -= 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && is_domain_char(bytes[end]) && end - at < 256 {
            end += 1;
        }
        // Trim punctuation that belongs to the sentence, not the address.
        while start < at && matches!(bytes[start], b'.' | b'=' | b'-' | b'/' | b'|' | b'{' | b'}') {
            start += 1;
        }
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if let Some(address) = normalize(&text[start..end]) {
            found.push(Found { start, end, address });
            search_from = search_from.max(end);
        }
    }
    found
}

/// The first plausible address in `text`.
pub(crate) fn first(text: &str) -> Option<String> {
    find_all(text).into_iter().next().map(|found| found.address)
}

/// Validates one bare address (`local@domain`, optionally in `<>` or quotes) and lower-cases the
/// domain. Returns `None` for things that are not addresses.
pub(crate) fn normalize(candidate: &str) -> Option<String> {
    let candidate = candidate.trim().trim_matches(|c| c == '<' || c == '>' || c == '"' || c == '\'').trim();
    let (local, domain) = candidate.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.');
    if local.is_empty() || local.len() > 64 || domain.len() < 3 || domain.len() > 255 {
        return None;
    }
    if !local.bytes().all(is_local_char) || local.starts_with('.') || local.ends_with('.') {
        return None;
    }
    if !domain.bytes().all(is_domain_char) || !domain.contains('.') {
        return None;
    }
    if domain.split('.').any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-')) {
        return None;
    }
    Some(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// Case-insensitive address comparison.
pub(crate) fn same(left: &str, right: &str) -> bool {
    left.eq_ignore_ascii_case(right)
}

/// The domain part of an address.
pub(crate) fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_angle_brackets_and_mailto_links() {
        let found = find_all("someone@Example.COM<mailto:someone@example.com> and <other@x.example.jp>.");
        let addresses: Vec<&str> = found.iter().map(|found| found.address.as_str()).collect();
        assert_eq!(addresses, vec!["someone@example.com", "someone@example.com", "other@x.example.jp"]);
    }

    #[test]
    fn words_with_at_signs_that_are_not_addresses_are_ignored() {
        assert!(find_all("meet @ noon, foo@bar, a@b..c").is_empty());
    }

    #[test]
    fn verp_and_percent_hack_addresses_survive() {
        assert_eq!(first("to user%gol.com@q002.example.com:"), Some("user%gol.com@q002.example.com".to_owned()));
        assert_eq!(
            first("b-1-someone=example.jp@mail22.example.net"),
            Some("b-1-someone=example.jp@mail22.example.net".to_owned())
        );
    }
}
