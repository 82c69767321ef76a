//! sendwerk-bounce: the bounce processor. Reports arrive at the inbound SMTP listener (addressed
//! to VERP return paths), from files (`sendwerk bounce ingest`) or over gRPC; each is stored raw
//! first, then parsed with sendwerk-dsn, matched to its recipient by the signed VERP address or
//! `X-Sendwerk-Ref` token, and applied — recipient `sent → bounced | complained`, an event, a
//! suppression for hard bounces and complaints — in one transaction. What cannot be parsed or
//! matched is kept in quarantine, never dropped.
//!
//! The listener never relays: it accepts RCPT only for valid, signed VERP addresses of its
//! bounce domain, and hands messages to nothing but this processor.

mod ingest;
mod listener;
mod processor;

pub use ingest::{IngestSummary, ingest_path};
pub use listener::BounceListener;
pub use processor::{BounceProcessor, Processed};
