use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sendwerk_core::{DeliveryOutcome, EmailAddress, MailingId, NUM_SHARDS, SmtpReply};
use sendwerk_mail::dkim::DkimSigners;
use sendwerk_mail::smtp::{self, SmtpSession};
use sendwerk_store::{ClaimedRecipient, OutcomeKind, RecipientOutcome, Store, StoreError};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use crate::SenderConfig;
use crate::prepared::PreparedMailing;

/// Counters a running sender keeps, for logs, the demo and the load test.
#[derive(Debug, Default)]
pub struct SenderStats {
    pub claimed: AtomicU64,
    pub sent: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
    pub recorded: AtomicU64,
}

/// One claimed recipient with the mailing it belongs to.
struct Job {
    recipient: ClaimedRecipient,
    mailing: Option<Arc<PreparedMailing>>,
}

/// The sender role.
pub struct Sender {
    store: Store,
    config: Arc<SenderConfig>,
    signers: Arc<DkimSigners>,
    worker_id: Uuid,
    stats: Arc<SenderStats>,
}

impl Sender {
    pub fn new(store: Store, config: SenderConfig) -> Result<Self, sendwerk_mail::dkim::DkimError> {
        let signers = Arc::new(DkimSigners::from_configs(&config.dkim_keys)?);
        Ok(Self {
            store,
            config: Arc::new(config),
            signers,
            worker_id: Uuid::new_v4(),
            stats: Arc::new(SenderStats::default()),
        })
    }

    pub fn worker_id(&self) -> Uuid {
        self.worker_id
    }

