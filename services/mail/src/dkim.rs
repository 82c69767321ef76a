//! DKIM signing (RFC 6376, relaxed/relaxed, sha256) with mail-auth 0.13.3 on ring.
//!
//! Keys are parsed once into [`DkimSigners`]; signing a message adds one `DKIM-Signature`
//! header per key of the signing domain (an RSA and an Ed25519 key give a dual signature).
//! Private keys never appear in `Debug` output or errors.
//!
//! mail-auth 0.13.3 hashes a relaxed body wrongly when it ends in whitespace-only lines
//! (they are kept as empty lines instead of being dropped). [`DkimSigners::sign`] therefore
//! normalises the message first (CRLF line endings, trailing blank and whitespace-only lines
//! removed, body ending in exactly one CRLF) and returns those normalised bytes, so what was
//! signed is exactly what goes out. It also sometimes folds the header right before the
//! final `;` after `b=`, which dkimpy (and other verifiers) then hash differently; that fold
//! is removed (see `remove_fold_before_final_semicolon`). Both are covered by the dkimpy
//! test in `tests/dkim_independent_verifier.rs`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
use sendwerk_core::Domain;

/// Headers covered by every signature. Absent ones are signed as absent (mail-auth adds
/// them to `h=`), so nobody can add them later without breaking the signature.
const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The key type of a DKIM key; configured as `"rsa"` or `"ed25519"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    /// rsa-sha256; the key must have at least 2048 bits.
    Rsa,
    /// ed25519-sha256 (RFC 8463).
    Ed25519,
}

/// One signing key. The PEM may be PKCS#8 (`BEGIN PRIVATE KEY`) for both algorithms or
/// PKCS#1 (`BEGIN RSA PRIVATE KEY`) for RSA. `Debug` redacts the key.
#[derive(Clone, serde::Deserialize)]
pub struct DkimKeyConfig {
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    pub private_key_pem: String,
}

impl fmt::Debug for DkimKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKeyConfig")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// Why keys could not be loaded or a message could not be signed. Never contains key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkimError {
    #[error("dkim key for domain {domain:?} selector {selector:?}: {reason}")]
    InvalidKey { domain: String, selector: String, reason: String },
    #[error("message cannot be signed: {0}")]
    MalformedMessage(&'static str),
    #[error("dkim signing for domain {domain} selector {selector} failed: {reason}")]
    SigningFailed { domain: String, selector: String, reason: String },
}

enum KeySigner {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

struct SelectorSigner {
    selector: String,
    algorithm: DkimAlgorithm,
    signer: KeySigner,
}

/// All DKIM keys, parsed once, by signing domain. `Send + Sync`; share it behind an `Arc`.
pub struct DkimSigners {
    by_domain: HashMap<String, Vec<SelectorSigner>>,
}

impl fmt::Debug for DkimSigners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<String> = self
            .by_domain
            .iter()
            .flat_map(|(domain, signers)| {
                signers.iter().map(move |s| format!("{}._domainkey.{domain} ({:?})", s.selector, s.algorithm))
            })
            .collect();
        keys.sort();
        f.debug_struct("DkimSigners").field("keys", &keys).finish()
    }
}

impl DkimSigners {
    /// Parses every key. Fails on the first invalid entry, naming its domain and selector.
    pub fn from_configs(configs: &[DkimKeyConfig]) -> Result<Self, DkimError> {
        let mut by_domain: HashMap<String, Vec<SelectorSigner>> = HashMap::new();
        for config in configs {
            let invalid = |reason: String| DkimError::InvalidKey {
                domain: config.domain.clone(),
                selector: config.selector.clone(),
                reason,
            };
            let domain = Domain::parse(&config.domain).map_err(|error| invalid(format!("invalid domain: {error}")))?;
            if !is_valid_selector(&config.selector) {
                return Err(invalid("selector must be dot-separated labels of letters, digits, '-' or '_'".into()));
            }
            let signers = by_domain.entry(domain.as_str().to_owned()).or_default();
            if signers.iter().any(|s| s.selector.eq_ignore_ascii_case(&config.selector)) {
                return Err(invalid("selector is configured twice for this domain".into()));
            }
            let key_der = parse_pem(&config.private_key_pem, config.algorithm).map_err(invalid)?;
            let signer = build_signer(domain.as_str(), &config.selector, config.algorithm, key_der).map_err(invalid)?;
            signers.push(SelectorSigner { selector: config.selector.clone(), algorithm: config.algorithm, signer });
        }
        Ok(Self { by_domain })
    }

    /// Signs `message` with every key of `signing_domain`. Returns `None` if there is no key
    /// for that domain, else the normalised message with the `DKIM-Signature` headers
    /// prepended (in configuration order).
    pub fn sign(&self, signing_domain: &Domain, message: &[u8]) -> Result<Option<Vec<u8>>, DkimError> {
        let Some(signers) = self.by_domain.get(signing_domain.as_str()) else {
            return Ok(None);
        };
        let normalised = normalise_message(message)?;
        let mut signed = Vec::with_capacity(normalised.len() + 700 * signers.len());
        for entry in signers {
            let result = match &entry.signer {
                KeySigner::Rsa(signer) => signer.sign(&normalised),
                KeySigner::Ed25519(signer) => signer.sign(&normalised),
            };
            let signature = result.map_err(|error| DkimError::SigningFailed {
                domain: signing_domain.to_string(),
                selector: entry.selector.clone(),
                reason: error.to_string(),
            })?;
            let header_start = signed.len();
            signature.write_header(&mut signed);
            remove_fold_before_final_semicolon(&mut signed, header_start);
        }
        signed.extend_from_slice(&normalised);
        Ok(Some(signed))
    }
}

/// mail-auth 0.13.3 folds after the `b=` value when it ends exactly at the line limit,
/// writing `…b=<sig>\r\n\t;`. It signed `b=;`, and RFC 6376 3.7 deletes whitespace around
/// the value, but dkimpy (and other verifiers) keep that fold and see `b= ;`, so the
/// signature fails there. Dropping the fold makes every verifier hash `b=;`.
fn remove_fold_before_final_semicolon(buffer: &mut Vec<u8>, header_start: usize) {
    if !buffer[header_start..].ends_with(b";\r\n") {
        return;
    }
    let before_semicolon = buffer.len() - 3;
    let value_end = buffer[header_start..before_semicolon]
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(before_semicolon, |offset| header_start + offset + 1);
    if value_end < before_semicolon {
        buffer.drain(value_end..before_semicolon);
    }
}

fn is_valid_selector(selector: &str) -> bool {
    selector.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Decodes the PEM into the DER form mail-auth wants; errors say what is wrong, not what
/// the key is.
fn parse_pem(pem: &str, algorithm: DkimAlgorithm) -> Result<PrivateKeyDer<'static>, String> {
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err("encrypted private keys are not supported; store the key unencrypted".into());
    }
    let pem_error = |error: rustls::pki_types::pem::Error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no \"BEGIN PRIVATE KEY\" (PKCS#8) or, for RSA, \"BEGIN RSA PRIVATE KEY\" (PKCS#1) block found".to_owned()
        }
        _ => "the PEM block is malformed (truncated or not valid base64)".to_owned(),
    };
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        if algorithm != DkimAlgorithm::Rsa {
            return Err("a PKCS#1 RSA key was given for an ed25519 selector".into());
        }
        return PrivatePkcs1KeyDer::from_pem_slice(pem.as_bytes()).map(PrivateKeyDer::Pkcs1).map_err(pem_error);
    }
    PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map(PrivateKeyDer::Pkcs8).map_err(pem_error)
}

fn build_signer(
    domain: &str,
    selector: &str,
    algorithm: DkimAlgorithm,
    key_der: PrivateKeyDer<'static>,
) -> Result<KeySigner, String> {
    let rejected = |error: mail_auth::Error| {
        let algorithm_name = match algorithm {
            DkimAlgorithm::Rsa => "RSA (at least 2048 bits)",
            DkimAlgorithm::Ed25519 => "Ed25519",
        };
        format!("the private key is not a usable {algorithm_name} key ({error})")
    };
    Ok(match algorithm {
        DkimAlgorithm::Rsa => {
            let key = RsaKey::<Sha256>::from_key_der(key_der).map_err(rejected)?;
            KeySigner::Rsa(configure(DkimSigner::from_key(key), domain, selector))
        }
        DkimAlgorithm::Ed25519 => {
            let PrivateKeyDer::Pkcs8(pkcs8) = key_der else {
                return Err("Ed25519 keys must be PKCS#8 (\"BEGIN PRIVATE KEY\")".into());
            };
            // openssl writes PKCS#8 v1 (no public key), which ring's strict parser refuses.
            let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der()).map_err(rejected)?;
            KeySigner::Ed25519(configure(DkimSigner::from_key(key), domain, selector))
        }
    })
}

fn configure<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T>,
    domain: &str,
    selector: &str,
) -> DkimSigner<T, Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// Returns the message with CRLF line endings and its body ending in exactly one CRLF after
/// the last line that has a non-whitespace character (an all-blank body becomes empty).
/// Borrowed when nothing needs to change, which is the case for `mime::MessageTemplate`
/// output without trailing blank lines.
fn normalise_message(message: &[u8]) -> Result<Cow<'_, [u8]>, DkimError> {
    let message = normalise_line_endings(message);
    let separator = message
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or(DkimError::MalformedMessage("no blank line between header and body"))?;
    if separator == 0 {
        return Err(DkimError::MalformedMessage("the message has no header"));
    }
    let body_start = separator + 4;
    let body = &message[body_start..];
    let content_end = last_content_line_end(body);
    let is_normal = match content_end {
        Some(end) => body.len() == end + 2 && body.ends_with(b"\r\n"),
        None => body.is_empty(),
    };
    if is_normal {
        return Ok(message);
    }
    let mut normalised = Vec::with_capacity(body_start + content_end.unwrap_or(0) + 2);
    normalised.extend_from_slice(&message[..body_start]);
    if let Some(end) = content_end {
        normalised.extend_from_slice(&body[..end]);
        normalised.extend_from_slice(b"\r\n");
    }
    Ok(Cow::Owned(normalised))
}

/// The offset just past the last non-whitespace line's content (before its CRLF, if any).
fn last_content_line_end(body: &[u8]) -> Option<usize> {
    let last_non_space = body.iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))?;
    let line_end = body[last_non_space..]
        .windows(2)
        .position(|window| window == b"\r\n")
        .map_or(body.len(), |offset| last_non_space + offset);
    Some(line_end)
}

/// Turns every bare CR or LF into CRLF; borrows when there is none.
fn normalise_line_endings(message: &[u8]) -> Cow<'_, [u8]> {
    let has_bare = message.iter().enumerate().any(|(index, &b)| match b {
        b'\r' => message.get(index + 1) != Some(&b'\n'),
        b'\n' => index == 0 || message[index - 1] != b'\r',
        _ => false,
    });
    if !has_bare {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    let mut index = 0;
    while let Some(&byte) = message.get(index) {
        match byte {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                let is_pair = byte == b'\r' && message.get(index + 1) == Some(&b'\n');
                index += if is_pair { 2 } else { 1 };
            }
            _ => {
                out.push(byte);
                index += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PEM: &str = include_str!("../../../tests/fixtures/dkim/rsa.pem");
    const ED25519_PEM: &str = include_str!("../../../tests/fixtures/dkim/ed25519.pem");

    fn config(selector: &str, algorithm: DkimAlgorithm, pem: &str) -> DkimKeyConfig {
        DkimKeyConfig {
            domain: "Example.COM".into(),
            selector: selector.into(),
            algorithm,
            private_key_pem: pem.into(),
        }
    }

    fn domain(raw: &str) -> Domain {
        Domain::parse(raw).expect("valid domain")
    }

    const MESSAGE: &[u8] = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn config_deserialises_with_lowercase_algorithm_and_debug_redacts_the_key() {
        let json = serde_json::json!({
            "domain": "example.com", "selector": "s1", "algorithm": "ed25519",
            "private_key_pem": ED25519_PEM,
        });
        let parsed: DkimKeyConfig = serde_json::from_value(json).expect("deserialises");
        assert_eq!(parsed.algorithm, DkimAlgorithm::Ed25519);
        let debug = format!("{parsed:?}");
        assert!(debug.contains("<redacted>") && !debug.contains("PRIVATE KEY"), "{debug}");
    }

    #[test]
    fn dual_keys_give_two_signatures_before_the_message() {
        let signers = DkimSigners::from_configs(&[
            config("rsa2048", DkimAlgorithm::Rsa, RSA_PEM),
            config("ed", DkimAlgorithm::Ed25519, ED25519_PEM),
        ])
        .expect("keys parse");
        let signed = signers.sign(&domain("example.com"), MESSAGE).expect("signs").expect("has keys");
        let text = String::from_utf8(signed).expect("ascii");
        assert_eq!(text.matches("DKIM-Signature: ").count(), 2);
        assert!(text.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=rsa2048; d=example.com; c=relaxed/relaxed;"));
        assert!(text.contains("a=ed25519-sha256; s=ed; d=example.com"));
        assert!(text.contains("h=Subject:To:From:"), "{text}");
        assert!(text.ends_with(std::str::from_utf8(MESSAGE).expect("ascii")));
        let debug = format!("{signers:?}");
        assert!(debug.contains("ed._domainkey.example.com (Ed25519)"), "{debug}");
    }

    #[test]
    fn pkcs1_rsa_keys_sign_like_their_pkcs8_form() {
        let pkcs1 = include_str!("../../../tests/fixtures/dkim/rsa_pkcs1.pem");
        let signers = DkimSigners::from_configs(&[config("s", DkimAlgorithm::Rsa, pkcs1)]).expect("pkcs1 parses");
        assert!(signers.sign(&domain("example.com"), MESSAGE).expect("signs").is_some());
    }

    #[test]
    fn domains_without_keys_are_not_signed() {
        let signers =
            DkimSigners::from_configs(&[config("ed", DkimAlgorithm::Ed25519, ED25519_PEM)]).expect("keys parse");
        assert_eq!(signers.sign(&domain("other.example"), MESSAGE), Ok(None));
    }

    #[test]
    fn trailing_whitespace_lines_and_bare_newlines_are_normalised_before_signing() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"H: v\r\n\r\nbody\r\n  \r\n\t\r\n\r\n ", b"H: v\r\n\r\nbody\r\n"),
            (b"H: v\n\nline one \nline two", b"H: v\r\n\r\nline one \r\nline two\r\n"),
            (b"H: v\r\n\r\n \r\n", b"H: v\r\n\r\n"),
            (b"H: v\r\n\r\n", b"H: v\r\n\r\n"),
            (b"H: v\r\n\r\na\r\n \r\nb\r\n", b"H: v\r\n\r\na\r\n \r\nb\r\n"),
        ];
        for (input, expected) in cases {
            let normalised = normalise_message(input).expect("normalises");
            assert_eq!(String::from_utf8_lossy(&normalised), String::from_utf8_lossy(expected));
        }
        assert!(matches!(normalise_message(b"H: v\r\n\r\nok\r\n"), Ok(Cow::Borrowed(_))));
        assert!(normalise_message(b"no separator").is_err());
    }

    #[test]
    fn invalid_keys_are_reported_by_domain_and_selector_without_key_material() {
        let truncated = &RSA_PEM[..RSA_PEM.len() / 2];
        let cases = [
            config("s", DkimAlgorithm::Rsa, "not a key"),
            config("s", DkimAlgorithm::Rsa, truncated),
            config("s", DkimAlgorithm::Rsa, ED25519_PEM),
            config("s", DkimAlgorithm::Ed25519, RSA_PEM),
            config("bad selector", DkimAlgorithm::Ed25519, ED25519_PEM),
            DkimKeyConfig { domain: "localhost".into(), ..config("s", DkimAlgorithm::Ed25519, ED25519_PEM) },
        ];
        for case in cases {
            let error = DkimSigners::from_configs(std::slice::from_ref(&case)).expect_err("invalid");
            let message = error.to_string();
            assert!(message.contains(&format!("selector {:?}", case.selector)), "{message}");
            assert!(!message.contains("MII") && !message.contains("-----"), "{message}");
        }
        let twice = [config("s", DkimAlgorithm::Ed25519, ED25519_PEM), config("S", DkimAlgorithm::Rsa, RSA_PEM)];
        assert!(DkimSigners::from_configs(&twice).is_err());
    }

    #[test]
    fn a_fold_between_the_signature_value_and_the_final_semicolon_is_removed() {
        let mut buffer = b"X: y\r\nDKIM-Signature: v=1; b=abc\r\n\t;\r\n".to_vec();
        remove_fold_before_final_semicolon(&mut buffer, 6);
        assert_eq!(buffer, b"X: y\r\nDKIM-Signature: v=1; b=abc;\r\n");
        let mut unfolded = b"DKIM-Signature: v=1; b=abc;\r\n".to_vec();
        remove_fold_before_final_semicolon(&mut unfolded, 0);
        assert_eq!(unfolded, b"DKIM-Signature: v=1; b=abc;\r\n");
    }

    #[test]
    fn signers_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DkimSigners>();
    }
}
