//! sendwerk-control: the gRPC control plane — `MailingService` and `SuppressionService`, plus
//! gRPC health checking and server reflection (v1 and v1alpha).
//!
//! Handlers are thin adapters: decode and validate the request into domain types (every
//! malformed field is answered with `INVALID_ARGUMENT` naming it), call the store, encode the
//! answer. Errors go through one `ControlError → tonic::Status` mapping; internal detail is
//! logged, never sent to clients. It never talks SMTP except for `SendTest`.

mod admin_service;
mod bounce_service;
mod convert;
mod error;
mod mailing_service;
mod server;
mod suppression_service;
mod validate;

pub use error::ControlError;
pub use server::{ControlConfig, ControlState, serve};
