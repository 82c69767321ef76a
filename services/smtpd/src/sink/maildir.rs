//! A capture sink that stores every message into a maildir.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{Envelope, Reply, SessionInfo, SmtpHandler};

const STORE_FAILED: Reply = Reply::fixed(451, "4.3.0", "local error: cannot store message");

/// Accepts every recipient and writes each message as one file into `dir/new`, the maildir
/// way: written under a unique name into `tmp/`, then renamed into `new/`. Files start with
/// `Return-Path` and `Delivered-To` headers, followed by the message bytes as received (CRLF
/// line ends are kept, so the file is exactly what the client sent).
///
/// This is a development capture sink, not a mailbox: files are not fsynced, so a message
/// acknowledged just before a power loss can be lost.
#[derive(Debug)]
pub struct MaildirSink {
    dir: PathBuf,
    num_messages: AtomicU64,
    last_sequence: AtomicU64,
}

impl MaildirSink {
    /// Creates `dir/tmp`, `dir/new` and `dir/cur` if missing.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        for subdir in ["tmp", "new", "cur"] {
            fs::create_dir_all(dir.join(subdir))?;
        }
        Ok(Self { dir, num_messages: AtomicU64::new(0), last_sequence: AtomicU64::new(0) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of messages stored since this sink was created.
    pub fn num_messages(&self) -> u64 {
        self.num_messages.load(Ordering::Relaxed)
    }

    /// A maildir file name, unique per host: time, process id and a per-sink sequence number.
    fn unique_file_name(&self) -> String {
        let sequence = self.last_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.sendwerk-smtpd",
            since_epoch.as_secs(),
            since_epoch.subsec_micros(),
            std::process::id(),
            sequence
        )
    }
}

impl SmtpHandler for MaildirSink {
    async fn rcpt_to(&self, _session: &SessionInfo, _reverse_path: &str, _forward_path: &str) -> Reply {
        Reply::fixed(250, "2.1.5", "ok")
    }

    async fn data(&self, session: &SessionInfo, envelope: &Envelope, message: Bytes) -> Reply {
        let mut headers = format!("Return-Path: <{}>\r\n", envelope.reverse_path());
        if let Some(first_recipient) = envelope.forward_paths().first() {
            headers.push_str(&format!("Delivered-To: {first_recipient}\r\n"));
        }
        let file_name = self.unique_file_name();
        let tmp_path = self.dir.join("tmp").join(&file_name);
        let new_path = self.dir.join("new").join(&file_name);
        // File system calls block. On spawn_blocking a slow disk stalls only this session, not
        // the runtime worker thread that also serves other sessions; the hop costs a few
        // microseconds, which a capture sink can afford.
        let store = move || write_then_rename(&tmp_path, &new_path, headers.as_bytes(), &message);
        let stored = match tokio::task::spawn_blocking(store).await {
            Ok(stored) => stored,
            Err(join_error) => Err(io::Error::other(join_error)),
        };
        match stored {
            Ok(()) => {
                self.num_messages.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session_id = session.session_id(), file_name, "message stored");
                Reply::new(250, "2.0.0", format!("ok: stored as {file_name}"))
            }
            Err(error) => {
                tracing::warn!(error = %error, dir = %self.dir.display(), "cannot store message");
                STORE_FAILED
            }
        }
    }
}

fn write_then_rename(tmp_path: &Path, new_path: &Path, headers: &[u8], message: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(tmp_path)?;
    file.write_all(headers)?;
    file.write_all(message)?;
    drop(file);
    fs::rename(tmp_path, new_path).inspect_err(|_| {
        let _ = fs::remove_file(tmp_path);
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stored_message_gets_envelope_headers_and_lands_in_new() {
        let dir = tempfile::tempdir().unwrap();
        let sink = MaildirSink::new(dir.path().join("maildir")).unwrap();
        let session = SessionInfo::new(1, "127.0.0.1:25".parse().unwrap());
        let envelope = Envelope::new("from@example.test", &["to@example.test", "cc@example.test"]);

        let reply = sink.data(&session, &envelope, Bytes::from_static(b"Subject: hi\r\n\r\nbody\r\n")).await;

        assert!(reply.is_positive(), "{reply:?}");
        assert_eq!(sink.num_messages(), 1);
        let new_files: Vec<_> = fs::read_dir(sink.dir().join("new")).unwrap().collect();
        assert_eq!(new_files.len(), 1);
        let content = fs::read(new_files[0].as_ref().unwrap().path()).unwrap();
        assert_eq!(
            content,
            b"Return-Path: <from@example.test>\r\nDelivered-To: to@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(fs::read_dir(sink.dir().join("tmp")).unwrap().count(), 0);
    }
}
