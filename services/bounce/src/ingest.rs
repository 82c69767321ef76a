//! `sendwerk bounce ingest PATH`: reports collected elsewhere, from a maildir (`cur/` and
//! `new/`), a directory of `.eml` files, an mbox file, or a single message file.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, stream};
use sendwerk_store::{ReportSource, ReportStatus, StoreError};

use crate::BounceProcessor;

/// Totals of one ingest run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    pub num_messages: u64,
    pub num_duplicates: u64,
    pub num_applied: u64,
    pub num_ignored: u64,
    pub num_quarantined: u64,
}

/// Why an ingest run stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn files_under(path: &Path) -> Result<Vec<PathBuf>, IngestError> {
    let io = |source| IngestError::Io { path: path.to_path_buf(), source };
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut directories = vec![path.to_path_buf()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).map_err(io)? {
            let entry = entry.map_err(io)?;
            let entry_path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if entry_path.is_dir() {
                // A maildir's tmp/ holds messages still being written.
                if name != "tmp" {
                    directories.push(entry_path);
                }
            } else {
                files.push(entry_path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Splits an mbox into messages (lines starting with `From ` begin a message; `>From `
/// quoting is undone).
fn split_mbox(contents: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for line in contents.split_inclusive(|&byte| byte == b'\n') {
        if line.starts_with(b"From ") {
            if !current.is_empty() {
                messages.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with(b">From ") {
            current.extend_from_slice(&line[1..]);
        } else {
            current.extend_from_slice(line);
        }
    }
    if !current.is_empty() {
        messages.push(current);
    }
    messages
}

/// Reports processed at once, so that they share transactions.
const CONCURRENT_REPORTS: usize = 64;

/// The messages of one file: an mbox holds many, anything else is one message.
fn read_messages(file: &Path) -> Result<Vec<Vec<u8>>, IngestError> {
    let contents = std::fs::read(file).map_err(|source| IngestError::Io { path: file.to_path_buf(), source })?;
    Ok(if contents.starts_with(b"From ") { split_mbox(&contents) } else { vec![contents] })
}

/// Ingests every report under `path`.
pub async fn ingest_path(processor: &BounceProcessor, path: &Path) -> Result<IngestSummary, IngestError> {
    let mut summary = IngestSummary::default();
    let messages = stream::iter(files_under(path)?).flat_map(|file| {
        let messages: Vec<Result<Vec<u8>, IngestError>> = match read_messages(&file) {
            Ok(messages) => messages.into_iter().map(Ok).collect(),
            Err(failure) => vec![Err(failure)],
        };
        stream::iter(messages)
    });
    let mut processing = messages
        .map(|message| async move {
            Ok::<_, IngestError>(processor.process(Bytes::from(message?), ReportSource::Ingest, None, None).await?)
        })
        .buffer_unordered(CONCURRENT_REPORTS);
    while let Some(processed) = processing.next().await {
        let processed = processed?;
        summary.num_messages += 1;
        match (processed.report_id, processed.status) {
            (None, _) => summary.num_duplicates += 1,
            (Some(_), ReportStatus::Applied) => summary.num_applied += 1,
            (Some(_), ReportStatus::Quarantined) => summary.num_quarantined += 1,
            (Some(_), ReportStatus::Ignored | ReportStatus::Received) => summary.num_ignored += 1,
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::split_mbox;

    #[test]
    fn an_mbox_splits_into_its_messages_and_unquotes_from_lines() {
        let mbox =
            b"From a@b Mon Jan 1 00:00:00 2024\nSubject: one\n\n>From here\n\nFrom c@d Tue\nSubject: two\n\nbody\n";
        let messages = split_mbox(mbox);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0], b"Subject: one\n\nFrom here\n\n".to_vec());
        assert_eq!(messages[1], b"Subject: two\n\nbody\n".to_vec());
    }
}
