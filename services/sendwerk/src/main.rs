//! The `sendwerk` command: every role and the operators' client.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sendwerk::client::{self, Api, MailingFiles};
use sendwerk::cluster::{ControlHandle, Database, LocalCluster, SenderHandle};
use sendwerk::settings::Settings;
use sendwerk_mail::dkim::DkimSigners;
use sendwerk_proto::v1;
use tracing::info;

#[derive(Parser)]
#[command(name = "sendwerk", version, about = "A distributed mail-delivery engine for CRM and marketing mailings")]
struct Cli {
    /// Configuration file (TOML); environment variables override it.
    #[arg(long, global = true, env = "SENDWERK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// The control plane to talk to.
    #[arg(long, env = "SENDWERK_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// API token, when the control plane requires one.
    #[arg(long, env = "SENDWERK_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC control plane (needs DATABASE_URL).
    Control,
    /// Run a sender worker (needs DATABASE_URL).
    Sender,
    /// Run the bounce listener (needs DATABASE_URL, bounce.domain and bounce.secret), or work
    /// with reports: `ingest PATH`, `parse FILE...`.
    Bounce {
        #[command(subcommand)]
        action: Option<BounceAction>,
    },
    /// Apply database migrations and exit (needs DATABASE_URL).
    Migrate,
    /// Every role in one process on the embedded default, serving gRPC until Ctrl-C.
    Dev {
        /// Where the capture SMTP sink stores delivered messages (when no --relay is given).
        #[arg(long, default_value = "sendwerk-dev/maildir")]
        maildir: PathBuf,
        /// Deliver to this SMTP relay instead of the capture sink.
        #[arg(long)]
        relay: Option<String>,
    },
    /// Send the bundled example campaign end to end and exit.
    Demo,
    /// Create a mailing from template files; prints its id.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        from: String,
        #[arg(long, default_value = "")]
        from_name: String,
        #[arg(long)]
        reply_to: Option<String>,
        /// Subject template, e.g. "Hallo {{ first_name }}".
        #[arg(long)]
        subject: String,
        #[arg(long)]
        html: Option<PathBuf>,
        #[arg(long)]
        text: Option<PathBuf>,
        #[arg(long = "attach")]
        attachments: Vec<PathBuf>,
    },
    /// Add recipients from a CSV file (column `email`, optional `external_id`, others are merge fields).
    AddRecipients {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
        csv: PathBuf,
    },
    /// Start a mailing now or on or after --at (RFC 3339, e.g. 2027-03-01T09:00:00+01:00).
    Schedule {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
        #[arg(long)]
        at: Option<String>,
    },
    Pause {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
    },
    Resume {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
    },
    Cancel {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
    },
    /// Follow a mailing with a progress bar until it is completed or cancelled.
    Watch {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
    },
    /// Print a mailing's state and counts.
    Status {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
    },
    /// Render a mailing for one recipient and print it.
    Preview {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
        #[arg(long)]
        email: Option<String>,
        /// Print the whole raw message instead of subject and text.
        #[arg(long)]
        raw: bool,
    },
    /// Send a test mail now to the given addresses.
    SendTest {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
        #[arg(long = "to", required = true)]
        to: Vec<String>,
    },
    /// Write the recipients with their status as CSV.
    Export {
        #[command(flatten)]
        server: ServerArgs,
        mailing: i64,
        /// Output file; standard output when omitted.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Manage the suppression list.
    Suppress {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        action: SuppressAction,
    },
}

#[derive(Subcommand)]
enum BounceAction {
    /// Ingest reports from a maildir, a directory of messages, an mbox file or one .eml file.
    Ingest { path: PathBuf },
    /// Parse report files and print one JSON object per record per line (no database needed).
    Parse { files: Vec<PathBuf> },
}

