//! Sender membership and shard leases: heartbeats, fair-share acquisition with fencing tokens,
//! renewal, hand-back, and recovery of rows a previous holder left in flight.

use std::time::Duration;

use tracing::instrument;
use uuid::Uuid;

use crate::{Store, StoreError};

/// A shard lease this sender holds: the shard and the fencing token of this acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeldShard {
    pub shard: i16,
    pub token: i64,
}

/// A live sender as operators see it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: Uuid,
    pub hostname: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub num_shards: i64,
}

fn held_from_rows(rows: &[tokio_postgres::Row]) -> Vec<HeldShard> {
    let mut held: Vec<HeldShard> = rows.iter().map(|row| HeldShard { shard: row.get(0), token: row.get(1) }).collect();
    held.sort();
    held
}

/// Run before the recovery statements, in their transaction. When recovery read the whole queue
/// for rows in flight, the planner's estimate passed `jit_above_cost` on a campaign's queue, and
/// Postgres compiled the statement to machine code at every run: 50–90 ms
/// (`pg_stat_statements`: 80 functions per call) at every shard takeover and every tenth lease
/// round. It now reads the claim batches, a few rows, but a cold path gains nothing from JIT.
const RECOVERY_SETTINGS: &str = "SET LOCAL jit = off";

impl Store {
    /// Records that `worker` is alive (inserting it on the first beat).
    pub async fn heartbeat_worker(&self, worker: Uuid, hostname: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let heartbeat = client.prepare_cached(include_str!("../sql/heartbeat_worker.sql")).await?;
        client.execute(&heartbeat, &[&worker, &hostname]).await?;
        Ok(())
    }

    /// Senders whose last heartbeat is younger than `window`.
    pub async fn count_live_workers(&self, window: Duration) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let count = client.prepare_cached(include_str!("../sql/count_live_workers.sql")).await?;
        Ok(client.query_one(&count, &[&window.as_secs_f64()]).await?.get(0))
    }

    /// Forgets senders silent for longer than `window` (their leases have expired by then).
    pub async fn delete_dead_workers(&self, window: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let delete = client.prepare_cached(include_str!("../sql/delete_dead_workers.sql")).await?;
        Ok(client.execute(&delete, &[&window.as_secs_f64()]).await?)
    }

    /// Senders that beat within `window`, with how many shards each holds.
    pub async fn list_workers(&self, window: Duration) -> Result<Vec<WorkerInfo>, StoreError> {
        let client = self.client().await?;
        let list = client.prepare_cached(include_str!("../sql/list_workers.sql")).await?;
        Ok(client
            .query(&list, &[&window.as_secs_f64()])
            .await?
            .iter()
            .map(|row| WorkerInfo {
                id: row.get(0),
                hostname: row.get(1),
                started_at: row.get(2),
                heartbeat_at: row.get(3),
                num_shards: row.get(4),
            })
            .collect())
    }

    pub async fn delete_worker(&self, worker: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        let delete = client.prepare_cached(include_str!("../sql/delete_worker.sql")).await?;
        client.execute(&delete, &[&worker]).await?;
        Ok(())
    }

    /// Extends every unexpired lease `worker` holds; returns them.
    #[instrument(skip_all)]
    pub async fn renew_shard_leases(&self, worker: Uuid, lease: Duration) -> Result<Vec<HeldShard>, StoreError> {
        let client = self.client().await?;
        let renew = client.prepare_cached(include_str!("../sql/renew_shard_leases.sql")).await?;
        Ok(held_from_rows(&client.query(&renew, &[&worker, &lease.as_secs_f64()]).await?))
    }

    /// Takes up to `count` free or expired shards, each with a new fencing token.
    #[instrument(skip_all, fields(count))]
    pub async fn acquire_shard_leases(
        &self,
        worker: Uuid,
        lease: Duration,
        count: i64,
    ) -> Result<Vec<HeldShard>, StoreError> {
        let client = self.client().await?;
        let acquire = client.prepare_cached(include_str!("../sql/acquire_shard_leases.sql")).await?;
        Ok(held_from_rows(&client.query(&acquire, &[&worker, &lease.as_secs_f64(), &count]).await?))
    }

    /// Hands back those of `shards` in which `worker` has nothing in flight; returns them.
    pub async fn release_shard_leases(&self, worker: Uuid, shards: &[i16]) -> Result<Vec<i16>, StoreError> {
        let client = self.client().await?;
        let release = client.prepare_cached(include_str!("../sql/release_shard_leases.sql")).await?;
        Ok(client.query(&release, &[&worker, &shards]).await?.iter().map(|row| row.get(0)).collect())
    }

    /// Hands back every lease (graceful shutdown, after all outcomes are written).
    pub async fn release_all_shard_leases(&self, worker: Uuid) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let release = client.prepare_cached(include_str!("../sql/release_all_shard_leases.sql")).await?;
        Ok(client.execute(&release, &[&worker]).await?)
    }

    /// Retries rows another sender left `sending` in `shards` (now held by `worker`), recording
    /// an `outcome-unknown` event for each; also the rows of claim batches of `worker` older
    /// than a minute that are not among `open_batches` (the batches it still tracks).
    #[instrument(skip_all, fields(num_shards = shards.len()))]
    pub async fn recover_orphaned_rows(
        &self,
        worker: Uuid,
        shards: &[i16],
        open_batches: &[i64],
    ) -> Result<u64, StoreError> {
        if shards.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(RECOVERY_SETTINGS).await?;
        let recover = transaction.prepare_cached(include_str!("../sql/recover_orphaned_rows.sql")).await?;
        let recovered = transaction.execute(&recover, &[&shards, &worker, &open_batches]).await?;
        let settled = transaction.prepare_cached(include_str!("../sql/delete_settled_batches.sql")).await?;
        transaction.execute(&settled, &[&shards, &worker, &open_batches]).await?;
        transaction.commit().await?;
        Ok(recovered)
    }
}
