//! System tests: each starts a whole cluster in-process (fresh database, real gRPC over TCP,
//! real SMTP to a sink) and checks one behaviour end to end.

mod bad_input;
mod bounces;
mod delivery;
mod direct_mx;
mod dkim;
mod lifecycle;
mod other_language_client;
mod queue;
mod sharding;
mod suppressions;

/// The loopback DNS server the mail crate's tests use, for direct-to-MX delivery.
#[path = "../../services/mail/tests/support/dns_server.rs"]
mod dns_server;
