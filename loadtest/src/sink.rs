//! The load sink: accepts as fast as it can and counts deliveries per recipient, so that a run
//! can report duplicates and losses. Optionally adds latency per message (a slow receiving MTA),
//! and optionally injects faults, chosen per recipient address by hash, on its first attempt:
//! 2% `421` "slow down" (closing), 3% `451`, 2% `550` (always), 0.5% a hang after the final dot
//! (longer than the sender's timeout), 1% a dropped connection after the final dot. The last two
//! are counted as delivered: a duplicate is possible and must be recorded as outcome-unknown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use sendwerk_smtpd::{Envelope, Reply, SessionInfo, SmtpHandler};

/// A fault the sink plays for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    TemporaryFailure,
    PermanentFailure,
    HangAfterData,
    DropAfterData,
    None,
}

impl Fault {
    pub fn for_address(address: &str) -> Self {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in address.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        match hash % 1000 {
            0..20 => Self::SlowDown,
            20..50 => Self::TemporaryFailure,
            50..70 => Self::PermanentFailure,
            70..75 => Self::HangAfterData,
            75..85 => Self::DropAfterData,
            _ => Self::None,
        }
    }
}

#[derive(Default)]
pub struct LoadSink {
    latency: Duration,
    faults: bool,
    hang: Duration,
    accepted: AtomicU64,
    per_recipient: Mutex<HashMap<String, u32>>,
    rcpt_attempts: Mutex<HashMap<String, u32>>,
}

/// What the sink saw.
pub struct SinkTotals {
    pub accepted: u64,
    pub unique_recipients: u64,
    pub duplicates: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LoadSink {
    pub fn new(latency: Duration, faults: bool, hang: Duration) -> Self {
        Self { latency, faults, hang, ..Self::default() }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn totals(&self) -> SinkTotals {
        let per_recipient = lock(&self.per_recipient);
        let duplicates = per_recipient.values().map(|&n| u64::from(n.saturating_sub(1))).sum();
        SinkTotals { accepted: self.accepted(), unique_recipients: per_recipient.len() as u64, duplicates }
    }

    /// How many times each address was delivered.
    pub fn deliveries(&self) -> HashMap<String, u32> {
        lock(&self.per_recipient).clone()
    }

    fn first_attempt(&self, address: &str) -> bool {
        let mut attempts = lock(&self.rcpt_attempts);
        let count = attempts.entry(address.to_owned()).or_insert(0);
        *count += 1;
        *count == 1
    }

    fn record(&self, envelope: &Envelope) {
        let mut per_recipient = lock(&self.per_recipient);
        for recipient in envelope.forward_paths() {
            *per_recipient.entry(recipient.clone()).or_insert(0) += 1;
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }
}

impl SmtpHandler for LoadSink {
    async fn rcpt_to(&self, _session: &SessionInfo, _reverse_path: &str, forward_path: &str) -> Reply {
        if !self.faults {
            return Reply::ok();
        }
        match Fault::for_address(forward_path) {
            Fault::SlowDown if self.first_attempt(forward_path) => {
                Reply::new(421, "4.7.0", "too many connections, slow down").and_close()
            }
            Fault::TemporaryFailure if self.first_attempt(forward_path) => {
                Reply::new(451, "4.3.0", "temporary local problem")
            }
            Fault::PermanentFailure => Reply::new(550, "5.1.1", "no such user"),
            _ => Reply::ok(),
        }
    }

    async fn data(&self, _session: &SessionInfo, envelope: &Envelope, _message: Bytes) -> Reply {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.faults {
            let recipient = envelope.forward_paths().first().cloned().unwrap_or_default();
            match Fault::for_address(&recipient) {
                Fault::HangAfterData if self.first_attempt(&format!("data:{recipient}")) => {
                    // Taken, but the reply comes after the sender has given up waiting.
                    self.record(envelope);
                    tokio::time::sleep(self.hang).await;
                    return Reply::ok();
                }
                Fault::DropAfterData if self.first_attempt(&format!("data:{recipient}")) => {
                    // Taken, but the connection breaks before the reply.
                    self.record(envelope);
                    return Reply::drop_connection();
                }
                _ => {}
            }
        }
        self.record(envelope);
        Reply::ok()
    }
}