    pub fn stats(&self) -> Arc<SenderStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` resolves, then stops claiming, lets in-flight transactions finish
    /// within the grace period, hands back claimed rows it did not start, flushes every outcome
    /// and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StoreError> {
        info!(worker_id = %self.worker_id, connections = self.config.num_connections, "sender starting");
        let (stop_tx, stop_rx) = watch::channel(false);
        let capacity = (self.config.claim_batch_size as usize).max(1) * 2;
        let (job_tx, job_rx) = mpsc::channel::<Job>(capacity);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (outcome_tx, outcome_rx) = mpsc::channel::<RecipientOutcome>(capacity * 2);
        let limiter = self
            .config
            .max_messages_per_second
            .and_then(NonZeroU32::new)
            .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));

        let writer = tokio::spawn(
            write_outcomes(
                self.store.clone(),
                self.worker_id,
                Arc::clone(&self.config),
                outcome_rx,
                Arc::clone(&self.stats),
            )
            .instrument(info_span!("sender_writer")),
        );
        let mut connection_workers = JoinSet::new();
        for index in 0..self.config.num_connections.max(1) {
            let worker = ConnectionWorker {
                config: Arc::clone(&self.config),
                signers: Arc::clone(&self.signers),
                stats: Arc::clone(&self.stats),
                limiter: limiter.clone(),
                outcome_tx: outcome_tx.clone(),
                session: None,
            };
            connection_workers.spawn(
                worker.run(Arc::clone(&job_rx), stop_rx.clone()).instrument(info_span!("sender_connection", index)),
            );
        }
        let claimer = tokio::spawn(
            claim_loop(
                self.store.clone(),
                self.worker_id,
                Arc::clone(&self.config),
                job_tx,
                stop_rx.clone(),
                Arc::clone(&self.stats),
            )
            .instrument(info_span!("sender_claimer")),
        );

        // If this future is dropped (the process is going down hard), take the tasks with it.
        let _abort_guard = AbortOnDrop(vec![claimer.abort_handle(), writer.abort_handle()]);
        shutdown.await;
        info!(worker_id = %self.worker_id, "sender stopping: no new claims");
        let _ = stop_tx.send(true);
        let claim_result = claimer.await;
        let grace = tokio::time::timeout(self.config.shutdown_grace, async {
            while connection_workers.join_next().await.is_some() {}
        })
        .await;
        if grace.is_err() {
            warn!(
                grace_secs = self.config.shutdown_grace.as_secs(),
                "in-flight smtp transactions outlived the grace period; their rows will be recovered after the lease"
            );
            connection_workers.abort_all();
        }
        // Rows claimed but never started go back to the queue at once.
        let mut receiver = job_rx.lock().await;
        receiver.close();
        while let Ok(job) = receiver.try_recv() {
            let _ = outcome_tx.send(released(&job.recipient)).await;
        }
        drop(receiver);
        drop(outcome_tx);
        let write_result = writer.await;
        info!(worker_id = %self.worker_id, "sender stopped");
        match (claim_result, write_result) {
            (Ok(Ok(())), Ok(Ok(()))) => Ok(()),
            (Ok(Err(error)), _) | (_, Ok(Err(error))) => Err(error),
            _ => Ok(()),
        }
    }
}

/// Aborts the given tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

fn released(recipient: &ClaimedRecipient) -> RecipientOutcome {
    RecipientOutcome {
        id: recipient.id,
        kind: OutcomeKind::Released,
        attempts: recipient.attempts - 1,
        next_attempt_at: None,
        code: None,
        enhanced: None,
        reply: None,
        reason: None,
        message_id: None,
    }
}

/// Finds due work and feeds the connection workers; also activates scheduled mailings,
/// completes finished ones and recovers rows of senders that died.
async fn claim_loop(
    store: Store,
    worker_id: Uuid,
    config: Arc<SenderConfig>,
    job_tx: mpsc::Sender<Job>,
    mut stop_rx: watch::Receiver<bool>,
    stats: Arc<SenderStats>,
) -> Result<(), StoreError> {
    let all_shards: Vec<i16> = (0..NUM_SHARDS as i16).collect();
    let mut prepared: HashMap<MailingId, Option<Arc<PreparedMailing>>> = HashMap::new();
    let mut last_recovery = Instant::now() - Duration::from_secs(3600);
    let recovery_interval = (config.lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(10));
    while !*stop_rx.borrow() {
        let round = async {
            if last_recovery.elapsed() >= recovery_interval {
                let recovered = store.recover_expired_leases(10_000).await?;
                if recovered > 0 {
                    warn!(recovered, "recovered rows from an expired sender lease; outcome unknown, retrying");
                }
                last_recovery = Instant::now();
            }
            let activated = store.activate_due_mailings().await?;
            if !activated.is_empty() {
                info!(mailings = ?activated, "scheduled mailings started");
            }
            let sending = store.sending_mailings().await?;
            prepared.retain(|id, _| sending.contains(id));
            let mut num_claimed = 0usize;
            for mailing_id in &sending {
                let free = job_tx.capacity();
                if free == 0 {
                    // The pipeline is full: there is work, wait for room (below), not the poll.
                    return Ok(num_claimed.max(1));
                }
                let limit = (config.claim_batch_size as usize).min(free) as i64;
                let claimed =
                    store.claim_due_recipients(*mailing_id, &all_shards, limit, worker_id, config.lease).await?;
                if claimed.is_empty() {
                    continue;
                }
                num_claimed += claimed.len();
                stats.claimed.fetch_add(claimed.len() as u64, Ordering::Relaxed);
                let mailing = match prepared.get(mailing_id) {
                    Some(entry) => entry.clone(),
                    None => {
                        let entry = prepare_mailing(&store, *mailing_id, &config).await?;
                        prepared.insert(*mailing_id, entry.clone());
                        entry
                    }
                };
                for recipient in claimed {
                    if job_tx.send(Job { recipient, mailing: mailing.clone() }).await.is_err() {
                        return Ok(num_claimed);
                    }
                }
            }
            if num_claimed == 0 && !sending.is_empty() {
                let completed = store.complete_finished_mailings(&sending).await?;
                if !completed.is_empty() {
                    info!(mailings = ?completed, "mailings completed");
                }
            }
            Ok::<usize, StoreError>(num_claimed)
        };
        let pause = match round.await {
            Ok(0) => config.poll_interval,
            Ok(_) => Duration::ZERO,
            Err(error) => {
                warn!(error = %error, cause = ?std::error::Error::source(&error), "claim round failed; retrying");
                config.poll_interval.max(Duration::from_secs(1))
            }
        };
        if pause.is_zero() {
            // Wait for room for half a batch in the pipeline rather than claiming crumbs.
            let wanted = (config.claim_batch_size as usize / 2).max(1);
            while job_tx.capacity() < wanted && !*stop_rx.borrow() {
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

async fn prepare_mailing(
    store: &Store,
    mailing_id: MailingId,
    config: &SenderConfig,
) -> Result<Option<Arc<PreparedMailing>>, StoreError> {
    let tenant_record = store.mailing_tenant(mailing_id).await?;
    let record = store.get_mailing(&tenant_record, mailing_id, true).await?;
    match PreparedMailing::prepare(&record, config.max_message_bytes) {
        Ok(prepared) => Ok(Some(prepared)),
        Err(error) => {
            warn!(mailing_id = %mailing_id, error = %error, "mailing cannot be prepared; its recipients are skipped");
            Ok(None)
        }
    }
}

struct ConnectionWorker {
    config: Arc<SenderConfig>,
    signers: Arc<DkimSigners>,
    stats: Arc<SenderStats>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    outcome_tx: mpsc::Sender<RecipientOutcome>,
    session: Option<SmtpSession>,
}

impl ConnectionWorker {
    async fn run(mut self, job_rx: Arc<Mutex<mpsc::Receiver<Job>>>, mut stop_rx: watch::Receiver<bool>) {
        loop {
            let job = {
                let mut receiver = job_rx.lock().await;
                tokio::select! {
                    biased;
                    _ = stop_rx.changed() => None,
                    job = receiver.recv() => job,
                }
            };
            let Some(job) = job else { break };
            let outcome = self.process(job).await;
            if self.outcome_tx.send(outcome).await.is_err() {
                break;
            }
            if *stop_rx.borrow() {
                break;
            }
        }
        if let Some(session) = self.session.take() {
            session.quit().await;
        }
    }

    async fn process(&mut self, job: Job) -> RecipientOutcome {
        let recipient = &job.recipient;
        let base = RecipientOutcome {
            id: recipient.id,
            kind: OutcomeKind::Skipped,
            attempts: recipient.attempts,
            next_attempt_at: None,
            code: None,
            enhanced: None,
            reply: None,
            reason: None,
            message_id: None,
        };
        if recipient.suppressed {
            return RecipientOutcome {
                kind: OutcomeKind::Suppressed,
                reason: Some("suppressed: on the suppression list at send time".into()),
                ..base
            };
        }
        let Some(mailing) = job.mailing.as_ref() else {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return RecipientOutcome {
                reason: Some("skipped: the mailing cannot be prepared for sending".into()),
                ..base
            };
        };
        let to = match EmailAddress::parse(&recipient.email) {
            Ok(to) => to,
            Err(error) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return RecipientOutcome { reason: Some(format!("skipped: invalid address: {error}")), ..base };
            }
        };
        let reference = format!("{}.{}", mailing.id, recipient.id.get());
        let built =
            mailing.build(&to, &recipient.external_id, &recipient.variables, &reference, false).and_then(|built| {
                let signed = self.signers.sign(&mailing.from_domain, &built.bytes)?;
                Ok(crate::BuiltMessage { bytes: signed.unwrap_or(built.bytes), message_id: built.message_id })
            });
        let built = match built {
            Ok(built) => built,
            Err(error) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return RecipientOutcome { reason: Some(format!("skipped: {error}")), ..base };
            }
        };
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let outcome = self.deliver(&mailing.return_path, to.as_str(), &built.bytes).await;
        self.outcome_for(base, recipient, outcome, built.message_id)
    }

    async fn deliver(&mut self, return_path: &str, to: &str, message: &[u8]) -> DeliveryOutcome {
        if !self.session.as_ref().is_some_and(SmtpSession::is_reusable) {
            if let Some(old) = self.session.take() {
                old.quit().await;
            }
            match smtp::connect(&self.config.relay).await {
                Ok(session) => self.session = Some(session),
                Err(error) => {
                    warn!(error = %error, "cannot connect to the relay");
                    return DeliveryOutcome::TemporaryFailure { reply: None, detail: error.to_string() };
                }
            }
        }
        match self.session.as_mut() {
            Some(session) => session.deliver(return_path, to, message).await,
            None => DeliveryOutcome::TemporaryFailure { reply: None, detail: "no smtp session".into() },
        }
    }

    fn outcome_for(
        &self,
        base: RecipientOutcome,
        recipient: &ClaimedRecipient,
        outcome: DeliveryOutcome,
        message_id: String,
    ) -> RecipientOutcome {
        let with_reply = |base: RecipientOutcome, reply: &SmtpReply| RecipientOutcome {
            code: Some(i32::from(reply.code)),
            enhanced: reply.enhanced.map(|status| status.to_string()),
            reply: Some(reply.text.clone()),
            ..base
        };
        match outcome {
            DeliveryOutcome::Delivered(reply) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                RecipientOutcome { kind: OutcomeKind::Sent, message_id: Some(message_id), ..with_reply(base, &reply) }
            }
            DeliveryOutcome::PermanentFailure(reply) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                debug!(recipient_id = %recipient.id.get(), code = reply.code, "smtp rejected permanently");
                RecipientOutcome {
                    kind: OutcomeKind::Failed,
                    reason: Some("rejected permanently by the receiving server".into()),
                    ..with_reply(base, &reply)
                }
            }
            DeliveryOutcome::TemporaryFailure { reply, detail } => {
                let base = match &reply {
                    Some(reply) => with_reply(base, reply),
                    None => RecipientOutcome { reply: Some(detail.clone()), ..base },
                };
                let attempts = u32::try_from(recipient.attempts).unwrap_or(u32::MAX);
                match self.config.retry.next_delay(attempts, recipient.since_first_attempt, rand::random::<f64>()) {
                    Some(delay) => {
                        self.stats.deferred.fetch_add(1, Ordering::Relaxed);
                        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                        RecipientOutcome {
                            kind: OutcomeKind::Deferred,
                            next_attempt_at: Some(next),
                            reason: Some(format!("temporary failure: {detail}")),
                            ..base
                        }
                    }
                    None => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        RecipientOutcome {
                            kind: OutcomeKind::Expired,
                            reason: Some(format!("retry window ended; last error: {detail}")),
                            ..base
                        }
                    }
                }
            }
        }
    }
}

/// Collects outcomes and writes them in batches; on a database error it keeps the batch and
/// tries again, so an outcome is never dropped while the process lives.
async fn write_outcomes(
    store: Store,
    worker_id: Uuid,
    config: Arc<SenderConfig>,
    mut outcome_rx: mpsc::Receiver<RecipientOutcome>,
    stats: Arc<SenderStats>,
) -> Result<(), StoreError> {
    let mut batch: Vec<RecipientOutcome> = Vec::with_capacity(config.flush_batch_size);
    let mut open = true;
    while open || !batch.is_empty() {
        if open {
            let deadline = tokio::time::sleep(config.flush_interval);
            tokio::pin!(deadline);
            while batch.len() < config.flush_batch_size {
                tokio::select! {
                    received = outcome_rx.recv() => match received {
                        Some(outcome) => batch.push(outcome),
                        None => { open = false; break; }
                    },
                    () = &mut deadline => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        match store.record_outcomes(worker_id, &batch).await {
            Ok(written) => {
                stats.recorded.fetch_add(written, Ordering::Relaxed);
                if written < batch.len() as u64 {
                    warn!(
                        lost = batch.len() as u64 - written,
                        "some outcomes were not written: their lease had expired and another sender took them over"
                    );
                }
                batch.clear();
            }
            Err(error) => {
                warn!(error = %error, cause = ?std::error::Error::source(&error), pending = batch.len(), "writing outcomes failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}
