use std::fmt;

/// Why a string is not an address sendwerk will send to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than 254 characters")]
    TooLong,
    #[error("address has no '@'")]
    MissingAt,
    #[error("local part (before '@') is empty")]
    EmptyLocalPart,
    #[error("local part is longer than 64 characters")]
    LocalPartTooLong,
    #[error("local part contains {0:?}, which is not allowed unquoted")]
    InvalidLocalCharacter(char),
    #[error("local part has a leading, trailing or doubled '.'")]
    MisplacedDot,
    #[error("domain is empty")]
    EmptyDomain,
    #[error("domain {0:?} is not a valid host name")]
    InvalidDomain(String),
    #[error("domain {0:?} has no top-level domain")]
    DomainWithoutDot(String),
    #[error("address contains a control character or whitespace")]
    ControlCharacter,
}

/// A destination domain: lowercase ASCII (IDNs in their punycode form), valid as a host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    pub fn parse(raw: &str) -> Result<Self, AddressError> {
        if raw.is_empty() {
            return Err(AddressError::EmptyDomain);
        }
        let ascii = idna::domain_to_ascii(raw).map_err(|_| AddressError::InvalidDomain(raw.to_owned()))?;
        let ascii = ascii.strip_suffix('.').unwrap_or(&ascii).to_owned();
        if ascii.is_empty() || ascii.len() > 253 {
            return Err(AddressError::InvalidDomain(raw.to_owned()));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        let label_is_valid = |label: &&str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !labels.iter().all(label_is_valid) {
            return Err(AddressError::InvalidDomain(raw.to_owned()));
        }
        if labels.len() < 2 {
            return Err(AddressError::DomainWithoutDot(raw.to_owned()));
        }
        let top_level = labels[labels.len() - 1];
        if top_level.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddressError::InvalidDomain(raw.to_owned()));
        }
        Ok(Self(ascii.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox `local@domain` that can go on an SMTP envelope and into a header unchanged:
/// ASCII dot-atom local part (case kept), valid domain (lowercased), no whitespace or control
/// characters, within RFC 5321's length limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    full: String,
    at: usize,
    domain: Domain,
}

const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";

impl EmailAddress {
    /// Parses an address as a user typed it: surrounding whitespace is ignored.
    pub fn parse(raw: &str) -> Result<Self, AddressError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty);
        }
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(AddressError::ControlCharacter);
        }
        if trimmed.len() > 254 {
            return Err(AddressError::TooLong);
        }
        let at = trimmed.rfind('@').ok_or(AddressError::MissingAt)?;
        let (local, domain_raw) = (&trimmed[..at], &trimmed[at + 1..]);
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if local.len() > 64 {
            return Err(AddressError::LocalPartTooLong);
        }
        if let Some(bad) = local.chars().find(|c| !(c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(*c))) {
            return Err(AddressError::InvalidLocalCharacter(bad));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(AddressError::MisplacedDot);
        }
        let domain = Domain::parse(domain_raw)?;
        let full = format!("{local}@{}", domain.as_str());
        if full.len() > 254 {
            return Err(AddressError::TooLong);
        }
        Ok(Self { full, at: local.len(), domain })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn local_part(&self) -> &str {
        &self.full[..self.at]
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_addresses_parse_and_domains_are_lowercased() {
        let address = EmailAddress::parse("  Max.Muster+news@Example.DE ").expect("valid");
        assert_eq!(address.as_str(), "Max.Muster+news@example.de");
        assert_eq!(address.local_part(), "Max.Muster+news");
        assert_eq!(address.domain().as_str(), "example.de");
    }

    #[test]
    fn internationalised_domains_become_punycode() {
        let address = EmailAddress::parse("info@bücher.de").expect("valid");
        assert_eq!(address.domain().as_str(), "xn--bcher-kva.de");
    }

    #[test]
    fn malformed_addresses_are_rejected_with_a_reason() {
        let cases = [
            ("", AddressError::Empty),
            ("no-at-sign", AddressError::MissingAt),
            ("@example.com", AddressError::EmptyLocalPart),
            ("a..b@example.com", AddressError::MisplacedDot),
            ("a b@example.com", AddressError::ControlCharacter),
            ("x@example.com\r\nBcc: victim@example.org", AddressError::ControlCharacter),
            ("x@localhost", AddressError::DomainWithoutDot("localhost".into())),
            ("x@exa_mple.com", AddressError::InvalidDomain("exa_mple.com".into())),
            ("x\"y@example.com", AddressError::InvalidLocalCharacter('"')),
            ("x@1.2.3.4", AddressError::InvalidDomain("1.2.3.4".into())),
        ];
        for (raw, expected) in cases {
            assert_eq!(EmailAddress::parse(raw), Err(expected), "{raw:?}");
        }
    }

    #[test]
    fn length_limits_are_enforced() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(EmailAddress::parse(&long_local), Err(AddressError::LocalPartTooLong));
        let long_domain = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        assert!(EmailAddress::parse(&long_domain).is_err());
    }
}
