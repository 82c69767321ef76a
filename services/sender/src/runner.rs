//! The sender: starts the lease keeper, claimer, connection workers and writer, and stops them
//! in the right order.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{Quota, RateLimiter};
use sendwerk_mail::dkim::DkimSigners;
use sendwerk_mail::mx::MxResolver;
use sendwerk_store::{Store, StoreError};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use crate::SenderConfig;
use crate::batches::ClaimBatches;
use crate::claimer::{Claimer, Job, released};
use crate::direct::DirectDelivery;
use crate::leases::{LeaseKeeper, Ownership};
use crate::limits::DomainLimits;
use crate::parking::ParkingLot;
use crate::worker::ConnectionWorker;
use crate::worker::to_chrono;

/// Counters a running sender keeps, for logs, the demo and the load test.
#[derive(Debug, Default)]
pub struct SenderStats {
    pub claimed: AtomicU64,
    pub sent: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
    /// Handed back unsent: rate limits, paused domains, lost leases, shutdown.
    pub released: AtomicU64,
    /// Held back in the sender while their domain made them wait a short while (each time).
    pub parked: AtomicU64,
    pub recorded: AtomicU64,
    /// Outcomes the store refused because the shard lease had been lost.
    pub fenced: AtomicU64,
}

/// The sender role.
pub struct Sender {
    store: Store,
    config: Arc<SenderConfig>,
    signers: Arc<DkimSigners>,
    worker_id: Uuid,
    stats: Arc<SenderStats>,
    limits: Arc<DomainLimits>,
    direct: Option<Arc<DirectDelivery>>,
}

