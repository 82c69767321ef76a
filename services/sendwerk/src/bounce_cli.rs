//! `sendwerk bounce parse FILE...`: one JSON object per record per line, for evaluating the
//! parser on collections of reports.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sendwerk_dsn::ReportKind;

/// Prints `{"file", "recipient", "status", "replycode", "reason", "hard", "action",
/// "feedbacktype"}` per record; a file with no record prints one line with `recipient: null`
/// and its problems.
pub fn parse_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for path in files {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let report = sendwerk_dsn::parse_report(&raw);
        let file = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_owned();
        if report.records.is_empty() {
            let line = serde_json::json!({
                "file": file,
                "recipient": null,
                "status": null,
                "replycode": null,
                "reason": if report.kind == ReportKind::AutoReply { "vacation" } else { "undefined" },
                "hard": false,
                "action": null,
                "feedbacktype": report.feedback_type,
                "problems": report.problems,
            });
            writeln!(out, "{line}")?;
            continue;
        }
        for record in &report.records {
            let line = serde_json::json!({
                "file": file,
                "recipient": record.recipient,
                "status": record.status,
                "replycode": record.reply_code,
                "reason": record.reason.as_str(),
                "hard": record.hard,
                "action": record.action,
                "feedbacktype": report.feedback_type,
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}
