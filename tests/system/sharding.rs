use std::time::{Duration, Instant};

use sendwerk_proto::v1;
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions, eventually};

async fn wait_for_shares(cluster: &mut TestCluster, expected: &[i32], what: &str) -> anyhow::Result<()> {
    let api = cluster.api.clone();
    let expected = expected.to_vec();
    eventually(Duration::from_secs(30), what, move || {
        let mut api = api.clone();
        let expected = expected.clone();
        async move {
            let senders = api.admin.list_senders(v1::ListSendersRequest {}).await?.into_inner().senders;
            let mut shares: Vec<i32> = senders.iter().map(|s| s.num_shards).filter(|n| *n > 0).collect();
            shares.sort_unstable();
            Ok((shares == expected).then_some(()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_rebalance_when_senders_join_leave_and_die() -> anyhow::Result<()> {
    let mut cluster =
        TestCluster::start_with(TestClusterOptions { lease: Duration::from_secs(2), ..Default::default() }).await?;
    wait_for_shares(&mut cluster, &[256], "one sender to hold every shard").await?;
    let second = cluster.start_extra_sender()?;
    wait_for_shares(&mut cluster, &[128, 128], "two senders to share the shards").await?;
    let third = cluster.start_extra_sender()?;
    wait_for_shares(&mut cluster, &[84, 86, 86], "three senders to share the shards").await?;
    // A graceful leave hands its shards over at once.
    let left_at = Instant::now();
    third.stop().await?;
    wait_for_shares(&mut cluster, &[128, 128], "the shards of the sender that left to be taken over").await?;
    assert!(left_at.elapsed() < Duration::from_secs(10), "a graceful leave is quick: {:?}", left_at.elapsed());
    // A dead sender's shards are taken over when its lease expires.
    second.kill();
    wait_for_shares(&mut cluster, &[256], "the dead sender's shards to be taken over").await?;
    cluster.shutdown().await
}

/// Sends 30 messages to a domain limited to 300 per minute (5 per second, bursts of 5) among
/// other traffic with `num_senders` senders, and checks the domain's messages took at least as
/// long as the limit allows. Sharding by domain puts the domain on one sender.
async fn domain_limit_holds_with(num_senders: usize) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let mut others = Vec::new();
    for _ in 1..num_senders {
        others.push(cluster.start_extra_sender()?);
    }
    let even = vec![256 / num_senders as i32; num_senders];
    wait_for_shares(&mut cluster, &even, "the senders to share the shards evenly").await?;
    cluster
        .api
        .admin
        .set_domain_settings(v1::DomainSettings {
            domain: "limited.example".into(),
            max_per_minute: 300,
            paused: false,
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let mut rows: Vec<_> = (0..30).map(|i| row(&format!("l{i}@limited.example"), "", &[])).collect();
    rows.extend((0..200).map(|i| row(&format!("o{i}@other{}.example", i % 16), "", &[])));
    cluster.add_recipients(id, rows, 100).await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 230);
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let span: f64 = client
        .query_one(
            "SELECT extract(epoch FROM max(e.created_at) - min(e.created_at))::float8 FROM delivery_events e \
             JOIN recipients r ON r.mailing_id = e.mailing_id AND r.id = e.recipient_id \
             WHERE e.kind = 'sent' AND r.domain = 'limited.example'",
            &[],
        )
        .await?
        .get(0);
    // 30 messages at 5/s with a burst of 5 need at least (30 - 5) / 5 = 5 s.
    assert!(span >= 4.5, "limited.example received 30 messages within {span:.2} s: the limit did not hold");
    for sender in others {
        sender.stop().await?;
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_rate_limit_holds_cluster_wide_with_two_senders() -> anyhow::Result<()> {
    domain_limit_holds_with(2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_rate_limit_holds_cluster_wide_with_four_senders() -> anyhow::Result<()> {
    domain_limit_holds_with(4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_domain_gets_no_new_transactions_until_resumed() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    cluster
        .api
        .admin
        .set_domain_settings(v1::DomainSettings { domain: "held.example".into(), max_per_minute: 0, paused: true })
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let mut rows: Vec<_> = (0..10).map(|i| row(&format!("h{i}@held.example"), "", &[])).collect();
    rows.extend((0..20).map(|i| row(&format!("f{i}@free.example"), "", &[])));
    cluster.add_recipients(id, rows, 100).await?;
    cluster.schedule_now(id).await?;
    anyhow::ensure!(
        cluster.sink.wait_for_messages(20, Duration::from_secs(30)).await,
        "timed out waiting for the other domain to be delivered"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.sink.num_accepted(), 20, "nothing went to the paused domain");
    let waiting = cluster.mailing(id).await?;
    assert_eq!(waiting.state, v1::MailingState::Sending as i32);
    assert_eq!(waiting.counts.unwrap_or_default().queued, 10);
    cluster.api.admin.clear_domain_settings(v1::ClearDomainSettingsRequest { domain: "held.example".into() }).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(30)).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 30);
    cluster.shutdown().await
}

/// `throttled@busy.example` (asks to slow down on its first attempt, first in due order), then
/// `b0@busy.example` … for `others` more.
fn busy_domain_rows(others: usize) -> Vec<v1::RecipientRow> {
    std::iter::once(row("throttled@busy.example", "", &[]))
        .chain((0..others).map(|i| row(&format!("b{i}@busy.example"), "", &[])))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_down_reply_backs_the_domain_off_then_it_recovers() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let rows = busy_domain_rows(5);
    cluster.add_recipients(id, rows, 10).await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 6, "the domain recovers after the back-off");
    let recipients = cluster.recipients(id).await?;
    let throttled = recipients.iter().find(|r| r.email == "throttled@busy.example").expect("present");
    assert_eq!(throttled.attempts, 2);
    cluster.shutdown().await
}

/// Rows already claimed for a domain that then asks to slow down wait in the sender for the
/// back-off to end, instead of going back to the queue to be claimed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_domain_backing_off_wait_in_the_sender_and_are_claimed_once() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    // One claim takes them all; the throttled address is first in due order. A domain parks
    // at most an eighth of the pipeline (2 batches of 64): 16 rows.
    let rows = busy_domain_rows(12);
    cluster.add_recipients(id, rows, 100).await?;
    cluster.schedule_now(id).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 13);
    let stats = std::sync::Arc::clone(&cluster.sender.as_ref().expect("running").stats);
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    assert!(load(&stats.parked) > 0, "rows waited for the back-off in the sender");
    assert_eq!(load(&stats.released), 0, "no row went back to the queue");
    assert_eq!(load(&stats.claimed), 14, "each row claimed once, the throttled one again for its retry");
    for i in 0..12 {
        assert_eq!(cluster.sink.attempts_for(&format!("b{i}@busy.example")), 1, "b{i} sent once");
    }
    cluster.shutdown().await
}

/// A graceful stop hands rows waiting in the sender back to the queue, due when their wait
/// ends; the next sender sends each of them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_back_rows_waiting_for_a_back_off_to_end() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let config = sendwerk_sender::SenderConfig { domain_backoff: Duration::from_secs(5), ..cluster.sender_config() };
    cluster.start_sender_with(config)?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let rows = busy_domain_rows(12);
    cluster.add_recipients(id, rows, 100).await?;
    cluster.schedule_now(id).await?;
    let stats = std::sync::Arc::clone(&cluster.sender.as_ref().expect("running").stats);
    let parked = || stats.parked.load(std::sync::atomic::Ordering::Relaxed);
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while parked() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no row waited for the back-off");
    let stopped_at = chrono::Utc::now();
    cluster.stop_sender().await?;
    assert_eq!(stats.released.load(std::sync::atomic::Ordering::Relaxed), 0, "rows were parked, not handed back");
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!(counts.sending, 0, "a graceful stop hands every claimed row back");
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // The throttled address itself waits for its retry; the others were parked, not attempted.
    let later: i64 = client
        .query_one(
            "SELECT count(*) FROM queue q JOIN recipients r ON r.mailing_id = q.mailing_id AND r.id = q.recipient_id
             WHERE q.mailing_id = $1 AND q.next_attempt_at > $2 AND r.email LIKE 'b%' AND r.attempts = 0",
            &[&id, &stopped_at],
        )
        .await?
        .get(0);
    assert!(later > 0, "parked rows handed back wait for the rest of the back-off");

    cluster.start_sender()?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 13);
    for i in 0..12 {
        assert_eq!(cluster.sink.attempts_for(&format!("b{i}@busy.example")), 1, "b{i} sent once");
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_mailing_spreads_its_sends_evenly() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let second = cluster.start_extra_sender()?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let rows: Vec<_> = (0..12).map(|i| row(&format!("p{i}@pace{}.example", i % 6), "", &[])).collect();
    cluster.add_recipients(id, rows, 100).await?;
    // 18,000 per hour = one every 200 ms, across both senders together.
    let started = Instant::now();
    cluster.api.mailings.schedule(v1::ScheduleRequest { mailing_id: id, send_at: None, max_per_hour: 18_000 }).await?;
    let done = cluster.wait_until_finished(id, Duration::from_secs(60)).await?;
    assert_eq!(done.counts.unwrap_or_default().sent, 12);
    assert_eq!(done.max_per_hour, 18_000);
    assert!(
        started.elapsed() >= Duration::from_millis(2000),
        "12 sends at 5/s need 2.2 s, took {:?}",
        started.elapsed()
    );
    second.stop().await?;
    cluster.shutdown().await
}
