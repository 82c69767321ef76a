use std::time::Duration;

use sendwerk_core::MailingId;
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions};

/// With default planner costs the claim walked the primary key on a draining queue and ran
/// 15x slower (measured); the embedded cluster sets SSD-like costs and the claim must read
/// the queue through its due-time index (or, on a tiny queue, sequentially).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_reads_waiting_rows_through_queue_due_draining_and_at_campaign_size() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let rows: Vec<_> = (0..20_000).map(|i| row(&format!("q{i}@d{}.example", i % 50), "", &[])).collect();
    cluster.add_recipients(id, rows, 5_000).await?;
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // Most of the campaign is done, in queue order; a few hundred rows still wait.
    let max_id: i64 = client.query_one("SELECT max(id) FROM recipients WHERE mailing_id = $1", &[&id]).await?.get(0);
    let id_limit = max_id - 400;
    // The queue table is vacuumed as autovacuum does it (early, by its storage parameters).
    client
        .batch_execute(&format!(
            "UPDATE recipients SET state = 'sent' WHERE mailing_id = {id} AND id <= {id_limit};
             DELETE FROM queue WHERE mailing_id = {id} AND recipient_id <= {id_limit};
             ANALYZE recipients;"
        ))
        .await?;
    client.batch_execute("VACUUM ANALYZE queue").await?;
    let plan = cluster.store.explain_claim(MailingId::new(id)).await?;
    // The delete fetches the rows it found by place (ctid), the recipients by primary key. On
    // this small narrow queue (154 pages, 400 live rows) the planner may read it
    // sequentially instead of through `queue_due`; the wide recipients table must never be
    // scanned, only read by primary key. (`w` is the claim's alias for the waiting rows.)
    assert!(
        plan.contains("Index Scan using queue_due on queue w ") || plan.contains("Seq Scan on queue w "),
        "the claim must read the queue through the index of waiting rows or sequentially:\n{plan}"
    );
    assert!(plan.contains("Index Scan using recipients_pkey on recipients r"), "recipients by primary key:\n{plan}");
    assert!(!plan.contains("Seq Scan on recipients"), "no sequential scan of recipients:\n{plan}");
    assert!(!plan.contains("using queue_pkey on queue w "), "the claim must not walk the primary key:\n{plan}");

    // A campaign's worth of waiting rows (200,000 more, as ingest queues them: one chunk shares
    // a due time): now a sequential read would cost far more than taking the first rows in due
    // order, and the claim must use `queue_due`.
    client
        .batch_execute(&format!(
            "INSERT INTO queue (recipient_id, mailing_id, shard, domain, next_attempt_at)
             SELECT g, {id}, g % 256, 'd' || g % 50 || '.example', now() - (g / 5000) * interval '1 second'
             FROM generate_series(10000000, 10199999) AS g"
        ))
        .await?;
    client.batch_execute("VACUUM ANALYZE queue").await?;
    let plan = cluster.store.explain_claim(MailingId::new(id)).await?;
    assert!(
        plan.contains("Index Scan using queue_due on queue w "),
        "with 200,000 waiting rows the claim must read them through queue_due:\n{plan}"
    );
    assert!(plan.contains("Tid Scan on queue q"), "the delete must fetch the rows it found by place:\n{plan}");
    assert!(!plan.contains("Seq Scan on recipients"), "no sequential scan of recipients:\n{plan}");
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

