use std::time::Duration;

use bytes::Bytes;
use sendwerk_core::{Verp, VerpRef};
use sendwerk_dsn::{Action, Limits, Report, ReportKind};
use sendwerk_store::{
    BounceApplication, IncomingReport, RecordedReport, ReportSource, ReportStatus, SoftBouncePolicy, Store, StoreError,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, instrument, warn};

/// Parsing one report may take at most this long; past it the report is quarantined.
const PARSE_TIME_LIMIT: Duration = Duration::from_secs(2);

/// At most this many reports are recorded in one transaction.
const MAX_BATCH: usize = 128;

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

/// A judged report waiting for the recorder, and where its result goes.
struct Job {
    report: IncomingReport,
    reply: oneshot::Sender<Result<RecordedReport, StoreError>>,
}

/// Stores, parses, matches and applies reports. Reports are judged (parsed and matched) by the
/// caller's task, then recorded by one background task that takes every report waiting and
/// writes them in one transaction: under load, one commit carries many reports; alone, a report
/// waits for nothing.
pub struct BounceProcessor {
    store: Store,
    verp: Verp,
    soft_policy: SoftBouncePolicy,
    limits: Limits,
    jobs: mpsc::Sender<Job>,
}

/// A report's verdict before it is recorded.
struct Judgement {
    status: ReportStatus,
    kind: &'static str,
    problem: Option<String>,
    num_records: usize,
    application: Option<BounceApplication>,
}

impl Judgement {
    fn quarantine(kind: &'static str, problem: impl Into<String>, num_records: usize) -> Self {
        Self { status: ReportStatus::Quarantined, kind, problem: Some(problem.into()), num_records, application: None }
    }
}

