//! The claimer: activates due scheduled mailings, claims due recipients of the shards this sender
//! holds (skipping paused and backing-off domains, within each mailing's pace) and feeds the
//! connection workers; completes mailings with nothing left to send.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sendwerk_core::MailingId;
use sendwerk_store::{ClaimCursor, ClaimRequest, ClaimedRecipient, OutcomeKind, RecipientOutcome, Store, StoreError};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use uuid::Uuid;

use crate::SenderConfig;
use crate::batches::{ClaimBatches, write_back};
use crate::leases::Ownership;
use crate::limits::DomainLimits;
use crate::parking::ParkingLot;
use crate::prepared::PreparedMailing;
use crate::runner::SenderStats;

/// One claimed recipient with the mailing it belongs to.
pub(crate) struct Job {
    pub recipient: ClaimedRecipient,
    pub mailing: Option<Arc<PreparedMailing>>,
}

/// The outcome for a row handed back unsent; `at` moves it later.
pub(crate) fn released(recipient: &ClaimedRecipient, at: Option<DateTime<Utc>>) -> RecipientOutcome {
    RecipientOutcome { next_attempt_at: at, ..RecipientOutcome::new(recipient, OutcomeKind::Released) }
}

pub(crate) struct Claimer {
    pub store: Store,
    pub worker_id: Uuid,
    pub config: Arc<SenderConfig>,
    pub limits: Arc<DomainLimits>,
    pub ownership_rx: watch::Receiver<Arc<Ownership>>,
    pub stats: Arc<SenderStats>,
    pub parking: Arc<ParkingLot>,
    pub batches: Arc<ClaimBatches>,
}

/// How long a sender keeps claiming after the last row it claimed in a mailing before it starts
/// again from the front of the due order. A row passed over meanwhile (its domain was skipped,
/// it was handed back unsent, its shard was just taken over) waits at most this long; without
/// the cursor, every claim stepped over all rows in flight at the front, a heap check each.
const CLAIM_PASS: Duration = Duration::from_secs(1);

/// The mailings now sending (with whether each is paced), as last listed, and where this
/// sender's claims in each have got to.
struct SendingMailings {
    mailings: Vec<(MailingId, bool)>,
    refreshed: Option<Instant>,
    passes: HashMap<MailingId, Pass>,
}

/// A pass through a mailing's due order: claims continue after `after`.
struct Pass {
    after: ClaimCursor,
    started: Instant,
}

/// What one claim round found.
enum Round {
    /// Nothing due: wait for the poll interval.
    Idle,
    /// Claimed rows, or the pipeline is full: go again as soon as there is room.
    Busy,
}

