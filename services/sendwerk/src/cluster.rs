//! Building blocks that start sendwerk's roles in this process: the database (given or
//! embedded), the gRPC control plane, a sender, and a capture SMTP sink. `dev`, `demo` and the
//! integration tests assemble the same pieces.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sendwerk_bounce::{BounceListener, BounceProcessor};
use sendwerk_control::{ControlConfig, ControlState};
use sendwerk_mail::dkim::DkimSigners;
use sendwerk_sender::{Sender, SenderConfig, SenderStats};
use sendwerk_smtpd::sink::MaildirSink;
use sendwerk_smtpd::{RunningServer, ServerConfig, SmtpServer};
use sendwerk_store::embedded::{EmbeddedPostgres, EmbeddedPostgresOptions};
use sendwerk_store::{Store, StoreConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

/// The store, and the embedded cluster behind it when there is one.
pub struct Database {
    pub store: Store,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `database_url`, or, when it is `None`, starts an embedded PostgreSQL from the
    /// machine's binaries and creates a `sendwerk` database in it. Applies migrations.
    pub async fn open(database_url: Option<&str>, max_connections: usize) -> anyhow::Result<Self> {
        let (url, embedded) = match database_url {
            Some(url) => (url.to_owned(), None),
            None => {
                let embedded = EmbeddedPostgres::start(EmbeddedPostgresOptions::default())
                    .await
                    .context("starting the embedded PostgreSQL (set DATABASE_URL to use an existing server)")?;
                create_database(&embedded.admin_url(), "sendwerk").await?;
                info!(port = embedded.port(), data_dir = %embedded.data_dir().display(), "embedded postgres running");
                (embedded.connection_url("sendwerk"), Some(embedded))
            }
        };
        let store = Store::connect(&StoreConfig { database_url: url, max_connections })
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("applying migrations")?;
        Ok(Self { store, embedded })
    }

    pub async fn close(self) {
        drop(self.store);
        if let Some(embedded) = self.embedded {
            embedded.stop().await;
        }
    }
}

/// Creates a database (if missing) through an administrative connection.
pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "database name {name:?} is not a plain identifier"
    );
    let (client, connection) =
        tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.context("connecting to the admin database")?;
    let connection_task = tokio::spawn(connection);
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some();
    if !exists {
        // Identifiers cannot be bound as parameters; `name` is checked to be a plain identifier.
        client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
    }
    drop(client);
    let _ = connection_task.await;
    Ok(())
}

/// A running control plane.
pub struct ControlHandle {
    pub address: SocketAddr,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ControlHandle {
    pub async fn start(
        store: Store,
        config: ControlConfig,
        signers: Arc<DkimSigners>,
        listen: SocketAddr,
        bounce_processor: Option<Arc<BounceProcessor>>,
    ) -> anyhow::Result<Self> {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the grpc port {listen}"))?;
        let address = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut state = ControlState::new(store, config, signers);
        if let Some(processor) = bounce_processor {
            state = state.with_bounce_processor(processor);
        }
        let task = tokio::spawn(sendwerk_control::serve(listener, state, async {
            let _ = stop_rx.await;
        }));
        Ok(Self { address, stop_tx, task })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_tx.send(());
        self.task.await.context("control task panicked")?.context("grpc server failed")?;
        Ok(())
    }
}

/// A running sender.
pub struct SenderHandle {
    /// The sender's id in leases and logs.
    pub worker_id: String,
    pub stats: Arc<SenderStats>,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<Result<(), sendwerk_store::StoreError>>,
}

impl SenderHandle {
    pub fn start(store: Store, config: SenderConfig) -> anyhow::Result<Self> {
        let sender = Sender::new(store, config).context("setting up the sender (DKIM keys, MX resolver)")?;
        let worker_id = sender.worker_id().to_string();
        let stats = sender.stats();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sender.run(async {
            let _ = stop_rx.await;
        }));
        Ok(Self { worker_id, stats, stop_tx, task })
    }

    /// Graceful stop: no new claims, in-flight transactions finish, unsent rows go back.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_tx.send(());
        self.task.await.context("sender task panicked")?.context("sender failed")?;
        Ok(())
    }

    /// Stops the sender abruptly, as a crash would: claimed rows stay under its lease.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// The bounce processor for the configured bounce domain, if there is one.
