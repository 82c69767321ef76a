use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sendwerk_core::{MailingId, MailingState, RecipientState, TenantId};
use tracing::instrument;

use crate::{Store, StoreError};

/// A file attached to a mailing, or an inline image when `content_id` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentData {
    pub filename: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub content: Vec<u8>,
}

/// What a mailing says and who it is from; validated by the caller before it is stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MailingContent {
    pub name: String,
    pub from_email: String,
    pub from_name: String,
    pub reply_to_email: String,
    pub reply_to_name: String,
    pub subject_template: String,
    pub html_template: String,
    pub text_template: String,
    pub headers: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub attachments: Vec<AttachmentData>,
}

/// A stored mailing. `content.attachments` holds metadata and content only when asked for.
#[derive(Debug, Clone)]
pub struct MailingRecord {
    pub id: MailingId,
    pub tenant: TenantId,
    pub content: MailingContent,
    pub state: MailingState,
    pub send_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Pace across all senders; `None` for as fast as the limits allow.
    pub max_per_hour: Option<i32>,
}

/// Recipients per state for one mailing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts(pub BTreeMap<RecipientState, i64>);

impl StateCounts {
    pub fn get(&self, state: RecipientState) -> i64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    pub fn total(&self) -> i64 {
        self.0.values().sum()
    }

    /// Recipients not yet in a final state.
    pub fn unfinished(&self) -> i64 {
        self.0.iter().filter(|(state, _)| !state.is_final()).map(|(_, n)| n).sum()
    }
}

/// A requested change of a mailing's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MailingAction {
    /// Start on or after the given time (now when in the past), optionally paced.
    Schedule {
        send_at: DateTime<Utc>,
        max_per_hour: Option<i32>,
    },
    Pause,
    Resume,
    Cancel,
}

impl MailingAction {
    fn name(self) -> &'static str {
        match self {
            Self::Schedule { .. } => "schedule",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
        }
    }

    /// The state the action leads to from `current`, or `None` when it does not apply.
    fn target_state(self, current: MailingState) -> Option<MailingState> {
        match self {
            Self::Schedule { .. } if current.can_schedule() => Some(MailingState::Scheduled),
            Self::Pause if current.can_pause() => Some(MailingState::Paused),
            Self::Resume if current.can_resume() => Some(MailingState::Sending),
            Self::Cancel if current.can_cancel() => Some(MailingState::Cancelled),
            _ => None,
        }
    }
}

fn headers_to_json(headers: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Array(
        headers.iter().map(|(name, value)| serde_json::json!({ "name": name, "value": value })).collect(),
    )
}

fn headers_from_json(value: &serde_json::Value) -> Result<Vec<(String, String)>, StoreError> {
    let entries = value.as_array().ok_or_else(|| StoreError::Corrupt("headers not an array".into()))?;
    entries
        .iter()
        .map(|entry| {
            let field = |key: &str| entry.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            match (field("name"), field("value")) {
                (Some(name), Some(value)) => Ok((name, value)),
                _ => Err(StoreError::Corrupt("header entry without name or value".into())),
            }
        })
        .collect()
}

pub(crate) fn parse_mailing_state(raw: &str) -> Result<MailingState, StoreError> {
    raw.parse().map_err(|error: sendwerk_core::StateParseError| StoreError::Corrupt(error.to_string()))
}

