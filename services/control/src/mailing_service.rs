use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use futures::{Stream, StreamExt};
use sendwerk_core::{EmailAddress, MailingId, RecipientId};
use sendwerk_proto::v1::{self, mailing_service_server::MailingService};
use sendwerk_sender::PreparedMailing;
use sendwerk_store::{
    IngestSummary, MailingAction, NewRecipient, RecipientLookup, RecipientVariables, Rejection, StoreError,
};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, instrument};

use crate::ControlError;
use crate::convert::{self, parse_timestamp, struct_to_json};
use crate::server::ControlState;
use crate::validate;

/// Rows per `COPY` chunk during `AddRecipients`: large enough for throughput, small enough
/// that memory stays flat and a broken stream loses at most one uncommitted chunk.
const INGEST_CHUNK_ROWS: usize = 5_000;
/// Chunks written at once, each in its own transaction on its own connection. Two keep Postgres
/// busy while the next chunk is read and validated.
const INGEST_CHUNKS_IN_FLIGHT: usize = 2;
const MAX_REJECTED_ROWS_LISTED: usize = 10_000;
const MAX_EXTERNAL_ID_CHARS: usize = 256;
const MAX_VARIABLES_BYTES: usize = 64 * 1024;
/// How many recipients lacking a variable are named in a `Schedule` error.
const MAX_NAMED_RECIPIENTS: usize = 10;
const CSV_CHUNK_BYTES: usize = 64 * 1024;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn mailing_id(raw: i64) -> Result<MailingId, ControlError> {
    if raw <= 0 {
        return Err(ControlError::invalid("mailing_id", "is required (a positive id)"));
    }
    Ok(MailingId::new(raw))
}

impl ControlState {
    async fn mailing_response(&self, id: MailingId) -> Result<v1::Mailing, ControlError> {
        let record = self.store.get_mailing(&self.tenant, id, false).await?;
        let counts = self.store.mailing_counts(id).await?;
        Ok(convert::mailing_to_proto(&record, &counts))
    }

    async fn prepared_mailing(&self, id: MailingId) -> Result<Arc<PreparedMailing>, ControlError> {
        let record = self.store.get_mailing(&self.tenant, id, true).await?;
        PreparedMailing::prepare(&record, self.config.max_message_bytes).map_err(validate::prepare_error)
    }

    async fn change_state(&self, raw_id: i64, action: MailingAction) -> Result<v1::Mailing, ControlError> {
        let id = mailing_id(raw_id)?;
        let state = self.store.change_mailing_state(&self.tenant, id, action).await?;
        info!(mailing_id = %id, state = %state, "mailing state changed");
        self.mailing_response(id).await
    }

    /// Checks every queued recipient against the templates: a recipient lacking a variable the
    /// templates need (and whose rendering therefore fails) is named in the error.
    async fn check_recipients_render(&self, id: MailingId, prepared: &PreparedMailing) -> Result<(), ControlError> {
        let builtins = ["email", "external_id"];
        let required: Vec<String> =
            prepared.templates().variables().into_iter().filter(|name| !builtins.contains(&name.as_str())).collect();
        if required.is_empty() {
            return Ok(());
        }
        let mut failures: Vec<(String, String)> = Vec::new();
        let mut num_failures = 0usize;
        let mut after_id = 0i64;
        loop {
            let page = self.store.recipients_lacking_variables(id, &required, after_id, 1_000).await?;
            let Some(last) = page.last() else { break };
            after_id = last.id.get();
            for candidate in &page {
                if let Err(error) = render_for(prepared, candidate) {
                    num_failures += 1;
                    if failures.len() < MAX_NAMED_RECIPIENTS {
                        failures.push((candidate.email.clone(), error));
                    }
                }
            }
        }
        if num_failures == 0 {
            return Ok(());
        }
        let named = failures.iter().map(|(email, error)| format!("{email} ({error})")).collect::<Vec<_>>().join("; ");
        Err(ControlError::invalid(
            "recipients",
            format!("{num_failures} recipient(s) lack merge variables the templates use: {named}"),
        ))
    }

