//! sendwerk-store: everything sendwerk keeps in Postgres — the connection pool, forward-only
//! migrations, mailings, the recipient queue (bulk `COPY` ingest, lease-fenced claims, `UNNEST`
//! write-back), delivery events and suppressions — plus the embedded
//! PostgreSQL launcher used by `sendwerk dev`, `sendwerk demo` and the tests.
//!
//! Every statement is hand-written in its own file under `sql/`, loaded with `include_str!` and
//! prepared once per connection. No SQL is ever built from strings. No transaction is held
//! across network I/O other than Postgres itself. This crate knows nothing of gRPC or SMTP.

mod domains;
pub mod embedded;
mod error;
mod leases;
mod mailings;
mod migrate;
mod pool;
mod queue;
mod recipients;
mod reports;
mod suppressions;

pub use domains::DomainSetting;
pub use error::StoreError;
pub use leases::{HeldShard, WorkerInfo};
pub use mailings::{AttachmentData, MailingAction, MailingContent, MailingRecord, StateCounts};
pub use pool::{Store, StoreConfig};
pub use queue::{ClaimCursor, ClaimRequest, ClaimedRecipient, OutcomeKind, RecipientOutcome, WriteBack};
pub use recipients::{
    ExportRow, IngestSummary, NewRecipient, RecipientLookup, RecipientRecord, RecipientVariables, RejectedRecipient,
    Rejection,
};
pub use reports::{
    BounceApplication, IncomingReport, RecordedReport, ReportRecord, ReportSource, ReportStatus, SoftBouncePolicy,
};
pub use suppressions::{SuppressionReason, SuppressionRecord, SuppressionsAdded};
