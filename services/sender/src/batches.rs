//! The claim batches this sender holds (`claim_batches`, one row per claim): how many of each
//! batch's rows still wait for their outcome, so that a batch is deleted once every outcome in
//! it is written. A batch with a row fenced off (the lease was lost) stays: the shard's next
//! holder recovers that row from it. So does one with a row abandoned (it could not be handed
//! back): once the batch is no longer tracked, this sender's own recovery retries that row.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sendwerk_core::RecipientId;
use sendwerk_store::{ClaimedRecipient, RecipientOutcome, Store, StoreError, WriteBack};
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
    /// A write-back was fenced off for one of its rows, or one was abandoned: the batch stays
    /// for recovery.
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

    /// Records a write-back of `outcomes` that fenced off the rows in `fenced` (the others are
    /// written, now or before); returns the batches now done with every outcome written.
    pub fn settle(&self, outcomes: &[RecipientOutcome], fenced: &HashSet<RecipientId>) -> Vec<i64> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut touched = Vec::new();
        for outcome in outcomes {
            let Some(progress) = open.get_mut(&outcome.batch) else { continue };
            progress.pending = progress.pending.saturating_sub(1);
            progress.unwritten |= fenced.contains(&outcome.id);
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

    /// Records that the outcomes of `recipients` will never be written (they could not be
    /// handed back). Their batches stop being tracked once their other rows are written, and
    /// the sender's own recovery then retries what is still in flight (see
    /// `recover_orphaned_rows.sql`); rows of the batch still being sent are not touched.
    pub fn abandon<'a>(&self, recipients: impl Iterator<Item = &'a ClaimedRecipient>) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for recipient in recipients {
            let Some(progress) = open.get_mut(&recipient.batch) else { continue };
            progress.pending = progress.pending.saturating_sub(1);
            progress.unwritten = true;
            if progress.pending == 0 {
                open.remove(&recipient.batch);
            }
        }
    }

    /// The batches tracked.
    pub fn open(&self) -> Vec<i64> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().copied().collect()
    }

    /// Batches with rows still waiting for their outcome.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// Writes `outcomes` back and deletes the claim batches that are then done.
pub(crate) async fn write_back(
    store: &Store,
    owner: Uuid,
    batches: &ClaimBatches,
    outcomes: &[RecipientOutcome],
) -> Result<WriteBack, StoreError> {
    let result = store.record_outcomes(owner, outcomes).await?;
    let done = batches.settle(outcomes, &result.fenced);
    if let Err(error) = store.delete_claim_batches(owner, &done).await {
        // Harmless but for the space: recovery deletes a batch with nothing in flight once
        // its shards change hands.
        warn!(error = %error, num_batches = done.len(), "deleting finished claim batches failed");
    }
    Ok(result)
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
        assert_eq!(batches.settle(&outcomes[..1], &HashSet::new()), Vec::<i64>::new());
        assert_eq!(batches.settle(&outcomes[1..], &HashSet::new()), vec![10, 11]);
        assert_eq!(batches.len(), 0);
    }

    #[test]
    fn a_batch_with_a_fenced_row_is_left_for_recovery() {
        let batches = ClaimBatches::default();
        let rows = [claimed(1, 10), claimed(2, 10)];
        batches.claimed(&rows);
        let outcomes: Vec<_> = rows.iter().map(|row| RecipientOutcome::new(row, OutcomeKind::Sent)).collect();
        assert_eq!(batches.settle(&outcomes, &HashSet::from([RecipientId::new(1)])), Vec::<i64>::new());
        assert_eq!(batches.len(), 0, "no longer tracked");
    }

    #[test]
    fn a_batch_with_an_abandoned_row_is_tracked_until_its_other_rows_are_written() {
        let batches = ClaimBatches::default();
        let rows = [claimed(1, 10), claimed(2, 10)];
        batches.claimed(&rows);
        batches.abandon(rows[..1].iter());
        assert_eq!(batches.open(), vec![10], "row 2 is still being sent");
        let sent = RecipientOutcome::new(&rows[1], OutcomeKind::Sent);
        assert_eq!(batches.settle(&[sent], &HashSet::new()), Vec::<i64>::new(), "kept for recovery");
        assert!(batches.open().is_empty());
    }
}
