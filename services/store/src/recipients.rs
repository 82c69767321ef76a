use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt};
use sendwerk_core::{EmailAddress, MailingId, MailingState, RecipientId, RecipientState, ShardId, TenantId};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tracing::instrument;

use crate::mailings::parse_mailing_state;
use crate::{Store, StoreError};

pub type RecipientVariables = serde_json::Map<String, serde_json::Value>;

/// A validated recipient row on its way into a mailing.
#[derive(Debug, Clone)]
pub struct NewRecipient {
    /// Position in the caller's whole stream, for reporting.
    pub index: i64,
    pub email: EmailAddress,
    pub external_id: String,
    /// The address lowercased: two rows with the same key are the same recipient.
    key: String,
    /// The merge variables as the JSON object they are stored as, serialized once.
    variables: Box<serde_json::value::RawValue>,
}

impl NewRecipient {
    pub fn new(index: i64, email: EmailAddress, external_id: String, variables: &RecipientVariables) -> Self {
        let key = email.as_str().to_lowercase();
        let variables = serde_json::value::to_raw_value(variables).expect("a JSON map serializes");
        Self { index, email, external_id, key, variables }
    }

    /// The address lowercased, as the mailing's unique index compares addresses.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes of the merge variables as stored.
    pub fn variables_len(&self) -> usize {
        self.variables.get().len()
    }
}

/// Why a row did not become a queued recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Duplicate,
    Suppressed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecipient {
    pub index: i64,
    pub email: String,
    pub rejection: Rejection,
}

/// The result of adding one chunk of rows.
#[derive(Debug, Clone, Default)]
pub struct IngestSummary {
    pub accepted: i64,
    pub duplicates: i64,
    pub suppressed: i64,
    pub rejected: Vec<RejectedRecipient>,
}

/// One recipient as the API lists it.
#[derive(Debug, Clone)]
pub struct RecipientRecord {
    pub id: RecipientId,
    pub email: String,
    pub external_id: String,
    pub state: RecipientState,
    pub attempts: i32,
    pub last_code: Option<i32>,
    pub last_enhanced: Option<String>,
    pub last_reply: Option<String>,
    pub reason: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub variables: RecipientVariables,
}

/// One line of the CSV export.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub email: String,
    pub external_id: String,
    pub state: String,
    pub attempts: i32,
    pub last_code: Option<i32>,
    pub last_enhanced: Option<String>,
    pub last_reply: Option<String>,
    pub reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A recipient's identity and merge variables, for previews and checks.
#[derive(Debug, Clone)]
pub struct RecipientLookup {
    pub id: RecipientId,
    pub email: String,
    pub external_id: String,
    pub variables: RecipientVariables,
}

fn parse_recipient_state(raw: &str) -> Result<RecipientState, StoreError> {
    raw.parse().map_err(|error: sendwerk_core::StateParseError| StoreError::Corrupt(error.to_string()))
}

fn variables_from_json(value: serde_json::Value) -> RecipientVariables {
    match value {
        serde_json::Value::Object(map) => map,
        _ => RecipientVariables::new(),
    }
}

fn lookup_from_row(row: &tokio_postgres::Row) -> RecipientLookup {
    RecipientLookup {
        id: RecipientId::new(row.get(0)),
        email: row.get(1),
        external_id: row.get(2),
        variables: variables_from_json(row.get(3)),
    }
}

impl Store {
    /// Adds one chunk of validated rows to a mailing in one transaction: `COPY` into a staging
    /// table, then one `INSERT … SELECT` that skips addresses already in the mailing and marks
    /// suppressed ones. Holds a share lock on the mailing row so the mailing cannot be completed
    /// or cancelled half-way through a chunk.
    ///
    /// The insert is a plain one behind an anti-join. If another transaction adds one of the
    /// chunk's addresses at the same moment, it fails with a unique violation, nothing of the
    /// chunk is kept, and the chunk runs once more through the conflict-tolerant statement.
    #[instrument(skip_all, fields(mailing_id = %mailing_id, num_rows = rows.len()))]
    pub async fn add_recipients(
        &self,
        tenant: &TenantId,
        mailing_id: MailingId,
        rows: &[NewRecipient],
    ) -> Result<IngestSummary, StoreError> {
        let mut summary = IngestSummary::default();
        let mut unique_rows: Vec<&NewRecipient> = Vec::with_capacity(rows.len());
        let mut keys: HashSet<&str> = HashSet::with_capacity(rows.len());
        for row in rows {
            if keys.insert(row.key()) {
                unique_rows.push(row);
            } else {
                summary.duplicates += 1;
                summary.rejected.push(duplicate(row));
            }
        }
        drop(keys);

        let placed = match self.insert_chunk(tenant, mailing_id, &unique_rows, ChunkInsert::Plain).await {
            Err(StoreError::Postgres(error)) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                self.insert_chunk(tenant, mailing_id, &unique_rows, ChunkInsert::Tolerant).await?
            }
            placed => placed?,
        };

