//! A test and load sink whose reply is chosen by the recipient's local part.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::{Envelope, Reply, SessionInfo, SmtpHandler};

const RECIPIENT_OK: Reply = Reply::fixed(250, "2.1.5", "ok");
const PERMANENT_FAILURE: Reply = Reply::fixed(550, "5.1.1", "mailbox unavailable");
const TEMPORARY_FAILURE: Reply = Reply::fixed(451, "4.3.0", "temporary failure, try again later");
const SLOW_DOWN: Reply = Reply::fixed(451, "4.7.1", "rate limit exceeded, slow down");
const CONTENT_REJECTED: Reply = Reply::fixed(554, "5.6.0", "message content rejected");
const MESSAGE_ACCEPTED: Reply = Reply::fixed(250, "2.0.0", "ok: queued");

/// What the sink does for a recipient, chosen by the prefix of its local part (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// `permfail…@`: 550 5.1.1 at RCPT.
    PermanentFailure,
    /// `tempfail…@`: 451 4.3.0 at RCPT for the first attempts of that exact address.
    TemporaryFailure,
    /// `throttled…@`: 451 4.7.1 "rate limit exceeded, slow down" at RCPT for the first attempts
    /// of that exact address (a destination asking the sender to slow down).
    Throttled,
    /// `slow…@`: accepted, but only after the slow delay at DATA.
    Slow,
    /// `datafail…@`: 554 5.6.0 after DATA.
    DataFailure,
    /// `drop…@`: the connection is closed after DATA without any reply.
    DropConnection,
    /// Anything else: 250.
    Accept,
}

impl Behaviour {
    fn for_address(address: &str) -> Self {
        let local_part = address.rsplit_once('@').map_or(address, |(local_part, _)| local_part);
        let starts_with =
            |prefix: &str| local_part.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix));
        if starts_with("permfail") {
            Self::PermanentFailure
        } else if starts_with("tempfail") {
            Self::TemporaryFailure
        } else if starts_with("throttled") {
            Self::Throttled
        } else if starts_with("slow") {
            Self::Slow
        } else if starts_with("datafail") {
            Self::DataFailure
        } else if starts_with("drop") {
            Self::DropConnection
        } else {
            Self::Accept
        }
    }
}

/// A message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub reverse_path: String,
    pub recipients: Vec<String>,
    /// The message bytes exactly as received, after dot-unstuffing.
    pub data: Bytes,
}

#[derive(Debug, Default)]
struct SinkState {
    messages: Vec<ReceivedMessage>,
    rcpt_attempts: HashMap<String, u32>,
}

/// The integration- and load-test sink: replies by local-part prefix (`permfail`, `tempfail`,
/// `slow`, `datafail`, `drop`; anything else is accepted), counts accepted messages and
/// optionally keeps them in memory.
#[derive(Debug)]
pub struct BehaviourSink {
    stores_messages: bool,
    num_temporary_failures: u32,
    slow_delay: Duration,
    data_latency: Duration,
    state: Mutex<SinkState>,
    num_accepted: AtomicU64,
    accepted_notify: Notify,
}

impl Default for BehaviourSink {
    fn default() -> Self {
        Self::new()
    }
}

impl BehaviourSink {
    /// A sink that stores messages, fails `tempfail…` addresses once and delays `slow…` ones
    /// by 200 ms.
    pub fn new() -> Self {
        Self {
            stores_messages: true,
            num_temporary_failures: 1,
            slow_delay: Duration::from_millis(200),
            data_latency: Duration::ZERO,
            state: Mutex::new(SinkState::default()),
            num_accepted: AtomicU64::new(0),
            accepted_notify: Notify::new(),
        }
    }

    /// Whether accepted messages are kept for [`Self::messages`]. Load tests turn this off and
    /// only count; then RCPT attempts are only recorded for `tempfail…` addresses, so memory
    /// stays flat however many distinct recipients there are.
    #[must_use]
    pub fn storing_messages(mut self, stores_messages: bool) -> Self {
        self.stores_messages = stores_messages;
        self
    }

    /// How many RCPT attempts of one `tempfail…` address fail before it is accepted.
    #[must_use]
    pub fn with_temporary_failures(mut self, num_temporary_failures: u32) -> Self {
        self.num_temporary_failures = num_temporary_failures;
        self
    }

    /// How long DATA takes for a transaction with a `slow…` recipient.
    #[must_use]
    pub fn with_slow_delay(mut self, slow_delay: Duration) -> Self {
        self.slow_delay = slow_delay;
        self
    }

    /// A fixed latency added to every DATA, to model a real receiver in load tests.
    #[must_use]
    pub fn with_data_latency(mut self, data_latency: Duration) -> Self {
        self.data_latency = data_latency;
        self
    }

