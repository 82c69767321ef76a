//! The operators' command-line client, as library functions so that `demo` and the tests use
//! exactly what the CLI does: create a mailing from template files, add recipients from a CSV
//! (merge fields = columns), schedule, watch with a progress bar, status and CSV export.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use prost_types::{Struct, Value, value::Kind};
use sendwerk_proto::v1;
use sendwerk_proto::v1::admin_service_client::AdminServiceClient;
use sendwerk_proto::v1::bounce_service_client::BounceServiceClient;
use sendwerk_proto::v1::mailing_service_client::MailingServiceClient;
use sendwerk_proto::v1::suppression_service_client::SuppressionServiceClient;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone)]
pub struct TokenInterceptor(Option<MetadataValue<Ascii>>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, TokenInterceptor>;

/// Clients of every service over one channel.
#[derive(Clone)]
pub struct Api {
    pub mailings: MailingServiceClient<Authed>,
    pub suppressions: SuppressionServiceClient<Authed>,
    pub admin: AdminServiceClient<Authed>,
    pub bounces: BounceServiceClient<Authed>,
}

impl Api {
    pub async fn connect(endpoint: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .with_context(|| format!("{endpoint:?} is not a valid server address (e.g. http://127.0.0.1:50051)"))?
            .connect()
            .await
            .with_context(|| format!("connecting to the sendwerk control plane at {endpoint}"))?;
        let token = token
            .map(|token| format!("Bearer {token}").parse::<MetadataValue<Ascii>>())
            .transpose()
            .context("the api token contains characters not allowed in a header")?;
        let interceptor = TokenInterceptor(token);
        let max = 64 * 1024 * 1024;
        Ok(Self {
            mailings: MailingServiceClient::with_interceptor(channel.clone(), interceptor.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            suppressions: SuppressionServiceClient::with_interceptor(channel.clone(), interceptor.clone()),
            admin: AdminServiceClient::with_interceptor(channel.clone(), interceptor.clone()),
            bounces: BounceServiceClient::with_interceptor(channel, interceptor).max_encoding_message_size(max),
        })
    }
}

/// What `create` needs: template files and the sender.
pub struct MailingFiles<'a> {
    pub name: &'a str,
    pub from_email: &'a str,
    pub from_name: &'a str,
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub html_file: Option<&'a Path>,
    pub text_file: Option<&'a Path>,
    pub attachments: &'a [std::path::PathBuf],
}

fn guess_content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|ext| ext.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("txt") => "text/plain",
        Some("ics") => "text/calendar",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        _ => "application/octet-stream",
    }
}

pub fn attachment_from_file(path: &Path, content_id: Option<&str>) -> anyhow::Result<v1::Attachment> {
    let content = std::fs::read(path).with_context(|| format!("reading attachment {}", path.display()))?;
    let filename = path.file_name().and_then(|n| n.to_str()).unwrap_or("attachment").to_owned();
    Ok(v1::Attachment {
        filename,
        content_type: guess_content_type(path).to_owned(),
        content,
        content_id: content_id.unwrap_or_default().to_owned(),
    })
}

pub fn mailing_content(files: &MailingFiles<'_>) -> anyhow::Result<v1::MailingContent> {
    let read = |path: Option<&Path>| -> anyhow::Result<String> {
        match path {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading template {}", path.display())),
            None => Ok(String::new()),
        }
    };
    Ok(v1::MailingContent {
        name: files.name.to_owned(),
        from: Some(v1::Address { email: files.from_email.to_owned(), name: files.from_name.to_owned() }),
        reply_to: files.reply_to.map(|email| v1::Address { email: email.to_owned(), name: String::new() }),
        subject_template: files.subject.to_owned(),
        html_template: read(files.html_file)?,
        text_template: read(files.text_file)?,
        headers: Vec::new(),
        attachments: files
            .attachments
            .iter()
            .map(|path| attachment_from_file(path, None))
            .collect::<anyhow::Result<_>>()?,
        tags: Vec::new(),
    })
}

fn string_value(text: &str) -> Value {
    Value { kind: Some(Kind::StringValue(text.to_owned())) }
}

/// Rows of a recipients CSV: a header row naming the columns; `email` (or `address`) is the
/// address, `external_id` the caller's contact id, every other column a merge variable.
pub fn csv_rows<R: std::io::Read>(reader: R) -> anyhow::Result<impl Iterator<Item = anyhow::Result<v1::RecipientRow>>> {
    let mut csv_reader = csv::ReaderBuilder::new().flexible(false).trim(csv::Trim::All).from_reader(reader);
    let headers = csv_reader.headers().context("reading the CSV header row")?.clone();
    let email_column = headers
        .iter()
        .position(|name| name.eq_ignore_ascii_case("email") || name.eq_ignore_ascii_case("address"))
        .context("the CSV needs an `email` column")?;
    let external_id_column = headers.iter().position(|name| name.eq_ignore_ascii_case("external_id"));
    Ok(csv_reader.into_records().enumerate().map(move |(line, record)| {
        let record = record.with_context(|| format!("CSV data row {}", line + 1))?;
        let mut fields = std::collections::BTreeMap::new();
        for (column, (name, value)) in headers.iter().zip(record.iter()).enumerate() {
            if column != email_column && Some(column) != external_id_column {
                fields.insert(name.to_owned(), string_value(value));
            }
        }
        Ok(v1::RecipientRow {
            email: record.get(email_column).unwrap_or_default().to_owned(),
            variables: Some(Struct { fields }),
            external_id: external_id_column.and_then(|column| record.get(column)).unwrap_or_default().to_owned(),
        })
    }))
}

