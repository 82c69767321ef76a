//! System tests: each starts a whole cluster in-process (fresh database, real gRPC over TCP,
//! real SMTP to a sink) and checks one behaviour end to end.

mod bad_input;
mod delivery;
mod dkim;
mod lifecycle;
mod other_language_client;
mod queue;
