//! Inbound reports (bounces, complaints, auto-replies): stored raw first, then applied to
//! recipients and suppressions in one transaction, or kept in quarantine.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sendwerk_core::RecipientId;
use sha2::{Digest, Sha256};
use tracing::instrument;

use crate::{Store, StoreError};

/// Where a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    Smtp,
    Ingest,
    Api,
}

impl ReportSource {
    fn as_str(self) -> &'static str {
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

/// How a report was judged: its status, kind (`delivery-status`, `feedback`, …), why it is
/// quarantined, and how many records it held.
#[derive(Debug, Clone, Copy)]
pub struct ReportVerdict<'a> {
    pub status: ReportStatus,
    pub kind: &'a str,
    pub problem: Option<&'a str>,
    pub num_records: i32,
}

/// Soft-bounce suppression policy.
#[derive(Debug, Clone, Copy)]
pub struct SoftBouncePolicy {
    pub limit: i64,
    pub window_days: i32,
}

impl Store {
    /// Stores a report before anything else happens to it. `None` when the very same bytes were
    /// stored before (a duplicate delivery of the report).
    #[instrument(skip_all, fields(num_bytes = raw.len()))]
    pub async fn store_inbound_report(
        &self,
        source: ReportSource,
        envelope_from: Option<&str>,
        envelope_to: Option<&str>,
        raw: &[u8],
    ) -> Result<Option<i64>, StoreError> {
        let digest = Sha256::digest(raw).to_vec();
        let client = self.client().await?;
        let insert = client.prepare_cached(include_str!("../sql/insert_inbound_report.sql")).await?;
        let row = client.query_opt(&insert, &[&source.as_str(), &envelope_from, &envelope_to, &raw, &digest]).await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Applies a report's bounces and complaints and records the report's outcome, in one
    /// transaction. Returns how many recipients changed (duplicates change nothing).
    #[instrument(skip_all, fields(report_id, num_applications = applications.len()))]
    pub async fn apply_report(
        &self,
        report_id: i64,
        applications: &[BounceApplication],
        soft_policy: SoftBouncePolicy,
        verdict: &ReportVerdict<'_>,
    ) -> Result<u64, StoreError> {
        let ReportVerdict { status, kind, problem, num_records } = *verdict;
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let mut num_changed = 0u64;
        if !applications.is_empty() {
            let ids: Vec<i64> = applications.iter().map(|a| a.recipient.get()).collect();
            let states: Vec<&str> =
                applications.iter().map(|a| if a.complaint { "complained" } else { "bounced" }).collect();
            let reasons: Vec<&str> = applications.iter().map(|a| a.reason.as_str()).collect();
            let statuses: Vec<Option<&str>> = applications.iter().map(|a| a.status.as_deref()).collect();
            let codes: Vec<Option<i32>> = applications.iter().map(|a| a.reply_code).collect();
            let diagnostics: Vec<Option<&str>> = applications.iter().map(|a| a.diagnostic.as_deref()).collect();
            let suppress: Vec<bool> = applications.iter().map(|a| a.complaint || a.hard).collect();
            let apply = transaction.prepare_cached(include_str!("../sql/apply_bounces.sql")).await?;
            let changed = transaction
                .query(&apply, &[&ids, &states, &reasons, &statuses, &codes, &diagnostics, &suppress])
                .await?;
            num_changed = changed.len() as u64;
            let soft: HashSet<i64> =
                applications.iter().filter(|a| !a.complaint && !a.hard).map(|a| a.recipient.get()).collect();
            let record_soft = transaction.prepare_cached(include_str!("../sql/record_soft_bounce.sql")).await?;
            for row in &changed {
                let id: i64 = row.get(0);
                if soft.contains(&id) {
                    let (tenant, email): (&str, &str) = (row.get(1), row.get(2));
                    transaction
                        .query(&record_soft, &[&tenant, &email, &soft_policy.limit, &soft_policy.window_days])
                        .await?;
                }
            }
        }
        let finish = transaction.prepare_cached(include_str!("../sql/finish_inbound_report.sql")).await?;
        let num_applied = i32::try_from(num_changed).unwrap_or(i32::MAX);
        transaction
            .execute(&finish, &[&report_id, &status.as_str(), &kind, &problem, &num_records, &num_applied])
            .await?;
        transaction.commit().await?;
        Ok(num_changed)
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
        rows.iter()
            .map(|row| {
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
            })
            .collect()
    }

    /// The raw bytes of a stored report.
    pub async fn report_raw(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_report_raw.sql")).await?;
        Ok(client.query_opt(&select, &[&id]).await?.map(|row| row.get(0)))
    }
}
