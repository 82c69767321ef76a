//! The system-test harness: a whole sendwerk cluster in-process on free ports — a fresh
//! database per test (cloned from a migrated template on one shared PostgreSQL server), the
//! real gRPC control plane over TCP, a real sender, and an SMTP sink whose reply depends on the
//! recipient's local part (`tempfail@`, `permfail@`, `slow@`, …).
//!
//! The PostgreSQL server is `DATABASE_URL` when set (it needs the CREATEDB right), otherwise an
//! embedded cluster started once per test process from the machine's binaries.

pub mod cluster;
pub mod database;
pub mod python;

pub use cluster::{TestCluster, TestClusterOptions};
pub use database::fresh_database;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what` in the message.
/// Use instead of sleeps: it returns as soon as the condition holds.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(error) => anyhow::bail!("timed out after {timeout:?} waiting for {what}; last error: {error:#}"),
                None => anyhow::bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Installs a test log subscriber once (`RUST_LOG` controls it; quiet by default).
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let _ = rustls::crypto::ring::default_provider().install_default();
}
