//! Inbound reports (bounces, complaints, auto-replies): stored raw and applied to recipients and
//! suppressions (or kept in quarantine) in one transaction per batch of reports.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sendwerk_core::{MailingId, RecipientId};
use sha2::{Digest, Sha256};
use tracing::instrument;

use crate::suppressions::apply_suppressions;
use crate::{Store, StoreError};

/// Where a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    Smtp,
    Ingest,
    Api,
}

impl ReportSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::Ingest => "ingest",
            Self::Api => "api",
        }
    }
}

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStatus {
    Received,
    /// Matched and applied to recipients.
    Applied,
    /// Understood, and nothing to do (an auto-reply, a success or delay notice).
    Ignored,
    /// Could not be parsed or matched to a recipient: kept for inspection.
    Quarantined,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Applied => "applied",
            Self::Ignored => "ignored",
            Self::Quarantined => "quarantined",
        }
    }

    fn parse(raw: &str) -> Result<Self, StoreError> {
        [Self::Received, Self::Applied, Self::Ignored, Self::Quarantined]
            .into_iter()
            .find(|status| status.as_str() == raw)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown report status {raw:?}")))
    }
}

/// One recipient's bounce or complaint from a report.
#[derive(Debug, Clone)]
pub struct BounceApplication {
    pub recipient: RecipientId,
    /// The recipient's mailing, as the VERP token names it; `None` for a token of the earlier
    /// form, whose mailing is then looked up.
    pub mailing: Option<MailingId>,
    /// `true`: complaint (feedback loop); `false`: non-delivery report.
    pub complaint: bool,
    /// The reason from the bounce taxonomy, e.g. `userunknown`, `mailboxfull`, `feedback`.
    pub reason: String,
    pub status: Option<String>,
    pub reply_code: Option<i32>,
    pub diagnostic: Option<String>,
    /// Hard bounce: suppress the address at once. Soft bounces count towards the soft limit.
    pub hard: bool,
}

/// A stored report as the API lists it.
#[derive(Debug, Clone)]
pub struct ReportRecord {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub source: String,
    pub envelope_from: Option<String>,
    pub envelope_to: Option<String>,
    pub status: ReportStatus,
    pub kind: Option<String>,
    pub problem: Option<String>,
    pub num_records: i32,
    pub num_applied: i32,
    pub num_bytes: i32,
}

/// A report ready to be recorded: its raw bytes and envelope, how it was judged, and the
/// bounce or complaint to apply, if any.
#[derive(Debug, Clone)]
pub struct IncomingReport {
    pub source: ReportSource,
    pub envelope_from: Option<String>,
    pub envelope_to: Option<String>,
    pub raw: bytes::Bytes,
    pub status: ReportStatus,
    /// `delivery_status`, `feedback`, `auto_reply` or `unknown`.
    pub kind: &'static str,
    /// Why the report is quarantined.
    pub problem: Option<String>,
    pub num_records: i32,
    pub application: Option<BounceApplication>,
}

/// What recording one report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedReport {
    /// The very same bytes were stored before (or earlier in the same batch): nothing was done.
    Duplicate,
    /// Stored under `id`; `num_applied` recipients changed state.
    Stored { id: i64, num_applied: u64 },
}

/// Soft-bounce suppression policy.
#[derive(Debug, Clone, Copy)]
pub struct SoftBouncePolicy {
    pub limit: i64,
    pub window_days: i32,
}

