//! Rows held back in the sender while their destination domain backs off for a short while,
//! or waits for its next rate slot. Handing such a row back to the queue and claiming it
//! again when the wait is over costs two statements per row; when a domain answers `421`
//! often, each answer sent every row of that domain in the pipeline round that loop again.
//! A parked row keeps its claim and goes back into the pipeline when its time comes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::claimer::Job;

/// The longest wait a row is parked for; a row that must wait longer is handed back. Its
/// claim shows it `sending` meanwhile, and a graceful stop hands it back.
pub(crate) const MAX_PARK: Duration = Duration::from_secs(30);

pub(crate) struct ParkingLot {
    lot: Mutex<Lot>,
    capacity: usize,
    per_domain: usize,
}

/// Parked jobs in the order they are due (ties in the order they came), and how many of each
/// domain.
#[derive(Default)]
struct Lot {
    jobs: BTreeMap<(Instant, u64), Job>,
    next_seq: u64,
    per_domain: HashMap<String, usize>,
}

impl Lot {
    fn add(&mut self, at: Instant, job: Job) {
        *self.per_domain.entry(job.recipient.domain.clone()).or_insert(0) += 1;
        self.jobs.insert((at, self.next_seq), job);
        self.next_seq += 1;
    }

    fn forget(&mut self, job: &Job) {
        if let Some(count) = self.per_domain.get_mut(&job.recipient.domain) {
            *count -= 1;
            if *count == 0 {
                self.per_domain.remove(&job.recipient.domain);
            }
        }
    }
}

impl ParkingLot {
    /// Holds at most `capacity` rows, and at most `per_domain` of one domain: memory stays
    /// bounded whatever the destinations answer.
    pub fn new(capacity: usize, per_domain: usize) -> Self {
        Self { lot: Mutex::new(Lot::default()), capacity, per_domain }
    }