#[derive(Subcommand)]
enum SuppressAction {
    Add {
        emails: Vec<String>,
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    Remove {
        emails: Vec<String>,
    },
    Check {
        emails: Vec<String>,
    },
    List,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    info!("shutdown requested");
}

fn require_database_url(settings: &Settings) -> anyhow::Result<String> {
    settings.database_url.clone().context(
        "DATABASE_URL is not set; the server roles need a PostgreSQL database (`sendwerk dev` starts an embedded one)",
    )
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let is_server_role = matches!(
        cli.command,
        Command::Control | Command::Sender | Command::Migrate | Command::Dev { .. } | Command::Bounce { action: None }
    );
    let default_filter = match &cli.command {
        Command::Demo => "warn",
        _ if is_server_role => "info",
        _ => "warn",
    };
    let _telemetry = sendwerk::telemetry::init(default_filter)?;
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Control => {
            let database =
                Database::open(Some(&require_database_url(&settings)?), settings.database_max_connections).await?;
            let signers = std::sync::Arc::new(DkimSigners::from_configs(&settings.dkim_keys()?)?);
            let processor = sendwerk::cluster::bounce_processor(&database.store, &settings)?;
            let control = ControlHandle::start(
                database.store.clone(),
                settings.control_config(),
                signers,
                settings.grpc_listen,
                processor,
            )
            .await?;
            shutdown_signal().await;
            control.stop().await?;
            database.close().await;
        }
        Command::Sender => {
            let database =
                Database::open(Some(&require_database_url(&settings)?), settings.database_max_connections).await?;
            let sender = SenderHandle::start(database.store.clone(), settings.sender_config()?)?;
            shutdown_signal().await;
            sender.stop().await?;
            database.close().await;
        }
        Command::Bounce { action: Some(BounceAction::Parse { files }) } => sendwerk::bounce_cli::parse_files(&files)?,
        Command::Bounce { action: Some(BounceAction::Ingest { path }) } => {
            let database = Database::open(Some(&require_database_url(&settings)?), 4).await?;
            let processor = sendwerk::cluster::bounce_processor(&database.store, &settings)?
                .context("bounce.domain and bounce.secret must be configured to match reports to recipients")?;
            let summary = sendwerk_bounce::ingest_path(&processor, &path).await?;
            println!(
                "messages {} applied {} ignored {} quarantined {} duplicates {}",
                summary.num_messages,
                summary.num_applied,
                summary.num_ignored,
                summary.num_quarantined,
                summary.num_duplicates
            );
            database.close().await;
        }
        Command::Bounce { action: None } => {
            let database =
                Database::open(Some(&require_database_url(&settings)?), settings.database_max_connections).await?;
            let processor = sendwerk::cluster::bounce_processor(&database.store, &settings)?
                .context("bounce.domain and bounce.secret must be configured for the bounce listener")?;
            let listener = sendwerk::cluster::start_bounce_listener(
                processor,
                settings.bounce.listen,
                settings.bounce.max_report_bytes,
            )
            .await?;
            shutdown_signal().await;
            listener.shutdown().await?;
            database.close().await;
        }
        Command::Migrate => {
            let database = Database::open(Some(&require_database_url(&settings)?), 2).await?;
            info!("migrations applied");
            database.close().await;
        }
        Command::Dev { maildir, relay } => {
            let mut settings = settings;
            let maildir = match relay {
                Some(relay) => {
                    let address: SocketAddr =
                        relay.parse().with_context(|| format!("--relay {relay:?} is not HOST:PORT"))?;
                    settings.relay.host = address.ip().to_string();
                    settings.relay.port = address.port();
                    None
                }
                None => Some(maildir),
            };
            let cluster = LocalCluster::start(&settings, settings.grpc_listen, maildir.clone()).await?;
            println!("sendwerk dev: gRPC on {} (health + reflection on)", cluster.control.endpoint());
            if let Some(dir) = &maildir {
                println!("delivered messages go to the maildir {}", dir.join("new").display());
            }
            println!("Ctrl-C stops everything");
            shutdown_signal().await;
            cluster.shutdown().await?;
        }
        Command::Demo => sendwerk::demo::run(settings).await?,
        Command::Create { server, name, from, from_name, reply_to, subject, html, text, attachments } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            let files = MailingFiles {
                name: &name,
                from_email: &from,
                from_name: &from_name,
                reply_to: reply_to.as_deref(),
                subject: &subject,
                html_file: html.as_deref(),
                text_file: text.as_deref(),
                attachments: &attachments,
            };
            let content = client::mailing_content(&files)?;
            let mailing =
                api.mailings.create_mailing(v1::CreateMailingRequest { content: Some(content) }).await?.into_inner();
            println!("{}", mailing.id);
        }
        Command::AddRecipients { server, mailing, csv } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            let response = client::add_recipients_from_csv(&mut api, mailing, &csv).await?;
            println!(
                "accepted {} invalid {} duplicates {} suppressed {}",
                response.accepted, response.invalid, response.duplicates, response.suppressed
            );
            for rejected in &response.rejected {
                println!("row {}\t{}\t{}", rejected.index, rejected.email, rejected.reason);
            }
            if response.rejected_truncated {
                println!("(more rejected rows not listed)");
            }
        }
        Command::Schedule { server, mailing, at } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            let send_at = at
                .map(|raw| {
                    chrono::DateTime::parse_from_rfc3339(&raw)
                        .with_context(|| format!("--at {raw:?} is not an RFC 3339 time"))
                        .map(|time| prost_types::Timestamp {
                            seconds: time.timestamp(),
                            nanos: time.timestamp_subsec_nanos() as i32,
                        })
                })
                .transpose()?;
            let response = api
                .mailings
                .schedule(v1::ScheduleRequest { mailing_id: mailing, send_at, max_per_hour: 0 })
                .await?
                .into_inner();
            println!("{}", client::summarize(&response));
        }
        Command::Pause { server, mailing } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            println!(
                "{}",
                client::summarize(&api.mailings.pause(v1::MailingRef { mailing_id: mailing }).await?.into_inner())
            );
        }
        Command::Resume { server, mailing } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            println!(
                "{}",
                client::summarize(&api.mailings.resume(v1::MailingRef { mailing_id: mailing }).await?.into_inner())
            );
        }
        Command::Cancel { server, mailing } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            println!(
                "{}",
                client::summarize(&api.mailings.cancel(v1::MailingRef { mailing_id: mailing }).await?.into_inner())
            );
        }
        Command::Watch { server, mailing } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            let (last, _) = client::watch(&mut api, mailing, true).await?;
            println!("{}", client::summarize(&last));
        }
        Command::Status { server, mailing } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            println!(
                "{}",
                client::summarize(
                    &api.mailings.get_mailing(v1::MailingRef { mailing_id: mailing }).await?.into_inner()
                )
            );
        }
        Command::Preview { server, mailing, email, raw } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            let subject = email.map(v1::preview_request::Subject::Email);
            let preview = api.mailings.preview(v1::PreviewRequest { mailing_id: mailing, subject }).await?.into_inner();
            if raw {
                println!("{}", String::from_utf8_lossy(&preview.raw));
            } else {
                println!(
                    "Subject: {}\n\n{}",
                    preview.subject,
                    if preview.text.is_empty() { &preview.html } else { &preview.text }
                );
            }
        }
        Command::SendTest { server, mailing, to } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            let response = api
                .mailings
                .send_test(v1::SendTestRequest { mailing_id: mailing, to, variables: None })
                .await?
                .into_inner();
            for delivery in response.deliveries {
                println!(
                    "{}\t{}\t{}",
                    delivery.email,
                    if delivery.accepted { "accepted" } else { "not accepted" },
                    delivery.smtp_reply
                );
            }
        }
        Command::Export { server, mailing, output } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            match output {
                Some(path) => {
                    let mut file =
                        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    client::export(&mut api, mailing, v1::RecipientState::Unspecified, &mut file).await?;
                }
                None => {
                    let mut stdout = std::io::stdout();
                    client::export(&mut api, mailing, v1::RecipientState::Unspecified, &mut stdout).await?;
                }
            }
        }
        Command::Suppress { server, action } => {
            let mut api = Api::connect(&server.server, server.token.as_deref()).await?;
            match action {
                SuppressAction::Add { emails, reason } => {
                    let reason = v1::SuppressionReason::from_str_name(&format!(
                        "SUPPRESSION_REASON_{}",
                        reason.to_uppercase()
                    ))
                    .with_context(|| {
                        format!("--reason {reason:?}: use manual, unsubscribe, hard_bounce, complaint or soft_bounce")
                    })?;
                    let response = api
                        .suppressions
                        .add_suppressions(v1::AddSuppressionsRequest {
                            emails,
                            reason: reason as i32,
                            note: String::new(),
                        })
                        .await?
                        .into_inner();
                    println!("added {}", response.added);
                    println!("waiting recipients suppressed {}", response.waiting_recipients_suppressed);
                    for invalid in response.invalid {
                        println!("invalid {}\t{}", invalid.email, invalid.reason);
                    }
                }
                SuppressAction::Remove { emails } => {
                    let response = api
                        .suppressions
                        .remove_suppressions(v1::RemoveSuppressionsRequest { emails })
                        .await?
                        .into_inner();
                    println!("removed {}", response.removed);
                }
                SuppressAction::Check { emails } => {
                    let response = api
                        .suppressions
                        .check_suppressions(v1::CheckSuppressionsRequest { emails })
                        .await?
                        .into_inner();
                    for suppression in response.suppressed {
                        println!(
                            "{}\tsuppressed\t{}",
                            suppression.email,
                            v1::SuppressionReason::try_from(suppression.reason).map(|r| r.as_str_name()).unwrap_or("")
                        );
                    }
                }
                SuppressAction::List => {
                    let mut page_token = String::new();
                    loop {
                        let response = api
                            .suppressions
                            .list_suppressions(v1::ListSuppressionsRequest { page_size: 1000, page_token })
                            .await?
                            .into_inner();
                        for suppression in &response.suppressions {
                            println!(
                                "{}\t{}",
                                suppression.email,
                                v1::SuppressionReason::try_from(suppression.reason)
                                    .map(|r| r.as_str_name())
                                    .unwrap_or("")
                            );
                        }
                        if response.next_page_token.is_empty() {
                            break;
                        }
                        page_token = response.next_page_token;
                    }
                }
            }
        }
    }
    Ok(())
}