impl BounceProcessor {
    /// Must be called within a tokio runtime: it starts the recording task, which ends when the
    /// processor is dropped.
    pub fn new(
        store: Store,
        verp: Verp,
        soft_bounce_limit: u32,
        soft_bounce_window_days: u32,
        max_report_bytes: usize,
    ) -> Self {
        let soft_policy = SoftBouncePolicy {
            limit: i64::from(soft_bounce_limit.max(1)),
            window_days: i32::try_from(soft_bounce_window_days).unwrap_or(i32::MAX),
        };
        let (jobs, queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(record_batches(store.clone(), soft_policy, queue));
        Self { store, verp, soft_policy, limits: Limits { max_bytes: max_report_bytes, ..Limits::default() }, jobs }
    }

    pub fn verp(&self) -> &Verp {
        &self.verp
    }

    /// The recipient a report is about: the VERP address it was sent to, else a signed
    /// `X-Sendwerk-Ref` or VERP address found inside it.
    fn match_recipient(&self, envelope_to: Option<&str>, report: &Report) -> Option<VerpRef> {
        envelope_to
            .and_then(|address| self.verp.verify_address(address))
            .or_else(|| report.original.sendwerk_ref.as_deref().and_then(|token| self.verp.verify_token(token)))
            .or_else(|| report.original.verp_recipients.iter().find_map(|address| self.verp.verify_address(address)))
            .or_else(|| report.original.return_path.as_deref().and_then(|address| self.verp.verify_address(address)))
    }

    /// Stores a report raw together with what it means: applied to its recipient, ignored, or
    /// quarantined. A store error means the report was not kept: the caller must make the
    /// sender retry (SMTP 4xx).
    #[instrument(skip_all, fields(num_bytes = raw.len()))]
    pub async fn process(
        &self,
        raw: Bytes,
        source: ReportSource,
        envelope_from: Option<&str>,
        envelope_to: Option<&str>,
    ) -> Result<Processed, StoreError> {
        let judgement = self.judge(raw.clone(), envelope_to).await;
        if judgement.status == ReportStatus::Quarantined {
            warn!(kind = judgement.kind, problem = judgement.problem.as_deref(), "report quarantined");
        }
        let processed = |report_id, num_applied| Processed {
            report_id,
            status: judgement.status,
            num_records: judgement.num_records,
            num_applied,
            problem: judgement.problem.clone(),
        };
        let report = IncomingReport {
            source,
            envelope_from: envelope_from.map(str::to_owned),
            envelope_to: envelope_to.map(str::to_owned),
            raw,
            status: judgement.status,
            kind: judgement.kind,
            problem: judgement.problem.clone(),
            num_records: i32::try_from(judgement.num_records).unwrap_or(i32::MAX),
            application: judgement.application.clone(),
        };
        let (reply, recorded) = oneshot::channel();
        let recorded = match self.jobs.send(Job { report, reply }).await {
            Ok(()) => recorded.await.ok(),
            Err(mpsc::error::SendError(job)) => Some(record_alone(&self.store, job.report, self.soft_policy).await),
        };
        let recorded = recorded.ok_or_else(|| StoreError::Corrupt("the report recorder stopped".into()))??;
        Ok(match recorded {
            RecordedReport::Duplicate => Processed {
                report_id: None,
                status: ReportStatus::Ignored,
                num_records: 0,
                num_applied: 0,
                problem: Some("duplicate of a report already stored".into()),
            },
            RecordedReport::Stored { id, num_applied } => {
                if num_applied > 0 {
                    info!(report_id = id, kind = judgement.kind, num_applied, "report applied");
                }
                processed(Some(id), num_applied)
            }
        })
    }

    /// Parses a report (bounded in time) and decides what it means.
    async fn judge(&self, raw: Bytes, envelope_to: Option<&str>) -> Judgement {
        let limits = self.limits.clone();
        let parsing = tokio::task::spawn_blocking(move || sendwerk_dsn::parse_report_with_limits(&raw, &limits));
        let report = match tokio::time::timeout(PARSE_TIME_LIMIT, parsing).await {
            Ok(Ok(report)) => report,
            Ok(Err(_)) => return Judgement::quarantine("unknown", "the parser failed on this report", 0),
            Err(_) => return Judgement::quarantine("unknown", "parsing took longer than the time limit", 0),
        };
        let kind = ReportKind::as_str(report.kind);
        let num_records = report.records.len();
        let ignored = Judgement { status: ReportStatus::Ignored, kind, problem: None, num_records, application: None };
        match report.kind {
            ReportKind::AutoReply => return ignored,
            ReportKind::Unknown => {
                let problem = if report.problems.is_empty() {
                    "not a bounce, complaint or auto-reply".to_owned()
                } else {
                    report.problems.join("; ")
                };
                return Judgement::quarantine(kind, problem, num_records);
            }
            ReportKind::DeliveryStatus | ReportKind::Feedback => {}
        }
        let Some(VerpRef { recipient, mailing }) = self.match_recipient(envelope_to, &report) else {
            return Judgement::quarantine(
                kind,
                "no valid VERP address or X-Sendwerk-Ref: cannot be matched to a recipient",
                num_records,
            );
        };
        let application = if report.kind == ReportKind::Feedback {
            let record = report.records.first();
            Some(BounceApplication {
                recipient,
                mailing,
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
                    mailing,
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
            Some(application) => Judgement { status: ReportStatus::Applied, application: Some(application), ..ignored },
            // Delay and success notices change nothing.
            None => ignored,
        }
    }
}

/// The recording task: takes every job waiting (up to [`MAX_BATCH`]) and records them in one
/// transaction. When a batch fails, its reports are recorded one by one, so that one bad report
/// costs only itself.
async fn record_batches(store: Store, soft_policy: SoftBouncePolicy, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (mut reports, mut replies): (Vec<IncomingReport>, Vec<_>) =
            jobs.drain(..).map(|job| (job.report, job.reply)).unzip();
        match store.record_reports(&reports, soft_policy).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(failure) if reports.len() == 1 => {
                if let (Some(report), Some(reply)) = (reports.pop(), replies.pop()) {
                    let _ = reply.send(quarantine_unrecordable(&store, report, failure, soft_policy).await);
                }
            }
            Err(failure) => {
                warn!(error = %failure, num_reports = reports.len(), "recording a batch of reports failed; recording them one by one");
                for (report, reply) in reports.into_iter().zip(replies) {
                    let _ = reply.send(record_alone(&store, report, soft_policy).await);
                }
            }
        }
    }
}

/// Records one report, or keeps it quarantined if recording it fails.
async fn record_alone(
    store: &Store,
    report: IncomingReport,
    soft_policy: SoftBouncePolicy,
) -> Result<RecordedReport, StoreError> {
    match store.record_reports(std::slice::from_ref(&report), soft_policy).await {
        Ok(results) => Ok(results[0]),
        Err(failure) => quarantine_unrecordable(store, report, failure, soft_policy).await,
    }
}

/// A report whose recording failed with `failure` for a reason of its own (say, text the
/// database refuses) is kept in quarantine with that reason instead; only if that fails too
/// (the database is unreachable) is `failure` returned.
async fn quarantine_unrecordable(
    store: &Store,
    report: IncomingReport,
    failure: StoreError,
    soft_policy: SoftBouncePolicy,
) -> Result<RecordedReport, StoreError> {
    let problem = format!("recording the report failed: {}", error_chain(&failure));
    warn!(problem, "report quarantined");
    let quarantined =
        IncomingReport { status: ReportStatus::Quarantined, problem: Some(problem), application: None, ..report };
    match store.record_reports(&[quarantined], soft_policy).await {
        Ok(results) => Ok(results[0]),
        Err(_) => Err(failure),
    }
}

/// An error with its causes, `outer: inner: innermost`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
