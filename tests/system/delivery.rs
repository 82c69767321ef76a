use std::time::Duration;

use sendwerk_proto::v1;
use sendwerk_tests::TestCluster;
use sendwerk_tests::cluster::{row, simple_content};

const FINISH: Duration = Duration::from_secs(60);

fn body_text(raw: &[u8]) -> String {
    let message = mail_parser::MessageParser::default().parse(raw).expect("parseable message");
    message.body_text(0).map(|text| text.into_owned()).unwrap_or_default()
}

fn subject(raw: &[u8]) -> String {
    let message = mail_parser::MessageParser::default().parse(raw).expect("parseable message");
    message.subject().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_arrives_with_their_own_personalisation() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster
        .create_mailing(simple_content(
            "Hallo {{ first_name }}",
            "Liebe(r) {{ first_name }} {{ last_name }}, Kundennr. {{ external_id }}.",
        ))
        .await?;
    let rows: Vec<_> = (0..300)
        .map(|i| {
            row(
                &format!("user{i}@dest{}.example", i % 7),
                &format!("C{i}"),
                &[("first_name", &format!("Vor{i}")), ("last_name", "Müller")],
            )
        })
        .collect();
    let added = cluster.add_recipients(id, rows, 100).await?;
    assert_eq!(added.accepted, 300);
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, FINISH).await?;
    assert_eq!(done.state, v1::MailingState::Completed as i32);
    assert_eq!(done.counts.unwrap_or_default().sent, 300);

    let messages = cluster.sink.messages();
    assert_eq!(messages.len(), 300, "each recipient exactly once");
    for message in &messages {
        let to = &message.recipients[0];
        let i: usize = to.trim_start_matches("user").split('@').next().unwrap_or_default().parse()?;
        assert_eq!(subject(&message.data), format!("Hallo Vor{i}"));
        assert_eq!(body_text(&message.data).trim(), format!("Liebe(r) Vor{i} Müller, Kundennr. C{i}."));
        assert_eq!(message.reverse_path, "news@shop.example");
        let raw = format!("\r\n{}", String::from_utf8_lossy(&message.data));
        assert!(raw.contains("\r\nMessage-ID: <") && raw.contains("\r\nDate: "), "Message-ID and Date are always set");
        assert!(!raw.replace("\r\n", "").contains('\n'), "only CRLF line endings");
    }
    let recipients = cluster.recipients(id).await?;
    assert!(recipients.iter().all(|r| r.state == v1::RecipientState::Sent as i32 && r.attempts == 1));
    assert!(recipients.iter().all(|r| r.last_reply.as_ref().is_some_and(|reply| reply.code == 250)));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_suppressed_recipients_are_reported_and_never_sent() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    cluster
        .api
        .suppressions
        .add_suppressions(v1::AddSuppressionsRequest {
            emails: vec!["Blocked@Shop.example".into()],
            reason: v1::SuppressionReason::Unsubscribe as i32,
            note: String::new(),
        })
        .await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello {{ email }}")).await?;
    let rows = vec![
        row("ok1@a.example", "1", &[]),
        row("not-an-address", "2", &[]),
        row("blocked@shop.example", "3", &[]),
        row("OK1@A.example", "4", &[]),
        row("ok2@b.example", "5", &[]),
        row("bad@@x.example", "6", &[]),
    ];
    let added = cluster.add_recipients(id, rows, 2).await?;
    assert_eq!((added.accepted, added.invalid, added.duplicates, added.suppressed), (2, 2, 1, 1));
    let rejected: Vec<(i64, i32)> = added.rejected.iter().map(|r| (r.index, r.kind)).collect();
    assert_eq!(
        rejected,
        vec![
            (1, v1::RejectionKind::Invalid as i32),
            (2, v1::RejectionKind::Suppressed as i32),
            (3, v1::RejectionKind::Duplicate as i32),
            (5, v1::RejectionKind::Invalid as i32),
        ]
    );
    assert!(added.rejected[0].reason.contains("no '@'"), "the reason names the problem: {}", added.rejected[0].reason);

    // Suppressed after being queued: skipped at send time.
    cluster
        .api
        .suppressions
        .add_suppressions(v1::AddSuppressionsRequest {
            emails: vec!["ok2@b.example".into()],
            reason: v1::SuppressionReason::Manual as i32,
            note: String::new(),
        })
        .await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, FINISH).await?;
    let counts = done.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.suppressed, counts.total), (1, 2, 3));
    let delivered: Vec<String> = cluster.sink.messages().iter().flat_map(|m| m.recipients.clone()).collect();
    assert_eq!(delivered, vec!["ok1@a.example".to_owned()]);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_is_retried_and_then_delivered() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster.add_recipients(id, vec![row("tempfail@c.example", "", &[]), row("fine@c.example", "", &[])], 10).await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, FINISH).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 2);
    let recipients = cluster.recipients(id).await?;
    let tempfail = recipients.iter().find(|r| r.email == "tempfail@c.example").expect("present");
    assert_eq!(tempfail.attempts, 2, "one deferral, then delivered");
    assert_eq!(cluster.sink.attempts_for("tempfail@c.example"), 2);
    let events = deferred_events(&cluster, "tempfail@c.example").await?;
    assert_eq!(events, vec!["deferred".to_owned(), "sent".to_owned()]);
    cluster.shutdown().await
}

