use std::time::Duration;

use sendwerk_core::MailingId;
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions};

/// With default planner costs the claim walked the primary key on a draining queue and ran
/// 15x slower (measured); the embedded cluster sets SSD-like costs and the claim must use the
/// partial queue index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_uses_the_partial_queue_index_on_a_draining_queue() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let rows: Vec<_> = (0..20_000).map(|i| row(&format!("q{i}@d{}.example", i % 50), "", &[])).collect();
    cluster.add_recipients(id, rows, 5_000).await?;
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // Most of the campaign is done; a few hundred rows still wait.
    client
        .batch_execute(&format!(
            "UPDATE recipients SET state = 'sent' WHERE mailing_id = {id} AND id % 50 <> 0; ANALYZE recipients;"
        ))
        .await?;
    let plan = cluster.store.explain_claim(MailingId::new(id)).await?;
    // The due rows are found through the queue index; the primary key only serves the
    // `UPDATE … FROM due` join by id.
    assert!(
        plan.contains("Index Scan using recipients_queue on recipients r_1"),
        "the claim must use the partial queue index:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan on recipients"), "no sequential scan of recipients:\n{plan}");
    assert!(
        !plan.contains("using recipients_pkey on recipients r_1"),
        "the claim must not walk the primary key:\n{plan}"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_state_counts_follow_every_transition() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let mut rows: Vec<_> = (0..40).map(|i| row(&format!("c{i}@count.example"), "", &[])).collect();
    rows.push(row("permfail@count.example", "", &[]));
    rows.push(row("tempfail@count.example", "", &[]));
    cluster.add_recipients(id, rows, 7).await?;
    let queued = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((queued.total, queued.queued), (42, 42));
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    let counts = done.counts.unwrap_or_default();
    assert_eq!(
        (counts.total, counts.sent, counts.failed, counts.queued, counts.sending, counts.deferred),
        (42, 41, 1, 0, 0, 0)
    );
    // The counters agree with the rows themselves.
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows =
        client.query("SELECT state, count(*) FROM recipients WHERE mailing_id = $1 GROUP BY state", &[&id]).await?;
    for row in rows {
        let (state, n): (String, i64) = (row.get(0), row.get(1));
        let counted = match state.as_str() {
            "sent" => counts.sent,
            "failed" => counts.failed,
            other => panic!("unexpected state {other}"),
        };
        assert_eq!(counted, n, "counter for {state}");
    }
    cluster.shutdown().await
}
