use std::time::Duration;

use sendwerk_mail::smtp::{self, RelayConfig};
use sendwerk_proto::v1;
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions, eventually};

/// The headers of a message as the sink received it, up to the blank line.
fn header_block(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// A real RFC 3464 delivery status notification, as Postfix would send it.
fn dsn(recipient: &str, original_headers: &str, status: &str, diagnostic: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.b.example (Mail Delivery System)\r\n\
         To: someone@bounces.test\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <dsn-{status}-{recipient}@mx.b.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"BOUNDARY\"\r\n\
         \r\n\
         --BOUNDARY\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at host mx.b.example.\r\n\
         I'm sorry to have to inform you that your message could not be delivered.\r\n\
         \r\n\
         <{recipient}>: host mx.b.example said: {diagnostic}\r\n\
         \r\n\
         --BOUNDARY\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.b.example\r\n\
         Arrival-Date: Sun, 22 Nov 2026 11:59:59 +0000\r\n\
         \r\n\
         Final-Recipient: rfc822; {recipient}\r\n\
         Original-Recipient: rfc822;{recipient}\r\n\
         Action: failed\r\n\
         Status: {status}\r\n\
         Remote-MTA: dns; mx.b.example\r\n\
         Diagnostic-Code: smtp; {diagnostic}\r\n\
         \r\n\
         --BOUNDARY\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         {original_headers}\r\n\
         \r\n\
         --BOUNDARY--\r\n"
    )
    .into_bytes()
}

/// A real RFC 5965 ARF complaint with the original message attached.
fn arf(recipient: &str, original: &str) -> Vec<u8> {
    format!(
        "From: fbl@isp.example\r\n\
         To: someone@bounces.test\r\n\
         Subject: FW: complaint\r\n\
         Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <arf-{recipient}@isp.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"ARF\"\r\n\
         \r\n\
         --ARF\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         This is an email abuse report for an email message received from IP 192.0.2.1.\r\n\
         \r\n\
         --ARF\r\n\
         Content-Type: message/feedback-report\r\n\
         \r\n\
         Feedback-Type: abuse\r\n\
         User-Agent: ISP-FBL/1.0\r\n\
         Version: 1\r\n\
         Original-Rcpt-To: {recipient}\r\n\
         Source-IP: 192.0.2.1\r\n\
         \r\n\
         --ARF\r\n\
         Content-Type: message/rfc822\r\n\
         \r\n\
         {original}\r\n\
         --ARF--\r\n"
    )
    .into_bytes()
}

/// The mailing's counts, once they satisfy `done` (reports are applied in the background).
async fn counts_when(
    cluster: &TestCluster,
    mailing_id: i64,
    what: &str,
    done: fn(&v1::RecipientCounts) -> bool,
) -> anyhow::Result<v1::RecipientCounts> {
    let api = cluster.api.clone();
    eventually(Duration::from_secs(10), what, move || {
        let mut api = api.clone();
        async move {
            let mailing = api.mailings.get_mailing(v1::MailingRef { mailing_id }).await?.into_inner();
            let counts = mailing.counts.unwrap_or_default();
            Ok(done(&counts).then_some(counts))
        }
    })
    .await
}