impl Claimer {
    pub async fn run(self, job_tx: mpsc::Sender<Job>, mut stop_rx: watch::Receiver<bool>) -> Result<(), StoreError> {
        let mut prepared: HashMap<MailingId, Option<Arc<PreparedMailing>>> = HashMap::new();
        let mut sending = SendingMailings { mailings: Vec::new(), refreshed: None, passes: HashMap::new() };
        let mut last_settings = Instant::now() - self.config.settings_refresh;
        let mut rotation = 0usize;
        while !*stop_rx.borrow() {
            if last_settings.elapsed() >= self.config.settings_refresh {
                match self.store.domain_settings().await {
                    Ok(settings) => self.limits.apply_settings(&settings),
                    Err(error) => warn!(error = %error, "loading domain settings failed"),
                }
                last_settings = Instant::now();
            }
            rotation = rotation.wrapping_add(1);
            let pause = match self.round(&job_tx, &mut prepared, &mut sending, rotation).await {
                Ok(Round::Idle) => self.config.poll_interval,
                Ok(Round::Busy) => Duration::ZERO,
                Err(error) => {
                    warn!(error = %error, cause = ?std::error::Error::source(&error), "claim round failed; retrying");
                    self.config.poll_interval.max(Duration::from_secs(1))
                }
            };
            if pause.is_zero() {
                // Wait for room for a whole batch rather than claiming crumbs: the pipeline holds
                // two, so the connections still have a batch of work meanwhile, and each claim
                // statement's fixed cost is spread over as many rows as it may take.
                // Parked rows count against the room (see `room`). Parked rows whose wait is
                // over go back into the pipeline first, as soon as it has a free slot.
                let batch = (self.config.claim_batch_size as usize).max(1);
                while !*stop_rx.borrow() {
                    if self.room(&job_tx) >= batch || (job_tx.capacity() > 0 && self.parking.has_due(Instant::now())) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            } else {
                tokio::select! {
                    _ = stop_rx.changed() => {}
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        Ok(())
    }

    async fn round(
        &self,
        job_tx: &mpsc::Sender<Job>,
        prepared: &mut HashMap<MailingId, Option<Arc<PreparedMailing>>>,
        cache: &mut SendingMailings,
        rotation: usize,
    ) -> Result<Round, StoreError> {
        // Starting due mailings and listing the sending ones once per poll interval is enough:
        // the claim itself checks that a mailing is still sending, so a pause or cancel takes
        // effect at the next claim regardless.
        if cache.refreshed.is_none_or(|at| at.elapsed() >= self.config.poll_interval) {
            let activated = self.store.activate_due_mailings().await?;
            if !activated.is_empty() {
                info!(mailings = ?activated, "scheduled mailings started");
            }
            cache.mailings = self.store.sending_mailings().await?;
            cache.refreshed = Some(Instant::now());
            prepared.retain(|id, _| cache.mailings.iter().any(|(sending_id, _)| sending_id == id));
            cache.passes.retain(|id, _| cache.mailings.iter().any(|(sending_id, _)| sending_id == id));
        }
        self.unpark(job_tx, &cache.mailings).await?;
        let mut sending = cache.mailings.clone();
        if sending.is_empty() {
            return Ok(Round::Idle);
        }
        let shards = self.ownership_rx.borrow().claimable();
        if shards.is_empty() {
            return Ok(Round::Idle);
        }
        // Start with a different mailing each round, so that one large mailing cannot starve
        // the others.
        let start = rotation % sending.len();
        sending.rotate_left(start);
        let skip_domains = self.limits.skip_domains();
        let mut num_claimed = 0usize;
        for (mailing_id, paced) in &sending {
            let free = self.room(job_tx);
            if free == 0 {
                return Ok(Round::Busy);
            }
            let limit = (self.config.claim_batch_size as usize).min(free) as i64;
            let claimed = self.claim(*mailing_id, *paced, &shards, limit, &skip_domains, &mut cache.passes).await?;
            if claimed.is_empty() {
                continue;
            }
            num_claimed += claimed.len();
            self.stats.claimed.fetch_add(claimed.len() as u64, Ordering::Relaxed);
            let mailing = match prepared.get(mailing_id) {
                Some(entry) => entry.clone(),
                None => match self.prepare_mailing(*mailing_id).await {
                    Ok(entry) => {
                        prepared.insert(*mailing_id, entry.clone());
                        entry
                    }
                    Err(error) => {
                        // Hand the claimed rows back rather than hold them, leased to this
                        // sender, until it stops.
                        if let Err(release_error) = self.hand_back(claimed.iter()).await {
                            self.batches.abandon(claimed.iter());
                            warn!(error = %release_error, "handing back claimed rows failed; this sender retries them in a minute");
                        }
                        return Err(error);
                    }
                },
            };
            for recipient in claimed {
                if job_tx.send(Job { recipient, mailing: mailing.clone() }).await.is_err() {
                    return Ok(Round::Busy);
                }
            }
        }
        if num_claimed > 0 {
            return Ok(Round::Busy);
        }
        let ids: Vec<MailingId> = sending.iter().map(|(id, _)| *id).collect();
        let completed = self.store.complete_finished_mailings(&ids).await?;
        if !completed.is_empty() {
            info!(mailings = ?completed, "mailings completed");
            cache.refreshed = None;
        }
        Ok(Round::Idle)
    }

    /// How many rows may be claimed now: the room in the pipeline less the rows parked. Parked
    /// rows are claimed rows waiting for their domain; if they did not count, a sender whose
    /// domains keep backing off would claim on, fill the lot and hand the rest back, each row
    /// claimed many times over (measured: 8 claims per row under the sink-faults chaos). One
    /// domain parks at most an eighth of the pipeline, so one or two domains backing off never
    /// stop the claims for the others; when most of the pipeline is parked (many domains
    /// backing off at once), the claimer waits for parked rows to come due (30 s at most).
    /// Claiming smaller batches instead cost more: each claim steps over the waiting rows of
    /// the domains it skips (Postgres 315 instead of 109 µs per message under sink-faults).
    fn room(&self, job_tx: &mpsc::Sender<Job>) -> usize {
        job_tx.capacity().saturating_sub(self.parking.len())
    }

    /// Puts parked rows whose wait is over back into the pipeline, ahead of new claims, as far
    /// as there is room; the rest wait for the next round. A row of a mailing no longer sending
    /// (paused, cancelled, as last listed) is handed back instead.
    async fn unpark(&self, job_tx: &mpsc::Sender<Job>, sending: &[(MailingId, bool)]) -> Result<(), StoreError> {
        let due = self.parking.take_due(Instant::now(), job_tx.capacity());
        let mut stopped = Vec::new();
        for job in due {
            if !sending.iter().any(|(id, _)| *id == job.recipient.mailing_id) {
                stopped.push(job);
            } else if let Err(error) = job_tx.try_send(job) {
                // Only this task fills the pipeline, and there was room: it is closing.
                stopped.push(error.into_inner());
            }
        }
        if stopped.is_empty() {
            return Ok(());
        }
        self.hand_back(stopped.iter().map(|job| &job.recipient)).await.inspect_err(|_| {
            // Perhaps handed back after all (the commit's reply lost): sending them later could
            // duplicate a claim of the same rows made meanwhile. They are dropped here, and this
            // sender's recovery retries whatever is still in flight of them after a minute.
            self.batches.abandon(stopped.iter().map(|job| &job.recipient));
        })
    }

    /// Hands claimed rows back to the queue unsent, due at once.
    async fn hand_back<'a>(&self, recipients: impl Iterator<Item = &'a ClaimedRecipient>) -> Result<(), StoreError> {
        let outcomes: Vec<_> = recipients.map(|recipient| released(recipient, None)).collect();
        write_back(&self.store, self.worker_id, &self.batches, &outcomes).await?;
        self.stats.released.fetch_add(outcomes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Claims up to `limit` rows of a mailing, continuing its current pass through the due
    /// order; at the end of a pass, the rest from the front. A paced mailing, claimed a few
    /// rows at a time, always starts from the front.
    async fn claim(
        &self,
        mailing_id: MailingId,
        paced: bool,
        shards: &[i16],
        limit: i64,
        skip_domains: &[String],
        passes: &mut HashMap<MailingId, Pass>,
    ) -> Result<Vec<ClaimedRecipient>, StoreError> {
        let request = |after, limit| ClaimRequest {
            mailing_id,
            shards,
            limit,
            owner: self.worker_id,
            skip_domains,
            paced,
            after,
        };
        let mut pass = passes.remove(&mailing_id).filter(|pass| !paced && pass.started.elapsed() < CLAIM_PASS);
        let mut claimed = Vec::new();
        loop {
            let wanted = limit - claimed.len() as i64;
            let batch =
                match self.store.claim_due_recipients(&request(pass.as_ref().map(|pass| pass.after), wanted)).await {
                    Ok(batch) => batch,
                    // The rows of the first claim are committed and this sender's: send them; the
                    // claim from the front is tried again next round.
                    Err(error) if !claimed.is_empty() => {
                        warn!(error = %error, "claiming from the front failed; sending what the pass claimed");
                        return Ok(claimed);
                    }
                    Err(error) => return Err(error),
                };
            self.batches.claimed(&batch);
            let full = batch.len() as i64 == wanted;
            let newest = batch.iter().map(|recipient| recipient.cursor()).max();
            claimed.extend(batch);
            match newest {
                Some(after) if full => {
                    if !paced {
                        let started = pass.map_or_else(Instant::now, |pass| pass.started);
                        passes.insert(mailing_id, Pass { after, started });
                    }
                    return Ok(claimed);
                }
                // The end of this pass: rows passed over are at the front, and a new pass
                // starts there.
                _ if pass.is_some() => pass = None,
                _ => return Ok(claimed),
            }
        }
    }

    async fn prepare_mailing(&self, mailing_id: MailingId) -> Result<Option<Arc<PreparedMailing>>, StoreError> {
        let tenant = self.store.mailing_tenant(mailing_id).await?;
        let record = self.store.get_mailing(&tenant, mailing_id, true).await?;
        match PreparedMailing::prepare(&record, self.config.max_message_bytes) {
            Ok(prepared) => Ok(Some(prepared)),
            Err(error) => {
                warn!(mailing_id = %mailing_id, error = %error, "mailing cannot be prepared; its recipients are skipped");
                Ok(None)
            }
        }
    }
}