impl Store {
    /// Stores a batch of reports raw and applies their bounces and complaints, all in one
    /// transaction: either every report of the batch is kept with its outcome, or none is (and
    /// the caller must have the senders retry). Duplicates (by SHA-256 of the raw bytes) are
    /// stored and applied once. Results are in the order of `reports`.
    #[instrument(skip_all, fields(num_reports = reports.len()))]
    pub async fn record_reports(
        &self,
        reports: &[IncomingReport],
        soft_policy: SoftBouncePolicy,
    ) -> Result<Vec<RecordedReport>, StoreError> {
        let digests: Vec<Vec<u8>> = reports.iter().map(|report| Sha256::digest(&report.raw).to_vec()).collect();
        // Only the first of identical reports in the batch is inserted.
        let mut seen = HashSet::new();
        let firsts: Vec<usize> = (0..reports.len()).filter(|&index| seen.insert(digests[index].as_slice())).collect();

        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let insert = transaction.prepare_cached(include_str!("../sql/insert_inbound_reports.sql")).await?;
        let column = |f: &dyn Fn(&IncomingReport) -> Option<&str>| -> Vec<Option<Cow<'_, str>>> {
            firsts.iter().map(|&index| f(&reports[index]).map(postgres_text)).collect()
        };
        let sources = column(&|report| Some(report.source.as_str()));
        let froms = column(&|report| report.envelope_from.as_deref());
        let tos = column(&|report| report.envelope_to.as_deref());
        let statuses = column(&|report| Some(report.status.as_str()));
        let kinds = column(&|report| Some(report.kind));
        let problems = column(&|report| report.problem.as_deref());
        let raws: Vec<&[u8]> = firsts.iter().map(|&index| reports[index].raw.as_ref()).collect();
        let hashes: Vec<&[u8]> = firsts.iter().map(|&index| digests[index].as_slice()).collect();
        let num_records: Vec<i32> = firsts.iter().map(|&index| reports[index].num_records).collect();
        let inserted = transaction
            .query(&insert, &[&sources, &froms, &tos, &raws, &hashes, &statuses, &kinds, &problems, &num_records])
            .await?;

        let mut results = vec![RecordedReport::Duplicate; reports.len()];
        let id_by_digest: HashMap<Vec<u8>, i64> = inserted.iter().map(|row| (row.get(1), row.get(0))).collect();
        for &index in &firsts {
            if let Some(&id) = id_by_digest.get(&digests[index]) {
                results[index] = RecordedReport::Stored { id, num_applied: 0 };
            }
        }
        // The applications of newly stored reports, in waves in which each recipient appears
        // once (a bounce and a later complaint for one recipient in one batch both count).
        let mut pending: Vec<(usize, &BounceApplication)> = results
            .iter()
            .enumerate()
            .filter(|(_, result)| matches!(result, RecordedReport::Stored { .. }))
            .filter_map(|(index, _)| reports[index].application.as_ref().map(|application| (index, application)))
            .collect();
        let mut applied: Vec<i64> = Vec::new();
        let mut suppressed = Vec::new();
        while !pending.is_empty() {
            let mut in_wave = HashSet::new();
            let (wave, rest): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|(_, application)| in_wave.insert(application.recipient));
            pending = rest;
            let changed = apply_bounces(&transaction, &wave, soft_policy, &mut suppressed).await?;
            for (index, _) in wave.iter().filter(|(_, application)| changed.contains(&application.recipient.get())) {
                if let RecordedReport::Stored { id, num_applied } = &mut results[*index] {
                    *num_applied = 1;
                    applied.push(*id);
                }
            }
        }
        // After every wave, so that no insert of a suppression waits on another transaction
        // while this one holds a tenant's suppression lock.
        let (tenants, emails): (Vec<&str>, Vec<&str>) =
            suppressed.iter().map(|(tenant, email): &(String, String)| (tenant.as_str(), email.as_str())).unzip();
        apply_suppressions(&transaction, &tenants, &emails).await?;
        if !applied.is_empty() {
            let count_applied = transaction.prepare_cached(include_str!("../sql/count_applied_reports.sql")).await?;
            transaction.execute(&count_applied, &[&applied]).await?;
        }
        transaction.commit().await?;
        Ok(results)
    }

    /// Reports newest first, below `before_id`, optionally only those in `status`.
    pub async fn list_reports(
        &self,
        status: Option<ReportStatus>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<ReportRecord>, StoreError> {
        let client = self.client().await?;
        let list = client.prepare_cached(include_str!("../sql/list_reports.sql")).await?;
        let status_name = status.map(ReportStatus::as_str);
        let rows = client.query(&list, &[&before_id, &status_name, &limit]).await?;
        rows.iter().map(report_from_row).collect()
    }

    /// One stored report with its raw bytes.
    pub async fn report(&self, id: i64) -> Result<Option<(ReportRecord, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_report.sql")).await?;
        client.query_opt(&select, &[&id]).await?.map(|row| Ok((report_from_row(&row)?, row.get(11)))).transpose()
    }
}