async fn deferred_events(cluster: &TestCluster, email: &str) -> anyhow::Result<Vec<String>> {
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT e.kind FROM delivery_events e JOIN recipients r ON r.mailing_id = e.mailing_id AND r.id = e.recipient_id WHERE r.email = $1 ORDER BY e.id",
            &[&email],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_ends_failed_with_the_servers_reply() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster
        .add_recipients(id, vec![row("permfail@d.example", "X1", &[]), row("after@d.example", "X2", &[])], 10)
        .await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, FINISH).await?;
    let counts = done.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.failed), (1, 1));
    let recipients = cluster.recipients(id).await?;
    let failed = recipients.iter().find(|r| r.email == "permfail@d.example").expect("present");
    assert_eq!(failed.state, v1::RecipientState::Failed as i32);
    assert_eq!(failed.attempts, 1, "never retried");
    let reply = failed.last_reply.clone().expect("the server's reply is kept");
    assert_eq!((reply.code, reply.enhanced_status.as_str()), (550, "5.1.1"));
    assert!(!reply.text.is_empty());
    assert_eq!(failed.reason, "userunknown", "classified like a bounce report would be");
    let suppressed = cluster
        .api
        .suppressions
        .check_suppressions(v1::CheckSuppressionsRequest {
            emails: vec!["permfail@d.example".into(), "after@d.example".into()],
        })
        .await?
        .into_inner()
        .suppressed;
    assert_eq!(suppressed.len(), 1, "a hard rejection at RCPT suppresses the address");
    assert_eq!(suppressed[0].reason, v1::SuppressionReason::HardBounce as i32);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_lists_every_recipient_with_state_and_reply() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster
        .add_recipients(
            id,
            vec![
                row("a@e.example", "ext-1", &[]),
                row("permfail@e.example", "ext-2", &[]),
                row("b@e.example", "ext, \"3\"", &[]),
            ],
            10,
        )
        .await?;
    cluster.schedule_now(id).await?;
    cluster.wait_until_finished(id, FINISH).await?;
    let mut csv_bytes: Vec<u8> = Vec::new();
    sendwerk::client::export(&mut cluster.api, id, v1::RecipientState::Unspecified, &mut csv_bytes).await?;
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        [
            "address",
            "external_id",
            "state",
            "attempts",
            "last_smtp_code",
            "last_enhanced_status",
            "last_smtp_reply",
            "reason",
            "updated_at"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    assert_eq!(records.len(), 3);
    let fields = |record: &csv::StringRecord, n: usize| record.iter().take(n).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(fields(&records[0], 5), ["a@e.example", "ext-1", "sent", "1", "250"]);
    assert_eq!(fields(&records[1], 6), ["permfail@e.example", "ext-2", "failed", "1", "550", "5.1.1"]);
    assert!(!records[1][6].is_empty() && !records[1][7].is_empty(), "reply text and reason are exported");
    assert_eq!(&records[2][1], "ext, \"3\"", "CSV quoting round-trips");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_renders_and_a_test_send_is_delivered_marked_as_a_test() -> anyhow::Result<()> {
    let mut cluster =
        TestCluster::start_with(sendwerk_tests::TestClusterOptions { start_sender: false, ..Default::default() })
            .await?;
    let mut content = simple_content("Angebot für {{ first_name }}", "Hallo {{ first_name }}!");
    content.html_template = "<p>Hallo {{ first_name }}</p>".into();
    let id = cluster.create_mailing(content).await?;
    cluster.add_recipients(id, vec![row("anna@f.example", "A", &[("first_name", "Anna <b>")])], 10).await?;

    let by_email = cluster
        .api
        .mailings
        .preview(v1::PreviewRequest {
            mailing_id: id,
            subject: Some(v1::preview_request::Subject::Email("anna@f.example".into())),
        })
        .await?
        .into_inner();
    assert_eq!(by_email.subject, "Angebot für Anna <b>");
    assert_eq!(by_email.text, "Hallo Anna <b>!");
    assert_eq!(by_email.html, "<p>Hallo Anna &lt;b&gt;</p>", "HTML merge values are escaped");
    assert!(String::from_utf8_lossy(&by_email.raw).contains("To: anna@f.example\r\n"));

    let variables = prost_types::Struct {
        fields: [(
            "first_name".to_owned(),
            prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("Bernd".into())) },
        )]
        .into(),
    };
    let test = cluster
        .api
        .mailings
        .send_test(v1::SendTestRequest { mailing_id: id, to: vec!["qa@g.example".into()], variables: Some(variables) })
        .await?
        .into_inner();
    assert!(test.deliveries[0].accepted, "{:?}", test.deliveries);
    let messages = cluster.sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(subject(&messages[0].data), "[TEST] Angebot für Bernd");
    assert!(String::from_utf8_lossy(&messages[0].data).contains("\r\nX-Sendwerk-Test: yes\r\n"));
    let mailing = cluster.mailing(id).await?;
    assert_eq!(mailing.state, v1::MailingState::Draft as i32, "a test send does not start the mailing");
    assert_eq!(mailing.counts.unwrap_or_default().queued, 1);
    cluster.shutdown().await
}
