//! Suppressions added after recipients were queued: applied at once to the recipients waiting
//! in the tenant's open mailings, and checked again at the claim for rows put back into the
//! queue after one (migration 10).

use std::time::Duration;

use sendwerk_core::{EmailAddress, MailingId, TenantId};
use sendwerk_proto::v1;
use sendwerk_store::{NewRecipient, OutcomeKind, RecipientOutcome, RecipientVariables};
use sendwerk_tests::cluster::{row, simple_content};
use sendwerk_tests::{TestCluster, TestClusterOptions};

/// A suppression ends the recipients of the address waiting in every open mailing of the tenant
/// (whatever the case of the address; one waiting for a retry too), with the suppression's
/// reason, an event and the counters moved; it leaves other tenants, other addresses and a
/// recipient in flight alone. The one in flight, put back into the queue by a retry, is found
/// suppressed when claimed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_ends_the_recipients_of_the_address_waiting_in_the_tenants_open_mailings() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);

    // Mailing A sends: of its three recipients, one is in flight and one waits for a retry.
    let sending = cluster.create_mailing(simple_content("A", "Hello")).await?;
    let rows = vec![row("x@sup.example", "1", &[]), row("y@sup.example", "2", &[]), row("w@sup.example", "3", &[])];
    cluster.add_recipients(sending, rows, 10).await?;
    cluster.schedule_now(sending).await?;
    assert_eq!(cluster.store.activate_due_mailings().await?, vec![MailingId::new(sending)]);
    let owner = uuid::Uuid::new_v4();
    cluster.store.heartbeat_worker(owner, "test").await?;
    let shards: Vec<i16> = cluster
        .store
        .acquire_shard_leases(owner, Duration::from_secs(60), 256)
        .await?
        .iter()
        .map(|lease| lease.shard)
        .collect();
    let claim = |limit| sendwerk_store::ClaimRequest {
        mailing_id: MailingId::new(sending),
        shards: &shards,
        limit,
        owner,
        skip_domains: &[],
        paced: false,
        after: None,
    };
    let claimed = cluster.store.claim_due_recipients(&claim(2)).await?;
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|recipient| !recipient.suppressed), "queued by the ingest: not checked again");
    let (in_flight, retrying) = (&claimed[0], &claimed[1]);
    let later = RecipientOutcome {
        code: Some(451),
        next_attempt_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..RecipientOutcome::new(retrying, OutcomeKind::Deferred)
    };
    assert_eq!(cluster.store.record_outcomes(owner, &[later]).await?.written.len(), 1);

    // Mailing B waits as a draft, with the address in flight in another case.
    let draft = cluster.create_mailing(simple_content("B", "Hello")).await?;
    let shouted = in_flight.email.to_uppercase();
    cluster.add_recipients(draft, vec![row(&shouted, "1", &[]), row("v@sup.example", "2", &[])], 10).await?;
    // Mailing C of another tenant has the address too.
    let other = TenantId::new("other");
    let other_mailing: i64 = client
        .query_one(
            "INSERT INTO mailings (tenant_id, name, from_email, subject_template) \
             VALUES ('other', 'C', 'news@other.example', 'C') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    let address = EmailAddress::parse(&in_flight.email)?;
    let recipient = NewRecipient::new(0, address, String::new(), &RecipientVariables::default());
    let added = cluster.store.add_recipients(&other, MailingId::new(other_mailing), &[recipient]).await?;
    assert_eq!(added.accepted, 1);

    let emails = vec![shouted.clone(), retrying.email.clone()];
    let response = suppress(&cluster, emails, v1::SuppressionReason::Unsubscribe).await?;
    assert_eq!((response.added, response.waiting_recipients_suppressed), (2, 2), "B's, and A's retry");

    let draft_rows = cluster.recipients(draft).await?;
    let ended = draft_rows.iter().find(|r| r.email.eq_ignore_ascii_case(&in_flight.email)).expect("present");
    assert_eq!(
        (ended.state, ended.reason.as_str()),
        (v1::RecipientState::Suppressed as i32, "suppressed: unsubscribe")
    );
    let untouched = draft_rows.iter().find(|r| r.email == "v@sup.example").expect("present");
    assert_eq!(untouched.state, v1::RecipientState::Queued as i32);
    let counts = cluster.mailing(draft).await?.counts.unwrap_or_default();
    assert_eq!((counts.total, counts.queued, counts.suppressed), (2, 1, 1));
    let counts = cluster.mailing(sending).await?.counts.unwrap_or_default();
    assert_eq!(
        (counts.queued, counts.sending, counts.deferred, counts.suppressed),
        (1, 1, 0, 1),
        "the retry ended suppressed; the row in flight is its sender's"
    );
    let state_of = |mailing: i64, email: String| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT r.state, EXISTS (SELECT 1 FROM queue q WHERE q.recipient_id = r.id), \
                            (SELECT string_agg(e.kind, ',' ORDER BY e.id) FROM delivery_events e \
                             WHERE e.mailing_id = r.mailing_id AND e.recipient_id = r.id) \
                     FROM recipients r WHERE r.mailing_id = $1 AND lower(r.email) = $2",
                    &[&mailing, &email],
                )
                .await?;
            anyhow::Ok((row.get::<_, String>(0), row.get::<_, bool>(1), row.get::<_, Option<String>>(2)))
        }
    };
    let (flying, retried) = (in_flight.email.clone(), retrying.email.clone());
    assert_eq!(state_of(draft, flying.clone()).await?, ("suppressed".into(), false, Some("suppressed".into())));
    assert_eq!(state_of(other_mailing, flying.clone()).await?, ("queued".into(), true, None), "another tenant");
    assert_eq!(state_of(sending, flying.clone()).await?, ("queued".into(), false, None), "in flight: no queue row");
    let expected = ("suppressed".into(), false, Some("deferred,suppressed".into()));
    assert_eq!(state_of(sending, retried).await?, expected);

    // Adding it again finds nothing left to end.
    let again = suppress(&cluster, vec![flying.clone()], v1::SuppressionReason::Manual).await?;
    assert_eq!((again.added, again.waiting_recipients_suppressed), (0, 0));

    // The recipient in flight is deferred and comes back into the queue: the next claim finds
    // it suppressed, and the row queued by the ingest as it was.
    let deferred = RecipientOutcome {
        code: Some(451),
        next_attempt_at: Some(chrono::Utc::now() - chrono::Duration::seconds(5)),
        ..RecipientOutcome::new(in_flight, OutcomeKind::Deferred)
    };
    assert_eq!(cluster.store.record_outcomes(owner, &[deferred]).await?.written.len(), 1);
    let claimed = cluster.store.claim_due_recipients(&claim(10)).await?;
    let mut flags: Vec<(String, bool)> = claimed.iter().map(|r| (r.email.clone(), r.suppressed)).collect();
    flags.sort();
    let last = ["x@sup.example", "y@sup.example", "w@sup.example"]
        .into_iter()
        .find(|email| *email != flying && *email != retrying.email)
        .expect("a third address");
    let mut expected = vec![(flying, true), (last.to_owned(), false)];
    expected.sort();
    assert_eq!(flags, expected);
    cluster.shutdown().await
}

