//! sendwerk-bounce: the bounce processor. Reports arrive at the inbound SMTP listener (addressed
//! to VERP return paths), from files (`sendwerk bounce ingest`) or over gRPC. Each is parsed with
//! sendwerk-dsn (bounded in time) and matched to its recipient by the signed VERP address or
//! `X-Sendwerk-Ref` token; then it is stored raw and applied (recipient `sent → bounced |
//! complained`, an event, a suppression for hard bounces and complaints) in one transaction,
//! batched with the other reports waiting. A report is acknowledged only after that commit. What
//! cannot be parsed or matched is kept in quarantine, never dropped.
//!
//! The listener never relays: it accepts RCPT only for valid, signed VERP addresses of its
//! bounce domain, and hands messages to nothing but this processor.

mod ingest;
mod listener;
mod processor;

pub use ingest::{IngestSummary, ingest_path};
pub use listener::BounceListener;
pub use processor::{BounceProcessor, Processed};
