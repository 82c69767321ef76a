use std::time::Duration;

use bytes::Bytes;
use sendwerk_core::{RecipientId, Verp};
use sendwerk_dsn::{Action, Limits, Report, ReportKind};
use sendwerk_store::{
    BounceApplication, ReportSource, ReportStatus, ReportVerdict, SoftBouncePolicy, Store, StoreError,
};
use tracing::{info, instrument, warn};

/// Parsing one report may take at most this long; past it the report is quarantined.
const PARSE_TIME_LIMIT: Duration = Duration::from_secs(2);

/// What became of one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// `None` when the very same report was stored before (nothing was done again).
    pub report_id: Option<i64>,
    pub status: ReportStatus,
    pub num_records: usize,
    /// Recipients whose state changed.
    pub num_applied: u64,
    pub problem: Option<String>,
}

pub struct BounceProcessor {
    store: Store,
    verp: Verp,
    soft_policy: SoftBouncePolicy,
    limits: Limits,
}

fn kind_name(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::DeliveryStatus => "delivery_status",
        ReportKind::Feedback => "feedback",
        ReportKind::AutoReply => "auto_reply",
        ReportKind::Unknown => "unknown",
    }
}

impl BounceProcessor {
    pub fn new(
        store: Store,
        verp: Verp,
        soft_bounce_limit: u32,
        soft_bounce_window_days: u32,
        max_report_bytes: usize,
    ) -> Self {
        Self {
            store,
            verp,
            soft_policy: SoftBouncePolicy {
                limit: i64::from(soft_bounce_limit.max(1)),
                window_days: i32::try_from(soft_bounce_window_days).unwrap_or(i32::MAX),
            },
            limits: Limits { max_bytes: max_report_bytes, ..Limits::default() },
        }
    }

    pub fn verp(&self) -> &Verp {
        &self.verp
    }

    /// The recipient a report is about: the VERP address it was sent to, else a signed
    /// `X-Sendwerk-Ref` or VERP address found inside it.
    fn match_recipient(&self, envelope_to: Option<&str>, report: &Report) -> Option<RecipientId> {
        envelope_to
            .and_then(|address| self.verp.verify_address(address))
            .or_else(|| report.original.sendwerk_ref.as_deref().and_then(|token| self.verp.verify_token(token)))
            .or_else(|| report.original.verp_recipients.iter().find_map(|address| self.verp.verify_address(address)))
            .or_else(|| report.original.return_path.as_deref().and_then(|address| self.verp.verify_address(address)))
    }

    /// Stores a report raw, then parses and applies it (or quarantines it). A store error means
    /// the report was not kept: the caller must make the sender retry (SMTP 4xx).
    #[instrument(skip_all, fields(num_bytes = raw.len()))]
    pub async fn process(
        &self,
        raw: Bytes,
        source: ReportSource,
        envelope_from: Option<&str>,
        envelope_to: Option<&str>,
    ) -> Result<Processed, StoreError> {
        let Some(report_id) = self.store.store_inbound_report(source, envelope_from, envelope_to, &raw).await? else {
            return Ok(Processed {
                report_id: None,
                status: ReportStatus::Ignored,
                num_records: 0,
                num_applied: 0,
                problem: Some("duplicate of a report already stored".into()),
            });
        };
        let limits = self.limits.clone();
        let parsing = tokio::task::spawn_blocking(move || sendwerk_dsn::parse_report_with_limits(&raw, &limits));
        let report = match tokio::time::timeout(PARSE_TIME_LIMIT, parsing).await {
            Ok(Ok(report)) => report,
            Ok(Err(_)) => return self.quarantine(report_id, "unknown", "the parser failed on this report", 0).await,
            Err(_) => return self.quarantine(report_id, "unknown", "parsing took longer than the time limit", 0).await,
        };
        let kind = kind_name(report.kind);
        let num_records = report.records.len();
        match report.kind {
            ReportKind::AutoReply => {
                return self.finish(report_id, ReportStatus::Ignored, kind, None, num_records, &[]).await;
            }
            ReportKind::Unknown => {
                let problem = if report.problems.is_empty() {
                    "not a bounce, complaint or auto-reply".to_owned()
                } else {
                    report.problems.join("; ")
                };
                return self.quarantine(report_id, kind, &problem, num_records).await;
            }
            ReportKind::DeliveryStatus | ReportKind::Feedback => {}
        }
        let Some(recipient) = self.match_recipient(envelope_to, &report) else {
            return self
                .quarantine(
                    report_id,
                    kind,
                    "no valid VERP address or X-Sendwerk-Ref: cannot be matched to a recipient",
                    num_records,
                )
                .await;
        };
        let application = if report.kind == ReportKind::Feedback {
            let record = report.records.first();
            Some(BounceApplication {
                recipient,
                complaint: true,
                reason: "feedback".into(),
                status: None,
                reply_code: None,
                diagnostic: report
                    .feedback_type
                    .clone()
                    .map(|kind| format!("feedback type {kind}"))
                    .or_else(|| record.and_then(|r| r.diagnostic.clone())),
                hard: false,
            })
        } else {
            // One message per recipient (VERP): the failed record is about this recipient.
            report.records.iter().find(|record| matches!(record.action, Some(Action::Failed) | None)).map(|record| {
                BounceApplication {
                    recipient,
                    complaint: false,
                    reason: record.reason.as_str().to_owned(),
                    status: record.status.clone(),
                    reply_code: record.reply_code.map(i32::from),
                    diagnostic: record.diagnostic.clone(),
                    hard: record.hard,
                }
            })
        };
        match application {
            Some(application) => {
                self.finish(report_id, ReportStatus::Applied, kind, None, num_records, &[application]).await
            }
            // Delay and success notices change nothing.
            None => self.finish(report_id, ReportStatus::Ignored, kind, None, num_records, &[]).await,
        }
    }

    async fn quarantine(
        &self,
        report_id: i64,
        kind: &str,
        problem: &str,
        num_records: usize,
    ) -> Result<Processed, StoreError> {
        warn!(report_id, kind, problem, "report quarantined");
        self.finish(report_id, ReportStatus::Quarantined, kind, Some(problem), num_records, &[]).await
    }

    async fn finish(
        &self,
        report_id: i64,
        status: ReportStatus,
        kind: &str,
        problem: Option<&str>,
        num_records: usize,
        applications: &[BounceApplication],
    ) -> Result<Processed, StoreError> {
        let verdict =
            ReportVerdict { status, kind, problem, num_records: i32::try_from(num_records).unwrap_or(i32::MAX) };
        let num_applied = self.store.apply_report(report_id, applications, self.soft_policy, &verdict).await?;
        if num_applied > 0 {
            info!(report_id, kind, num_applied, "report applied");
        }
        Ok(Processed {
            report_id: Some(report_id),
            status,
            num_records,
            num_applied,
            problem: problem.map(str::to_owned),
        })
    }
}