/// A permanent rejection of an address at SMTP time suppresses it, and its recipient waiting in
/// another mailing of the tenant ends `suppressed` with it, before that mailing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_at_smtp_time_ends_the_address_waiting_in_another_mailing() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start().await?;
    let later = cluster.create_mailing(simple_content("Later", "Hello")).await?;
    cluster
        .add_recipients(later, vec![row("permfail@rej.example", "", &[]), row("fine@rej.example", "", &[])], 10)
        .await?;
    let first = cluster.create_mailing(simple_content("First", "Hello")).await?;
    cluster.add_recipients(first, vec![row("permfail@rej.example", "", &[])], 10).await?;
    cluster.schedule_now(first).await?;
    let done = cluster.wait_until_finished(first, Duration::from_secs(60)).await?;
    assert_eq!(done.counts.unwrap_or_default().failed, 1);

    let counts = cluster.mailing(later).await?.counts.unwrap_or_default();
    assert_eq!((counts.queued, counts.suppressed), (1, 1), "ended with the rejection, not at the send");
    let rows = cluster.recipients(later).await?;
    let ended = rows.iter().find(|r| r.email == "permfail@rej.example").expect("present");
    assert_eq!(
        (ended.state, ended.reason.as_str()),
        (v1::RecipientState::Suppressed as i32, "suppressed: hard_bounce")
    );
    cluster.schedule_now(later).await?;
    let done = cluster.wait_until_finished(later, Duration::from_secs(60)).await?;
    let counts = done.counts.unwrap_or_default();
    assert_eq!((counts.sent, counts.suppressed), (1, 1));
    assert_eq!(cluster.sink.attempts_for("permfail@rej.example"), 1, "sent to once, by the first mailing");
    cluster.shutdown().await
}

