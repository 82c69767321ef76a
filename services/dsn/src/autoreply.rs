//! RFC 3834 auto-replies (vacation, out of office): they are not bounces.

use crate::mime::Headers;

/// Subject beginnings of auto-replies in the languages seen most.
const SUBJECT_PREFIXES: &[&str] = &[
    "auto:",
    "auto response",
    "auto-response",
    "autoresponse",
    "automatic reply",
    "automatic response",
    "autoreply",
    "auto-reply",
    "auto reply",
    "out of office",
    "out of the office",
    "away from the office",
    "away from my",
    "away until",
    "on vacation",
    "vacation",
    "i am away",
    "i am out",
    "i'm away",
    "i'm out",
    "abwesenheit",
    "automatische antwort",
    "abwesenheitsnotiz",
    "réponse automatique",
    "reponse automatique",
    "absence",
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
    "risposta automatica",
    "fuori sede",
    "automatisch antwoord",
    "afwezig",
    "automatiskt svar",
    "automatisk svar",
    "自動応答",
    "自動返信",
    "不在",
    "自动回复",
    "автоответ",
];

/// Whether the headers say the message is an automatic reply.
pub(crate) fn is_auto_reply(headers: &Headers) -> bool {
    let has = |name: &str| headers.get(name).is_some();
    let value_is =
        |name: &str, wanted: &str| headers.get(name).is_some_and(|value| value.to_ascii_lowercase().contains(wanted));
    if value_is("auto-submitted", "auto-replied") || value_is("auto-submitted", "auto-notified") {
        return true;
    }
    if has("x-autoreply") || has("x-autorespond") || has("x-auto-reply") || has("x-autoresponder") {
        return true;
    }
    if value_is("precedence", "auto_reply")
        || value_is("x-precedence", "auto_reply")
        || value_is("x-apple-action", "vacation")
    {
        return true;
    }
    let subject = headers.get("subject").unwrap_or("").trim().to_lowercase();
    SUBJECT_PREFIXES.iter().any(|prefix| subject.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::parse_headers_only;

    #[test]
    fn auto_submitted_and_subjects_mark_auto_replies() {
        assert!(is_auto_reply(&parse_headers_only(b"Auto-Submitted: auto-replied\n\n")));
        assert!(is_auto_reply(&parse_headers_only(b"Subject: Automatic reply: Nyaan\n\n")));
        assert!(is_auto_reply(&parse_headers_only(b"Subject: Out of Office\n\n")));
        assert!(!is_auto_reply(&parse_headers_only(b"Subject: Returned mail\nAuto-Submitted: auto-generated\n\n")));
    }
}