async fn send_report(port: u16, to: &str, report: &[u8]) -> sendwerk_core::DeliveryOutcome {
    let config =
        RelayConfig { host: "127.0.0.1".into(), port, hello_name: "mx.b.example".into(), ..RelayConfig::default() };
    let mut session = smtp::connect(&config).await.expect("the bounce listener answers");
    let outcome = session.deliver("", to, report).await;
    session.quit().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_and_complaints_come_back_into_recipient_status_and_suppressions() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { bounces: true, ..Default::default() }).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let emails = ["gone@b.example", "full@b.example", "angry@b.example", "fine@b.example"];
    cluster.add_recipients(id, emails.iter().map(|email| row(email, "", &[])).collect(), 10).await?;
    cluster.schedule_now(id).await?;
    cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let messages = cluster.sink.messages();
    assert_eq!(messages.len(), 4);
    let verp = cluster.verp.clone().expect("bounces are on");
    let message_for = |email: &str| messages.iter().find(|m| m.recipients[0] == email).expect("delivered").clone();
    for message in &messages {
        assert!(
            verp.verify_address(&message.reverse_path).is_some(),
            "the return path is a signed VERP address: {}",
            message.reverse_path
        );
        assert!(String::from_utf8_lossy(&message.data).contains("\r\nX-Sendwerk-Ref: "));
    }
    let listener_port = cluster.bounce_listener.as_ref().expect("listener runs").local_addr().port();
    // The next mailing, still a draft, has the same addresses waiting.
    let next = cluster.create_mailing(simple_content("Next", "Hello")).await?;
    cluster.add_recipients(next, emails.iter().map(|email| row(email, "", &[])).collect(), 10).await?;

    // The listener is never a relay and refuses forged return paths.
    for refused in ["someone@gmail.com", "b-1-aaaaaaaaaaaaaaaa@bounces.test", "postmaster@bounces.test"] {
        let outcome = send_report(listener_port, refused, b"Subject: x\r\n\r\nx\r\n").await;
        assert!(
            matches!(&outcome, sendwerk_core::DeliveryOutcome::PermanentFailure(reply) if reply.code == 550),
            "{refused}: {outcome:?}"
        );
    }

    let gone = message_for("gone@b.example");
    let gone_dsn = dsn(
        "gone@b.example",
        &header_block(&gone.data),
        "5.1.1",
        "550 5.1.1 <gone@b.example>: Recipient address rejected: User unknown in virtual mailbox table",
    );
    assert!(matches!(
        send_report(listener_port, &gone.reverse_path, &gone_dsn).await,
        sendwerk_core::DeliveryOutcome::Delivered(_)
    ));
    let full = message_for("full@b.example");
    let full_dsn = dsn(
        "full@b.example",
        &header_block(&full.data),
        "5.2.2",
        "552 5.2.2 <full@b.example>: mailbox full, quota exceeded",
    );
    assert!(matches!(
        send_report(listener_port, &full.reverse_path, &full_dsn).await,
        sendwerk_core::DeliveryOutcome::Delivered(_)
    ));
    let angry = message_for("angry@b.example");
    let complaint = arf("angry@b.example", &String::from_utf8_lossy(&angry.data));
    assert!(matches!(
        send_report(listener_port, &angry.reverse_path, &complaint).await,
        sendwerk_core::DeliveryOutcome::Delivered(_)
    ));
    // The same report twice changes nothing.
    assert!(matches!(
        send_report(listener_port, &gone.reverse_path, &gone_dsn).await,
        sendwerk_core::DeliveryOutcome::Delivered(_)
    ));

    let done =
        counts_when(&cluster, id, "the reports to be applied", |counts| counts.bounced == 2 && counts.complained == 1)
            .await?;
    assert_eq!(done.sent, 1);
    let recipients = cluster.recipients(id).await?;
    let find = |email: &str| recipients.iter().find(|r| r.email == email).expect("present").clone();
    let gone_row = find("gone@b.example");
    assert_eq!((gone_row.state, gone_row.reason.as_str()), (v1::RecipientState::Bounced as i32, "userunknown"));
    assert_eq!(gone_row.last_reply.clone().unwrap_or_default().enhanced_status, "5.1.1");
    assert!(gone_row.last_reply.unwrap_or_default().text.contains("User unknown"), "the diagnostic text is kept");
    let full_row = find("full@b.example");
    assert_eq!((full_row.state, full_row.reason.as_str()), (v1::RecipientState::Bounced as i32, "mailboxfull"));
    let angry_row = find("angry@b.example");
    assert_eq!((angry_row.state, angry_row.reason.as_str()), (v1::RecipientState::Complained as i32, "feedback"));

    // Hard bounces and complaints are suppressed; one soft bounce is not (yet).
    let suppressed = cluster
        .api
        .suppressions
        .check_suppressions(v1::CheckSuppressionsRequest { emails: emails.iter().map(|e| (*e).to_owned()).collect() })
        .await?
        .into_inner()
        .suppressed;
    let mut suppressed: Vec<(String, i32)> = suppressed.into_iter().map(|s| (s.email, s.reason)).collect();
    suppressed.sort();
    assert_eq!(
        suppressed,
        vec![
            ("angry@b.example".to_owned(), v1::SuppressionReason::Complaint as i32),
            ("gone@b.example".to_owned(), v1::SuppressionReason::HardBounce as i32),
        ]
    );

    // The suppressed addresses no longer wait in the next mailing.
    let next_rows = cluster.recipients(next).await?;
    let mut next_states: Vec<(String, i32, String)> =
        next_rows.into_iter().map(|r| (r.email, r.state, r.reason)).collect();
    next_states.sort();
    let (queued, suppressed) = (v1::RecipientState::Queued as i32, v1::RecipientState::Suppressed as i32);
    assert_eq!(
        next_states,
        vec![
            ("angry@b.example".to_owned(), suppressed, "suppressed: complaint".to_owned()),
            ("fine@b.example".to_owned(), queued, String::new()),
            ("full@b.example".to_owned(), queued, String::new()),
            ("gone@b.example".to_owned(), suppressed, "suppressed: hard_bounce".to_owned()),
        ]
    );

    // A report that matches nothing is kept in quarantine, not dropped.
    let stray =
        dsn("stranger@elsewhere.example", "From: x@y.example\r\nSubject: not ours", "5.1.1", "550 5.1.1 user unknown");
    let ingested = cluster
        .api
        .bounces
        .ingest_report(v1::IngestReportRequest { raw: stray, envelope_to: String::new() })
        .await?
        .into_inner();
    assert_eq!(ingested.status, v1::ReportStatus::Quarantined as i32);
    let quarantine = cluster
        .api
        .bounces
        .list_reports(v1::ListReportsRequest {
            status: v1::ReportStatus::Quarantined as i32,
            page_size: 10,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .reports;
    assert_eq!(quarantine.len(), 1);
    assert!(quarantine[0].problem.contains("cannot be matched"), "{}", quarantine[0].problem);
    // GetReport returns the same record with the stored bytes.
    let fetched =
        cluster.api.bounces.get_report(v1::GetReportRequest { report_id: quarantine[0].id }).await?.into_inner();
    assert_eq!(fetched.report.as_ref(), Some(&quarantine[0]));
    assert!(String::from_utf8_lossy(&fetched.raw).contains("stranger@elsewhere.example"));
    let missing = cluster.api.bounces.get_report(v1::GetReportRequest { report_id: i64::MAX }).await;
    assert_eq!(missing.map(|_| ()).map_err(|status| status.code()), Err(tonic::Code::NotFound));
    let all = cluster
        .api
        .bounces
        .list_reports(v1::ListReportsRequest { status: 0, page_size: 100, page_token: String::new() })
        .await?
        .into_inner()
        .reports;
    assert_eq!(all.len(), 4, "three applied reports and one quarantined; the duplicate is stored once");

    // The export carries the bounce reason and diagnostic.
    let mut csv_bytes: Vec<u8> = Vec::new();
    sendwerk::client::export(&mut cluster.api, id, v1::RecipientState::Bounced, &mut csv_bytes).await?;
    let csv_text = String::from_utf8(csv_bytes)?;
    assert!(
        csv_text.contains("gone@b.example") && csv_text.contains("userunknown") && csv_text.contains("User unknown"),
        "{csv_text}"
    );
    cluster.shutdown().await
}

/// Soft bounces (mailbox full) count per address across mailings: the address is suppressed
/// when the limit (3 within 30 days by default) is reached, not before, and the next mailing
/// does not send to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_bounces_suppress_an_address_once_the_limit_is_reached_within_the_window() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { bounces: true, ..Default::default() }).await?;
    let listener_port = cluster.bounce_listener.as_ref().expect("listener runs").local_addr().port();
    let address = "full@soft.example";
    let suppression_of = |cluster: &TestCluster| {
        let mut suppressions = cluster.api.suppressions.clone();
        async move {
            let request = v1::CheckSuppressionsRequest { emails: vec![address.to_owned()] };
            let found = suppressions.check_suppressions(request).await?.into_inner().suppressed;
            anyhow::Ok(found.into_iter().map(|s| s.reason).collect::<Vec<_>>())
        }
    };
    for round in 1..=3 {
        let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
        cluster.add_recipients(id, vec![row(address, "", &[])], 10).await?;
        cluster.schedule_now(id).await?;
        cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
        let message = cluster.sink.messages().into_iter().last().expect("delivered");
        let report = dsn(address, &header_block(&message.data), "5.2.2", "552 5.2.2 mailbox full, quota exceeded");
        assert!(matches!(
            send_report(listener_port, &message.reverse_path, &report).await,
            sendwerk_core::DeliveryOutcome::Delivered(_)
        ));
        counts_when(&cluster, id, "the soft bounce to be applied", |counts| counts.bounced == 1).await?;
        let reasons = suppression_of(&cluster).await?;
        if round < 3 {
            assert!(reasons.is_empty(), "after {round} soft bounces the address is not suppressed yet: {reasons:?}");
        } else {
            assert_eq!(reasons, [v1::SuppressionReason::SoftBounce as i32], "the third soft bounce suppresses");
        }
    }
    // The next mailing skips the address.
    let delivered_before = cluster.sink.messages().len();
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster.add_recipients(id, vec![row(address, "", &[])], 10).await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let counts = done.counts.unwrap_or_default();
    assert_eq!((counts.suppressed, counts.sent), (1, 0), "{counts:?}");
    assert_eq!(cluster.sink.messages().len(), delivered_before, "nothing more was sent");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_arriving_together_share_transactions_and_each_counts_when() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { bounces: true, ..Default::default() }).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let emails: Vec<String> = (0..40).map(|i| format!("r{i}@b.example")).collect();
    cluster.add_recipients(id, emails.iter().map(|email| row(email, "", &[])).collect(), 40).await?;
    cluster.schedule_now(id).await?;
    cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let messages = cluster.sink.messages();
    let message_for = |email: &str| messages.iter().find(|m| m.recipients[0] == email).expect("delivered").clone();
    let listener_port = cluster.bounce_listener.as_ref().expect("listener runs").local_addr().port();

    let mut reports: Vec<(String, Vec<u8>)> = emails
        .iter()
        .enumerate()
        .map(|(index, email)| {
            let message = message_for(email);
            // Postgres refuses NUL in text; a report carrying one is still applied.
            let diagnostic = if index == 7 { "550 5.1.1 no\0such user" } else { "550 5.1.1 user unknown" };
            (message.reverse_path, dsn(email, &header_block(&message.data), "5.1.1", diagnostic))
        })
        .collect();
    // The same report twice in one burst, and a complaint about a recipient that also bounced.
    reports.push(reports[0].clone());
    let complained = message_for("r1@b.example");
    reports.push((complained.reverse_path.clone(), arf("r1@b.example", &String::from_utf8_lossy(&complained.data))));

    let outcomes = futures::future::join_all(reports.iter().map(|(to, raw)| send_report(listener_port, to, raw))).await;
    for outcome in &outcomes {
        assert!(matches!(outcome, sendwerk_core::DeliveryOutcome::Delivered(_)), "{outcome:?}");
    }
    // Every report was acknowledged after its commit: no waiting needed.
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.bounced, counts.complained, counts.sent), (39, 1, 0));
    let recipients = cluster.recipients(id).await?;
    let r7 = recipients.iter().find(|r| r.email == "r7@b.example").expect("present");
    assert_eq!(r7.last_reply.clone().unwrap_or_default().text, "550 5.1.1 no\u{fffd}such user");

    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT xmin::text), sum(num_applied)::bigint, \
                    count(*) FILTER (WHERE status = 'applied') FROM inbound_reports",
            &[],
        )
        .await?;
    let (stored, transactions, applied, applied_reports): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(stored, 41, "40 bounces and the complaint; the duplicate is stored once");
    assert_eq!(applied_reports, 41);
    // r1's bounce changes nothing if its complaint was applied first.
    assert!((40..=41).contains(&applied), "each report changed its recipient at most once: {applied}");
    assert!(transactions < stored, "{stored} reports arriving together took {transactions} transactions");
    let events: i64 = client
        .query_one(
            "SELECT count(*) FROM delivery_events WHERE mailing_id = $1 AND kind IN ('bounced', 'complained')",
            &[&id],
        )
        .await?
        .get(0);
    assert_eq!(events, applied, "one event per change");
    cluster.shutdown().await
}

