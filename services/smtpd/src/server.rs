//! The listener: accepts connections, runs one task per session, and drains them on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::Instrument;

use crate::config::ServerConfig;
use crate::handler::{SessionInfo, SmtpHandler};
use crate::io::SmtpIo;
use crate::reply::write_sanitized;
use crate::session::Session;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The configuration and the fixed reply lines every session writes, formatted once.
pub(crate) struct SessionSettings {
    pub(crate) config: ServerConfig,
    pub(crate) greeting: Vec<u8>,
    pub(crate) ehlo_response: Vec<u8>,
    pub(crate) helo_response: Vec<u8>,
    too_many_connections: Vec<u8>,
}

impl SessionSettings {
    pub(crate) fn new(config: ServerConfig) -> Self {
        let with_hostname = |prefix: &[u8], suffix: &[u8]| {
            let mut line = prefix.to_vec();
            write_sanitized(&mut line, &config.hostname);
            line.extend_from_slice(suffix);
            line
        };
        let greeting = with_hostname(b"220 ", b" ESMTP ready\r\n");
        let helo_response = with_hostname(b"250 ", b"\r\n");
        let too_many_connections = with_hostname(b"421 4.3.2 ", b" too many connections, try again later\r\n");
        let mut ehlo_response = with_hostname(b"250-", b"\r\n");
        let extensions = format!(
            "250-SIZE {}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",
            config.max_message_bytes
        );
        ehlo_response.extend_from_slice(extensions.as_bytes());
        Self { config, greeting, ehlo_response, helo_response, too_many_connections }
    }
}

/// A bound SMTP listener that hands every message to an [`SmtpHandler`].
pub struct SmtpServer<H> {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Arc<SessionSettings>,
    handler: Arc<H>,
}

impl<H: SmtpHandler> SmtpServer<H> {
    /// Binds the listener; use port 0 for an ephemeral port and read it from [`Self::local_addr`].
    pub async fn bind(addr: SocketAddr, config: ServerConfig, handler: Arc<H>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self { listener, local_addr, settings: Arc::new(SessionSettings::new(config)), handler })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves. Then it stops accepting, closes idle sessions with
    /// `421`, lets sessions in a transaction finish it (their next command gets `421`), and
    /// returns once all sessions ended or the shutdown grace timeout cut the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Self { listener, local_addr, settings, handler } = self;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let max_connections = settings.config.max_connections.min(Semaphore::MAX_PERMITS);
        let connection_permits = Arc::new(Semaphore::new(max_connections));
        let mut sessions = JoinSet::new();
        let mut last_session_id = 0u64;
        tracing::info!(%local_addr, "smtp server listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = sessions.join_next() => log_session_end(joined),
                accepted = listener.accept() => {
                    let (stream, peer_addr) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            handle_accept_error(&error).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&connection_permits).try_acquire_owned() else {
                        tracing::warn!(%peer_addr, max_connections, "too many connections, refusing");
                        // Best effort and never blocking: a fresh socket always has buffer room.
                        let _ = stream.try_write(&settings.too_many_connections);
                        continue;
                    };
                    last_session_id += 1;
                    let info = SessionInfo::new(last_session_id, peer_addr);
                    let span = tracing::debug_span!("smtp_session", session_id = last_session_id, %peer_addr);
                    let session = serve_connection(
                        stream,
                        info,
                        Arc::clone(&settings),
                        Arc::clone(&handler),
                        shutdown_rx.clone(),
                        permit,
                    );
                    sessions.spawn(session.instrument(span));
                }
            }
        }
        drop(listener);
        let _ = shutdown_tx.send(true);
        let num_open_sessions = sessions.len();
        tracing::info!(%local_addr, num_open_sessions, "smtp server shutting down");
        let grace_timeout = settings.config.shutdown_grace_timeout;
        let drain = async {
            while let Some(joined) = sessions.join_next().await {
                log_session_end(joined);
            }
        };
        if tokio::time::timeout(grace_timeout, drain).await.is_err() {
            tracing::warn!(num_cut_sessions = sessions.len(), "shutdown grace timeout, cutting sessions");
            sessions.shutdown().await;
        }
        tracing::info!(%local_addr, "smtp server stopped");
        Ok(())
    }

    /// Runs the server on a new task until [`RunningServer::shutdown`] is called or the
    /// returned handle is dropped.
    pub fn spawn(self) -> RunningServer {
        let local_addr = self.local_addr;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // Resolves on a signal and when the sender is dropped alike.
            let _ = shutdown_rx.await;
        };
        let task = tokio::spawn(self.run(shutdown));
        RunningServer { local_addr, shutdown_tx, task }
    }
}

/// A server running on its own task. Dropping it starts a graceful shutdown without waiting.
pub struct RunningServer {
    local_addr: SocketAddr,
    shutdown_tx: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Shuts the server down gracefully (see [`SmtpServer::run`]) and waits until it stopped.
    pub async fn shutdown(self) -> io::Result<()> {
        let _ = self.shutdown_tx.send(());
        match self.task.await {
            Ok(result) => result,
            Err(join_error) => Err(io::Error::other(join_error)),
        }
    }
}

async fn serve_connection<H: SmtpHandler>(
    mut stream: TcpStream,
    info: SessionInfo,
    settings: Arc<SessionSettings>,
    handler: Arc<H>,
    shutdown_rx: watch::Receiver<bool>,
    _connection_permit: OwnedSemaphorePermit,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(error = %error, "cannot set TCP_NODELAY");
    }
    tracing::debug!("session started");
    let (read_half, write_half) = stream.split();
    let config = &settings.config;
    let io = SmtpIo::new(read_half, write_half, config.idle_timeout, config.session_timeout);
    Session::new(io, handler.as_ref(), &settings, info, shutdown_rx).run().await;
    tracing::debug!("session ended");
}

fn log_session_end(joined: Result<(), JoinError>) {
    if let Err(join_error) = joined
        && join_error.is_panic()
    {
        tracing::error!(error = %join_error, "smtp session panicked");
    }
}

async fn handle_accept_error(error: &io::Error) {
    // Errors about one connection that went away before it was accepted are not ours to fix.
    let is_per_connection = matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    );
    if is_per_connection {
        tracing::debug!(error = %error, "accept failed");
        return;
    }
    tracing::warn!(error = %error, "accept failed, backing off");
    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
}
