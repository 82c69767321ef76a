use std::sync::Arc;

use bytes::Bytes;
use sendwerk_smtpd::{Envelope, Reply, SessionInfo, SmtpHandler};
use sendwerk_store::ReportSource;
use tracing::{error, info};

use crate::BounceProcessor;

/// The inbound SMTP handler of `sendwerk bounce`: RCPT only for valid signed VERP addresses
/// (anything else gets 550; it is never a relay); each accepted report is stored and processed
/// before the 250, and a storage failure answers 451 so that the sending MTA tries again.
pub struct BounceListener {
    processor: Arc<BounceProcessor>,
}

impl BounceListener {
    pub fn new(processor: Arc<BounceProcessor>) -> Self {
        Self { processor }
    }
}

impl SmtpHandler for BounceListener {
    async fn rcpt_to(&self, session: &SessionInfo, _reverse_path: &str, forward_path: &str) -> Reply {
        if self.processor.verp().verify_address(forward_path).is_some() {
            Reply::new(250, "2.1.5", "ok")
        } else {
            info!(peer = %session.peer_addr(), "refused a recipient that is not a valid bounce address");
            Reply::new(550, "5.1.1", "no such user here; this server only accepts bounce reports")
        }
    }

    async fn data(&self, _session: &SessionInfo, envelope: &Envelope, message: Bytes) -> Reply {
        let envelope_to = envelope.forward_paths().first().map(String::as_str);
        let envelope_from = Some(envelope.reverse_path()).filter(|from| !from.is_empty());
        match self.processor.process(message, ReportSource::Smtp, envelope_from, envelope_to).await {
            Ok(processed) => Reply::new(
                250,
                "2.0.0",
                format!(
                    "report {} {}",
                    processed.report_id.map(|id| id.to_string()).unwrap_or_else(|| "seen before".into()),
                    processed.status.as_str()
                ),
            ),
            Err(failure) => {
                error!(error = %failure, "storing an inbound report failed; asking the sender to retry");
                Reply::new(451, "4.3.0", "temporary failure storing the report, try again later")
            }
        }
    }
}
