use sendwerk_proto::v1;
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions};
use tonic::Code;

async fn idle_cluster() -> anyhow::Result<TestCluster> {
    TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await
}

fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, mentions: &[&str]) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    for needle in mentions {
        assert!(status.message().contains(needle), "{:?} should mention {needle:?}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mailings_are_rejected_naming_the_field() -> anyhow::Result<()> {
    let mut cluster = idle_cluster().await?;
    let mut bad_from = simple_content("Hi", "Hello");
    bad_from.from = Some(v1::Address { email: "not an address".into(), name: String::new() });
    assert_status(
        cluster.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(bad_from) }).await,
        Code::InvalidArgument,
        &["content.from.email"],
    );

    let mut bad_template = simple_content("Hi", "Hello");
    bad_template.html_template = "<p>\n{{ first_name }\n</p>".into();
    assert_status(
        cluster.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(bad_template) }).await,
        Code::InvalidArgument,
        &["html_template", "line 2"],
    );

    let mut injected_header = simple_content("Hi", "Hello");
    injected_header.headers =
        vec![v1::Header { name: "X-Campaign".into(), value: "a\r\nBcc: victim@example.org".into() }];
    assert_status(
        cluster.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(injected_header) }).await,
        Code::InvalidArgument,
        &["X-Campaign"],
    );

    let mut reserved_header = simple_content("Hi", "Hello");
    reserved_header.headers = vec![v1::Header { name: "Bcc".into(), value: "victim@example.org".into() }];
    assert_status(
        cluster.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(reserved_header) }).await,
        Code::InvalidArgument,
        &["Bcc"],
    );

    // Postgres cannot store NUL: the field that holds one is named, nothing fails later.
    let mut nul_body = simple_content("Hi", "Hello");
    nul_body.text_template = "Hello\0there".into();
    assert_status(
        cluster.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(nul_body) }).await,
        Code::InvalidArgument,
        &["content.text_template", "NUL"],
    );

    let mut too_large = simple_content("Hi", "Hello");
    too_large.attachments = vec![v1::Attachment {
        filename: "big.bin".into(),
        content_type: "application/octet-stream".into(),
        content: vec![7u8; 11 * 1024 * 1024],
        content_id: String::new(),
    }];
    assert_status(
        cluster.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(too_large) }).await,
        Code::InvalidArgument,
        &["size limit"],
    );

    let mut no_body = simple_content("Hi", "");
    no_body.html_template = String::new();
    assert_status(
        cluster.api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(no_body) }).await,
        Code::InvalidArgument,
        &["template"],
    );

    assert_status(
        cluster.api.mailings.get_mailing(v1::MailingRef { mailing_id: 999_999 }).await,
        Code::NotFound,
        &["999999"],
    );
    assert_status(
        cluster.api.mailings.get_mailing(v1::MailingRef { mailing_id: 0 }).await,
        Code::InvalidArgument,
        &["mailing_id"],
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_names_recipients_lacking_a_merge_variable_and_checks_the_time() -> anyhow::Result<()> {
    let mut cluster = idle_cluster().await?;
    let id =
        cluster.create_mailing(simple_content("Hallo {{ first_name }}", "{{ first_name }} aus {{ city }}")).await?;
    cluster
        .add_recipients(
            id,
            vec![
                row("full@x.example", "", &[("first_name", "A"), ("city", "Kiel")]),
                row("nocity@x.example", "", &[("first_name", "B")]),
                row("nothing@x.example", "", &[]),
            ],
            10,
        )
        .await?;
    let preview = cluster
        .api
        .mailings
        .preview(v1::PreviewRequest {
            mailing_id: id,
            subject: Some(v1::preview_request::Subject::Email("nocity@x.example".into())),
        })
        .await;
    assert_status(preview, Code::InvalidArgument, &["city"]);

    let schedule =
        cluster.api.mailings.schedule(v1::ScheduleRequest { mailing_id: id, send_at: None, max_per_hour: 0 }).await;
    assert_status(schedule, Code::InvalidArgument, &["2 recipient", "nocity@x.example", "nothing@x.example", "city"]);
    assert_eq!(cluster.mailing(id).await?.state, v1::MailingState::Draft as i32, "a failed schedule changes nothing");

    let malformed = cluster
        .api
        .mailings
        .schedule(v1::ScheduleRequest {
            mailing_id: id,
            send_at: Some(prost_types::Timestamp { seconds: 1, nanos: -5 }),
            max_per_hour: 0,
        })
        .await;
    assert_status(malformed, Code::InvalidArgument, &["send_at"]);

    // Fix the content (still a draft), then a send time in the past means now.
    cluster
        .api
        .mailings
        .update_mailing(v1::UpdateMailingRequest {
            mailing_id: id,
            content: Some(simple_content("Hallo", "Hallo {{ email }}")),
        })
        .await?;
    let scheduled = cluster
        .api
        .mailings
        .schedule(v1::ScheduleRequest {
            mailing_id: id,
            send_at: Some(prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 }),
            max_per_hour: 0,
        })
        .await?
        .into_inner();
    assert_eq!(scheduled.state, v1::MailingState::Scheduled as i32);
    let update = cluster
        .api
        .mailings
        .update_mailing(v1::UpdateMailingRequest { mailing_id: id, content: Some(simple_content("x", "y")) })
        .await;
    assert_status(update, Code::FailedPrecondition, &["scheduled"]);
    cluster.start_sender()?;
    let done = cluster.wait_until_finished(id, std::time::Duration::from_secs(60)).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 3);
    let resume = cluster.api.mailings.resume(v1::MailingRef { mailing_id: id }).await;
    assert_status(resume, Code::FailedPrecondition, &["completed"]);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_fields_cannot_inject_headers() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hallo {{ name }}", "Text {{ name }}")).await?;
    cluster
        .add_recipients(
            id,
            vec![row("target@inj.example", "", &[("name", "x\r\nBcc: victim@evil.example\r\n\r\nfake body")])],
            1,
        )
        .await?;
    cluster.schedule_now(id).await?;
    cluster.wait_until_finished(id, std::time::Duration::from_secs(60)).await?;
    let messages = cluster.sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].recipients, vec!["target@inj.example".to_owned()], "no extra envelope recipient");
    let raw = String::from_utf8_lossy(&messages[0].data).into_owned();
    let (headers, _) = raw.split_once("\r\n\r\n").expect("header/body separator");
    assert!(!headers.to_ascii_lowercase().contains("\r\nbcc:"), "no injected header:\n{headers}");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_api_token_is_required() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(TestClusterOptions {
        start_sender: false,
        api_token: Some("s3cret-token".into()),
        ..Default::default()
    })
    .await?;
    let endpoint = cluster.control.as_ref().expect("control runs").endpoint();
    let mut anonymous = sendwerk::client::Api::connect(&endpoint, None).await?;
    assert_status(
        anonymous.mailings.get_mailing(v1::MailingRef { mailing_id: 1 }).await,
        Code::Unauthenticated,
        &["token"],
    );
    let mut wrong = sendwerk::client::Api::connect(&endpoint, Some("s3cret-tokeX")).await?;
    assert_status(
        wrong.mailings.get_mailing(v1::MailingRef { mailing_id: 1 }).await,
        Code::Unauthenticated,
        &["token"],
    );
    let mut authorised = cluster.api.clone();
    assert_status(
        authorised.mailings.get_mailing(v1::MailingRef { mailing_id: 1 }).await,
        Code::NotFound,
        &["mailing"],
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_stream_reports_bad_rows_by_index_across_chunks_and_keeps_going() -> anyhow::Result<()> {
    let mut cluster = idle_cluster().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    // 12,000 rows cross two chunk boundaries; rows 6000.. repeat rows 0..100 (duplicates that
    // arrive in a later chunk), and every 1000th row is malformed.
    let rows: Vec<_> = (0..12_000)
        .map(|i| {
            if i % 1000 == 999 {
                row(&format!("broken{i}"), "", &[])
            } else if (6000..6100).contains(&i) {
                row(&format!("u{}@chunks.example", i - 6000), "", &[])
            } else {
                row(&format!("u{i}@chunks.example"), "", &[])
            }
        })
        .collect();
    let added = cluster.add_recipients(id, rows, 700).await?;
    assert_eq!(added.invalid, 12);
    assert_eq!(added.duplicates, 100);
    assert_eq!(added.accepted, 12_000 - 12 - 100);
    let duplicate_indices: Vec<i64> =
        added.rejected.iter().filter(|r| r.kind == v1::RejectionKind::Duplicate as i32).map(|r| r.index).collect();
    assert_eq!(duplicate_indices, (6000..6100).collect::<Vec<i64>>(), "the later row is the duplicate");
    assert!(added.rejected.windows(2).all(|pair| pair[0].index < pair[1].index), "rejected rows in stream order");
    assert_eq!(cluster.mailing(id).await?.counts.unwrap_or_default().queued, 12_000 - 12 - 100);
    cluster.shutdown().await
}

/// Chunks are inserted behind an anti-join, without `ON CONFLICT`; an address that another
/// transaction adds at the same moment fails that insert with a unique violation. The chunk is
/// then inserted again, tolerating the conflict: the address is a duplicate, every other row
/// of the chunk is added, and nothing is added twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_added_concurrently_by_another_stream_is_a_duplicate_and_the_chunk_is_kept() -> anyhow::Result<()> {
    let mut cluster = idle_cluster().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let tenant: String = client.query_one("SELECT tenant_id FROM mailings WHERE id = $1", &[&id]).await?.get(0);
    // Another writer holds the address, not yet committed: the chunk's insert waits for it.
    client.batch_execute("BEGIN").await?;
    client
        .execute(
            "INSERT INTO recipients (mailing_id, tenant_id, email, domain, shard, state)
             VALUES ($1, $2, 'race@two.example', 'two.example', 0, 'queued')",
            &[&id, &tenant],
        )
        .await?;
    let mut api = cluster.api.clone();
    let rows =
        vec![row("first@one.example", "", &[]), row("RACE@two.example", "", &[]), row("last@three.example", "", &[])];
    let adding = tokio::spawn(async move {
        api.mailings.add_recipients(tokio_stream::iter(vec![v1::AddRecipientsRequest { mailing_id: id, rows }])).await
    });
    let (watcher, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let waited = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let waiting: i64 = watcher
                .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'", &[])
                .await?
                .get(0);
            if waiting > 0 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the chunk's insert never waited for the other writer");
    client.batch_execute("COMMIT").await?;

    let added = adding.await??.into_inner();
    assert_eq!((added.accepted, added.duplicates), (2, 1));
    let rejected: Vec<(i64, i32)> = added.rejected.iter().map(|r| (r.index, r.kind)).collect();
    assert_eq!(rejected, vec![(1, v1::RejectionKind::Duplicate as i32)]);
    let stored: Vec<String> = client
        .query("SELECT email FROM recipients WHERE mailing_id = $1 ORDER BY email", &[&id])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, ["first@one.example", "last@three.example", "race@two.example"]);
    let queued: i64 = client.query_one("SELECT count(*) FROM queue WHERE mailing_id = $1", &[&id]).await?.get(0);
    assert_eq!(queued, 2, "the chunk's two new rows are queued once");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_holding_nul_characters_are_rejected_by_field_and_the_rest_are_added() -> anyhow::Result<()> {
    let mut cluster = idle_cluster().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let rows = vec![
        row("ok@nul.example", "", &[("first_name", "Ann")]),
        row("bad-id@nul.example", "crm\0-1", &[]),
        row("bad-var@nul.example", "", &[("first_name", "A\0nn")]),
        row("also-ok@nul.example", "crm-2", &[]),
    ];
    let added = cluster.add_recipients(id, rows, 10).await?;
    assert_eq!((added.accepted, added.invalid), (2, 2));
    let reasons: Vec<(i64, String)> = added.rejected.iter().map(|r| (r.index, r.reason.clone())).collect();
    assert_eq!(
        reasons,
        vec![
            (1, "external_id: must not contain NUL characters".to_owned()),
            (2, "variables.first_name: must not contain NUL characters".to_owned()),
        ]
    );
    assert_eq!(cluster.mailing(id).await?.counts.unwrap_or_default().queued, 2);
    cluster.shutdown().await
}