/// A report names the recipient by id alone, and a recipient's key is (mailing, id): the report
/// changes the recipient of the mailing that sent the bounced message, not the same address in
/// another mailing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_changes_the_recipient_of_the_mailing_that_sent_the_message() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { bounces: true, ..Default::default() }).await?;
    let emails = ["same@b.example", "other@b.example"];
    let mut mailings = Vec::new();
    for subject in ["First", "Second"] {
        let id = cluster.create_mailing(simple_content(subject, "Hello")).await?;
        cluster.add_recipients(id, emails.iter().map(|email| row(email, "", &[])).collect(), 10).await?;
        cluster.schedule_now(id).await?;
        cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
        mailings.push(id);
    }
    let messages = cluster.sink.messages();
    let second = messages
        .iter()
        .find(|m| m.recipients[0] == "same@b.example" && String::from_utf8_lossy(&m.data).contains("Subject: Second"))
        .expect("the second mailing reached same@b.example")
        .clone();
    let listener_port = cluster.bounce_listener.as_ref().expect("listener runs").local_addr().port();
    let report = dsn("same@b.example", &header_block(&second.data), "5.1.1", "550 5.1.1 user unknown");
    assert!(matches!(
        send_report(listener_port, &second.reverse_path, &report).await,
        sendwerk_core::DeliveryOutcome::Delivered(_)
    ));

    let state_of = |recipients: &[v1::Recipient], email: &str| {
        recipients.iter().find(|r| r.email == email).map(|r| r.state).expect("present")
    };
    let first = cluster.recipients(mailings[0]).await?;
    let second = cluster.recipients(mailings[1]).await?;
    assert_eq!(state_of(&first, "same@b.example"), v1::RecipientState::Sent as i32, "the first mailing's recipient");
    assert_eq!(state_of(&second, "same@b.example"), v1::RecipientState::Bounced as i32, "the bounced one");
    assert_eq!(state_of(&second, "other@b.example"), v1::RecipientState::Sent as i32);
    let counts = |mailing: v1::Mailing| mailing.counts.unwrap_or_default();
    let (first, second) = (counts(cluster.mailing(mailings[0]).await?), counts(cluster.mailing(mailings[1]).await?));
    assert_eq!((first.sent, first.bounced), (2, 0));
    assert_eq!((second.sent, second.bounced), (1, 1));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reads_maildirs_and_mboxes_collected_elsewhere() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { bounces: true, ..Default::default() }).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let emails = ["a@b.example", "b@b.example", "c@b.example", "d@b.example"];
    cluster.add_recipients(id, emails.iter().map(|email| row(email, "", &[])).collect(), 10).await?;
    cluster.schedule_now(id).await?;
    cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let messages = cluster.sink.messages();
    // Collected elsewhere: no envelope, so the X-Sendwerk-Ref in the returned headers matches them.
    let report_for = |email: &str| {
        let message = messages.iter().find(|m| m.recipients[0] == email).expect("delivered");
        dsn(email, &header_block(&message.data), "5.1.1", "550 5.1.1 user unknown")
    };
    let directory = tempfile::tempdir()?;
    let maildir = directory.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub))?;
    }
    std::fs::write(maildir.join("new/1.eml"), report_for("a@b.example"))?;
    std::fs::write(maildir.join("cur/2.eml"), report_for("b@b.example"))?;
    std::fs::write(maildir.join("tmp/3.eml"), report_for("c@b.example"))?;
    let mut mbox = Vec::new();
    for report in
        [report_for("c@b.example"), report_for("a@b.example"), b"Subject: hello\r\n\r\nnot a bounce\r\n".to_vec()]
    {
        mbox.extend_from_slice(b"From MAILER-DAEMON Sun Nov 22 12:00:00 2026\n");
        mbox.extend_from_slice(&report);
    }
    std::fs::write(maildir.join("cur/bounces.mbox"), mbox)?;

    let verp = cluster.verp.clone().expect("bounces are on");
    let processor = sendwerk_bounce::BounceProcessor::new(cluster.store.clone(), verp, 3, 30, 10 * 1024 * 1024);
    let summary = sendwerk_bounce::ingest_path(&processor, &maildir).await?;
    // tmp/ holds messages still being written and is skipped; the mbox repeats a's report.
    assert_eq!(
        summary,
        sendwerk_bounce::IngestSummary {
            num_messages: 5,
            num_duplicates: 1,
            num_applied: 3,
            num_ignored: 0,
            num_quarantined: 1
        }
    );
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.bounced, counts.sent), (3, 1));
    cluster.shutdown().await
}