    fn lot(&self) -> std::sync::MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Parks `job` until `at`, or gives it back when the wait is too long or the lot (or the
    /// domain's share of it) is full.
    #[must_use = "a job given back must be handed back to the queue"]
    pub fn park(&self, job: Job, at: Instant) -> Option<Job> {
        if at.saturating_duration_since(Instant::now()) > MAX_PARK {
            return Some(job);
        }
        let mut lot = self.lot();
        let of_domain = lot.per_domain.get(&job.recipient.domain).copied().unwrap_or(0);
        if lot.jobs.len() >= self.capacity || of_domain >= self.per_domain {
            return Some(job);
        }
        lot.add(at, job);
        None
    }

    /// Up to `max` of the rows whose time has come, those due first first.
    pub fn take_due(&self, now: Instant, max: usize) -> Vec<Job> {
        let mut lot = self.lot();
        let mut due = Vec::new();
        while due.len() < max {
            let Some(entry) = lot.jobs.first_entry().filter(|entry| entry.key().0 <= now) else { break };
            let job = entry.remove();
            lot.forget(&job);
            due.push(job);
        }
        due
    }

    /// How many rows are parked.
    pub fn len(&self) -> usize {
        self.lot().jobs.len()
    }

    /// Whether a parked row's wait is over.
    pub fn has_due(&self, now: Instant) -> bool {
        self.lot().jobs.first_key_value().is_some_and(|((at, _), _)| *at <= now)
    }

    /// Every parked row with the time it waits for, emptying the lot (on stopping).
    pub fn take_all(&self) -> Vec<(Instant, Job)> {
        let lot = std::mem::take(&mut *self.lot());
        lot.jobs.into_iter().map(|((at, _), job)| (at, job)).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use sendwerk_core::{MailingId, RecipientId};
    use sendwerk_store::ClaimedRecipient;

    use super::*;

    fn job(id: i64) -> Job {
        job_to(id, "slow.example")
    }

    fn job_to(id: i64, domain: &str) -> Job {
        Job { recipient: claimed_recipient_to(id, 1, domain), mailing: None }
    }

    /// A claimed recipient of mailing 1, shard 0, token 1, in claim batch `batch`.
    pub(crate) fn claimed_recipient(id: i64, batch: i64) -> ClaimedRecipient {
        claimed_recipient_to(id, batch, "slow.example")
    }

    fn claimed_recipient_to(id: i64, batch: i64, domain: &str) -> ClaimedRecipient {
        ClaimedRecipient {
            id: RecipientId::new(id),
            mailing_id: MailingId::new(1),
            email: format!("r{id}@{domain}"),
            external_id: String::new(),
            variables: Default::default(),
            attempts: 1,
            since_first_attempt: Duration::ZERO,
            suppressed: false,
            shard: 0,
            lease_token: 1,
            domain: domain.into(),
            batch,
            version: 0,
            due_at: chrono::Utc::now(),
            claimed_at: chrono::Utc::now(),
        }
    }

    fn ids(jobs: &[Job]) -> Vec<i64> {
        jobs.iter().map(|job| job.recipient.id.get()).collect()
    }

    #[test]
    fn parked_rows_come_back_when_due_first_due_first_and_no_more_than_asked() {
        let lot = ParkingLot::new(10, 10);
        let now = Instant::now();
        for (id, wait_ms) in [(1, 300), (2, 100), (3, 5_000), (4, 200)] {
            assert!(lot.park(job(id), now + Duration::from_millis(wait_ms)).is_none());
        }
        assert!(lot.take_due(now, 10).is_empty(), "nothing is due yet");
        assert!(!lot.has_due(now));
        assert_eq!(lot.len(), 4);
        let later = now + Duration::from_millis(350);
        assert!(lot.has_due(later));
        assert_eq!(ids(&lot.take_due(later, 2)), [2, 4], "due first first, at most two");
        assert_eq!(ids(&lot.take_due(later, 0)), Vec::<i64>::new());
        assert_eq!(ids(&lot.take_due(later, 10)), [1]);
        let waiting = lot.take_all();
        assert_eq!(waiting.len(), 1, "the row due in five seconds waits");
        assert_eq!(waiting[0].0, now + Duration::from_millis(5_000), "with the time it waits for");
        assert!(lot.take_all().is_empty());
    }

    #[test]
    fn a_long_wait_or_a_full_lot_gives_the_row_back() {
        let lot = ParkingLot::new(2, 2);
        let now = Instant::now();
        let refused = lot.park(job(1), now + MAX_PARK + Duration::from_secs(1));
        assert_eq!(refused.map(|job| job.recipient.id.get()), Some(1), "too long a wait is handed back");
        assert!(lot.park(job(2), now).is_none());
        assert!(lot.park(job(3), now).is_none());
        assert_eq!(lot.len(), 2);
        let refused = lot.park(job(4), now);
        assert_eq!(refused.map(|job| job.recipient.id.get()), Some(4), "a full lot refuses");
        assert_eq!(lot.take_all().len(), 2);
    }

    #[test]
    fn one_domain_parks_no_more_than_its_share_and_its_rows_leaving_make_room() {
        let lot = ParkingLot::new(4, 2);
        let now = Instant::now();
        assert!(lot.park(job_to(1, "big.example"), now).is_none());
        assert!(lot.park(job_to(2, "big.example"), now + Duration::from_secs(1)).is_none());
        let refused = lot.park(job_to(3, "big.example"), now);
        assert_eq!(refused.map(|job| job.recipient.id.get()), Some(3), "the domain's share is full");
        assert!(lot.park(job_to(4, "other.example"), now).is_none(), "another domain still parks");
        assert_eq!(ids(&lot.take_due(now, 10)), [1, 4]);
        assert!(lot.park(job_to(5, "big.example"), now).is_none(), "a row that left made room");
        assert_eq!(lot.len(), 2);
        assert!(lot.park(job_to(6, "big.example"), now).is_some(), "and the share is full again");
    }
}