/// Streams the rows of a CSV into a mailing, 1,000 rows per message, reading the file on a
/// blocking thread so that memory stays flat for any size.
pub async fn add_recipients_from_csv(
    api: &mut Api,
    mailing_id: i64,
    path: &Path,
) -> anyhow::Result<v1::AddRecipientsResponse> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    add_recipients_from_reader(api, mailing_id, file).await
}

pub async fn add_recipients_from_reader<R: std::io::Read + Send + 'static>(
    api: &mut Api,
    mailing_id: i64,
    reader: R,
) -> anyhow::Result<v1::AddRecipientsResponse> {
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<v1::AddRecipientsRequest>(8);
    let reader_task = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut rows = Vec::with_capacity(1000);
        for row in csv_rows(std::io::BufReader::new(reader))? {
            rows.push(row?);
            if rows.len() == 1000 {
                let message = v1::AddRecipientsRequest { mailing_id, rows: std::mem::take(&mut rows) };
                if batch_tx.blocking_send(message).is_err() {
                    return Ok(());
                }
            }
        }
        let _ = batch_tx.blocking_send(v1::AddRecipientsRequest { mailing_id, rows });
        Ok(())
    });
    let response = api.mailings.add_recipients(ReceiverStream::new(batch_rx)).await;
    reader_task.await.context("CSV reader panicked")??;
    Ok(response.context("AddRecipients failed")?.into_inner())
}

/// A one-line summary of a mailing's counts.
pub fn summarize(mailing: &v1::Mailing) -> String {
    let state = v1::MailingState::try_from(mailing.state)
        .map(|s| s.as_str_name().trim_start_matches("MAILING_STATE_").to_lowercase())
        .unwrap_or_default();
    let counts = mailing.counts.unwrap_or_default();
    format!(
        "mailing {} {state}: total {} | sent {} | queued {} | sending {} | deferred {} | failed {} | expired {} | bounced {} | complained {} | suppressed {} | skipped {} | cancelled {}",
        mailing.id,
        counts.total,
        counts.sent,
        counts.queued,
        counts.sending,
        counts.deferred,
        counts.failed,
        counts.expired,
        counts.bounced,
        counts.complained,
        counts.suppressed,
        counts.skipped,
        counts.cancelled
    )
}

fn finished(counts: &v1::RecipientCounts) -> i64 {
    counts.total - counts.queued - counts.sending - counts.deferred
}

/// Follows a mailing until it reaches a final state, with a progress bar when `progress`.
/// Returns the last state seen and the seconds from the first to the last progress.
pub async fn watch(api: &mut Api, mailing_id: i64, progress: bool) -> anyhow::Result<(v1::Mailing, Duration)> {
    let mut stream =
        api.mailings.watch_mailing(v1::MailingRef { mailing_id }).await.context("WatchMailing failed")?.into_inner();
    let bar = if progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last = None;
    let mut first_progress: Option<Instant> = None;
    let mut last_progress = Instant::now();
    while let Some(mailing) = stream.message().await.context("watching the mailing")? {
        let counts = mailing.counts.unwrap_or_default();
        let done = finished(&counts);
        bar.set_length(counts.total.max(0) as u64);
        bar.set_position(done.max(0) as u64);
        bar.set_message(format!("sent {} deferred {} failed {}", counts.sent, counts.deferred, counts.failed));
        if counts.sent + counts.failed > 0 {
            first_progress.get_or_insert_with(Instant::now);
            last_progress = Instant::now();
        }
        last = Some(mailing);
    }
    bar.finish();
    let elapsed = first_progress.map(|start| last_progress.duration_since(start)).unwrap_or_default();
    Ok((last.context("the server closed the watch without any update")?, elapsed))
}

/// Writes the CSV export of a mailing to `out`.
pub async fn export(
    api: &mut Api,
    mailing_id: i64,
    state: v1::RecipientState,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    let mut stream = api
        .mailings
        .export_recipients(v1::ExportRecipientsRequest { mailing_id, state: state as i32 })
        .await
        .context("ExportRecipients failed")?
        .into_inner();
    let mut num_bytes = 0u64;
    while let Some(chunk) = stream.message().await.context("reading the export")? {
        out.write_all(&chunk.data)?;
        num_bytes += chunk.data.len() as u64;
    }
    out.flush()?;
    Ok(num_bytes)
}