    /// The accepted messages so far, in order of acceptance (empty when storing is off).
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.lock_state().messages.clone()
    }

    /// Number of messages accepted so far.
    pub fn num_accepted(&self) -> u64 {
        self.num_accepted.load(Ordering::Acquire)
    }

    /// Number of RCPT attempts seen for exactly this address.
    pub fn attempts_for(&self, address: &str) -> u32 {
        self.lock_state().rcpt_attempts.get(address).copied().unwrap_or(0)
    }

    /// Waits until at least `num_messages` were accepted; false if `timeout` passed first.
    pub async fn wait_for_messages(&self, num_messages: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let accepted = self.accepted_notify.notified();
            tokio::pin!(accepted);
            // Registers the waiter before the check, so an acceptance in between is not missed.
            accepted.as_mut().enable();
            if self.num_accepted() >= num_messages {
                return true;
            }
            if tokio::time::timeout_at(deadline, accepted).await.is_err() {
                return self.num_accepted() >= num_messages;
            }
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, SinkState> {
        // The state stays consistent across a panic in a test thread: every update is one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one RCPT attempt and returns how many there were for this address, this one
    /// included.
    fn record_rcpt_attempt(&self, address: &str, behaviour: Behaviour) -> u32 {
        if !self.stores_messages && !matches!(behaviour, Behaviour::TemporaryFailure | Behaviour::Throttled) {
            return 1;
        }
        let mut state = self.lock_state();
        if let Some(attempts) = state.rcpt_attempts.get_mut(address) {
            *attempts = attempts.saturating_add(1);
            return *attempts;
        }
        state.rcpt_attempts.insert(address.to_owned(), 1);
        1
    }
}

impl SmtpHandler for BehaviourSink {
    async fn rcpt_to(&self, _session: &SessionInfo, _reverse_path: &str, forward_path: &str) -> Reply {
        let behaviour = Behaviour::for_address(forward_path);
        let attempts = self.record_rcpt_attempt(forward_path, behaviour);
        match behaviour {
            Behaviour::PermanentFailure => PERMANENT_FAILURE,
            Behaviour::TemporaryFailure if attempts <= self.num_temporary_failures => TEMPORARY_FAILURE,
            Behaviour::Throttled if attempts <= self.num_temporary_failures => SLOW_DOWN,
            Behaviour::TemporaryFailure
            | Behaviour::Throttled
            | Behaviour::Slow
            | Behaviour::DataFailure
            | Behaviour::DropConnection
            | Behaviour::Accept => RECIPIENT_OK,
        }
    }

    async fn data(&self, _session: &SessionInfo, envelope: &Envelope, message: Bytes) -> Reply {
        if !self.data_latency.is_zero() {
            tokio::time::sleep(self.data_latency).await;
        }
        let recipients = envelope.forward_paths();
        let has = |wanted: Behaviour| recipients.iter().any(|recipient| Behaviour::for_address(recipient) == wanted);
        if has(Behaviour::Slow) {
            tokio::time::sleep(self.slow_delay).await;
        }
        if has(Behaviour::DropConnection) {
            return Reply::drop_connection();
        }
        if has(Behaviour::DataFailure) {
            return CONTENT_REJECTED;
        }
        if self.stores_messages {
            let received = ReceivedMessage {
                reverse_path: envelope.reverse_path().to_owned(),
                recipients: recipients.to_vec(),
                data: message,
            };
            self.lock_state().messages.push(received);
        }
        // Stored before counted: whoever sees the count also finds the message.
        self.num_accepted.fetch_add(1, Ordering::Release);
        self.accepted_notify.notify_waiters();
        MESSAGE_ACCEPTED
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_is_chosen_by_local_part_prefix() {
        assert_eq!(Behaviour::for_address("permfail-1@x.test"), Behaviour::PermanentFailure);
        assert_eq!(Behaviour::for_address("TempFail@x.test"), Behaviour::TemporaryFailure);
        assert_eq!(Behaviour::for_address("slow7@x.test"), Behaviour::Slow);
        assert_eq!(Behaviour::for_address("datafail@x.test"), Behaviour::DataFailure);
        assert_eq!(Behaviour::for_address("drop@x.test"), Behaviour::DropConnection);
        assert_eq!(Behaviour::for_address("user@permfail.test"), Behaviour::Accept);
        assert_eq!(Behaviour::for_address("ü@x.test"), Behaviour::Accept);
    }

    #[tokio::test]
    async fn tempfail_address_is_accepted_after_the_configured_failures() {
        let sink = BehaviourSink::new().with_temporary_failures(2);
        let session = SessionInfo::new(1, "127.0.0.1:25".parse().unwrap());
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(sink.rcpt_to(&session, "", "tempfail@x.test").await.code());
        }
        assert_eq!(codes, [451, 451, 250]);
        assert_eq!(sink.attempts_for("tempfail@x.test"), 3);
        assert_eq!(sink.attempts_for("other@x.test"), 0);
    }

    #[tokio::test]
    async fn waiting_for_messages_returns_false_on_timeout() {
        let sink = BehaviourSink::new();
        assert!(!sink.wait_for_messages(1, Duration::from_millis(20)).await);
        assert!(sink.wait_for_messages(0, Duration::ZERO).await);
    }
}
