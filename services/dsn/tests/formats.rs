//! Small hand-written reports in the layouts of common MTAs (not taken from the corpus), to pin
//! down the generic layout rules and the classifier on formats the dev corpus has few of.

use sendwerk_dsn::{Action, Reason, ReportKind, classify, parse_report};

fn only_record(raw: &str) -> sendwerk_dsn::BounceRecord {
    let report = parse_report(raw.as_bytes());
    assert_eq!(report.kind, ReportKind::DeliveryStatus, "{report:#?}");
    assert_eq!(report.records.len(), 1, "{report:#?}");
    report.records[0].clone()
}

#[test]
fn an_exim_delay_warning_is_a_delayed_record_with_the_remote_reply() {
    let record = only_record(
        "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n\
         Subject: Warning: message 1abc-0001 delayed 24 hours\n\n\
         This message was created automatically by mail delivery software.\n\n\
         A message that you sent has not yet been delivered to one or more of its\n\
         recipients after more than 24 hours on the queue on mx.example.org.\n\n\
         The address to which the message has not yet been delivered is:\n\n  \
         someone@example.net\n    \
         Delay reason: SMTP error from remote mail server after RCPT TO:<someone@example.net>:\n    \
         host mx.example.net [192.0.2.7]: 452 4.2.2 Mailbox full\n\n\
         No action is required on your part.\n",
    );
    assert_eq!(record.recipient.as_deref(), Some("someone@example.net"));
    assert_eq!(record.action, Some(Action::Delayed));
    assert_eq!(record.status.as_deref(), Some("4.2.2"));
    assert_eq!(record.reason, Reason::MailboxFull);
    assert!(!record.hard);
}

#[test]
fn a_qmail_notice_without_mime_gives_recipient_status_and_reason() {
    let record = only_record(
        "From: MAILER-DAEMON@mail.example.org\nSubject: failure notice\n\n\
         Hi. This is the qmail-send program at mail.example.org.\n\
         I'm afraid I wasn't able to deliver your message to the following addresses.\n\
         This is a permanent error; I've given up. Sorry it didn't work out.\n\n\
         <nobody@example.com>:\n\
         Sorry, no mailbox here by that name. (#5.1.1)\n\n\
         --- Below this line is a copy of the message.\n\n\
         Return-Path: <sender@example.org>\nTo: nobody@example.com\n\nhello\n",
    );
    assert_eq!(record.recipient.as_deref(), Some("nobody@example.com"));
    assert_eq!(record.status.as_deref(), Some("5.1.1"));
    assert_eq!(record.reason, Reason::UserUnknown);
    assert!(record.hard);
}

#[test]
fn an_old_gmail_notice_with_a_dns_error_is_a_missing_host() {
    let record = only_record(
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n\
         Subject: Delivery Status Notification (Failure)\n\n\
         Delivery to the following recipient failed permanently:\n\n     \
         someone@no-such-domain.example\n\n\
         Technical details of permanent failure:\n\
         DNS Error: Domain name not found\n\n\
         ----- Original message -----\n\nTo: someone@no-such-domain.example\n",
    );
    assert_eq!(record.recipient.as_deref(), Some("someone@no-such-domain.example"));
    assert_eq!(record.reason, Reason::HostUnknown);
    assert!(record.hard);
}

#[test]
fn a_standard_dsn_with_two_recipients_gives_two_records() {
    let report = parse_report(
        b"From: MAILER-DAEMON@mx.example.org\n\
          Content-Type: multipart/report; report-type=delivery-status; boundary=\"XX\"\n\n\
          --XX\nContent-Type: text/plain\n\nSorry.\n\
          --XX\nContent-Type: message/delivery-status\n\n\
          Reporting-MTA: dns; mx.example.org\n\n\
          Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.2.2\n\
          Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n\n\
          Final-Recipient: rfc822; b@example.com\nAction: delayed\nStatus: 4.4.1\n\
          Diagnostic-Code: smtp; 421 4.4.1 Connection timed out\n\n\
          --XX\nContent-Type: message/rfc822\n\n\
          Message-ID: <abc@example.org>\nX-Sendwerk-Ref: r-123\nReturn-Path: <bounce+x@example.org>\n\nbody\n--XX--\n",
    );
    assert_eq!(report.kind, ReportKind::DeliveryStatus);
    assert_eq!(report.reporting_mta.as_deref(), Some("mx.example.org"));
    assert_eq!(report.original.message_id.as_deref(), Some("abc@example.org"));
    assert_eq!(report.original.sendwerk_ref.as_deref(), Some("r-123"));
    assert_eq!(report.original.return_path.as_deref(), Some("bounce+x@example.org"));
    let reasons: Vec<(Option<&str>, Reason, Option<Action>)> =
        report.records.iter().map(|record| (record.recipient.as_deref(), record.reason, record.action)).collect();
    assert_eq!(
        reasons,
        vec![
            (Some("a@example.com"), Reason::MailboxFull, Some(Action::Failed)),
            (Some("b@example.com"), Reason::Expired, Some(Action::Delayed)),
        ]
    );
}