/// An ingest and the addition of a suppression never miss each other: added while chunks of the
/// same addresses are being ingested, every recipient of a suppressed address ends suppressed,
/// whichever committed first, and none is left queued for the claim to send unchecked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressions_added_during_an_ingest_of_the_same_addresses_miss_none() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_with(TestClusterOptions { start_sender: false, ..Default::default() }).await?;
    let id = cluster.create_mailing(simple_content("Race", "Hello")).await?;
    let address = |i: usize| format!("r{i}@race{}.example", i % 7);
    let total = 6_000;
    let ingest = {
        let mut api = cluster.api.clone();
        let rows: Vec<_> = (0..total).map(|i| row(&address(i), "", &[])).collect();
        tokio::spawn(async move {
            let messages: Vec<v1::AddRecipientsRequest> = rows
                .chunks(200)
                .map(|chunk| v1::AddRecipientsRequest { mailing_id: id, rows: chunk.to_vec() })
                .collect();
            anyhow::Ok(api.mailings.add_recipients(tokio_stream::iter(messages)).await?.into_inner())
        })
    };
    // Every 20th address, in slices, while the chunks go in.
    let mut suppressed = 0;
    for slice in (0..total).step_by(20).collect::<Vec<_>>().chunks(15) {
        let emails = slice.iter().map(|&i| address(i)).collect();
        let response = suppress(&cluster, emails, v1::SuppressionReason::Manual).await?;
        suppressed += response.added;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ingested = ingest.await??;
    assert_eq!(suppressed, 300);
    let (client, connection) = tokio_postgres::connect(&cluster.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE r.state = 'suppressed'), \
                    count(*) FILTER (WHERE r.state <> 'suppressed'), \
                    count(*) FILTER (WHERE q.recipient_id IS NOT NULL) \
             FROM recipients r \
             JOIN suppressions s ON s.tenant_id = r.tenant_id AND s.email = lower(r.email) \
             LEFT JOIN queue q ON q.recipient_id = r.id \
             WHERE r.mailing_id = $1",
            &[&id],
        )
        .await?;
    let (ended, left, queued): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((ended, left, queued), (300, 0, 0), "every suppressed address ended, none left in the queue");
    let counts = cluster.mailing(id).await?.counts.unwrap_or_default();
    assert_eq!((counts.total, counts.suppressed, counts.queued), (6_000, 300, 5_700));
    assert_eq!(ingested.accepted + ingested.suppressed, 6_000);
    cluster.shutdown().await
}

/// Adds suppressions through the API.
async fn suppress(
    cluster: &TestCluster,
    emails: Vec<String>,
    reason: v1::SuppressionReason,
) -> anyhow::Result<v1::AddSuppressionsResponse> {
    let request = v1::AddSuppressionsRequest { emails, reason: reason as i32, note: String::new() };
    Ok(cluster.api.clone().suppressions.add_suppressions(request).await?.into_inner())
}
