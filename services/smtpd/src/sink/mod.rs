//! Ready-made handlers: a maildir capture sink and a test sink whose replies are chosen by the
//! recipient's local part.

mod behaviour;
mod maildir;

pub use behaviour::{BehaviourSink, ReceivedMessage};
pub use maildir::MaildirSink;
