//! sendwerk-mail: turning a mailing and one recipient into bytes on the wire — rendering merge
//! fields (minijinja, strict), building the MIME message, DKIM signing (mail-auth), and the SMTP
//! client that hands it to a relay, with the one classifier of replies into outcomes living in
//! `sendwerk_core::classify_smtp_reply`.
//!
//! It never touches the database and never decides retry policy: callers get an outcome and
//! decide. Nothing from a merge field or API input may reach a header or the SMTP stream
//! without passing the validation and encoding here.

pub mod dkim;
pub mod mime;
pub mod mx;
pub mod render;
pub mod smtp;
