//! The delivery queue: activating due mailings, claiming due recipients under a lease, writing
//! outcomes back in batches, completing mailings, and recovering the rows of dead senders.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sendwerk_core::{MailingId, RecipientId, RecipientState};
use tracing::instrument;
use uuid::Uuid;

use crate::recipients::RecipientVariables;
use crate::suppressions::apply_suppressions;
use crate::{Store, StoreError};

pub(crate) const CLAIM_DUE_RECIPIENTS_SQL: &str = include_str!("../sql/claim_due_recipients.sql");

/// Run before the claim, in its transaction. A claim wants the first rows in due order, which
/// the `queue_due` index yields directly. A new campaign's rows arrive faster than autovacuum
/// analyzes them (up to a minute), and with statistics that still show a few hundred rows the
/// planner preferred a bitmap scan of every due row plus a sort: 80 ms per claim of 1,024 on a
/// 100,000-row queue, against 5 ms through the index.
pub(crate) const CLAIM_PLANNER_SETTINGS: &str = "SET LOCAL enable_bitmapscan = off";

/// A recipient a sender now holds under its lease.
#[derive(Debug, Clone)]
pub struct ClaimedRecipient {
    pub id: RecipientId,
    pub mailing_id: MailingId,
    pub email: String,
    pub external_id: String,
    pub variables: RecipientVariables,
    /// Attempts including this one.
    pub attempts: i32,
    pub since_first_attempt: Duration,
    /// On the suppression list now: checked for a row put back into the queue after a claim (a
    /// suppression added while it was in flight did not find it waiting).
    pub suppressed: bool,
    pub shard: i16,
    /// The fencing token of the shard lease it was claimed under.
    pub lease_token: i64,
    pub domain: String,
    /// The claim batch it was claimed in (`claim_batches`).
    pub batch: i64,
    /// The recipient's version when it was claimed: the write-back applies only while it is
    /// unchanged.
    pub version: i32,
    /// When it was due: with its id, its place in the due order ([`Self::cursor`]).
    pub due_at: DateTime<Utc>,
    /// When it was claimed (the first attempt's time, if this is the first).
    pub claimed_at: DateTime<Utc>,
}

impl ClaimedRecipient {
    /// Its place in the due order: the cursor to claim after.
    pub fn cursor(&self) -> ClaimCursor {
        ClaimCursor { due_at: self.due_at, recipient_id: self.id.get() }
    }
}

/// A place in the due order of a mailing's queue: claim rows after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimCursor {
    pub due_at: DateTime<Utc>,
    pub recipient_id: i64,
}

/// What to claim, and for whom.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub mailing_id: MailingId,
    /// The shards to claim from; only those `owner` holds an unexpired lease on are used.
    pub shards: &'a [i16],
    pub limit: i64,
    pub owner: Uuid,
    /// Destination domains not to claim now (paused, backing off, rate backlog).
    pub skip_domains: &'a [String],
    /// Whether the mailing has a pace (`max_per_hour`).
    pub paced: bool,
    /// Claim only rows after this place in the due order (`None`: from the front).
    pub after: Option<ClaimCursor>,
}

/// What a write-back did with its outcomes.
#[derive(Debug, Default)]
pub struct WriteBack {
    /// The rows written.
    pub written: HashSet<RecipientId>,
    /// The rows not written because the shard's lease is no longer the one claimed under (lost
    /// or expired): the shard's next holder recovers them. A row in neither set had its
    /// outcome written already.
    pub fenced: HashSet<RecipientId>,
}

/// How an attempt ended, as written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Sent,
    Deferred,
    /// Deferred after an attempt whose outcome is unknown (no reply after the message was sent):
    /// the event is `outcome-unknown`, since a duplicate delivery is possible.
    DeferredOutcomeUnknown,
    Failed,
    Expired,
    Suppressed,
    Skipped,
    /// Handed back unsent (graceful shutdown, a domain's rate limit or pause, a lost lease): the
    /// attempt does not count, and `next_attempt_at`, when set, moves the row later.
    Released,
}

/// One recipient's outcome, to be written back with others in one statement.
#[derive(Debug, Clone)]
pub struct RecipientOutcome {
    pub id: RecipientId,
    /// The mailing the row was claimed for (the write-back locks it).
    pub mailing_id: MailingId,
    pub kind: OutcomeKind,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub code: Option<i32>,
    pub enhanced: Option<String>,
    pub reply: Option<String>,
    pub reason: Option<String>,
    pub message_id: Option<String>,
    /// Suppress the address (a permanent rejection of the address itself).
    pub suppress: bool,
    /// The claim batch ([`ClaimedRecipient::batch`]).
    pub batch: i64,
    /// The recipient's shard ([`ClaimedRecipient::shard`]).
    pub shard: i16,
    /// The shard lease token claimed under ([`ClaimedRecipient::lease_token`]).
    pub lease_token: i64,
    /// The recipient's version at the claim ([`ClaimedRecipient::version`]).
    pub version: i32,
    /// When the row was claimed ([`ClaimedRecipient::claimed_at`]).
    pub claimed_at: DateTime<Utc>,
}