pub fn bounce_processor(
    store: &Store,
    settings: &crate::settings::Settings,
) -> anyhow::Result<Option<Arc<BounceProcessor>>> {
    let bounce = &settings.bounce;
    Ok(bounce.verp()?.map(|verp| {
        Arc::new(BounceProcessor::new(
            store.clone(),
            verp,
            bounce.soft_bounce_limit,
            bounce.soft_bounce_window_days,
            bounce.max_report_bytes,
        ))
    }))
}

/// Starts the inbound bounce listener (SMTP) for `processor` on `listen`.
pub async fn start_bounce_listener(
    processor: Arc<BounceProcessor>,
    listen: SocketAddr,
    max_report_bytes: usize,
) -> anyhow::Result<RunningServer> {
    let config = ServerConfig {
        hostname: processor.verp().domain().to_string(),
        max_message_bytes: max_report_bytes,
        max_recipients: 10,
        max_connections: 256,
        ..ServerConfig::default()
    };
    let listener = Arc::new(BounceListener::new(processor));
    let server = SmtpServer::bind(listen, config, listener)
        .await
        .with_context(|| format!("binding the bounce listener on {listen}"))?;
    info!(address = %server.local_addr(), "bounce listener running");
    Ok(server.spawn())
}

/// Starts an SMTP sink that stores every message in a maildir.
pub async fn start_capture_sink(
    maildir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<(RunningServer, Arc<MaildirSink>)> {
    let sink = Arc::new(
        MaildirSink::new(maildir.to_path_buf()).with_context(|| format!("creating maildir {}", maildir.display()))?,
    );
    let server = SmtpServer::bind(listen, ServerConfig::default(), Arc::clone(&sink))
        .await
        .with_context(|| format!("binding the capture smtp sink on {listen}"))?;
    Ok((server.spawn(), sink))
}

/// Every role in one process: database, capture sink (unless a relay is configured),
/// sender and control plane.
pub struct LocalCluster {
    pub database: Database,
    pub control: ControlHandle,
    pub sender: SenderHandle,
    pub sink: Option<(RunningServer, Arc<MaildirSink>)>,
    pub maildir: Option<PathBuf>,
    /// The bounce listener, when a bounce domain is configured.
    pub bounce_listener: Option<RunningServer>,
}

impl LocalCluster {
    pub async fn start(
        settings: &crate::settings::Settings,
        grpc_listen: SocketAddr,
        maildir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let database = Database::open(settings.database_url.as_deref(), settings.database_max_connections).await?;
        let mut sender_config = settings.sender_config()?;
        let mut control_config = settings.control_config();
        let sink = match &maildir {
            Some(dir) => {
                let (server, sink) = start_capture_sink(dir, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
                sender_config.relay.host = server.local_addr().ip().to_string();
                sender_config.relay.port = server.local_addr().port();
                control_config.relay = sender_config.relay.clone();
                info!(address = %server.local_addr(), maildir = %dir.display(), "capture smtp sink running");
                Some((server, sink))
            }
            None => None,
        };
        let signers = Arc::new(DkimSigners::from_configs(&sender_config.dkim_keys).context("loading DKIM keys")?);
        let processor = bounce_processor(&database.store, settings)?;
        let bounce_listener = match &processor {
            Some(processor) => Some(
                start_bounce_listener(Arc::clone(processor), settings.bounce.listen, settings.bounce.max_report_bytes)
                    .await?,
            ),
            None => None,
        };
        let control =
            ControlHandle::start(database.store.clone(), control_config, signers, grpc_listen, processor).await?;
        let sender = SenderHandle::start(database.store.clone(), sender_config)?;
        Ok(Self { database, control, sender, sink, maildir, bounce_listener })
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.sender.stop().await?;
        self.control.stop().await?;
        if let Some((server, _)) = self.sink {
            server.shutdown().await?;
        }
        if let Some(server) = self.bounce_listener {
            server.shutdown().await?;
        }
        self.database.close().await;
        Ok(())
    }
}
