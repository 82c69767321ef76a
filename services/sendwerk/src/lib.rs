//! sendwerk: the one binary — every role (`control`, `sender`, `migrate`, `dev`, `demo`; `bounce`
//! arrives with the bounce processor), the operators' command-line client, configuration and
//! telemetry. The same building blocks start the whole cluster in-process for `dev`, `demo` and
//! the integration tests.
//!
//! This crate wires the libraries together; it holds no business rules of its own.

pub mod client;
pub mod cluster;
pub mod demo;
pub mod settings;
pub mod telemetry;