impl RecipientOutcome {
    /// An outcome of `kind` for a claimed row, with no reply, reason or schedule yet.
    pub fn new(claimed: &ClaimedRecipient, kind: OutcomeKind) -> Self {
        Self {
            id: claimed.id,
            mailing_id: claimed.mailing_id,
            kind,
            next_attempt_at: None,
            code: None,
            enhanced: None,
            reply: None,
            reason: None,
            message_id: None,
            suppress: false,
            batch: claimed.batch,
            shard: claimed.shard,
            lease_token: claimed.lease_token,
            version: claimed.version,
            claimed_at: claimed.claimed_at,
        }
    }
}

/// One write-back statement: `finish_outcomes.sql` for final outcomes (`finals`), else
/// `record_outcomes.sql`. Adds to `result` the rows written and those fenced off: not written,
/// and claimed under a token that is not their shard's as the statement saw it.
async fn write_outcomes(
    client: &impl deadpool_postgres::GenericClient,
    owner: Uuid,
    outcomes: &[&RecipientOutcome],
    finals: bool,
    result: &mut WriteBack,
) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut states = Vec::with_capacity(outcomes.len());
    let mut next_attempts = Vec::with_capacity(outcomes.len());
    let mut codes = Vec::with_capacity(outcomes.len());
    let mut enhanced = Vec::with_capacity(outcomes.len());
    let mut replies = Vec::with_capacity(outcomes.len());
    let mut reasons = Vec::with_capacity(outcomes.len());
    let mut message_ids = Vec::with_capacity(outcomes.len());
    let mut events = Vec::with_capacity(outcomes.len());
    let mut suppress = Vec::with_capacity(outcomes.len());
    let mut mailing_ids = Vec::with_capacity(outcomes.len());
    let mut tokens = Vec::with_capacity(outcomes.len());
    let mut versions = Vec::with_capacity(outcomes.len());
    let mut claim_times = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let (state, event) = outcome.kind.state_and_event();
        ids.push(outcome.id.get());
        states.push(state.as_str());
        next_attempts.push(outcome.next_attempt_at);
        codes.push(outcome.code);
        enhanced.push(outcome.enhanced.as_deref());
        replies.push(outcome.reply.as_deref());
        reasons.push(outcome.reason.as_deref());
        message_ids.push(outcome.message_id.as_deref());
        events.push(event);
        suppress.push(outcome.suppress);
        mailing_ids.push(outcome.mailing_id.get());
        tokens.push(outcome.lease_token);
        versions.push(outcome.version);
        claim_times.push(outcome.claimed_at);
    }
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &ids,
        &states,
        &next_attempts,
        &codes,
        &enhanced,
        &replies,
        &reasons,
        &message_ids,
        &events,
        &owner,
        &suppress,
        &mailing_ids,
        &tokens,
        &versions,
        &claim_times,
    ];
    let sql = if finals {
        // A final outcome has no next attempt; the statement takes every other parameter.
        params.remove(2);
        include_str!("../sql/finish_outcomes.sql")
    } else {
        include_str!("../sql/record_outcomes.sql")
    };
    let statement = client.prepare_cached(sql).await?;
    let row = client.query_one(&statement, &params).await?;
    let written: Vec<i64> = row.get(0);
    let tokens: Vec<Option<i64>> = row.get(1);
    result.written.extend(written.into_iter().map(RecipientId::new));
    let fenced = outcomes
        .iter()
        .filter(|outcome| !result.written.contains(&outcome.id))
        .filter(|outcome| {
            let token = usize::try_from(outcome.shard).ok().and_then(|shard| tokens.get(shard).copied().flatten());
            token != Some(outcome.lease_token)
        })
        .map(|outcome| outcome.id);
    result.fenced.extend(fenced);
    Ok(())
}

fn claimed_from_row(mailing_id: MailingId, row: &tokio_postgres::Row) -> ClaimedRecipient {
    ClaimedRecipient {
        id: RecipientId::new(row.get(0)),
        mailing_id,
        email: row.get(1),
        external_id: row.get(2),
        variables: match row.get(3) {
            serde_json::Value::Object(map) => map,
            _ => RecipientVariables::new(),
        },
        attempts: row.get(4),
        since_first_attempt: Duration::from_secs_f64(row.get::<_, f64>(5).max(0.0)),
        suppressed: row.get(6),
        shard: row.get(7),
        lease_token: row.get(8),
        domain: row.get(9),
        batch: row.get(10),
        version: row.get(11),
        due_at: row.get(12),
        claimed_at: row.get(13),
    }
}

