//! The writer: collects outcomes and writes them back in batches (one `UNNEST` statement each).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sendwerk_store::{RecipientOutcome, Store, StoreError};
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

use crate::SenderConfig;
use crate::batches::{ClaimBatches, write_back};
use crate::runner::SenderStats;

/// Writes outcomes until every sender of the channel is gone; on a database error it keeps the
/// batch and tries again, so no outcome is dropped while the process lives. Rows whose lease
/// was lost are not written (the fence in the statement) and are counted as such.
pub(crate) async fn write_outcomes(
    store: Store,
    worker_id: Uuid,
    config: Arc<SenderConfig>,
    mut outcome_rx: mpsc::Receiver<RecipientOutcome>,
    stats: Arc<SenderStats>,
    batches: Arc<ClaimBatches>,
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
                        None => {
                            open = false;
                            break;
                        }
                    },
                    () = &mut deadline => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        match write_back(&store, worker_id, &batches, &batch).await {
            Ok(result) => {
                stats.recorded.fetch_add(result.written.len() as u64, Ordering::Relaxed);
                let fenced = result.fenced.len() as u64;
                if fenced > 0 {
                    stats.fenced.fetch_add(fenced, Ordering::Relaxed);
                    warn!(fenced, "outcomes not written: the shard lease was lost; another sender retries those rows");
                }
                let already = batch.len().saturating_sub(result.written.len() + result.fenced.len());
                if already > 0 {
                    info!(already, "outcomes already written (a write-back retried after its commit)");
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
