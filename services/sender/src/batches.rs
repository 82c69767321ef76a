//! The claim batches this sender holds (`claim_batches`, one row per claim): how many of each
//! batch's rows still wait for their outcome, so that a batch is deleted once every outcome in
//! it is written. A batch with a row whose outcome was not written (the lease was lost) stays:
//! the shard's next holder recovers that row from it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sendwerk_store::{ClaimedRecipient, RecipientOutcome, Store, StoreError};
use tracing::warn;
use uuid::Uuid;

#[derive(Default)]
pub(crate) struct ClaimBatches {
    open: Mutex<HashMap<i64, Progress>>,
}

#[derive(Default)]
struct Progress {
    /// Rows claimed whose outcome has not been through a write-back yet.
    pending: usize,
    /// A write-back did not write one of its rows.
    unwritten: bool,
}

impl ClaimBatches {
    /// Records rows just claimed.
    pub fn claimed(&self, recipients: &[ClaimedRecipient]) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for recipient in recipients {
            open.entry(recipient.batch).or_default().pending += 1;
        }
    }

    /// Records a write-back of `outcomes` that wrote the rows in `written`; returns the batches
    /// now done with every outcome written.
    pub fn settle(&self, outcomes: &[RecipientOutcome], written: &HashSet<i64>) -> Vec<i64> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut touched = Vec::new();
        for outcome in outcomes {
            let Some(progress) = open.get_mut(&outcome.batch) else { continue };
            progress.pending = progress.pending.saturating_sub(1);
            progress.unwritten |= !written.contains(&outcome.id.get());
            touched.push(outcome.batch);
        }
        touched.sort_unstable();
        touched.dedup();
        let mut done = Vec::new();
        for batch in touched {
            if open.get(&batch).is_some_and(|progress| progress.pending == 0)
                && open.remove(&batch).is_some_and(|progress| !progress.unwritten)
            {
                done.push(batch);
            }
        }
        done
    }

    /// Batches with rows still waiting for their outcome.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// Writes `outcomes` back and deletes the claim batches that are then done; returns how many
/// rows were written.
pub(crate) async fn write_back(
    store: &Store,
    owner: Uuid,
    batches: &ClaimBatches,
    outcomes: &[RecipientOutcome],
) -> Result<u64, StoreError> {
    let written: HashSet<i64> = store.record_outcomes(owner, outcomes).await?.into_iter().map(|id| id.get()).collect();
    let done = batches.settle(outcomes, &written);
    if let Err(error) = store.delete_claim_batches(owner, &done).await {
        // Harmless but for the space: recovery deletes a batch with nothing in flight once
        // its shards change hands.
        warn!(error = %error, num_batches = done.len(), "deleting finished claim batches failed");
    }
    Ok(written.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendwerk_store::OutcomeKind;

    fn claimed(id: i64, batch: i64) -> ClaimedRecipient {
        crate::parking::tests::claimed_recipient(id, batch)
    }

    #[test]
    fn a_batch_is_done_when_every_outcome_is_written() {
        let batches = ClaimBatches::default();
        let rows = [claimed(1, 10), claimed(2, 10), claimed(3, 11)];
        batches.claimed(&rows);
        let outcomes: Vec<_> = rows.iter().map(|row| RecipientOutcome::new(row, OutcomeKind::Sent)).collect();
        assert_eq!(batches.settle(&outcomes[..1], &HashSet::from([1])), Vec::<i64>::new());
        assert_eq!(batches.settle(&outcomes[1..], &HashSet::from([2, 3])), vec![10, 11]);
        assert_eq!(batches.len(), 0);
    }

    #[test]
    fn a_batch_with_an_unwritten_row_is_left_for_recovery() {
        let batches = ClaimBatches::default();
        let rows = [claimed(1, 10), claimed(2, 10)];
        batches.claimed(&rows);
        let outcomes: Vec<_> = rows.iter().map(|row| RecipientOutcome::new(row, OutcomeKind::Sent)).collect();
        assert_eq!(batches.settle(&outcomes, &HashSet::from([2])), Vec::<i64>::new());
        assert_eq!(batches.len(), 0, "no longer tracked");
    }
}
