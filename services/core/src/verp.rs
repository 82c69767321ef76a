//! VERP return paths: every message's envelope sender names its mailing and recipient row and
//! carries an HMAC, `b-<mailing>-<id>-<mac>@<bounce domain>`, so a bounce can be matched to its
//! recipient (by the recipients' key, mailing and id) and a forged or guessed address is refused.
//! Keys rotate: the current key signs, previous keys still verify. The same token travels in the
//! `X-Sendwerk-Ref` header for reports that come back without the envelope.
//!
//! Tokens of the earlier form, `<id>-<mac>` without the mailing, still verify: reports of
//! messages sent before the change keep coming back for days.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Domain, MailingId, RecipientId};

type HmacSha256 = Hmac<Sha256>;

/// Secrets shorter than this are refused.
pub const MIN_SECRET_BYTES: usize = 16;
const MAC_BYTES: usize = 10;
const PREFIX: &str = "b-";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a VERP configuration is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    #[error("the bounce secret must be at least {MIN_SECRET_BYTES} bytes")]
    SecretTooShort,
}

/// What a verified VERP token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerpRef {
    pub recipient: RecipientId,
    /// The recipient's mailing; `None` for a token of the earlier form, which did not carry it.
    pub mailing: Option<MailingId>,
}

/// Signs and verifies VERP tokens for one bounce domain.
#[derive(Clone)]
pub struct Verp {
    domain: Domain,
    /// The current key first, then previous keys that still verify.
    keys: Vec<Vec<u8>>,
}

impl fmt::Debug for Verp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verp").field("domain", &self.domain).field("num_keys", &self.keys.len()).finish()
    }
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

impl Verp {
    pub fn new(domain: Domain, current_secret: &[u8], previous_secrets: &[&[u8]]) -> Result<Self, VerpError> {
        let mut keys = vec![current_secret.to_vec()];
        keys.extend(previous_secrets.iter().map(|secret| secret.to_vec()));
        if keys.iter().any(|key| key.len() < MIN_SECRET_BYTES) {
            return Err(VerpError::SecretTooShort);
        }
        Ok(Self { domain, keys })
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The MAC of `<mailing>:<id>`, or of `<id>` alone for a token of the earlier form.
    fn mac(key: &[u8], mailing: Option<i64>, id: i64) -> String {
        // HMAC accepts keys of any length, so this cannot fail; an empty MAC never verifies.
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else { return String::new() };
        mac.update(b"sendwerk-verp:");
        if let Some(mailing) = mailing {
            mac.update(format!("{mailing}:").as_bytes());
        }
        mac.update(id.to_string().as_bytes());
        base32(&mac.finalize().into_bytes()[..MAC_BYTES])
    }

    /// `<mailing>-<id>-<mac>`, signed with the current key.
    pub fn token(&self, mailing: MailingId, recipient: RecipientId) -> String {
        let (mailing, id) = (mailing.get(), recipient.get());
        format!("{mailing}-{id}-{}", Self::mac(&self.keys[0], Some(mailing), id))
    }

    /// `<id>-<mac>`: the earlier form, without the mailing, signed with the current key. Only
    /// verified now; made for tests of reports that come back for messages sent before.
    pub fn legacy_token(&self, recipient: RecipientId) -> String {
        format!("{}-{}", recipient.get(), Self::mac(&self.keys[0], None, recipient.get()))
    }

    /// The envelope sender for a recipient's message.
    pub fn return_path(&self, mailing: MailingId, recipient: RecipientId) -> String {
        self.return_path_of(&self.token(mailing, recipient))
    }

    /// The envelope sender carrying `token` (from [`Verp::token`]): for a sender that also puts
    /// the token in a header, so the MAC is computed once.
    pub fn return_path_of(&self, token: &str) -> String {
        format!("{PREFIX}{token}@{}", self.domain)
    }

    /// The mailing and recipient a token names, when any key's MAC matches (case does not
    /// matter: some MTAs lowercase local parts).
    pub fn verify_token(&self, token: &str) -> Option<VerpRef> {
        let number = |text: &str| -> Option<i64> {
            if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse().ok()
        };
        let mut parts = token.trim().split('-');
        let (first, second, third) = (parts.next()?, parts.next()?, parts.next());
        if parts.next().is_some() {
            return None;
        }
        let (mailing, id, mac_text) = match third {
            Some(mac_text) => (Some(number(first)?), number(second)?, mac_text),
            None => (None, number(first)?, second),
        };
        let given = mac_text.to_ascii_lowercase();
        let matches = self.keys.iter().any(|key| {
            let expected = Self::mac(key, mailing, id);
            !expected.is_empty() && constant_time_eq(expected.as_bytes(), given.as_bytes())
        });
        matches.then(|| VerpRef { recipient: RecipientId::new(id), mailing: mailing.map(MailingId::new) })
    }

    /// What a VERP address (`b-<mailing>-<id>-<mac>@<our bounce domain>`, or the earlier
    /// `b-<id>-<mac>@…`) names, if it is valid and signed by one of our keys.
    pub fn verify_address(&self, address: &str) -> Option<VerpRef> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = address.rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(self.domain.as_str()) {
            return None;
        }
        let token =
            local.get(..PREFIX.len()).filter(|p| p.eq_ignore_ascii_case(PREFIX)).map(|_| &local[PREFIX.len()..])?;
        self.verify_token(token)
    }
}

