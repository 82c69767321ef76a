use std::collections::HashMap;
use std::time::{Duration, Instant};

use sendwerk_proto::v1;
use sendwerk_smtpd::sink::BehaviourSink;
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions};

const FINISH: Duration = Duration::from_secs(90);

fn rows(count: usize, domain_spread: usize) -> Vec<v1::RecipientRow> {
    (0..count).map(|i| row(&format!("r{i}@d{}.example", i % domain_spread), &i.to_string(), &[])).collect()
}

fn slow_sink() -> BehaviourSink {
    BehaviourSink::new().with_data_latency(Duration::from_millis(4))
}

/// A cluster with a slow sink and two connections, sending a mailing of `num_rows` recipients
/// over `num_domains` domains, returned once `started` messages have reached the sink.
async fn mailing_under_way(
    options: TestClusterOptions,
    num_rows: usize,
    num_domains: usize,
    started: u64,
) -> anyhow::Result<(TestCluster, i64)> {
    let mut cluster =
        TestCluster::start_with(TestClusterOptions { sink: slow_sink, num_connections: 2, ..options }).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster.add_recipients(id, rows(num_rows, num_domains), 500).await?;
    cluster.schedule_now(id).await?;
    anyhow::ensure!(
        cluster.sink.wait_for_messages(started, Duration::from_secs(30)).await,
        "timed out waiting for {started} messages to go out"
    );
    Ok((cluster, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_mailing_does_not_start_before_its_time() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster.add_recipients(id, rows(20, 3), 10).await?;
    let send_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let scheduled = cluster
        .api
        .mailings
        .schedule(v1::ScheduleRequest {
            mailing_id: id,
            send_at: Some(prost_types::Timestamp { seconds: send_at.timestamp(), nanos: 0 }),
            max_per_hour: 0,
        })
        .await?
        .into_inner();
    assert_eq!(scheduled.state, v1::MailingState::Scheduled as i32);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(cluster.sink.num_accepted(), 0, "nothing goes out before send_at");
    assert_eq!(cluster.mailing(id).await?.state, v1::MailingState::Scheduled as i32);
    let done = cluster.wait_until_finished(id, FINISH).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 20);
    let started = done.started_at.expect("started_at is set");
    assert!(started.seconds >= send_at.timestamp(), "started at {} before {}", started.seconds, send_at.timestamp());
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_new_sends_and_resume_finishes_the_mailing() -> anyhow::Result<()> {
    let (mut cluster, id) =
        mailing_under_way(TestClusterOptions { claim_batch_size: 16, ..Default::default() }, 1500, 10, 100).await?;
    let paused = cluster.api.mailings.pause(v1::MailingRef { mailing_id: id }).await?.into_inner();
    assert_eq!(paused.state, v1::MailingState::Paused as i32);
    // In-flight transactions of the last claim batch may still finish; then nothing more.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after_pause = cluster.sink.num_accepted();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(cluster.sink.num_accepted(), after_pause, "no new SMTP transactions while paused");
    assert!(after_pause < 1500, "the pause came before the end");
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!(counts.sending, 0, "claimed rows were finished or handed back");

    let resumed = cluster.api.mailings.resume(v1::MailingRef { mailing_id: id }).await?.into_inner();
    assert_eq!(resumed.state, v1::MailingState::Sending as i32);
    let done = cluster.wait_until_finished(id, FINISH).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 1500);
    assert_eq!(cluster.sink.num_accepted(), 1500, "each recipient exactly once");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_scheduled_mailing_sends_nothing() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster.add_recipients(id, rows(50, 5), 50).await?;
    let send_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    cluster
        .api
        .mailings
        .schedule(v1::ScheduleRequest {
            mailing_id: id,
            send_at: Some(prost_types::Timestamp { seconds: send_at.timestamp(), nanos: 0 }),
            max_per_hour: 0,
        })
        .await?;
    let cancelled = cluster.api.mailings.cancel(v1::MailingRef { mailing_id: id }).await?.into_inner();
    assert_eq!(cancelled.state, v1::MailingState::Cancelled as i32);
    assert_eq!(cancelled.counts.unwrap_or_default().cancelled, 50);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.sink.num_accepted(), 0);
    let recipients = cluster.recipients(id).await?;
    assert!(recipients.iter().all(|r| r.state == v1::RecipientState::Cancelled as i32));
    let error = cluster
        .api
        .mailings
        .resume(v1::MailingRef { mailing_id: id })
        .await
        .expect_err("resume of a cancelled mailing");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    cluster.shutdown().await
}

