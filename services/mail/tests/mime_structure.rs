//! Messages built by `mime::MessageTemplate`, parsed back with mail-parser: MIME structure,
//! header encoding, header injection, line limits and size limits.

use chrono::TimeZone as _;
use mail_parser::{Message, MessageParser, MimeHeaders as _, PartType};
use sendwerk_core::EmailAddress;
use sendwerk_mail::mime::{Attachment, Mailbox, MessageTemplate, MimeError, generate_message_id};
use sendwerk_mail::render::RenderedContent;

const LIMIT: usize = 10 * 1024 * 1024;

fn address(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).expect("valid address")
}

fn mailbox(name: &str, raw: &str) -> Mailbox {
    Mailbox { name: Some(name.to_owned()), address: address(raw) }
}

fn pdf() -> Attachment {
    Attachment {
        filename: "Preisliste Ü.pdf".into(),
        content_type: "application/pdf".into(),
        content: (0..=255u8).cycle().take(5000).collect(),
        content_id: None,
    }
}

fn logo() -> Attachment {
    Attachment {
        filename: "logo.png".into(),
        content_type: "image/PNG".into(),
        content: vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3],
        content_id: Some("logo@shop".into()),
    }
}

fn template(attachments: Vec<Attachment>) -> MessageTemplate {
    MessageTemplate::new(
        mailbox("Shop, Inc.", "news@shop.example"),
        Some(mailbox("Kundendienst", "service@shop.example")),
        vec![("X-Mailing".into(), "spring-2025".into())],
        attachments,
        LIMIT,
    )
    .expect("valid template")
}

fn content(subject: &str, html: Option<&str>, text: Option<&str>) -> RenderedContent {
    RenderedContent { subject: subject.to_owned(), html: html.map(String::from), text: text.map(String::from) }
}

fn build(template: &MessageTemplate, content: &RenderedContent) -> Vec<u8> {
    let date = chrono::Utc.with_ymd_and_hms(2025, 3, 7, 9, 5, 0).single().expect("valid date");
    template
        .build(
            &address("max@example.org"),
            content,
            &[("X-Sendwerk-Ref", "r-42"), ("List-Unsubscribe", "<https://shop.example/u/r-42>")],
            "abc123@shop.example",
            date,
        )
        .expect("builds")
}

fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default().parse(raw).expect("parses")
}

/// e.g. `multipart/mixed[multipart/alternative[text/plain,text/html],application/pdf]`.
fn structure(message: &Message<'_>, part_id: u32) -> String {
    let part = message.part(part_id).expect("part exists");
    let content_type = part.content_type().expect("every part has a content type");
    let name = format!("{}/{}", content_type.ctype(), content_type.subtype().unwrap_or("?"));
    match &part.body {
        PartType::Multipart(children) => {
            let inner: Vec<String> = children.iter().map(|id| structure(message, *id)).collect();
            format!("{name}[{}]", inner.join(","))
        }
        _ => name,
    }
}

/// Every line ends in CRLF, has no bare CR or LF, and is at most 998 bytes.
fn assert_wire_safe(raw: &[u8]) {
    assert!(raw.ends_with(b"\r\n"), "message must end in CRLF");
    for (index, &byte) in raw.iter().enumerate() {
        match byte {
            b'\r' => assert_eq!(raw.get(index + 1), Some(&b'\n'), "bare CR at {index}"),
            b'\n' => assert!(index > 0 && raw[index - 1] == b'\r', "bare LF at {index}"),
            _ => {}
        }
    }
    for line in raw.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} bytes", line.len());
    }
}

