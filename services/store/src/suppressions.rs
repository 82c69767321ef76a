use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sendwerk_core::{EmailAddress, TenantId};

use crate::{Store, StoreError};

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionReason {
    Manual,
    Unsubscribe,
    HardBounce,
    Complaint,
    SoftBounce,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Unsubscribe => "unsubscribe",
            Self::HardBounce => "hard_bounce",
            Self::Complaint => "complaint",
            Self::SoftBounce => "soft_bounce",
        }
    }
}

impl FromStr for SuppressionReason {
    type Err = StoreError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        [Self::Manual, Self::Unsubscribe, Self::HardBounce, Self::Complaint, Self::SoftBounce]
            .into_iter()
            .find(|reason| reason.as_str() == raw)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown suppression reason {raw:?}")))
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct SuppressionRecord {
    pub email: String,
    pub reason: SuppressionReason,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

/// What [`Store::add_suppressions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SuppressionsAdded {
    /// Addresses newly suppressed (those already suppressed keep their first reason).
    pub added: u64,
    /// Recipients of the tenant's open mailings that were waiting to be sent to one of the
    /// addresses and now end `suppressed`.
    pub recipients_suppressed: u64,
}

/// Ends the recipients of the tenants' open mailings that wait in the queue for an address
/// just suppressed in `transaction` (`tenants[i]`, `emails[i]`), under the tenants' exclusive
/// suppression locks, which it takes and `transaction` holds to its commit (migration 10).
/// Returns how many ended `suppressed`.
///
/// The API and the bounce processor call it after inserting their suppressions, so that they
/// never hold the lock while an insert of theirs waits on another transaction's insert of the
/// same address. (A write-back takes the lock before its statement: see `record_outcomes`.)
pub(crate) async fn apply_suppressions(
    transaction: &deadpool_postgres::Transaction<'_>,
    tenants: &[&str],
    emails: &[&str],
) -> Result<u64, StoreError> {
    if tenants.is_empty() {
        return Ok(0);
    }
    let apply = transaction.prepare_cached(include_str!("../sql/apply_suppressions.sql")).await?;
    let ended: i64 = transaction.query_one(&apply, &[&tenants, &emails]).await?.get(0);
    Ok(u64::try_from(ended).unwrap_or_default())
}

fn suppression_keys(emails: &[EmailAddress]) -> Vec<String> {
    emails.iter().map(|email| email.as_str().to_lowercase()).collect()
}

fn records_from_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<SuppressionRecord>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(SuppressionRecord {
                email: row.get(0),
                reason: row.get::<_, &str>(1).parse()?,
                note: row.get(2),
                created_at: row.get(3),
            })
        })
        .collect()
}

impl Store {
    /// Adds suppressions; addresses already suppressed keep their first reason. Recipients of
    /// these addresses still waiting in the tenant's open mailings end `suppressed` in the same
    /// transaction.
    pub async fn add_suppressions(
        &self,
        tenant: &TenantId,
        emails: &[EmailAddress],
        reason: SuppressionReason,
        note: &str,
    ) -> Result<SuppressionsAdded, StoreError> {
        let keys = suppression_keys(emails);
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let insert = transaction.prepare_cached(include_str!("../sql/insert_suppressions.sql")).await?;
        let added = transaction.execute(&insert, &[&tenant.as_str(), &keys, &reason.as_str(), &note]).await?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let recipients_suppressed = apply_suppressions(&transaction, &vec![tenant.as_str(); keys.len()], &keys).await?;
        transaction.commit().await?;
        Ok(SuppressionsAdded { added, recipients_suppressed })
    }

    pub async fn remove_suppressions(&self, tenant: &TenantId, emails: &[EmailAddress]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let delete = client.prepare_cached(include_str!("../sql/delete_suppressions.sql")).await?;
        Ok(client.execute(&delete, &[&tenant.as_str(), &suppression_keys(emails)]).await?)
    }

    /// A page of suppressions in address order, after `after_email`.
    pub async fn list_suppressions(
        &self,
        tenant: &TenantId,
        after_email: &str,
        limit: i64,
    ) -> Result<Vec<SuppressionRecord>, StoreError> {
        let client = self.client().await?;
        let list = client.prepare_cached(include_str!("../sql/list_suppressions.sql")).await?;
        records_from_rows(&client.query(&list, &[&tenant.as_str(), &after_email, &limit]).await?)
    }

    /// The suppressed ones among `emails`.
    pub async fn check_suppressions(
        &self,
        tenant: &TenantId,
        emails: &[EmailAddress],
    ) -> Result<Vec<SuppressionRecord>, StoreError> {
        let client = self.client().await?;
        let check = client.prepare_cached(include_str!("../sql/check_suppressions.sql")).await?;
        records_from_rows(&client.query(&check, &[&tenant.as_str(), &suppression_keys(emails)]).await?)
    }
}