impl OutcomeKind {
    /// Whether the outcome ends the recipient's delivery (its queue row goes).
    pub fn is_final(self) -> bool {
        self.state_and_event().0.is_final()
    }

    /// The recipient state an outcome writes, and its event. A released row is handed back to
    /// the queue: it keeps its state of record (only a cancelled mailing's ends `cancelled`), so
    /// `queued` here only marks it as one to requeue.
    fn state_and_event(self) -> (RecipientState, &'static str) {
        match self {
            Self::Sent => (RecipientState::Sent, "sent"),
            Self::Deferred => (RecipientState::Deferred, "deferred"),
            Self::DeferredOutcomeUnknown => (RecipientState::Deferred, "outcome-unknown"),
            Self::Failed => (RecipientState::Failed, "failed"),
            Self::Expired => (RecipientState::Expired, "expired"),
            Self::Suppressed => (RecipientState::Suppressed, "suppressed"),
            Self::Skipped => (RecipientState::Skipped, "skipped"),
            Self::Released => (RecipientState::Queued, "released"),
        }
    }
}

/// Writes final outcomes of which some suppress their address (a permanent rejection of the
/// address itself, suppressed in the statement), and ends the recipients of those addresses
/// waiting in other mailings, in one transaction.
///
/// The tenants' suppression locks come first, so that no counter or recipient row is held while
/// they wait for an ingest chunk, and the statement that holds counter rows is the
/// transaction's only one, so that two writers never hold them crosswise. (Should another
/// transaction insert the same suppression at that moment, one of the two is aborted as a
/// deadlock and its write retried.)
async fn write_suppressing_finals(
    client: &mut deadpool_postgres::Client,
    owner: Uuid,
    finals: &[&RecipientOutcome],
    result: &mut WriteBack,
) -> Result<(), StoreError> {
    let (mailing_ids, ids): (Vec<i64>, Vec<i64>) = finals
        .iter()
        .filter(|outcome| outcome.suppress)
        .map(|outcome| (outcome.mailing_id.get(), outcome.id.get()))
        .unzip();
    let transaction = client.transaction().await?;
    let lock = transaction.prepare_cached(include_str!("../sql/lock_mailing_tenants_suppressions.sql")).await?;
    transaction.execute(&lock, &[&mailing_ids]).await?;
    let mut written = WriteBack::default();
    write_outcomes(&transaction, owner, finals, true, &mut written).await?;
    let select = transaction.prepare_cached(include_str!("../sql/select_recipient_addresses.sql")).await?;
    let rows = transaction.query(&select, &[&mailing_ids, &ids]).await?;
    let tenants: Vec<&str> = rows.iter().map(|row| row.get(0)).collect();
    let emails: Vec<&str> = rows.iter().map(|row| row.get(1)).collect();
    apply_suppressions(&transaction, &tenants, &emails).await?;
    transaction.commit().await?;
    result.written.extend(written.written);
    result.fenced.extend(written.fenced);
    Ok(())
}

impl Store {
    /// Moves scheduled mailings whose time has come to `sending`.
    pub async fn activate_due_mailings(&self) -> Result<Vec<MailingId>, StoreError> {
        let client = self.client().await?;
        let activate = client.prepare_cached(include_str!("../sql/activate_due_mailings.sql")).await?;
        let rows = client.query(&activate, &[]).await?;
        Ok(rows.iter().map(|row| MailingId::new(row.get(0))).collect())
    }

