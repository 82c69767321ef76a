//! Server settings: limits and timeouts of one listener.

use std::time::Duration;

/// Limits and timeouts of an [`SmtpServer`](crate::SmtpServer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Name announced in the greeting and in the EHLO/HELO reply.
    pub hostname: String,
    /// Largest message accepted, counted after dot-unstuffing. Advertised as `SIZE`.
    pub max_message_bytes: usize,
    /// Largest number of accepted recipients of one transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Largest number of concurrent sessions; more are greeted with `421 4.3.2` and closed.
    pub max_connections: usize,
    /// Longest wait for one command line, or for one chunk of message data.
    pub idle_timeout: Duration,
    /// Longest lifetime of one session, whatever it does.
    pub session_timeout: Duration,
    /// How long shutdown waits for sessions in the middle of a transaction before cutting them.
    pub shutdown_grace_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            // 10 MiB of message plus headroom for base64 and headers added on the way.
            max_message_bytes: 12 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            session_timeout: Duration::from_secs(600),
            // Shorter than Kubernetes' default termination grace period of 30 s.
            shutdown_grace_timeout: Duration::from_secs(20),
        }
    }
}
