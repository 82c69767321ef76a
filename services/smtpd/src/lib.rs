//! sendwerk-smtpd: a small, fast tokio SMTP server library.
//!
//! It owns the receiving side of SMTP (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES and SMTPUTF8): sessions, command order, limits, timeouts, dot-unstuffing
//! and graceful shutdown. Every decision about senders, recipients and messages belongs to an
//! [`SmtpHandler`]; the [`sink`] module has the handlers used for development and tests.
//!
//! It must never relay: it only hands messages to the handler and never opens a connection of
//! its own. It speaks no TLS and no AUTH, so it listens on loopback or trusted networks only,
//! and it never buffers input without bound.
//!
//! ```
//! use std::sync::Arc;
//!
//! use sendwerk_smtpd::sink::BehaviourSink;
//! use sendwerk_smtpd::{ServerConfig, SmtpServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let sink = Arc::new(BehaviourSink::new());
//! let addr = "127.0.0.1:0".parse().expect("valid address");
//! let server = SmtpServer::bind(addr, ServerConfig::default(), Arc::clone(&sink))
//!     .await?
//!     .spawn();
//! println!("sink listening on {}", server.local_addr());
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod command;
mod config;
mod data;
mod handler;
mod io;
mod reply;
mod server;
mod session;
pub mod sink;

pub use config::ServerConfig;
pub use handler::{Envelope, SessionInfo, SmtpHandler};
pub use reply::Reply;
pub use server::{RunningServer, SmtpServer};