/// Rows a sender holds show as `sending` (counts, listing) although only their queue row was
/// written; a cancel ends the waiting rows at once and the held ones with their outcome; a
/// sender without the shard lease writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_rows_show_as_sending_and_end_cancelled_after_a_cancel() -> anyhow::Result<()> {
    use sendwerk_proto::v1;
    use sendwerk_store::{OutcomeKind, RecipientOutcome};

    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let (id, owner, claimed) = hold_rows(&mut cluster, 10, 4).await?;
    assert_eq!(claimed.len(), 4);
    assert!(claimed.iter().all(|recipient| recipient.attempts == 1));

    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.total, counts.queued, counts.sending), (10, 6, 4));
    let listed = cluster.recipients(id).await?;
    let sending: Vec<i64> = listed
        .iter()
        .filter(|recipient| recipient.state == v1::RecipientState::Sending as i32)
        .map(|recipient| recipient.id)
        .collect();
    let mut claimed_ids: Vec<i64> = claimed.iter().map(|recipient| recipient.id.get()).collect();
    claimed_ids.sort_unstable();
    assert_eq!(sending, claimed_ids);

    cluster.api.mailings.cancel(v1::MailingRef { mailing_id: id }).await?;
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.cancelled, counts.sending, counts.queued), (6, 4, 0));

    let outcome = |index: usize, kind| RecipientOutcome::new(&claimed[index], kind);
    let outcomes = vec![
        RecipientOutcome {
            code: Some(250),
            message_id: Some("<m0@sendwerk.test>".into()),
            ..outcome(0, OutcomeKind::Sent)
        },
        outcome(1, OutcomeKind::Sent),
        RecipientOutcome {
            code: Some(451),
            next_attempt_at: Some(chrono::Utc::now() + chrono::Duration::minutes(5)),
            ..outcome(2, OutcomeKind::Deferred)
        },
        outcome(3, OutcomeKind::Released),
    ];
    // Another sender, holding no lease, is fenced off.
    assert_eq!(cluster.store.record_outcomes(uuid::Uuid::new_v4(), &outcomes).await?.written.len(), 0);
    assert_eq!(cluster.store.record_outcomes(owner, &outcomes).await?.written.len(), 4);

    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.cancelled, counts.sending, counts.queued, counts.deferred), (2, 8, 0, 0, 0));
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let left: i64 = client.query_one("SELECT count(*) FROM queue WHERE mailing_id = $1", &[&id]).await?.get(0);
    assert_eq!(left, 0, "no queue row outlives its recipient's final state");
    let attempts: Vec<(i64, i32, Option<String>)> = client
        .query(
            "SELECT id, attempts, message_id FROM recipients WHERE mailing_id = $1 AND id = ANY($2) ORDER BY id",
            &[&id, &claimed_ids],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let by_id = |recipient: &sendwerk_store::ClaimedRecipient| {
        attempts.iter().find(|(id, ..)| *id == recipient.id.get()).cloned().unwrap_or_default()
    };
    assert_eq!(by_id(&claimed[0]).1, 1, "an attempt counts once");
    assert_eq!(by_id(&claimed[0]).2.as_deref(), Some("<m0@sendwerk.test>"));
    assert_eq!(by_id(&claimed[2]).1, 1, "a deferred attempt counts");
    assert_eq!(by_id(&claimed[3]).1, 0, "a row handed back unsent was not attempted");
    cluster.shutdown().await
}

/// A sending mailing of `total` recipients, with `limit` of them claimed by a new sender that
/// holds every shard: (mailing id, sender, claimed rows).
async fn hold_rows(
    cluster: &mut TestCluster,
    total: usize,
    limit: i64,
) -> anyhow::Result<(i64, uuid::Uuid, Vec<sendwerk_store::ClaimedRecipient>)> {
    let id = cluster.create_mailing(simple_content("Hi", "Hello")).await?;
    let rows: Vec<_> = (0..total).map(|i| row(&format!("h{i}@held.example"), "", &[])).collect();
    cluster.add_recipients(id, rows, 10).await?;
    cluster.schedule_now(id).await?;
    assert_eq!(cluster.store.activate_due_mailings().await?, vec![MailingId::new(id)]);
    let owner = uuid::Uuid::new_v4();
    cluster.store.heartbeat_worker(owner, "test").await?;
    let held = cluster.store.acquire_shard_leases(owner, Duration::from_secs(60), 256).await?;
    let shards: Vec<i16> = held.iter().map(|lease| lease.shard).collect();
    let claimed = cluster.store.claim_due_recipients(&claim_request(id, &shards, owner, limit, None)).await?;
    Ok((id, owner, claimed))
}