async fn outcome_unknown_recipients(cluster: &TestCluster) -> anyhow::Result<Vec<String>> {
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = client
        .query("SELECT DISTINCT r.email FROM delivery_events e JOIN recipients r ON r.mailing_id = e.mailing_id AND r.id = e.recipient_id WHERE e.kind = 'outcome-unknown'", &[])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

fn deliveries_per_address(cluster: &TestCluster) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in cluster.sink.messages() {
        for recipient in message.recipients {
            *counts.entry(recipient).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_crash_mid_run_loses_no_recipient_and_records_possible_duplicates() -> anyhow::Result<()> {
    let options = TestClusterOptions { claim_batch_size: 32, lease: Duration::from_secs(2), ..Default::default() };
    let (mut cluster, id) = mailing_under_way(options, 1200, 12, 200).await?;
    cluster.kill_sender();
    let crashed_at = Instant::now();
    cluster.start_sender()?;
    let done = cluster.wait_until_finished(id, FINISH).await?;
    let counts = done.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.total), (1200, 1200), "every recipient ends sent");
    let deliveries = deliveries_per_address(&cluster);
    assert_eq!(deliveries.len(), 1200, "nobody is lost");
    let unknown = outcome_unknown_recipients(&cluster).await?;
    for (address, times) in &deliveries {
        if *times > 1 {
            assert!(
                unknown.contains(address),
                "{address} was delivered {times} times without an outcome-unknown event"
            );
        }
    }
    assert!(crashed_at.elapsed() >= Duration::from_secs(2) || unknown.is_empty(), "recovery waits for the lease");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_sender_restart_mid_run_causes_no_duplicates() -> anyhow::Result<()> {
    let (mut cluster, id) =
        mailing_under_way(TestClusterOptions { claim_batch_size: 32, ..Default::default() }, 1000, 10, 150).await?;
    cluster.stop_sender().await?;
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!(counts.sending, 0, "a graceful stop hands every claimed row back");
    cluster.start_sender()?;
    let done = cluster.wait_until_finished(id, FINISH).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 1000);
    let deliveries = deliveries_per_address(&cluster);
    assert_eq!(deliveries.len(), 1000);
    assert!(deliveries.values().all(|times| *times == 1), "zero duplicates after a graceful restart");
    assert!(outcome_unknown_recipients(&cluster).await?.is_empty());
    cluster.shutdown().await
}

fn very_slow_sink() -> BehaviourSink {
    BehaviourSink::new().with_slow_delay(Duration::from_secs(4))
}

/// A transaction that takes longer than the lease (4 s against 3) when the sender is told to
/// stop still finishes within the grace period (5 s), and its outcome is written: the sender
/// keeps renewing its leases until every outcome is written, so nothing is fenced off and
/// retried as a possible duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_outliving_the_lease_during_a_graceful_stop_is_written_back() -> anyhow::Result<()> {
    let mut cluster =
        TestCluster::start_with(TestClusterOptions { sink: very_slow_sink, ..Default::default() }).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    cluster.add_recipients(id, vec![row("slow-1@slow.example", "1", &[])], 10).await?;
    cluster.schedule_now(id).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.sink.attempts_for("slow-1@slow.example") == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the slow transaction never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop_sender().await?;
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.sending), (1, 0), "the outcome was written, not fenced off");
    assert!(outcome_unknown_recipients(&cluster).await?.is_empty());
    assert_eq!(deliveries_per_address(&cluster).get("slow-1@slow.example"), Some(&1));
    cluster.shutdown().await
}
