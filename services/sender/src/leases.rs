//! The lease keeper: heartbeats into `workers`, holds a fair share of the 256 shards, hands
//! surplus shards over once nothing of them is in flight, and recovers rows that an earlier
//! holder of a shard left in flight. Publishes what this sender may claim from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sendwerk_core::NUM_SHARDS;
use sendwerk_store::{HeldShard, Store, StoreError};
use tokio::sync::watch;
use tracing::{info, warn};
use uuid::Uuid;

use crate::batches::ClaimBatches;

/// The shards this sender may claim from and send for, with the fencing token of each lease.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    tokens: BTreeMap<i16, i64>,
    /// Shards being handed over: no new claims, in-flight rows still finish.
    draining: BTreeSet<i16>,
    /// Our leases are certainly valid until then (local clock, renewal time plus lease minus
    /// a safety margin). Past it, nothing is sent until the next renewal.
    valid_until: Option<Instant>,
}

impl Ownership {
    /// Shards to claim from.
    pub fn claimable(&self) -> Vec<i16> {
        if !self.is_valid() {
            return Vec::new();
        }
        self.tokens.keys().filter(|shard| !self.draining.contains(shard)).copied().collect()
    }

    /// Whether a row claimed under (`shard`, `token`) may still be sent now.
    pub fn may_send(&self, shard: i16, token: i64) -> bool {
        self.is_valid() && self.tokens.get(&shard) == Some(&token)
    }

    fn is_valid(&self) -> bool {
        self.valid_until.is_some_and(|until| Instant::now() < until)
    }
}

pub(crate) struct LeaseKeeper {
    pub store: Store,
    pub worker_id: Uuid,
    pub hostname: String,
    pub lease: Duration,
    pub ownership_tx: watch::Sender<Arc<Ownership>>,
    /// Shards taken over whose leftover rows are not recovered yet.
    pub unrecovered: BTreeSet<i16>,
    /// Rounds run, for the periodic sweep.
    pub rounds: u32,
    /// The claim batches this sender tracks: recovery leaves them to it.
    pub batches: Arc<ClaimBatches>,
}

/// Every this many rounds, recovery looks at every held shard, not only those just taken over.
/// Rows under a foreign token can appear after a takeover's recovery: a claim by the previous
/// holder that was already running commits with its old token, or an acquisition's reply is
/// lost and the shard shows up as renewed. The sweep reads every claim batch, hence not every
/// round.
const SWEEP_EVERY_ROUNDS: u32 = 10;

