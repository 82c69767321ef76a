//! sendwerk: the one binary — every role (`control`, `sender`, `bounce`, `migrate`, `dev`,
//! `demo`), the operators' command-line client, configuration and
//! telemetry. The same building blocks start the whole cluster in-process for `dev`, `demo` and
//! the integration tests.
//!
//! This crate wires the libraries together; it holds no business rules of its own.

pub mod bounce_cli;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod settings;
pub mod telemetry;
