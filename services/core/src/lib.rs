//! sendwerk-core: the domain types and pure rules shared by every role — email addresses and
//! domains, ids, recipient and mailing states with their transitions, SMTP replies and delivery
//! outcomes, shards, the retry schedule and VERP return paths.
//!
//! It owns no I/O and nothing async: every function here is a pure computation that the store,
//! the sender and the control plane call at their boundaries. Values are parsed once into
//! newtypes with private fields, so nothing downstream validates again.

mod address;
mod ids;
pub mod lenient;
mod outcome;
mod retry;
mod state;
mod verp;

pub use address::{AddressError, Domain, EmailAddress};
pub use ids::{MailingId, NUM_SHARDS, RecipientId, ShardId, TenantId};
pub use outcome::{DeliveryOutcome, EnhancedStatus, SmtpReply, classify_smtp_reply, is_slow_down};
pub use retry::{RetryPolicy, retry_hint};
pub use state::{MailingState, RecipientState, StateParseError};
pub use verp::{MIN_SECRET_BYTES, Verp, VerpError, VerpRef, constant_time_eq};