#[test]
fn each_combination_of_parts_gets_the_right_structure() {
    let html = Some("<p>Hallo <img src=\"cid:logo@shop\"></p>");
    let text = Some("Hallo");
    let cases = [
        (vec![], None, text, "text/plain"),
        (vec![], html, None, "text/html"),
        (vec![], html, text, "multipart/alternative[text/plain,text/html]"),
        (vec![logo()], html, None, "multipart/related[text/html,image/png]"),
        (vec![logo()], html, text, "multipart/related[multipart/alternative[text/plain,text/html],image/png]"),
        (vec![pdf()], None, text, "multipart/mixed[text/plain,application/pdf]"),
        (vec![pdf()], html, text, "multipart/mixed[multipart/alternative[text/plain,text/html],application/pdf]"),
        (
            vec![logo(), pdf()],
            html,
            text,
            "multipart/mixed[multipart/related[multipart/alternative[text/plain,text/html],image/png],application/pdf]",
        ),
        // Without HTML nothing can reference an inline image: it travels as a plain part.
        (vec![logo()], None, text, "multipart/mixed[text/plain,image/png]"),
    ];
    for (attachments, html, text, expected) in cases {
        let raw = build(&template(attachments), &content("Hi", html, text));
        assert_wire_safe(&raw);
        let message = parse(&raw);
        assert_eq!(structure(&message, 0), expected);
        // A single-part body gets the CRLF every message must end with; parts keep theirs.
        if let Some(text) = text {
            let decoded_text = message.body_text(0).map(|body| body.trim_end_matches("\r\n").to_owned());
            assert_eq!(decoded_text.as_deref(), Some(text), "{expected}");
        }
        if let Some(html) = html {
            let decoded_html = message.body_html(0).map(|body| body.trim_end_matches("\r\n").to_owned());
            assert_eq!(decoded_html.as_deref(), Some(html));
        }
    }
}

#[test]
fn headers_come_in_a_fixed_order_and_parse_back() {
    let raw = build(&template(vec![]), &content("Hi", None, Some("x")));
    let message = parse(&raw);
    let names: Vec<&str> = message.headers().iter().map(|header| header.name()).collect();
    assert_eq!(
        names,
        [
            "Date",
            "From",
            "To",
            "Reply-To",
            "Subject",
            "Message-ID",
            "MIME-Version",
            "X-Mailing",
            "X-Sendwerk-Ref",
            "List-Unsubscribe",
            "Content-Type",
            "Content-Transfer-Encoding",
        ]
    );
    assert!(raw.starts_with(b"Date: Fri, 07 Mar 2025 09:05:00 +0000\r\nFrom: \"Shop, Inc.\" <news@shop.example>\r\n"));
    assert_eq!(message.message_id(), Some("abc123@shop.example"));
    let from = message.from().and_then(|from| from.first()).expect("from");
    assert_eq!(from.name.as_deref(), Some("Shop, Inc."));
    assert_eq!(from.address.as_deref(), Some("news@shop.example"));
    let reply_to = message.reply_to().and_then(|r| r.first()).expect("reply-to");
    assert_eq!(reply_to.address.as_deref(), Some("service@shop.example"));
    assert_eq!(message.date().map(|date| date.to_timestamp()), Some(1_741_338_300));
}

#[test]
fn non_ascii_and_emoji_subjects_and_names_decode_back() {
    let subjects = [
        "Grüße aus Köln 🎉".to_owned(),
        "🎉".repeat(40),
        format!("Sommer-Sale: {} – nur heute! 👩‍👩‍👧", "Übergrößen ".repeat(12)),
        "plain ascii but with =?UTF-8?B?Zm9v?= in it".to_owned(),
        format!("ascii {} word", "x".repeat(200)),
    ];
    for subject in subjects {
        let template = MessageTemplate::new(
            mailbox("Jörg 🐻 Müller-Lüdenscheidt", "news@shop.example"),
            None,
            vec![],
            vec![],
            LIMIT,
        )
        .expect("valid");
        let raw = build(&template, &content(&subject, None, Some("x")));
        assert_wire_safe(&raw);
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("has body");
        for line in raw[..head_end].split(|&b| b == b'\n') {
            assert!(line.len() <= 79, "header line over 78: {}", String::from_utf8_lossy(line));
        }
        let message = parse(&raw);
        assert_eq!(message.subject(), Some(subject.as_str()));
        let from = message.from().and_then(|from| from.first()).expect("from");
        assert_eq!(from.name.as_deref(), Some("Jörg 🐻 Müller-Lüdenscheidt"));
    }
}