        let mut was_inserted = vec![false; unique_rows.len()];
        let mut mark = |position: i32| {
            let slot = usize::try_from(position).ok().filter(|&slot| slot < was_inserted.len());
            match slot {
                Some(slot) if !was_inserted[slot] => {
                    was_inserted[slot] = true;
                    Ok(slot)
                }
                _ => {
                    Err(StoreError::Corrupt(format!("ingest returned stage position {position} twice or out of range")))
                }
            }
        };
        for &position in &placed.queued {
            mark(position)?;
            summary.accepted += 1;
        }
        for &position in &placed.suppressed {
            let row = unique_rows[mark(position)?];
            summary.suppressed += 1;
            summary.rejected.push(RejectedRecipient {
                index: row.index,
                email: row.email.to_string(),
                rejection: Rejection::Suppressed("address is on the suppression list".into()),
            });
        }
        for (row, inserted) in unique_rows.iter().zip(&was_inserted) {
            if !inserted {
                summary.duplicates += 1;
                summary.rejected.push(duplicate(row));
            }
        }
        summary.rejected.sort_by_key(|rejected| rejected.index);
        Ok(summary)
    }

    /// One transaction of [`Store::add_recipients`]: stage the rows with `COPY`, each with its
    /// position in `rows`, and insert them with the statement `how` names.
    async fn insert_chunk(
        &self,
        tenant: &TenantId,
        mailing_id: MailingId,
        rows: &[&NewRecipient],
        how: ChunkInsert,
    ) -> Result<PlacedRows, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let lock = transaction.prepare_cached(include_str!("../sql/select_mailing_for_share.sql")).await?;
        let mailing = transaction
            .query_opt(&lock, &[&tenant.as_str(), &mailing_id.get()])
            .await?
            .ok_or(StoreError::MailingNotFound(mailing_id))?;
        let state = parse_mailing_state(mailing.get(0))?;
        if state.is_final() {
            return Err(StoreError::WrongMailingState { id: mailing_id, state, action: "adding recipients" });
        }
        transaction.batch_execute(include_str!("../sql/create_recipient_stage.sql")).await?;
        let copy = transaction.prepare_cached(include_str!("../sql/copy_recipient_stage.sql")).await?;
        let sink = transaction.copy_in(&copy).await?;
        let writer =
            BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT, Type::TEXT, Type::INT2, Type::TEXT, Type::JSONB]);
        futures::pin_mut!(writer);
        for (position, row) in rows.iter().enumerate() {
            let position = i32::try_from(position).map_err(|_| StoreError::Corrupt("chunk too large".into()))?;
            let shard = i16::try_from(ShardId::for_domain(row.email.domain()).get())
                .map_err(|_| StoreError::Corrupt("shard out of range".into()))?;
            writer
                .as_mut()
                .write(&[
                    &position,
                    &row.email.as_str(),
                    &row.email.domain().as_str(),
                    &shard,
                    &row.external_id,
                    &postgres_types::Json(&*row.variables),
                ])
                .await?;
        }
        writer.finish().await?;
        let sql = match how {
            ChunkInsert::Plain => include_str!("../sql/insert_staged_recipients.sql"),
            ChunkInsert::Tolerant => include_str!("../sql/insert_staged_recipients_tolerant.sql"),
        };
        let insert = transaction.prepare_cached(sql).await?;
        let placed = transaction.query_one(&insert, &[&mailing_id.get(), &tenant.as_str()]).await?;
        transaction.commit().await?;
        Ok(PlacedRows { queued: placed.get(0), suppressed: placed.get(1) })
    }

    /// A page of recipients after `after_id`, optionally only those in `state`.
    pub async fn list_recipients(
        &self,
        mailing_id: MailingId,
        state: Option<RecipientState>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<RecipientRecord>, StoreError> {
        let client = self.client().await?;
        let list = client.prepare_cached(include_str!("../sql/list_recipients.sql")).await?;
        let state_name = state.map(RecipientState::as_str);
        let rows = client.query(&list, &[&mailing_id.get(), &after_id, &state_name, &limit]).await?;
        rows.iter()
            .map(|row| {
                Ok(RecipientRecord {
                    id: RecipientId::new(row.get(0)),
                    email: row.get(1),
                    external_id: row.get(2),
                    state: parse_recipient_state(row.get(3))?,
                    attempts: row.get(4),
                    last_code: row.get(5),
                    last_enhanced: row.get(6),
                    last_reply: row.get(7),
                    reason: row.get(8),
                    next_attempt_at: row.get(9),
                    updated_at: row.get(10),
                    variables: variables_from_json(row.get(11)),
                })
            })
            .collect()
    }

    /// Streams every recipient of a mailing (optionally one state) in insertion order, without
    /// holding them in memory.
    pub fn export_recipients(
        &self,
        mailing_id: MailingId,
        state: Option<RecipientState>,
    ) -> impl Stream<Item = Result<ExportRow, StoreError>> + Send + 'static {
        let store = self.clone();
        async_stream::try_stream! {
            let client = store.client().await?;
            let export = client.prepare_cached(include_str!("../sql/export_recipients.sql")).await?;
            let state_name = state.map(RecipientState::as_str);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&mailing_id.get(), &state_name];
            let rows = client.query_raw(&export, params).await?;
            futures::pin_mut!(rows);
            while let Some(row) = rows.try_next().await? {
                yield ExportRow {
                    email: row.get(0),
                    external_id: row.get(1),
                    state: row.get(2),
                    attempts: row.get(3),
                    last_code: row.get(4),
                    last_enhanced: row.get(5),
                    last_reply: row.get(6),
                    reason: row.get(7),
                    updated_at: row.get(8),
                };
            }
        }
    }

    pub async fn find_recipient_by_id(
        &self,
        mailing_id: MailingId,
        id: RecipientId,
    ) -> Result<Option<RecipientLookup>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_recipient_by_id.sql")).await?;
        Ok(client.query_opt(&select, &[&mailing_id.get(), &id.get()]).await?.as_ref().map(lookup_from_row))
    }

    pub async fn find_recipient_by_email(
        &self,
        mailing_id: MailingId,
        email: &str,
    ) -> Result<Option<RecipientLookup>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_recipient_by_email.sql")).await?;
        Ok(client.query_opt(&select, &[&mailing_id.get(), &email]).await?.as_ref().map(lookup_from_row))
    }

    pub async fn first_queued_recipient(&self, mailing_id: MailingId) -> Result<Option<RecipientLookup>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_first_queued_recipient.sql")).await?;
        Ok(client.query_opt(&select, &[&mailing_id.get()]).await?.as_ref().map(lookup_from_row))
    }

    /// Queued recipients after `after_id` whose variables lack at least one of `variables`,
    /// a page at a time.
    pub async fn recipients_lacking_variables(
        &self,
        mailing_id: MailingId,
        variables: &[String],
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<RecipientLookup>, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_recipients_lacking_variables.sql")).await?;
        let rows = client.query(&select, &[&mailing_id.get(), &variables, &after_id, &limit]).await?;
        Ok(rows.iter().map(lookup_from_row).collect())
    }

    /// The mailing's state, for callers that check before streaming work (one small query).
    pub async fn mailing_state(&self, tenant: &TenantId, mailing_id: MailingId) -> Result<MailingState, StoreError> {
        let client = self.client().await?;
        let select = client.prepare_cached(include_str!("../sql/select_mailing_state.sql")).await?;
        let row = client
            .query_opt(&select, &[&tenant.as_str(), &mailing_id.get()])
            .await?
            .ok_or(StoreError::MailingNotFound(mailing_id))?;
        parse_mailing_state(row.get(0))
    }
}

/// Which statement inserts a staged chunk.
#[derive(Debug, Clone, Copy)]
enum ChunkInsert {
    /// Anti-join and plain insert: the fast path.
    Plain,
    /// `ON CONFLICT DO NOTHING`: after the plain insert met a concurrent insert of an address.
    Tolerant,
}

/// Stage positions of the rows a chunk inserted, by the state they entered.
struct PlacedRows {
    queued: Vec<i32>,
    suppressed: Vec<i32>,
}

fn duplicate(row: &NewRecipient) -> RejectedRecipient {
    RejectedRecipient { index: row.index, email: row.email.to_string(), rejection: Rejection::Duplicate }
}
