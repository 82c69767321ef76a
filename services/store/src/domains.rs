//! Per-destination-domain settings changeable at run time: rate limit overrides and pauses.

use crate::{Store, StoreError};

/// One domain's settings; `max_per_minute: None` means the default limit applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSetting {
    pub domain: String,
    pub max_per_minute: Option<i32>,
    pub paused: bool,
}

fn setting_from_row(row: &tokio_postgres::Row) -> DomainSetting {
    DomainSetting { domain: row.get(0), max_per_minute: row.get(1), paused: row.get(2) }
}

impl Store {
    pub async fn domain_settings(&self) -> Result<Vec<DomainSetting>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_domain_settings.sql")).await?;
        Ok(client.query(&select, &[]).await?.iter().map(setting_from_row).collect())
    }

    pub async fn put_domain_setting(&self, setting: &DomainSetting) -> Result<DomainSetting, StoreError> {
        let client = self.client().await?;
        let upsert = client.prepare_cached(include_str!("../sql/upsert_domain_settings.sql")).await?;
        let row = client.query_one(&upsert, &[&setting.domain, &setting.max_per_minute, &setting.paused]).await?;
        Ok(setting_from_row(&row))
    }

    /// Removes a domain's settings (back to the defaults); false when it had none.
    pub async fn delete_domain_setting(&self, domain: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let delete = client.prepare_cached(include_str!("../sql/delete_domain_settings.sql")).await?;
        Ok(client.execute(&delete, &[&domain]).await? > 0)
    }
}