#[test]
fn an_arf_complaint_names_the_original_recipient() {
    let report = parse_report(
        b"From: fbl@isp.example\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"B\"\n\n\
          --B\nContent-Type: text/plain\n\nA complaint.\n\
          --B\nContent-Type: message/feedback-report\n\n\
          Feedback-Type: abuse\nUser-Agent: FBL/1.0\nVersion: 1\nOriginal-Rcpt-To: Person@Example.COM\n\n\
          --B\nContent-Type: message/rfc822\n\nMessage-ID: <m1@sender.example>\nTo: person@example.com\n\nhi\n--B--\n",
    );
    assert_eq!(report.kind, ReportKind::Feedback);
    assert_eq!(report.feedback_type.as_deref(), Some("abuse"));
    assert_eq!(report.records.len(), 1);
    assert_eq!(report.records[0].recipient.as_deref(), Some("Person@example.com"));
    assert_eq!(report.records[0].reason, Reason::Feedback);
    assert_eq!(report.original.message_id.as_deref(), Some("m1@sender.example"));
}

#[test]
fn an_out_of_office_reply_is_an_auto_reply_not_a_bounce() {
    let report = parse_report(
        b"From: Colleague <colleague@example.com>\nTo: sender@example.org\nSubject: Automatic reply: Offer\n\
          Auto-Submitted: auto-replied\n\nI am out of the office until Monday.\n",
    );
    assert_eq!(report.kind, ReportKind::AutoReply);
    assert_eq!(report.records[0].recipient.as_deref(), Some("colleague@example.com"));
    assert_eq!(report.records[0].reason, Reason::Vacation);
    assert!(!report.records[0].hard);
}

#[test]
fn an_ordinary_message_is_unknown_and_flagged() {
    let report = parse_report(b"From: a@example.com\nTo: b@example.org\nSubject: lunch?\n\nSee you at noon.\n");
    assert_eq!(report.kind, ReportKind::Unknown);
    assert!(report.records.is_empty());
    assert!(!report.problems.is_empty());
}

#[test]
fn the_smtp_time_classifier_agrees_with_the_report_classifier() {
    assert_eq!(
        classify(
            Some(550),
            Some("5.7.1"),
            "550 5.7.1 Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org"
        )
        .0,
        Reason::Blocked
    );
    assert_eq!(
        classify(Some(554), Some("5.7.1"), "554 5.7.1 This message was classified as SPAM").0,
        Reason::SpamDetected
    );
    assert_eq!(
        classify(Some(550), Some("5.7.26"), "550 5.7.26 Unauthenticated email is not accepted due to DMARC policy").0,
        Reason::AuthFailure
    );
    assert_eq!(
        classify(Some(421), Some("4.7.0"), "421 4.7.0 Too many concurrent SMTP connections").0,
        Reason::TooManyConn
    );
    assert_eq!(
        classify(Some(552), Some("5.3.4"), "552 5.3.4 Message size exceeds fixed limit"),
        (Reason::MesgTooBig, false)
    );
    assert_eq!(classify(Some(550), Some("5.1.2"), "550 5.1.2 Host unknown"), (Reason::HostUnknown, true));
    assert_eq!(
        classify(Some(550), Some("5.1.10"), "550 5.1.10 Recipient address has null MX"),
        (Reason::NotAccept, true)
    );
    assert_eq!(classify(Some(451), Some("4.1.10"), "451 4.1.10 null MX"), (Reason::NotAccept, false));
}
