//! sendwerk-sender: the sender role. It claims due recipients from the Postgres queue under a
//! lease, renders and signs each message, delivers it over a small set of reused SMTP
//! connections and writes the outcomes back in batches.
//!
//! Work flows through three kinds of named tasks joined by bounded channels, so memory stays
//! flat however large a campaign is: one claimer, `num_connections` connection workers (one SMTP
//! connection each) and one writer. It never holds a database transaction across SMTP, and it
//! writes nothing for rows whose lease it no longer holds.

mod config;
pub mod prepared;
mod runner;

pub use config::SenderConfig;
pub use prepared::{BuildError, BuiltMessage, PrepareError, PreparedMailing, merge_builtin_variables};
pub use runner::{Sender, SenderStats};
