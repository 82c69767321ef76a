//! sendwerk-sender: the sender role. It holds leases on a fair share of the 256 shards, claims
//! due recipients of those shards from the Postgres queue, renders and signs each message,
//! delivers it over a small set of reused SMTP connections within per-domain, per-process and
//! per-mailing limits, and writes the outcomes back in batches.
//!
//! Work flows through named tasks joined by bounded channels, so memory stays flat however large
//! a campaign is: a lease keeper, one claimer, `num_connections` connection workers and one
//! writer. It never holds a database transaction across SMTP, and every write is fenced by the
//! shard lease's token: a sender that lost its lease writes nothing.

mod batches;
mod claimer;
mod config;
mod direct;
mod leases;
mod limits;
mod parking;
pub mod prepared;
mod runner;
mod worker;
mod writer;

pub use config::SenderConfig;
pub use direct::is_public_address;
pub use leases::Ownership;
pub use limits::{Admission, DomainLimits};
pub use prepared::{BuildError, BuiltMessage, PrepareError, PreparedMailing, merge_builtin_variables};
pub use runner::{Sender, SenderSetupError, SenderStats};