    async fn preview_variables(
        &self,
        id: MailingId,
        subject: Option<v1::preview_request::Subject>,
    ) -> Result<(EmailAddress, String, RecipientVariables), ControlError> {
        let lookup = match subject {
            Some(v1::preview_request::Subject::RecipientId(recipient_id)) => self
                .store
                .find_recipient_by_id(id, RecipientId::new(recipient_id))
                .await?
                .ok_or_else(|| ControlError::NotFound(format!("recipient {recipient_id} of mailing {id}")))?,
            Some(v1::preview_request::Subject::Email(email)) => {
                self.store
                    .find_recipient_by_email(id, &email)
                    .await?
                    .ok_or_else(|| ControlError::NotFound(format!("recipient {email} of mailing {id}")))?
            }
            Some(v1::preview_request::Subject::Variables(variables)) => {
                let variables = struct_to_json(variables);
                let email =
                    variables.get("email").and_then(|value| value.as_str()).unwrap_or("preview@example.com").to_owned();
                let address = EmailAddress::parse(&email)
                    .map_err(|error| ControlError::invalid("variables.email", error.to_string()))?;
                let external_id = variables.get("external_id").and_then(|v| v.as_str()).unwrap_or("").to_owned();
                return Ok((address, external_id, variables));
            }
            None => self.store.first_queued_recipient(id).await?.ok_or_else(|| {
                ControlError::FailedPrecondition(format!(
                    "mailing {id} has no queued recipient to preview; give variables"
                ))
            })?,
        };
        let address = EmailAddress::parse(&lookup.email)
            .map_err(|error| ControlError::Internal(format!("stored address invalid: {error}")))?;
        Ok((address, lookup.external_id, lookup.variables))
    }
}

fn render_for(prepared: &PreparedMailing, recipient: &RecipientLookup) -> Result<(), String> {
    let address = EmailAddress::parse(&recipient.email).map_err(|error| error.to_string())?;
    let merged = sendwerk_sender::merge_builtin_variables(&recipient.variables, &address, &recipient.external_id);
    prepared.templates().render(&merged).map(|_| ()).map_err(|error| error.to_string())
}

fn validate_row(index: i64, row: v1::RecipientRow) -> Result<NewRecipient, (String, String)> {
    let email = EmailAddress::parse(&row.email).map_err(|error| (row.email.clone(), format!("email: {error}")))?;
    if row.external_id.chars().count() > MAX_EXTERNAL_ID_CHARS {
        return Err((row.email, format!("external_id: longer than {MAX_EXTERNAL_ID_CHARS} characters")));
    }
    if row.external_id.contains('\0') {
        return Err((row.email, "external_id: must not contain NUL characters".into()));
    }
    let variables = row.variables.map(struct_to_json).unwrap_or_default();
    if let Some(name) = variables.iter().find_map(|(name, value)| holds_nul(name, value).then_some(name)) {
        return Err((row.email, format!("variables.{name}: must not contain NUL characters")));
    }
    let recipient = NewRecipient::new(index, email, row.external_id, &variables);
    let size = recipient.variables_len();
    if size > MAX_VARIABLES_BYTES {
        return Err((row.email, format!("variables: {size} bytes, more than {MAX_VARIABLES_BYTES}")));
    }
    Ok(recipient)
}

/// Whether a variable's name or anything in its value contains NUL, which Postgres cannot store.
fn holds_nul(name: &str, value: &serde_json::Value) -> bool {
    name.contains('\0')
        || match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(|item| holds_nul("", item)),
            serde_json::Value::Object(fields) => fields.iter().any(|(key, item)| holds_nul(key, item)),
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => false,
        }
}

struct IngestTotals {
    response: v1::AddRecipientsResponse,
}

impl IngestTotals {
    fn reject(&mut self, index: i64, email: String, kind: v1::RejectionKind, reason: String) {
        if self.response.rejected.len() < MAX_REJECTED_ROWS_LISTED {
            self.response.rejected.push(v1::RejectedRow { index, email, kind: kind as i32, reason });
        } else {
            self.response.rejected_truncated = true;
        }
    }
}