impl LeaseKeeper {
    /// Rounds run every second at most (and a third of the lease at least), so that shards move
    /// within a second or two when senders join or leave.
    fn heartbeat_interval(&self) -> Duration {
        (self.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Keeps the leases until `stop_rx` says stop, then only renews them until `done_rx` says
    /// every outcome is written ([`Self::renew_until`]). Releasing them is left to the caller.
    pub async fn run(mut self, mut stop_rx: watch::Receiver<bool>, done_rx: watch::Receiver<bool>) {
        let mut draining: BTreeSet<i16> = BTreeSet::new();
        let mut last_round = Instant::now() - self.heartbeat_interval();
        while !*stop_rx.borrow() {
            let mut short_of_share = false;
            if last_round.elapsed() >= self.heartbeat_interval() {
                last_round = Instant::now();
                match self.round(&mut draining).await {
                    Ok(taking_over) => short_of_share = taking_over,
                    Err(error) => {
                        warn!(error = %error, cause = ?std::error::Error::source(&error), "lease round failed; retrying");
                    }
                }
            } else if !draining.is_empty() {
                // Hand surplus shards over as soon as their in-flight rows are written.
                if let Err(error) = self.release_drained(&mut draining).await {
                    warn!(error = %error, "releasing drained shards failed");
                }
            }
            // Hand-overs are watched closely on both sides: the giving sender releases as soon as its
            // rows are written, the taking one asks again soon.
            let pause = if !draining.is_empty() {
                Duration::from_millis(100)
            } else if short_of_share {
                Duration::from_millis(250)
            } else {
                self.heartbeat_interval()
            };
            if short_of_share {
                last_round = Instant::now() - self.heartbeat_interval();
            }
            tokio::select! {
                _ = stop_rx.changed() => {}
                () = tokio::time::sleep(pause.min(self.heartbeat_interval())) => {}
            }
        }
        self.renew_until(done_rx).await;
    }

    /// While the sender stops: keeps renewing the leases it holds, taking and handing over
    /// nothing, until `done_rx` says every outcome is written. Without it, transactions that
    /// finish late in the grace period would be written back after the leases expired: fenced
    /// off, and retried by the next holders as possible duplicates.
    pub async fn renew_until(self, mut done_rx: watch::Receiver<bool>) {
        while !*done_rx.borrow() {
            let renewed = async {
                self.store.heartbeat_worker(self.worker_id, &self.hostname).await?;
                self.store.renew_shard_leases(self.worker_id, self.lease).await
            };
            if let Err(error) = renewed.await {
                warn!(error = %error, "renewing leases while stopping failed; retrying");
            }
            tokio::select! {
                _ = done_rx.changed() => {}
                () = tokio::time::sleep(self.heartbeat_interval()) => {}
            }
        }
    }

    /// One heartbeat: renew, rebalance towards the fair share, recover the orphans of shards
    /// taken over (of all held shards every few rounds), publish. Returns
    /// whether it took shards over and still wants more (a hand-over in progress: ask again soon).
    pub async fn round(&mut self, draining: &mut BTreeSet<i16>) -> Result<bool, StoreError> {
        let started = Instant::now();
        self.store.heartbeat_worker(self.worker_id, &self.hostname).await?;
        let live = self.store.count_live_workers(self.lease).await?.max(1);
        let fair_share = usize::from(NUM_SHARDS).div_ceil(live as usize);
        let mut held = self.store.renew_shard_leases(self.worker_id, self.lease).await?;
        let mut taking_over = false;
        if held.len() < fair_share {
            let wanted = (fair_share - held.len()) as i64;
            let acquired = self.store.acquire_shard_leases(self.worker_id, self.lease, wanted).await?;
            self.unrecovered.extend(acquired.iter().map(|shard| shard.shard));
            if !acquired.is_empty() {
                info!(worker_id = %self.worker_id, acquired = acquired.len(), fair_share, "shard leases acquired");
                taking_over = held.len() + acquired.len() < fair_share;
            }
            held.extend(acquired);
        }
        draining.retain(|shard| held.iter().any(|h| h.shard == *shard));
        if held.len() > fair_share {
            let surplus = held.len() - fair_share;
            let mut by_shard: Vec<i16> = held.iter().map(|h| h.shard).filter(|s| !draining.contains(s)).collect();
            by_shard.sort_unstable();
            for shard in by_shard.into_iter().rev().take(surplus.saturating_sub(draining.len())) {
                draining.insert(shard);
            }
        }
        self.unrecovered.retain(|shard| held.iter().any(|h| h.shard == *shard));
        self.rounds = self.rounds.wrapping_add(1);
        let shards: Vec<i16> = if self.rounds.is_multiple_of(SWEEP_EVERY_ROUNDS) {
            held.iter().map(|h| h.shard).collect()
        } else {
            self.unrecovered.iter().copied().collect()
        };
        if !shards.is_empty() {
            let recovered = self.store.recover_orphaned_rows(self.worker_id, &shards, &self.batches.open()).await?;
            self.unrecovered.clear();
            if recovered > 0 {
                warn!(
                    recovered,
                    "retrying rows an earlier shard holder left in flight (outcome unknown, duplicates possible)"
                );
            }
        }
        self.publish(&held, draining, started);
        if !draining.is_empty() {
            self.release_drained(draining).await?;
        }
        if self.store.delete_dead_workers(self.lease * 10).await? > 0 {
            info!("forgot senders silent for ten lease periods");
        }
        Ok(taking_over)
    }

    fn publish(&self, held: &[HeldShard], draining: &BTreeSet<i16>, renewal_started: Instant) {
        let safety = self.lease / 10;
        let ownership = Ownership {
            tokens: held.iter().map(|h| (h.shard, h.token)).collect(),
            draining: draining.clone(),
            valid_until: Some(renewal_started + self.lease.saturating_sub(safety)),
        };
        self.ownership_tx.send_replace(Arc::new(ownership));
    }

    async fn release_drained(&self, draining: &mut BTreeSet<i16>) -> Result<(), StoreError> {
        let candidates: Vec<i16> = draining.iter().copied().collect();
        let released = self.store.release_shard_leases(self.worker_id, &candidates).await?;
        if released.is_empty() {
            return Ok(());
        }
        for shard in &released {
            draining.remove(shard);
        }
        info!(worker_id = %self.worker_id, released = released.len(), "surplus shard leases handed over");
        let current = self.ownership_tx.borrow().clone();
        let mut next = (*current).clone();
        for shard in &released {
            next.tokens.remove(shard);
            next.draining.remove(shard);
        }
        self.ownership_tx.send_replace(Arc::new(next));
        Ok(())
    }
}