    /// Mailings now sending, each with whether it is paced (`max_per_hour`).
    pub async fn sending_mailings(&self) -> Result<Vec<(MailingId, bool)>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_sending_mailings.sql")).await?;
        let rows = client.query(&select, &[]).await?;
        Ok(rows.iter().map(|row| (MailingId::new(row.get(0)), row.get(1))).collect())
    }

    /// Claims up to `limit` due recipients of a sending mailing on those of `shards` that `owner`
    /// holds a lease on, skipping `skip_domains`. A mailing with a pace (`max_per_hour`) gets at
    /// most the send slots due now, reserved on the mailing row so that the pace holds across
    /// all senders together.
    #[instrument(skip_all, fields(mailing_id = %claim.mailing_id, limit = claim.limit))]
    pub async fn claim_due_recipients(&self, claim: &ClaimRequest<'_>) -> Result<Vec<ClaimedRecipient>, StoreError> {
        let ClaimRequest { mailing_id, shards, limit, owner, skip_domains, paced, after } = *claim;
        let after = after.map_or((DateTime::<Utc>::UNIX_EPOCH, 0), |cursor| (cursor.due_at, cursor.recipient_id));
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(CLAIM_PLANNER_SETTINGS).await?;
        let (granted, pace) = if paced {
            let lock = transaction.prepare_cached(include_str!("../sql/lock_mailing_pace.sql")).await?;
            let Some(pace) = transaction.query_opt(&lock, &[&mailing_id.get()]).await? else {
                return Ok(Vec::new());
            };
            let max_per_hour: Option<i32> = pace.get(0);
            let next_slot: Option<DateTime<Utc>> = pace.get(1);
            let now: DateTime<Utc> = pace.get(2);
            match max_per_hour {
                Some(per_hour) if per_hour > 0 => {
                    let interval = chrono::Duration::microseconds(3_600_000_000 / i64::from(per_hour));
                    // At most one slot of credit after an idle time, so no burst.
                    let slot = next_slot.unwrap_or(now).max(now - interval);
                    let due = if slot > now {
                        0
                    } else {
                        (now - slot).num_microseconds().unwrap_or(0) / interval.num_microseconds().unwrap_or(1).max(1)
                            + 1
                    };
                    (due.min(limit), Some((slot, interval)))
                }
                _ => (limit, None),
            }
        } else {
            (limit, None)
        };
        if granted <= 0 {
            return Ok(Vec::new());
        }
        let claim = transaction.prepare_cached(CLAIM_DUE_RECIPIENTS_SQL).await?;
        let rows = transaction
            .query(&claim, &[&mailing_id.get(), &shards, &granted, &owner, &skip_domains, &after.0, &after.1])
            .await?;
        if let Some((first_slot, interval)) = pace {
            let used = i32::try_from(rows.len()).unwrap_or(i32::MAX);
            let advance = transaction.prepare_cached(include_str!("../sql/set_mailing_pace_slot.sql")).await?;
            transaction.execute(&advance, &[&mailing_id.get(), &(first_slot + interval * used)]).await?;
        }
        transaction.commit().await?;
        Ok(rows.iter().map(|row| claimed_from_row(mailing_id, row)).collect())
    }

    /// Writes back outcomes for rows `owner` still holds, with one delivery event each. A row
    /// whose lease was lost is fenced off; one whose outcome was already written (a write-back
    /// retried after its commit) is skipped. Final outcomes go in one statement, rows handed
    /// back (retries, releases) in another.
    #[instrument(skip_all, fields(num_outcomes = outcomes.len()))]
    pub async fn record_outcomes(&self, owner: Uuid, outcomes: &[RecipientOutcome]) -> Result<WriteBack, StoreError> {
        let (finals, handed_back): (Vec<&RecipientOutcome>, Vec<&RecipientOutcome>) =
            outcomes.iter().partition(|outcome| outcome.kind.is_final());
        let mut client = self.client().await?;
        let mut result = WriteBack::default();
        if finals.iter().any(|outcome| outcome.suppress) {
            write_suppressing_finals(&mut client, owner, &finals, &mut result).await?;
        } else if !finals.is_empty() {
            write_outcomes(&client, owner, &finals, true, &mut result).await?;
        }
        if !handed_back.is_empty() {
            write_outcomes(&client, owner, &handed_back, false, &mut result).await?;
        }
        Ok(result)
    }

    /// Deletes claim batches of `owner` whose outcomes are all written.
    pub async fn delete_claim_batches(&self, owner: Uuid, batches: &[i64]) -> Result<(), StoreError> {
        if batches.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let delete = client.prepare_cached(include_str!("../sql/delete_claim_batches.sql")).await?;
        client.execute(&delete, &[&owner, &batches]).await?;
        Ok(())
    }

    /// Completes the given sending mailings that have no recipient left to send. Locks each
    /// mailing row first so that a concurrent `AddRecipients` chunk is either seen or waits.
    pub async fn complete_finished_mailings(&self, mailing_ids: &[MailingId]) -> Result<Vec<MailingId>, StoreError> {
        let mut completed = Vec::new();
        let mut client = self.client().await?;
        for id in mailing_ids {
            let transaction = client.transaction().await?;
            let lock = transaction.prepare_cached(include_str!("../sql/lock_sending_mailing.sql")).await?;
            if transaction.query_opt(&lock, &[&id.get()]).await?.is_none() {
                continue;
            }
            let count = transaction.prepare_cached(include_str!("../sql/count_unfinished_recipients.sql")).await?;
            let unfinished: i64 = transaction.query_one(&count, &[&id.get()]).await?.get(0);
            if unfinished == 0 {
                let complete = transaction.prepare_cached(include_str!("../sql/complete_mailing.sql")).await?;
                transaction.execute(&complete, &[&id.get()]).await?;
                completed.push(*id);
            }
            transaction.commit().await?;
        }
        Ok(completed)
    }
}