#[tonic::async_trait]
impl MailingService for ControlState {
    #[instrument(skip_all)]
    async fn create_mailing(
        &self,
        request: Request<v1::CreateMailingRequest>,
    ) -> Result<Response<v1::Mailing>, Status> {
        self.authorize(&request)?;
        let (content, _) = validate::mailing_content(request.into_inner().content, self.config.max_message_bytes)?;
        let id = self.store.create_mailing(&self.tenant, &content).await.map_err(ControlError::from)?;
        info!(mailing_id = %id, "mailing created");
        Ok(Response::new(self.mailing_response(id).await?))
    }

    #[instrument(skip_all)]
    async fn update_mailing(
        &self,
        request: Request<v1::UpdateMailingRequest>,
    ) -> Result<Response<v1::Mailing>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let id = mailing_id(request.mailing_id)?;
        let (content, _) = validate::mailing_content(request.content, self.config.max_message_bytes)?;
        self.store.update_mailing_content(&self.tenant, id, &content).await.map_err(ControlError::from)?;
        Ok(Response::new(self.mailing_response(id).await?))
    }

    #[instrument(skip_all)]
    async fn add_recipients(
        &self,
        request: Request<Streaming<v1::AddRecipientsRequest>>,
    ) -> Result<Response<v1::AddRecipientsResponse>, Status> {
        self.authorize(&request)?;
        let mut stream = request.into_inner();
        let mut totals = IngestTotals { response: v1::AddRecipientsResponse::default() };
        let mut target: Option<MailingId> = None;
        let mut chunk: Vec<NewRecipient> = Vec::with_capacity(INGEST_CHUNK_ROWS);
        let mut in_flight = VecDeque::with_capacity(INGEST_CHUNKS_IN_FLIGHT);
        let mut next_index = 0i64;
        while let Some(message) = stream.message().await? {
            let id = match target {
                Some(id) => {
                    if message.mailing_id != 0 && message.mailing_id != id.get() {
                        return Err(ControlError::invalid(
                            "mailing_id",
                            "must be the same in every message of the stream",
                        )
                        .into());
                    }
                    id
                }
                None => {
                    let id = mailing_id(message.mailing_id)?;
                    let state = self.store.mailing_state(&self.tenant, id).await.map_err(ControlError::from)?;
                    if state.is_final() {
                        return Err(ControlError::FailedPrecondition(format!(
                            "mailing {id} is {state}; recipients cannot be added"
                        ))
                        .into());
                    }
                    target = Some(id);
                    id
                }
            };
            for row in message.rows {
                let index = next_index;
                next_index += 1;
                match validate_row(index, row) {
                    Ok(recipient) => chunk.push(recipient),
                    Err((email, reason)) => {
                        totals.response.invalid += 1;
                        totals.reject(index, email, v1::RejectionKind::Invalid, reason);
                    }
                }
                if chunk.len() >= INGEST_CHUNK_ROWS {
                    self.flush_chunk(id, &mut chunk, &mut in_flight, &mut totals).await?;
                }
            }
        }
        if let Some(id) = target {
            self.flush_chunk(id, &mut chunk, &mut in_flight, &mut totals).await?;
            while !in_flight.is_empty() {
                self.finish_oldest_chunk(&mut in_flight, &mut totals).await?;
            }
        }
        let mut response = totals.response;
        response.rejected.sort_by_key(|row| row.index);
        info!(
            accepted = response.accepted,
            invalid = response.invalid,
            duplicates = response.duplicates,
            suppressed = response.suppressed,
            "recipients added"
        );
        Ok(Response::new(response))
    }

    #[instrument(skip_all)]
    async fn preview(&self, request: Request<v1::PreviewRequest>) -> Result<Response<v1::PreviewResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let id = mailing_id(request.mailing_id)?;
        let prepared = self.prepared_mailing(id).await?;
        let (address, external_id, variables) = self.preview_variables(id, request.subject).await?;
        let merged = sendwerk_sender::merge_builtin_variables(&variables, &address, &external_id);
        let content = prepared
            .templates()
            .render(&merged)
            .map_err(|error| ControlError::invalid(format!("content.{}", error.field.as_str()), error.to_string()))?;
        let built = prepared
            .build(&address, &external_id, &variables, "preview", false)
            .map_err(|error| ControlError::invalid("content", error.to_string()))?;
        Ok(Response::new(v1::PreviewResponse {
            subject: content.subject,
            html: content.html.unwrap_or_default(),
            text: content.text.unwrap_or_default(),
            raw: built.bytes,
        }))
    }

    #[instrument(skip_all)]
    async fn send_test(&self, request: Request<v1::SendTestRequest>) -> Result<Response<v1::SendTestResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let id = mailing_id(request.mailing_id)?;
        if request.to.is_empty() || request.to.len() > 20 {
            return Err(ControlError::invalid("to", "give between 1 and 20 test addresses").into());
        }
        let recipients = request
            .to
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                EmailAddress::parse(raw)
                    .map_err(|error| ControlError::invalid(format!("to[{index}]"), error.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let prepared = self.prepared_mailing(id).await?;
        let (variables, external_id) = match request.variables {
            Some(variables) if !variables.fields.is_empty() => (struct_to_json(variables), String::new()),
            _ => match self.store.first_queued_recipient(id).await.map_err(ControlError::from)? {
                Some(lookup) => (lookup.variables, lookup.external_id),
                None => (RecipientVariables::new(), String::new()),
            },
        };
        let mut deliveries = Vec::with_capacity(recipients.len());
        for to in &recipients {
            let built = prepared
                .build(to, &external_id, &variables, &format!("{id}.test"), true)
                .map_err(|error| ControlError::invalid("variables", error.to_string()))?;
            let outcome = self.send_now(&prepared, to, built.bytes).await?;
            info!(mailing_id = %id, accepted = outcome.accepted, "test mail sent");
            deliveries.push(v1::TestDelivery { email: to.to_string(), ..outcome });
        }
        Ok(Response::new(v1::SendTestResponse { deliveries }))
    }

    #[instrument(skip_all)]
    async fn schedule(&self, request: Request<v1::ScheduleRequest>) -> Result<Response<v1::Mailing>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let id = mailing_id(request.mailing_id)?;
        let send_at = match &request.send_at {
            Some(timestamp) => parse_timestamp("send_at", timestamp)?.max(Utc::now()),
            None => Utc::now(),
        };
        let max_per_hour = match request.max_per_hour {
            0 => None,
            pace if pace > 0 => Some(pace),
            negative => {
                return Err(ControlError::invalid(
                    "max_per_hour",
                    format!("{negative} is negative; use 0 for no pace"),
                )
                .into());
            }
        };
        let state = self.store.mailing_state(&self.tenant, id).await.map_err(ControlError::from)?;
        if !state.can_schedule() {
            return Err(
                ControlError::FailedPrecondition(format!("mailing {id} is {state}; schedule does not apply")).into()
            );
        }
        let prepared = self.prepared_mailing(id).await?;
        self.check_recipients_render(id, &prepared).await?;
        Ok(Response::new(self.change_state(id.get(), MailingAction::Schedule { send_at, max_per_hour }).await?))
    }

    async fn pause(&self, request: Request<v1::MailingRef>) -> Result<Response<v1::Mailing>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(self.change_state(request.into_inner().mailing_id, MailingAction::Pause).await?))
    }

    async fn resume(&self, request: Request<v1::MailingRef>) -> Result<Response<v1::Mailing>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(self.change_state(request.into_inner().mailing_id, MailingAction::Resume).await?))
    }

    async fn cancel(&self, request: Request<v1::MailingRef>) -> Result<Response<v1::Mailing>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(self.change_state(request.into_inner().mailing_id, MailingAction::Cancel).await?))
    }

    async fn get_mailing(&self, request: Request<v1::MailingRef>) -> Result<Response<v1::Mailing>, Status> {
        self.authorize(&request)?;
        let id = mailing_id(request.into_inner().mailing_id)?;
        Ok(Response::new(self.mailing_response(id).await?))
    }

    async fn list_mailings(
        &self,
        request: Request<v1::ListMailingsRequest>,
    ) -> Result<Response<v1::ListMailingsResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let page_size = page_size(request.page_size, 50, 500);
        let before = page_token(&request.page_token)?.unwrap_or(i64::MAX);
        let ids = self.store.list_mailing_ids(&self.tenant, before, page_size).await.map_err(ControlError::from)?;
        let mut mailings = Vec::with_capacity(ids.len());
        for id in &ids {
            mailings.push(self.mailing_response(*id).await?);
        }
        let next_page_token = if ids.len() as i64 == page_size {
            ids.last().map(|id| id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListMailingsResponse { mailings, next_page_token }))
    }

    type WatchMailingStream = ResponseStream<v1::Mailing>;

    async fn watch_mailing(
        &self,
        request: Request<v1::MailingRef>,
    ) -> Result<Response<Self::WatchMailingStream>, Status> {
        self.authorize(&request)?;
        let id = mailing_id(request.into_inner().mailing_id)?;
        let first = self.mailing_response(id).await?;
        let state = self.clone();
        let interval = self.config.watch_interval;
        let stream = async_stream::try_stream! {
            let mut last = first.clone();
            yield first;
            while !is_final(&last) {
                tokio::time::sleep(interval).await;
                let current = state.mailing_response(id).await.map_err(Status::from)?;
                if current != last {
                    last = current.clone();
                    yield current;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_recipients(
        &self,
        request: Request<v1::ListRecipientsRequest>,
    ) -> Result<Response<v1::ListRecipientsResponse>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let id = mailing_id(request.mailing_id)?;
        self.store.mailing_state(&self.tenant, id).await.map_err(ControlError::from)?;
        let state = convert::recipient_state_filter(request.state)?;
        let page_size = page_size(request.page_size, 100, 1000);
        let after = page_token(&request.page_token)?.unwrap_or(0);
        let records = self.store.list_recipients(id, state, after, page_size).await.map_err(ControlError::from)?;
        let next_page_token = if records.len() as i64 == page_size {
            records.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let recipients = records.into_iter().map(convert::recipient_to_proto).collect();
        Ok(Response::new(v1::ListRecipientsResponse { recipients, next_page_token }))
    }

    type ExportRecipientsStream = ResponseStream<v1::CsvChunk>;

    async fn export_recipients(
        &self,
        request: Request<v1::ExportRecipientsRequest>,
    ) -> Result<Response<Self::ExportRecipientsStream>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let id = mailing_id(request.mailing_id)?;
        self.store.mailing_state(&self.tenant, id).await.map_err(ControlError::from)?;
        let state = convert::recipient_state_filter(request.state)?;
        let rows = self.store.export_recipients(id, state);
        let stream = async_stream::try_stream! {
            let mut writer = csv::Writer::from_writer(Vec::with_capacity(CSV_CHUNK_BYTES * 2));
            writer
                .write_record(["address", "external_id", "state", "attempts", "last_smtp_code", "last_enhanced_status", "last_smtp_reply", "reason", "updated_at"])
                .map_err(|error| Status::internal(error.to_string()))?;
            futures::pin_mut!(rows);
            while let Some(row) = rows.next().await {
                let row = row.map_err(|error| Status::from(ControlError::from(error)))?;
                writer
                    .write_record([
                        row.email.as_str(),
                        row.external_id.as_str(),
                        row.state.as_str(),
                        &row.attempts.to_string(),
                        &row.last_code.map(|code| code.to_string()).unwrap_or_default(),
                        row.last_enhanced.as_deref().unwrap_or(""),
                        row.last_reply.as_deref().unwrap_or(""),
                        row.reason.as_deref().unwrap_or(""),
                        &row.updated_at.to_rfc3339(),
                    ])
                    .map_err(|error| Status::internal(error.to_string()))?;
                if writer.get_ref().len() >= CSV_CHUNK_BYTES {
                    let full = std::mem::replace(&mut writer, csv::Writer::from_writer(Vec::with_capacity(CSV_CHUNK_BYTES * 2)));
                    let data = full.into_inner().map_err(|error| Status::internal(error.to_string()))?;
                    yield v1::CsvChunk { data };
                }
            }
            let data = writer.into_inner().map_err(|error| Status::internal(error.to_string()))?;
            if !data.is_empty() {
                yield v1::CsvChunk { data };
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

impl ControlState {
    /// Writes the gathered chunk in a task of its own, so the next chunk is read and validated
    /// while up to [`INGEST_CHUNKS_IN_FLIGHT`] chunks are copied into Postgres at once. Chunks in
    /// flight together hold no address in common: a row whose address is in an earlier chunk
    /// still in flight is a duplicate here, so the earlier row always wins (as it does against
    /// committed chunks) and concurrent chunks never wait on each other's rows.
    async fn flush_chunk(
        &self,
        id: MailingId,
        chunk: &mut Vec<NewRecipient>,
        in_flight: &mut VecDeque<ChunkInFlight>,
        totals: &mut IngestTotals,
    ) -> Result<(), ControlError> {
        while in_flight.len() >= INGEST_CHUNKS_IN_FLIGHT {
            self.finish_oldest_chunk(in_flight, totals).await?;
        }
        if chunk.is_empty() {
            return Ok(());
        }
        let mut rows = std::mem::replace(chunk, Vec::with_capacity(INGEST_CHUNK_ROWS));
        let mut keys = HashSet::with_capacity(rows.len());
        rows.retain(|row| {
            let key = row.key();
            if in_flight.iter().any(|earlier| earlier.keys.contains(key)) {
                totals.response.duplicates += 1;
                totals.reject(row.index, row.email.to_string(), v1::RejectionKind::Duplicate, DUPLICATE_REASON.into());
                return false;
            }
            keys.insert(key.to_owned());
            true
        });
        let (store, tenant) = (self.store.clone(), self.tenant.clone());
        let task = tokio::spawn(async move { store.add_recipients(&tenant, id, &rows).await });
        in_flight.push_back(ChunkInFlight { task, keys });
        Ok(())
    }

    async fn finish_oldest_chunk(
        &self,
        in_flight: &mut VecDeque<ChunkInFlight>,
        totals: &mut IngestTotals,
    ) -> Result<(), ControlError> {
        let Some(chunk) = in_flight.pop_front() else { return Ok(()) };
        let summary =
            chunk.task.await.map_err(|error| ControlError::Internal(format!("ingest task failed: {error}")))??;
        totals.response.accepted += summary.accepted;
        totals.response.duplicates += summary.duplicates;
        totals.response.suppressed += summary.suppressed;
        for rejected in summary.rejected {
            let (kind, reason) = match rejected.rejection {
                Rejection::Duplicate => (v1::RejectionKind::Duplicate, DUPLICATE_REASON.to_owned()),
                Rejection::Suppressed(reason) => (v1::RejectionKind::Suppressed, reason),
            };
            totals.reject(rejected.index, rejected.email, kind, reason);
        }
        Ok(())
    }
}

const DUPLICATE_REASON: &str = "address is already a recipient of this mailing";

/// A chunk of `AddRecipients` being written, and the addresses (lowercased) it holds.
struct ChunkInFlight {
    task: tokio::task::JoinHandle<Result<IngestSummary, StoreError>>,
    keys: HashSet<String>,
}

fn is_final(mailing: &v1::Mailing) -> bool {
    matches!(v1::MailingState::try_from(mailing.state), Ok(v1::MailingState::Completed | v1::MailingState::Cancelled))
}

fn page_size(requested: i32, default: i64, max: i64) -> i64 {
    if requested <= 0 { default } else { i64::from(requested).min(max) }
}

fn page_token(raw: &str) -> Result<Option<i64>, ControlError> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|_| ControlError::invalid("page_token", "is not a token this service gave out"))
}