/// Why a sender cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SenderSetupError {
    #[error("dkim: {0}")]
    Dkim(#[from] sendwerk_mail::dkim::DkimError),
    #[error("mx resolver: {0}")]
    Mx(#[from] sendwerk_mail::mx::MxConfigError),
}

/// Aborts the given tasks when dropped, so that a sender dropped mid-run (a crash in tests)
/// takes all of its tasks with it.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

impl Sender {
    pub fn new(store: Store, config: SenderConfig) -> Result<Self, SenderSetupError> {
        let signers = Arc::new(DkimSigners::from_configs(&config.dkim_keys)?);
        let direct = match &config.mx {
            Some(mx) => Some(Arc::new(DirectDelivery::new(
                MxResolver::new(mx.clone())?,
                config.relay.clone(),
                config.max_connections_per_host,
                config.allow_private_mx_addresses,
            ))),
            None => None,
        };
        let limits = DomainLimits::new(config.default_domain_max_per_minute, config.domain_backoff);
        Ok(Self {
            store,
            config: Arc::new(config),
            signers,
            worker_id: Uuid::new_v4(),
            stats: Arc::new(SenderStats::default()),
            limits,
            direct,
        })
    }

    pub fn worker_id(&self) -> Uuid {
        self.worker_id
    }

    pub fn stats(&self) -> Arc<SenderStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until `shutdown` resolves, then stops claiming, lets in-flight transactions finish
    /// within the grace period, hands back claimed rows it did not start, writes every outcome,
    /// releases its shard leases and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StoreError> {
        info!(
            worker_id = %self.worker_id,
            connections = self.config.num_connections,
            delivery = if self.direct.is_some() { "mx" } else { "relay" },
            "sender starting"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ownership_tx, ownership_rx) = watch::channel(Arc::new(Ownership::default()));
        let capacity = (self.config.claim_batch_size as usize).max(1) * 2;
        let (job_tx, job_rx) = mpsc::channel::<Job>(capacity);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let parking = Arc::new(ParkingLot::new(capacity, (capacity / 8).max(1)));
        let (outcome_tx, outcome_rx) = mpsc::channel(capacity * 2);
        let batches = Arc::new(ClaimBatches::default());
        let process_limiter = self
            .config
            .max_messages_per_second
            .and_then(NonZeroU32::new)
            .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));

        let mut keeper = LeaseKeeper {
            store: self.store.clone(),
            worker_id: self.worker_id,
            hostname: self.config.hostname.clone(),
            lease: self.config.lease,
            ownership_tx,
            unrecovered: std::collections::BTreeSet::new(),
            rounds: 0,
            batches: Arc::clone(&batches),
        };
        // Take a share of the shards before claiming anything.
        let mut draining = std::collections::BTreeSet::new();
        if let Err(error) = keeper.round(&mut draining).await {
            warn!(error = %error, "first lease round failed; the keeper retries");
        }
        let (written_tx, written_rx) = watch::channel(false);
        let keeper_task = tokio::spawn(keeper.run(stop_rx.clone(), written_rx).instrument(info_span!("sender_leases")));
        let writer = tokio::spawn(
            crate::writer::write_outcomes(
                self.store.clone(),
                self.worker_id,
                Arc::clone(&self.config),
                outcome_rx,
                Arc::clone(&self.stats),
                Arc::clone(&batches),
            )
            .instrument(info_span!("sender_writer")),
        );
        let mut connection_workers = JoinSet::new();
        for index in 0..self.config.num_connections.max(1) {
            let worker = ConnectionWorker {
                config: Arc::clone(&self.config),
                signers: Arc::clone(&self.signers),
                stats: Arc::clone(&self.stats),
                process_limiter: process_limiter.clone(),
                limits: Arc::clone(&self.limits),
                ownership_rx: ownership_rx.clone(),
                outcome_tx: outcome_tx.clone(),
                session: None,
                direct: self.direct.clone(),
                parking: Arc::clone(&parking),
            };
            connection_workers.spawn(
                worker.run(Arc::clone(&job_rx), stop_rx.clone()).instrument(info_span!("sender_connection", index)),
            );
        }
        let claimer = Claimer {
            store: self.store.clone(),
            worker_id: self.worker_id,
            config: Arc::clone(&self.config),
            limits: Arc::clone(&self.limits),
            ownership_rx,
            stats: Arc::clone(&self.stats),
            parking: Arc::clone(&parking),
            batches,
        };
        let claimer_task = tokio::spawn(claimer.run(job_tx, stop_rx.clone()).instrument(info_span!("sender_claimer")));

        let _abort_guard =
            AbortOnDrop(vec![claimer_task.abort_handle(), writer.abort_handle(), keeper_task.abort_handle()]);
        shutdown.await;
        info!(worker_id = %self.worker_id, "sender stopping: no new claims");
        let _ = stop_tx.send(true);
        let claim_result = claimer_task.await;
        let grace = tokio::time::timeout(self.config.shutdown_grace, async {
            while connection_workers.join_next().await.is_some() {}
        })
        .await;
        if grace.is_err() {
            warn!(
                grace_secs = self.config.shutdown_grace.as_secs(),
                "in-flight smtp transactions outlived the grace period; their rows are retried by the next holder of their shard"
            );
            connection_workers.abort_all();
        }
        // Rows claimed but never started go back to the queue at once.
        let mut receiver = job_rx.lock().await;
        receiver.close();
        while let Ok(job) = receiver.try_recv() {
            let _ = outcome_tx.send(released(&job.recipient, None)).await;
        }
        // Parked rows go back due when their wait ends, as they would have been sent.
        for (at, job) in parking.take_all() {
            let _ = outcome_tx.send(released(&job.recipient, Some(to_chrono(at)))).await;
        }
        drop(receiver);
        drop(outcome_tx);
        let write_result = writer.await;
        let _ = written_tx.send(true);
        let _ = keeper_task.await;
        // Every outcome is written: hand the shards over at once rather than after the lease.
        // Rows of transactions cut off by the grace period are still `sending`; the next holder
        // of their shard retries them and records that a duplicate is possible.
        if let Err(error) = self.store.release_all_shard_leases(self.worker_id).await {
            warn!(error = %error, "releasing shard leases failed; they expire by themselves");
        }
        if let Err(error) = self.store.delete_worker(self.worker_id).await {
            warn!(error = %error, "removing the worker row failed; it is forgotten after ten leases");
        }
        let stats = &self.stats;
        info!(
            worker_id = %self.worker_id,
            claimed = stats.claimed.load(Ordering::Relaxed),
            sent = stats.sent.load(Ordering::Relaxed),
            deferred = stats.deferred.load(Ordering::Relaxed),
            failed = stats.failed.load(Ordering::Relaxed),
            released = stats.released.load(Ordering::Relaxed),
            parked = stats.parked.load(Ordering::Relaxed),
            fenced = stats.fenced.load(Ordering::Relaxed),
            "sender stopped"
        );
        match (claim_result, write_result) {
            (Ok(Ok(())), Ok(Ok(()))) => Ok(()),
            (Ok(Err(error)), _) | (_, Ok(Err(error))) => Err(error),
            _ => Ok(()),
        }
    }
}