#[test]
fn line_breaks_in_merged_subjects_and_names_cannot_inject_headers() {
    let attacks = [
        "Hi\r\nBcc: victim@example.net",
        "Hi\nBcc: victim@example.net",
        "Hi\rBcc: victim@example.net",
        "Hï\r\nBcc: victim@example.net\r\n\r\nbody",
        "Hi\u{85}Bcc: victim@example.net\u{2028}X: y\0",
    ];
    for attack in attacks {
        let template = MessageTemplate::new(
            Mailbox { name: Some(attack.to_owned()), address: address("news@shop.example") },
            None,
            vec![],
            vec![],
            LIMIT,
        )
        .expect("a display name is sanitised, not rejected");
        let raw = build(&template, &content(attack, None, Some("x")));
        assert_wire_safe(&raw);
        let message = parse(&raw);
        assert!(message.bcc().is_none(), "{attack:?}");
        // Date From To Subject Message-ID MIME-Version X-Sendwerk-Ref List-Unsubscribe
        // Content-Type Content-Transfer-Encoding: nothing else.
        assert_eq!(message.headers().len(), 10, "{attack:?}");
        let raw_text = String::from_utf8_lossy(&raw);
        assert!(!raw_text.contains("\nBcc:") && !raw_text.contains("\nX: y"), "{attack:?}");
        assert!(message.subject().is_some_and(|subject| subject.contains("Bcc: victim")));
    }
}

#[test]
fn caller_headers_with_line_breaks_or_reserved_names_are_rejected() {
    let template = template(vec![]);
    let body = content("s", None, Some("x"));
    let date = chrono::Utc::now();
    let to = address("max@example.org");
    let build_with = |headers: &[(&str, &str)]| template.build(&to, &body, headers, "a@b.example", date);
    assert!(matches!(
        build_with(&[("List-Unsubscribe", "<x>\r\nBcc: v@example.net")]),
        Err(MimeError::InvalidHeaderValue { name, .. }) if name == "List-Unsubscribe"
    ));
    assert!(matches!(build_with(&[("DKIM-Signature", "v=1")]), Err(MimeError::ReservedHeader { .. })));
    assert!(matches!(build_with(&[("Content-Type", "text/html")]), Err(MimeError::ReservedHeader { .. })));
    let bad_extra = MessageTemplate::new(
        mailbox("a", "news@shop.example"),
        None,
        vec![("Reply-To".into(), "x@example.net".into())],
        vec![],
        LIMIT,
    );
    assert!(matches!(bad_extra, Err(MimeError::ReservedHeader { .. })));
    let bad_id = template.build(&to, &body, &[], "a@b>\r\nBcc: x@y", date);
    assert!(matches!(bad_id, Err(MimeError::InvalidMessageId(_))));
}

