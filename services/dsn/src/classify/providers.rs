//! Rules that hold for one provider's servers only, keyed by the recipient domain or the remote
//! host (the "rhost" idea of sisimai). Each rule follows the provider's documented replies.

use crate::reason::Reason;

/// What is known about where the failure happened.
pub(crate) struct Destination<'a> {
    /// Lower-case recipient domain.
    pub domain: &'a str,
    /// Lower-case remote MTA host name, or "".
    pub remote_host: &'a str,
}

fn served_by(destination: &Destination<'_>, domains: &[&str]) -> bool {
    domains.iter().any(|suffix| {
        let matches = |host: &str| host == *suffix || host.ends_with(&format!(".{suffix}"));
        matches(destination.domain) || matches(destination.remote_host)
    })
}

/// KDDI (au, ezweb): `550 <addr>: User unknown` is a missing mailbox, while `550 : User unknown`
/// (no address) is the content filter, which the generic rules already treat as such.
fn kddi(destination: &Destination<'_>, text: &str) -> Option<Reason> {
    if !served_by(destination, &["ezweb.ne.jp", "au.com", "ezweb.com", "kddi.com", "auone-net.jp"]) {
        return None;
    }
    text.contains(">: user unknown").then_some(Reason::UserUnknown)
}

/// Orange and La Poste (France): the `OFR_nnn`/`LPNnnn_nnn` codes in brackets name the reason.
fn france_ptt(text: &str) -> Option<Reason> {
    let digits_at = |rest: &str| -> Option<u32> {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    // "OFR_506" or "LPN007_510".
    let ofr = text.find("ofr_").and_then(|start| digits_at(&text[start + 4..]));
    let lpn = || {
        let start = text.find("lpn")? + 3;
        let rest = &text[start..];
        let underscore = rest.find('_').filter(|position| *position <= 6)?;
        digits_at(&rest[underscore + 1..])
    };
    let code = ofr.or_else(lpn)?;
    match code {
        103 | 105 | 107 | 109 | 401 | 403 | 510 => Some(Reason::Blocked),
        104 | 108 | 201 | 202 => Some(Reason::TooManyConn),
        416 | 418 => Some(Reason::UserUnknown),
        417 => Some(Reason::MailboxFull),
        420 => Some(Reason::Suspend),
        506 => Some(Reason::SpamDetected),
        _ => None,
    }
}

/// A provider-specific reason for `text` (already lower-cased), if a rule applies.
pub(crate) fn reason_for(destination: &Destination<'_>, text: &str) -> Option<Reason> {
    kddi(destination, text).or_else(|| france_ptt(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kddi_user_unknown_with_an_address_is_userunknown_only_at_kddi() {
        let kddi = Destination { domain: "ezweb.ne.jp", remote_host: "" };
        let other = Destination { domain: "example.jp", remote_host: "mx.example.jp" };
        assert_eq!(reason_for(&kddi, "550 <a@ezweb.ne.jp>: user unknown"), Some(Reason::UserUnknown));
        assert_eq!(reason_for(&other, "550 <a@example.jp>: user unknown"), None);
    }

    #[test]
    fn orange_error_codes_name_the_reason() {
        let anywhere = Destination { domain: "", remote_host: "" };
        assert_eq!(
            reason_for(&anywhere, "550 5.2.0 mail rejete. mail rejected. ofr_506 [506]"),
            Some(Reason::SpamDetected)
        );
        assert_eq!(reason_for(&anywhere, "421 service refused, please try later. lpn006_107"), Some(Reason::Blocked));
    }
}