/// Whether two secrets are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verp(secret: &[u8], previous: &[&[u8]]) -> Verp {
        Verp::new(Domain::parse("bounces.example.com").expect("domain"), secret, previous).expect("valid")
    }

    fn named(mailing: i64, id: i64) -> Option<VerpRef> {
        Some(VerpRef { recipient: RecipientId::new(id), mailing: Some(MailingId::new(mailing)) })
    }

    #[test]
    fn a_return_path_verifies_to_its_mailing_and_recipient() {
        let verp = verp(b"0123456789abcdef-current", &[]);
        let address = verp.return_path(MailingId::new(12), RecipientId::new(4711));
        assert!(address.starts_with("b-12-4711-") && address.ends_with("@bounces.example.com"), "{address}");
        assert!(address.split('@').next().is_some_and(|local| local.len() <= 64), "a valid local part");
        assert_eq!(verp.verify_address(&address), named(12, 4711));
        assert_eq!(verp.verify_address(&address.to_uppercase()), named(12, 4711), "case-insensitive");
        assert_eq!(verp.verify_address(&format!("<{address}>")), named(12, 4711));
        let token = verp.token(MailingId::new(12), RecipientId::new(4711));
        assert_eq!(verp.verify_token(&token), named(12, 4711));
    }

    #[test]
    fn a_token_of_the_earlier_form_names_the_recipient_alone() {
        let verp = verp(b"0123456789abcdef-current", &[]);
        let token = verp.legacy_token(RecipientId::new(4711));
        assert!(token.starts_with("4711-"), "{token}");
        let expected = Some(VerpRef { recipient: RecipientId::new(4711), mailing: None });
        assert_eq!(verp.verify_token(&token), expected);
        assert_eq!(verp.verify_address(&verp.return_path_of(&token)), expected);
        // Its MAC does not verify the recipient under any mailing, nor the reverse.
        let (_, mac) = token.split_once('-').expect("two parts");
        assert_eq!(verp.verify_token(&format!("12-4711-{mac}")), None);
        let current = verp.token(MailingId::new(12), RecipientId::new(4711));
        assert_eq!(verp.verify_token(&current.replacen("12-", "", 1)), None);
    }

    #[test]
    fn forged_tampered_and_foreign_addresses_are_refused() {
        let verp = verp(b"0123456789abcdef-current", &[]);
        let address = verp.return_path(MailingId::new(12), RecipientId::new(4711));
        let tampered = address.replacen("4711", "4712", 1);
        assert_eq!(verp.verify_address(&tampered), None, "another id with the same mac");
        let other_mailing = address.replacen("b-12-", "b-13-", 1);
        assert_eq!(verp.verify_address(&other_mailing), None, "another mailing with the same mac");
        let other_domain = address.replace("bounces.example.com", "evil.example");
        assert_eq!(verp.verify_address(&other_domain), None);
        for forged in [
            "b-4711-aaaaaaaaaaaaaaaa@bounces.example.com",
            "b-12-4711-aaaaaaaaaaaaaaaa@bounces.example.com",
            "b-1-2-3-aaaaaaaaaaaaaaaa@bounces.example.com",
            "postmaster@bounces.example.com",
            "b-@bounces.example.com",
            "b-x-y@bounces.example.com",
            "b--4711-aaaaaaaaaaaaaaaa@bounces.example.com",
            "",
        ] {
            assert_eq!(verp.verify_address(forged), None, "{forged}");
        }
        let other_key =
            Verp::new(Domain::parse("bounces.example.com").expect("domain"), b"another-secret-0123456789", &[])
                .expect("valid");
        assert_eq!(other_key.verify_address(&address), None);
    }

    #[test]
    fn a_previous_key_still_verifies_after_rotation() {
        let old = verp(b"old-secret-0123456789", &[]);
        let address = old.return_path(MailingId::new(3), RecipientId::new(42));
        let rotated = verp(b"new-secret-0123456789", &[b"old-secret-0123456789"]);
        assert_eq!(rotated.verify_address(&address), named(3, 42));
        assert_ne!(rotated.return_path(MailingId::new(3), RecipientId::new(42)), address, "the new key signs");
    }

    #[test]
    fn short_secrets_are_refused() {
        let error = Verp::new(Domain::parse("b.example.com").expect("domain"), b"short", &[]).expect_err("too short");
        assert_eq!(error, VerpError::SecretTooShort);
    }
}