/// A claim of up to `limit` rows of mailing `id` for `owner`, after `after`.
fn claim_request(
    id: i64,
    shards: &[i16],
    owner: uuid::Uuid,
    limit: i64,
    after: Option<sendwerk_store::ClaimCursor>,
) -> sendwerk_store::ClaimRequest<'_> {
    sendwerk_store::ClaimRequest {
        mailing_id: MailingId::new(id),
        shards,
        limit,
        owner,
        skip_domains: &[],
        paced: false,
        after,
    }
}

/// A write-back applies once: repeated (as the writer retries a batch whose commit it did not
/// see acknowledged), it writes nothing, and neither the counters nor the events move again. A
/// claim records its batch, which the sender deletes once every outcome is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_write_back_writes_nothing_twice() -> anyhow::Result<()> {
    use sendwerk_store::{OutcomeKind, RecipientOutcome};

    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let (id, owner, claimed) = hold_rows(&mut cluster, 10, 6).await?;
    assert_eq!(claimed.len(), 6);
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let batch = claimed[0].batch;
    assert!(claimed.iter().all(|recipient| recipient.batch == batch), "one claim, one batch");
    let entries: i64 = client
        .query_one("SELECT cardinality(ids)::bigint FROM claim_batches WHERE id = $1 AND owner = $2", &[&batch, &owner])
        .await?
        .get(0);
    assert_eq!(entries, 6);
    let waiting: i64 = client.query_one("SELECT count(*) FROM queue WHERE mailing_id = $1", &[&id]).await?.get(0);
    assert_eq!(waiting, 4, "claimed rows leave the queue");

    let outcomes: Vec<_> = claimed
        .iter()
        .map(|recipient| RecipientOutcome { code: Some(250), ..RecipientOutcome::new(recipient, OutcomeKind::Sent) })
        .collect();
    let stranger = cluster.store.record_outcomes(uuid::Uuid::new_v4(), &outcomes).await?;
    assert_eq!((stranger.written.len(), stranger.fenced.len()), (0, 6), "a sender without the leases is fenced off");
    let first = cluster.store.record_outcomes(owner, &outcomes).await?;
    assert_eq!((first.written.len(), first.fenced.len()), (6, 0));
    let again = cluster.store.record_outcomes(owner, &outcomes).await?;
    assert_eq!((again.written.len(), again.fenced.len()), (0, 0), "already written, not fenced");
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.sending, counts.queued), (6, 0, 4));
    let events: i64 = client
        .query_one("SELECT count(*) FROM delivery_events WHERE mailing_id = $1 AND kind = 'sent'", &[&id])
        .await?
        .get(0);
    assert_eq!(events, 6, "one event per attempt");
    cluster.store.delete_claim_batches(owner, &[batch]).await?;
    let batches: i64 = client.query_one("SELECT count(*) FROM claim_batches", &[]).await?.get(0);
    assert_eq!(batches, 0);
    cluster.shutdown().await
}

/// A claim after a cursor takes the next rows in due order and none before it: a row handed
/// back behind the cursor is only found again from the front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_after_a_cursor_continues_in_due_order_and_the_front_finds_rows_passed_over() -> anyhow::Result<()> {
    use sendwerk_store::{OutcomeKind, RecipientOutcome};

    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let (id, owner, first) = hold_rows(&mut cluster, 10, 3).await?;
    let shards: Vec<i16> = (0..256).collect();
    let claim = |after, limit| claim_request(id, &shards, owner, limit, after);
    let cursor = first.iter().map(|recipient| recipient.cursor()).max();
    // Hand the first row back unsent: it keeps its place, behind the cursor.
    let released = RecipientOutcome::new(&first[0], OutcomeKind::Released);
    assert_eq!(cluster.store.record_outcomes(owner, &[released]).await?.written.len(), 1);

    let next = cluster.store.claim_due_recipients(&claim(cursor, 3)).await?;
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|recipient| Some(recipient.cursor()) > cursor), "only rows after the cursor");
    let rest =
        cluster.store.claim_due_recipients(&claim(next.iter().map(|recipient| recipient.cursor()).max(), 10)).await?;
    assert_eq!(rest.len(), 4, "the other rows after the cursor, not the one handed back");
    assert!(!rest.iter().any(|recipient| recipient.id == first[0].id));
    let front = cluster.store.claim_due_recipients(&claim(None, 10)).await?;
    let front_ids: Vec<_> = front.iter().map(|recipient| recipient.id).collect();
    assert_eq!(front_ids, vec![first[0].id], "from the front: the row passed over");
    cluster.shutdown().await
}