#[test]
fn long_lines_long_words_and_long_headers_stay_within_998_bytes() {
    let long_url = format!("<https://shop.example/unsubscribe/{}>", "a".repeat(400));
    let unsubscribe = format!("{long_url}, {long_url}, <mailto:u@shop.example>");
    let text = format!("{}\n{}\n", "x".repeat(5000), "wörter ".repeat(2000));
    let html = format!("<p>{}</p>", "y".repeat(3000));
    let template = template(vec![pdf(), logo()]);
    let raw = template
        .build(
            &address("max@example.org"),
            &content(&"Betreff ".repeat(60), Some(&html), Some(&text)),
            &[("List-Unsubscribe", &unsubscribe), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")],
            &generate_message_id("shop.example"),
            chrono::Utc::now(),
        )
        .expect("builds");
    assert_wire_safe(&raw);
    let message = parse(&raw);
    assert_eq!(message.body_text(0).as_deref(), Some(text.replace('\n', "\r\n").as_str()));
    assert_eq!(message.body_html(0).as_deref(), Some(html.as_str()));
    let header = message.header_raw("List-Unsubscribe").expect("present");
    assert_eq!(header.replace("\r\n", "").trim(), unsubscribe);
}

#[test]
fn body_lines_starting_with_a_dot_survive_smtp_dot_handling() {
    let text = "line one\n.\n.. two dots\r\n.leading\rFrom here\n";
    let raw = build(&template(vec![]), &content("s", None, Some(text)));
    assert_wire_safe(&raw);
    assert!(!raw.split(|&b| b == b'\n').any(|line| line.starts_with(b".")), "no raw line starts with '.'");
    let message = parse(&raw);
    let expected = "line one\r\n.\r\n.. two dots\r\n.leading\r\nFrom here\r\n";
    assert_eq!(message.body_text(0).as_deref(), Some(expected));
}

#[test]
fn attachments_decode_back_byte_for_byte() {
    let raw = build(&template(vec![logo(), pdf()]), &content("s", Some("<img src=\"cid:logo@shop\">"), None));
    let message = parse(&raw);
    let attachments: Vec<_> = message.attachments().collect();
    assert_eq!(attachments.len(), 2);
    let logo_part = attachments.iter().find(|p| p.content_id() == Some("logo@shop")).expect("inline logo");
    assert_eq!(logo_part.contents(), logo().content.as_slice());
    assert_eq!(logo_part.attachment_name(), Some("logo.png"));
    let pdf_part = attachments.iter().find(|p| p.content_id().is_none()).expect("pdf");
    assert_eq!(pdf_part.contents(), pdf().content.as_slice());
    assert_eq!(pdf_part.attachment_name(), Some("Preisliste Ü.pdf"));
}

#[test]
fn invalid_attachments_are_rejected_naming_the_file() {
    let cases = [
        Attachment { content_type: "application".into(), ..pdf() },
        Attachment { content_type: "text/plain; charset=x".into(), ..pdf() },
        Attachment { filename: "a\r\nb.pdf".into(), ..pdf() },
        Attachment { filename: "../etc/passwd".into(), ..pdf() },
        Attachment { filename: String::new(), ..pdf() },
        Attachment { content_id: Some("lo go".into()), ..logo() },
        Attachment { content_id: Some("<logo>".into()), ..logo() },
    ];
    for attachment in cases {
        let filename = attachment.filename.clone();
        let result = MessageTemplate::new(mailbox("a", "news@shop.example"), None, vec![], vec![attachment], LIMIT);
        assert!(
            matches!(&result, Err(MimeError::InvalidAttachment { filename: named, .. }) if *named == filename),
            "{filename:?}: {result:?}"
        );
    }
}

#[test]
fn messages_over_the_size_limit_are_refused() {
    let small = MessageTemplate::new(mailbox("a", "news@shop.example"), None, vec![], vec![], 2000).expect("valid");
    let result = small.build(
        &address("max@example.org"),
        &content("s", None, Some(&"x".repeat(3000))),
        &[],
        "a@b.example",
        chrono::Utc::now(),
    );
    assert!(matches!(result, Err(MimeError::TooLarge { size, limit: 2000 }) if size > 2000), "{result:?}");
    let attachment_too_big = MessageTemplate::new(mailbox("a", "news@shop.example"), None, vec![], vec![pdf()], 1000);
    assert!(matches!(attachment_too_big, Err(MimeError::TooLarge { .. })));
}

#[test]
fn boundaries_differ_between_messages() {
    let template = template(vec![pdf()]);
    let body = content("s", Some("<p>x</p>"), Some("x"));
    let first = build(&template, &body);
    let second = build(&template, &body);
    assert_ne!(first, second);
    let message = parse(&first);
    assert_eq!(structure(&message, 0), "multipart/mixed[multipart/alternative[text/plain,text/html],application/pdf]");
}