/// A report as `list_reports.sql` and `select_report.sql` return it (their first 11 columns).
fn report_from_row(row: &tokio_postgres::Row) -> Result<ReportRecord, StoreError> {
    Ok(ReportRecord {
        id: row.get(0),
        received_at: row.get(1),
        source: row.get(2),
        envelope_from: row.get(3),
        envelope_to: row.get(4),
        status: ReportStatus::parse(row.get(5))?,
        kind: row.get(6),
        problem: row.get(7),
        num_records: row.get(8),
        num_applied: row.get(9),
        num_bytes: row.get(10),
    })
}

/// Moves the recipients of `wave` (each recipient at most once) to bounced/complained, with an
/// event and a suppression where due, and counts soft bounces. Returns the recipients changed,
/// and adds to `suppressed` the (tenant, address) of each suppression due, by the report or by
/// reaching the soft-bounce limit, for its recipients waiting in other mailings.
async fn apply_bounces(
    transaction: &deadpool_postgres::Transaction<'_>,
    wave: &[(usize, &BounceApplication)],
    soft_policy: SoftBouncePolicy,
    suppressed: &mut Vec<(String, String)>,
) -> Result<HashSet<i64>, StoreError> {
    let applications = || wave.iter().map(|(_, application)| *application);
    let ids: Vec<i64> = applications().map(|a| a.recipient.get()).collect();
    let mailing_ids: Vec<Option<i64>> = applications().map(|a| a.mailing.map(MailingId::get)).collect();
    let states: Vec<&str> = applications().map(|a| if a.complaint { "complained" } else { "bounced" }).collect();
    let reasons: Vec<&str> = applications().map(|a| a.reason.as_str()).collect();
    let statuses: Vec<Option<&str>> = applications().map(|a| a.status.as_deref()).collect();
    let codes: Vec<Option<i32>> = applications().map(|a| a.reply_code).collect();
    let diagnostics: Vec<Option<Cow<'_, str>>> =
        applications().map(|a| a.diagnostic.as_deref().map(postgres_text)).collect();
    let suppress: Vec<bool> = applications().map(|a| a.complaint || a.hard).collect();
    let apply = transaction.prepare_cached(include_str!("../sql/apply_bounces.sql")).await?;
    let changed = transaction
        .query(&apply, &[&ids, &states, &reasons, &statuses, &codes, &diagnostics, &suppress, &mailing_ids])
        .await?;
    let soft: HashSet<i64> = applications().filter(|a| !a.complaint && !a.hard).map(|a| a.recipient.get()).collect();
    let record_soft = transaction.prepare_cached(include_str!("../sql/record_soft_bounce.sql")).await?;
    let mut changed_ids = HashSet::with_capacity(changed.len());
    for row in &changed {
        let id: i64 = row.get(0);
        changed_ids.insert(id);
        let (tenant, email): (&str, &str) = (row.get(1), row.get(2));
        let suppress = if soft.contains(&id) {
            !transaction
                .query(&record_soft, &[&tenant, &email, &soft_policy.limit, &soft_policy.window_days])
                .await?
                .is_empty()
        } else {
            true
        };
        if suppress {
            suppressed.push((tenant.to_owned(), email.to_owned()));
        }
    }
    Ok(changed_ids)
}

/// Text as Postgres can store it: it refuses NUL characters, which reports from the open
/// internet may carry. They become U+FFFD.
fn postgres_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') { Cow::Owned(text.replace('\0', "\u{fffd}")) } else { Cow::Borrowed(text) }
}
