//! Enhanced status codes (RFC 3463 and the IANA registry, plus the codes large providers use) to
//! reasons. Class-only codes (`5.0.0`) and codes whose meaning depends on the text (`5.7.1`) map to
//! nothing or to a reason the classifier re-checks against the text.

use crate::reason::Reason;

/// The reason a status code stands for, if it stands for one.
pub(crate) fn reason_of_status(status: &str) -> Option<Reason> {
    let mut pieces = status.trim().splitn(3, '.');
    let class = pieces.next()?;
    let subject: u32 = pieces.next()?.parse().ok()?;
    let detail: u32 = pieces.next()?.trim().parse().ok()?;
    let permanent = class == "5";
    if class == "2" {
        return Some(Reason::Delivered);
    }
    if class != "4" && class != "5" {
        return None;
    }
    let reason = match (subject, detail) {
        (1, 0) if permanent => Reason::UserUnknown,
        (1, 1) | (1, 3) => Reason::UserUnknown,
        (1, 2) => Reason::HostUnknown,
        (1, 4) => Reason::Filtered,
        (1, 6) => Reason::HasMoved,
        (1, 7) | (1, 8) => Reason::Rejected,
        (1, 9) => Reason::SystemError,
        (1, 10) => Reason::NotAccept,
        (1, 351) => Reason::UserUnknown,
        (2, 0) if permanent => Reason::Filtered,
        (2, 1) => Reason::Suspend,
        (2, 2) => Reason::MailboxFull,
        (2, 3) => Reason::ExceedLimit,
        (2, 4) => Reason::Filtered,
        (3, 0) if permanent => Reason::SystemError,
        (3, 1) => Reason::SystemFull,
        (3, 2) => Reason::NotAccept,
        (3, 3) | (3, 5) => Reason::SystemError,
        (3, 4) => Reason::MesgTooBig,
        (4, 0) if permanent => Reason::NetworkError,
        (4, 1) if permanent => Reason::Rejected,
        (4, 1) => Reason::Expired,
        (4, 4) if permanent => Reason::HostUnknown,
        (4, 2) | (4, 4) | (4, 6) | (4, 8) => Reason::NetworkError,
        (4, 3) => Reason::SystemError,
        (4, 5) => Reason::SystemFull,
        (4, 7) => Reason::Expired,
        (4, 312) => Reason::NetworkError,
        (4, 316) => Reason::Expired,
        (5, 0) if permanent => Reason::UserUnknown,
        (5, 3) => Reason::TooManyConn,
        (5, 1..=5) => Reason::SyntaxError,
        (6, _) => Reason::ContentError,
        (7, 1) if !permanent => Reason::Blocked,
        (7, 2) if !permanent => Reason::Blocked,
        (7, 13) | (7, 14) => Reason::Suspend,
        (7, 17) | (7, 18) => Reason::HasMoved,
        (7, 20..=24) | (7, 26) => Reason::AuthFailure,
        (7, 25) => Reason::RequirePtr,
        (7, 27) => Reason::NotAccept,
        (7, 28) => Reason::SpamDetected,
        (7, 509..=515) => Reason::AuthFailure,
        (7, 606..=649) => Reason::Blocked,
        (7, 700..=799) => Reason::TooManyConn,
        (7, 0) if !permanent => return None,
        (7, _) => Reason::SecurityError,
        _ => return None,
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_codes_map_to_their_reasons() {
        assert_eq!(reason_of_status("5.1.1"), Some(Reason::UserUnknown));
        assert_eq!(reason_of_status("5.2.2"), Some(Reason::MailboxFull));
        assert_eq!(reason_of_status("4.4.7"), Some(Reason::Expired));
        assert_eq!(reason_of_status("5.7.26"), Some(Reason::AuthFailure));
        assert_eq!(reason_of_status("5.0.0"), None);
        assert_eq!(reason_of_status("4.0.0"), None);
        assert_eq!(reason_of_status("2.1.5"), Some(Reason::Delivered));
        assert_eq!(reason_of_status("nonsense"), None);
    }
}