/// An outcome belongs to one claim: after its row was handed back and claimed again (by the same
/// sender, under the same lease), a late copy of the old outcome must not land on the new claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_outcome_is_not_written_onto_a_new_claim_of_the_same_row() -> anyhow::Result<()> {
    use sendwerk_store::{OutcomeKind, RecipientOutcome};

    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let (id, owner, first) = hold_rows(&mut cluster, 1, 1).await?;
    assert_eq!(first.len(), 1);
    let handed_back = RecipientOutcome::new(&first[0], OutcomeKind::Released);
    assert_eq!(cluster.store.record_outcomes(owner, std::slice::from_ref(&handed_back)).await?.written.len(), 1);
    let shards: Vec<i16> = (0..256).collect();
    let again = cluster.store.claim_due_recipients(&claim_request(id, &shards, owner, 1, None)).await?;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].batch, first[0].batch, "a new claim, a new batch");
    assert_eq!(again[0].version, first[0].version + 1, "the hand-back moved the version");

    // A retried batch repeats the first claim's hand-back: it must not release the new claim.
    assert_eq!(cluster.store.record_outcomes(owner, &[handed_back]).await?.written.len(), 0);
    let sent = RecipientOutcome { code: Some(250), ..RecipientOutcome::new(&again[0], OutcomeKind::Sent) };
    assert_eq!(cluster.store.record_outcomes(owner, &[sent]).await?.written.len(), 1);
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.sending, counts.queued), (1, 0, 0));
    cluster.shutdown().await
}

/// Rows of a claim the sender does not know it made (the claim committed, its reply was lost)
/// would stay in flight for as long as the sender runs: its own recovery retries the rows of a
/// batch it does not track once the batch is a minute old, and leaves tracked batches alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_recovers_its_own_claims_that_it_does_not_track() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let (id, owner, claimed) = hold_rows(&mut cluster, 10, 4).await?;
    let batch = claimed[0].batch;
    let shards: Vec<i16> = (0..256).collect();
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    assert_eq!(cluster.store.recover_orphaned_rows(owner, &shards, &[]).await?, 0, "a fresh claim is left alone");
    client.execute("UPDATE claim_batches SET claimed_at = now() - interval '2 minutes'", &[]).await?;
    assert_eq!(
        cluster.store.recover_orphaned_rows(owner, &shards, &[batch]).await?,
        0,
        "a tracked claim is left alone"
    );
    assert_eq!(cluster.store.recover_orphaned_rows(owner, &shards, &[]).await?, 4);
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.sending, counts.deferred, counts.queued), (0, 4, 6));
    let unknown: i64 = client
        .query_one("SELECT count(*) FROM delivery_events WHERE mailing_id = $1 AND kind = 'outcome-unknown'", &[&id])
        .await?
        .get(0);
    assert_eq!(unknown, 4);
    let batches: i64 = client.query_one("SELECT count(*) FROM claim_batches", &[]).await?.get(0);
    assert_eq!(batches, 0, "a batch with nothing in flight goes");
    // A late write-back of the old claim writes nothing.
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|recipient| sendwerk_store::RecipientOutcome::new(recipient, sendwerk_store::OutcomeKind::Sent))
        .collect();
    assert_eq!(cluster.store.record_outcomes(owner, &outcomes).await?.written.len(), 0);
    cluster.shutdown().await
}