impl Store {
    #[instrument(skip_all, fields(tenant = tenant.as_str()))]
    pub async fn create_mailing(&self, tenant: &TenantId, content: &MailingContent) -> Result<MailingId, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let insert = transaction.prepare_cached(include_str!("../sql/insert_mailing.sql")).await?;
        let row = transaction
            .query_one(
                &insert,
                &[
                    &tenant.as_str(),
                    &content.name,
                    &content.from_email,
                    &content.from_name,
                    &content.reply_to_email,
                    &content.reply_to_name,
                    &content.subject_template,
                    &content.html_template,
                    &content.text_template,
                    &headers_to_json(&content.headers),
                    &content.tags,
                ],
            )
            .await?;
        let id = MailingId::new(row.get(0));
        insert_attachments(&transaction, id, &content.attachments).await?;
        transaction.commit().await?;
        Ok(id)
    }

    /// Replaces the content of a draft mailing.
    #[instrument(skip_all, fields(mailing_id = %id))]
    pub async fn update_mailing_content(
        &self,
        tenant: &TenantId,
        id: MailingId,
        content: &MailingContent,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let lock = transaction.prepare_cached(include_str!("../sql/select_mailing_for_update.sql")).await?;
        let state_row = transaction
            .query_opt(&lock, &[&tenant.as_str(), &id.get()])
            .await?
            .ok_or(StoreError::MailingNotFound(id))?;
        let state = parse_mailing_state(state_row.get(0))?;
        if state != MailingState::Draft {
            return Err(StoreError::WrongMailingState { id, state, action: "update" });
        }
        let update = transaction.prepare_cached(include_str!("../sql/update_mailing_content.sql")).await?;
        transaction
            .execute(
                &update,
                &[
                    &tenant.as_str(),
                    &id.get(),
                    &content.name,
                    &content.from_email,
                    &content.from_name,
                    &content.reply_to_email,
                    &content.reply_to_name,
                    &content.subject_template,
                    &content.html_template,
                    &content.text_template,
                    &headers_to_json(&content.headers),
                    &content.tags,
                ],
            )
            .await?;
        let delete = transaction.prepare_cached(include_str!("../sql/delete_attachments.sql")).await?;
        transaction.execute(&delete, &[&id.get()]).await?;
        insert_attachments(&transaction, id, &content.attachments).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The mailing, with attachment content only when `with_attachment_content`.
    #[instrument(skip_all, fields(mailing_id = %id))]
    pub async fn get_mailing(
        &self,
        tenant: &TenantId,
        id: MailingId,
        with_attachment_content: bool,
    ) -> Result<MailingRecord, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_mailing.sql")).await?;
        let row =
            client.query_opt(&select, &[&tenant.as_str(), &id.get()]).await?.ok_or(StoreError::MailingNotFound(id))?;
        let attachments_query = client.prepare_cached(include_str!("../sql/select_attachments.sql")).await?;
        let attachments = client
            .query(&attachments_query, &[&id.get()])
            .await?
            .iter()
            .map(|attachment| AttachmentData {
                filename: attachment.get(0),
                content_type: attachment.get(1),
                content_id: attachment.get(2),
                content: if with_attachment_content { attachment.get(3) } else { Vec::new() },
            })
            .collect();
        let tenant_id: String = row.get(1);
        Ok(MailingRecord {
            id: MailingId::new(row.get(0)),
            tenant: TenantId::new(tenant_id),
            content: MailingContent {
                name: row.get(2),
                from_email: row.get(3),
                from_name: row.get(4),
                reply_to_email: row.get(5),
                reply_to_name: row.get(6),
                subject_template: row.get(7),
                html_template: row.get(8),
                text_template: row.get(9),
                headers: headers_from_json(&row.get(10))?,
                tags: row.get(11),
                attachments,
            },
            state: parse_mailing_state(row.get(12))?,
            send_at: row.get(13),
            created_at: row.get(14),
            started_at: row.get(15),
            completed_at: row.get(16),
            max_per_hour: row.get(17),
        })
    }

    /// The tenant a mailing belongs to (for roles that work across tenants).
    pub async fn mailing_tenant(&self, id: MailingId) -> Result<TenantId, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_mailing_tenant.sql")).await?;
        let row = client.query_opt(&select, &[&id.get()]).await?.ok_or(StoreError::MailingNotFound(id))?;
        Ok(TenantId::new(row.get::<_, String>(0)))
    }

    /// Mailing ids of a tenant, newest first, below `before_id`.
    pub async fn list_mailing_ids(
        &self,
        tenant: &TenantId,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<MailingId>, StoreError> {
        let client = self.client().await?;
        let list = client.prepare_cached(include_str!("../sql/list_mailings.sql")).await?;
        let rows = client.query(&list, &[&tenant.as_str(), &before_id, &limit]).await?;
        Ok(rows.iter().map(|row| MailingId::new(row.get(0))).collect())
    }

    /// Per-state recipient counts, from the counters the statements keep (rows in flight as `sending`).
    #[instrument(skip_all, fields(mailing_id = %id))]
    pub async fn mailing_counts(&self, id: MailingId) -> Result<StateCounts, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_mailing_counts.sql")).await?;
        let mut counts = BTreeMap::new();
        for row in client.query(&select, &[&id.get()]).await? {
            let state: RecipientState = row
                .get::<_, &str>(0)
                .parse()
                .map_err(|error: sendwerk_core::StateParseError| StoreError::Corrupt(error.to_string()))?;
            counts.insert(state, row.get(1));
        }
        Ok(StateCounts(counts))
    }

    /// Applies a state change, checking under a row lock that it applies. Cancelling also ends
    /// every recipient still waiting as `cancelled`, in the same transaction.
    #[instrument(skip_all, fields(mailing_id = %id, action = action.name()))]
    pub async fn change_mailing_state(
        &self,
        tenant: &TenantId,
        id: MailingId,
        action: MailingAction,
    ) -> Result<MailingState, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let lock = transaction.prepare_cached(include_str!("../sql/select_mailing_for_update.sql")).await?;
        let row = transaction
            .query_opt(&lock, &[&tenant.as_str(), &id.get()])
            .await?
            .ok_or(StoreError::MailingNotFound(id))?;
        let current = parse_mailing_state(row.get(0))?;
        let target = action.target_state(current).ok_or(StoreError::WrongMailingState {
            id,
            state: current,
            action: action.name(),
        })?;
        let (send_at, max_per_hour) = match action {
            MailingAction::Schedule { send_at, max_per_hour } => (Some(send_at), max_per_hour),
            _ => (None, None),
        };
        let update = transaction.prepare_cached(include_str!("../sql/set_mailing_state.sql")).await?;
        transaction.execute(&update, &[&tenant.as_str(), &id.get(), &target.as_str(), &send_at, &max_per_hour]).await?;
        if target == MailingState::Cancelled {
            let cancel = transaction.prepare_cached(include_str!("../sql/cancel_waiting_recipients.sql")).await?;
            transaction.execute(&cancel, &[&id.get()]).await?;
        }
        transaction.commit().await?;
        Ok(target)
    }
}

async fn insert_attachments(
    transaction: &deadpool_postgres::Transaction<'_>,
    id: MailingId,
    attachments: &[AttachmentData],
) -> Result<(), StoreError> {
    let insert = transaction.prepare_cached(include_str!("../sql/insert_attachment.sql")).await?;
    for (position, attachment) in attachments.iter().enumerate() {
        let position = i32::try_from(position).map_err(|_| StoreError::Corrupt("too many attachments".into()))?;
        transaction
            .execute(
                &insert,
                &[
                    &id.get(),
                    &position,
                    &attachment.filename,
                    &attachment.content_type,
                    &attachment.content_id,
                    &attachment.content,
                ],
            )
            .await?;
    }
    Ok(())
}
