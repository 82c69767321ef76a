//! The load sink: accepts everything as fast as it can and counts deliveries per recipient, so
//! the run can report duplicates and losses. Optional added latency per message simulates a
//! slow receiving MTA.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sendwerk_smtpd::{Envelope, Reply, SessionInfo, SmtpHandler};

#[derive(Default)]
pub struct LoadSink {
    pub latency: Duration,
    accepted: AtomicU64,
    per_recipient: Mutex<HashMap<String, u32>>,
}

/// What the sink saw.
pub struct SinkTotals {
    pub accepted: u64,
    pub unique_recipients: u64,
    pub duplicates: u64,
}

impl LoadSink {
    pub fn with_latency(latency: Duration) -> Self {
        Self { latency, ..Self::default() }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn totals(&self) -> SinkTotals {
        let per_recipient = self.per_recipient.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let duplicates = per_recipient.values().map(|&n| u64::from(n.saturating_sub(1))).sum();
        SinkTotals { accepted: self.accepted(), unique_recipients: per_recipient.len() as u64, duplicates }
    }
}

impl SmtpHandler for LoadSink {
    async fn rcpt_to(&self, _session: &SessionInfo, _reverse_path: &str, _forward_path: &str) -> Reply {
        Reply::ok()
    }

    async fn data(&self, _session: &SessionInfo, envelope: &Envelope, _message: Bytes) -> Reply {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        {
            let mut per_recipient = self.per_recipient.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for recipient in envelope.forward_paths() {
                *per_recipient.entry(recipient.clone()).or_insert(0) += 1;
            }
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Reply::ok()
    }
}
