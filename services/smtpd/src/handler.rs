//! The handler trait: where the server hands envelopes and messages over, and what it hands.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::Reply;

/// Decides about every MAIL, RCPT and message of a session. The server never does anything
/// with a message but pass it to [`SmtpHandler::data`].
///
/// Implementations may use `async fn`; the futures must be `Send`.
pub trait SmtpHandler: Send + Sync + 'static {
    /// Called for `MAIL FROM:<reverse_path>`; an empty `reverse_path` is the null sender `<>`.
    /// A 2xx reply starts the transaction. Default: accept every sender.
    fn mail_from(&self, session: &SessionInfo, reverse_path: &str) -> impl Future<Output = Reply> + Send {
        let _ = (session, reverse_path);
        async { Reply::fixed(250, "2.1.0", "ok") }
    }

    /// Called for `RCPT TO:<forward_path>`; a 2xx reply adds the recipient to the envelope.
    /// This is where a listener refuses to relay: approve only addresses it is responsible for.
    fn rcpt_to(
        &self,
        session: &SessionInfo,
        reverse_path: &str,
        forward_path: &str,
    ) -> impl Future<Output = Reply> + Send;

    /// Called with the complete message, byte for byte as sent after dot-unstuffing, once the
    /// client has finished DATA. Only called when at least one recipient was accepted.
    fn data(&self, session: &SessionInfo, envelope: &Envelope, message: Bytes) -> impl Future<Output = Reply> + Send;
}

/// Who is talking to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    session_id: u64,
    peer_addr: SocketAddr,
    helo_name_opt: Option<String>,
}

impl SessionInfo {
    pub fn new(session_id: u64, peer_addr: SocketAddr) -> Self {
        Self { session_id, peer_addr, helo_name_opt: None }
    }

    /// Unique among the sessions of one server, counted from 1.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The name given with the last EHLO or HELO, if any.
    pub fn helo_name(&self) -> Option<&str> {
        self.helo_name_opt.as_deref()
    }

    pub(crate) fn set_helo_name(&mut self, helo_name: &str) {
        let name = self.helo_name_opt.get_or_insert_with(String::new);
        name.clear();
        name.push_str(helo_name);
    }
}

/// The sender and the accepted recipients of the current transaction.
///
/// The server reuses one envelope per session, so recipients cost no allocation after the
/// first transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    reverse_path: String,
    forward_paths: Vec<String>,
    num_forward_paths: usize,
}

impl Envelope {
    pub fn new(reverse_path: &str, forward_paths: &[&str]) -> Self {
        let mut envelope = Self::default();
        envelope.set_reverse_path(reverse_path);
        for forward_path in forward_paths {
            envelope.add_forward_path(forward_path);
        }
        envelope
    }

    /// The sender; empty for the null sender `<>` used by bounces.
    pub fn reverse_path(&self) -> &str {
        &self.reverse_path
    }

    /// The accepted recipients, in the order they were given.
    pub fn forward_paths(&self) -> &[String] {
        &self.forward_paths[..self.num_forward_paths]
    }

    pub(crate) fn num_forward_paths(&self) -> usize {
        self.num_forward_paths
    }

    pub(crate) fn set_reverse_path(&mut self, reverse_path: &str) {
        self.reverse_path.clear();
        self.reverse_path.push_str(reverse_path);
    }

    pub(crate) fn add_forward_path(&mut self, forward_path: &str) {
        match self.forward_paths.get_mut(self.num_forward_paths) {
            Some(reused) => {
                reused.clear();
                reused.push_str(forward_path);
            }
            None => self.forward_paths.push(forward_path.to_owned()),
        }
        self.num_forward_paths += 1;
    }

    pub(crate) fn clear(&mut self) {
        self.reverse_path.clear();
        self.num_forward_paths = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelope_reuses_recipient_slots_after_clear() {
        let mut envelope = Envelope::new("a@example.test", &["b@example.test", "c@example.test"]);
        assert_eq!(envelope.forward_paths(), ["b@example.test", "c@example.test"]);
        envelope.clear();
        assert!(envelope.forward_paths().is_empty());
        assert_eq!(envelope.reverse_path(), "");
        envelope.add_forward_path("d@example.test");
        assert_eq!(envelope.forward_paths(), ["d@example.test"]);
    }
}