/// A report to a return path of the earlier form, `b-<id>-<mac>` without the mailing (a message
/// sent before migration 11), is still matched: its mailing is looked up by the recipient's id,
/// among several mailings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_to_a_return_path_of_the_earlier_form_is_still_applied() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { bounces: true, ..Default::default() }).await?;
    let draft = cluster.create_mailing(simple_content("Draft", "Hello")).await?;
    cluster.add_recipients(draft, vec![row("someone@old.example", "", &[])], 10).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster.add_recipients(id, vec![row("gone@old.example", "", &[]), row("fine@old.example", "", &[])], 10).await?;
    cluster.schedule_now(id).await?;
    cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let gone = cluster.recipients(id).await?.into_iter().find(|r| r.email == "gone@old.example").expect("present");
    let verp = cluster.verp.clone().expect("bounces are on");
    let legacy = verp.return_path_of(&verp.legacy_token(sendwerk_core::RecipientId::new(gone.id)));
    let local_part = legacy.split('@').next().unwrap_or_default();
    assert_eq!(local_part.matches('-').count(), 2, "b-<id>-<mac>, no mailing: {legacy}");
    let listener_port = cluster.bounce_listener.as_ref().expect("listener runs").local_addr().port();
    // The returned headers carry no X-Sendwerk-Ref: only the return path can match.
    let report = dsn("gone@old.example", "From: news@shop.example\r\nSubject: Hi", "5.1.1", "550 5.1.1 user unknown");
    assert!(matches!(send_report(listener_port, &legacy, &report).await, sendwerk_core::DeliveryOutcome::Delivered(_)));
    counts_when(&cluster, id, "the report to be applied", |counts| counts.bounced == 1).await?;
    let rows = cluster.recipients(id).await?;
    let bounced = rows.iter().find(|r| r.email == "gone@old.example").expect("present");
    assert_eq!((bounced.state, bounced.reason.as_str()), (v1::RecipientState::Bounced as i32, "userunknown"));
    let waiting = cluster.mailing(draft).await?.counts.unwrap_or_default();
    assert_eq!(waiting.queued, 1, "the other mailing is untouched");
    cluster.shutdown().await
}
