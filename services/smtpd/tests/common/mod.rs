//! Shared helpers of the integration tests: a server on 127.0.0.1:0 and a raw SMTP client.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sendwerk_smtpd::sink::BehaviourSink;
use sendwerk_smtpd::{RunningServer, ServerConfig, SmtpHandler, SmtpServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Upper bound for any single wait in a test, so a bug fails the test instead of hanging it.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn test_config() -> ServerConfig {
    ServerConfig { hostname: "sink.test".to_owned(), ..ServerConfig::default() }
}

pub async fn start_server<H: SmtpHandler>(config: ServerConfig, handler: Arc<H>) -> RunningServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    SmtpServer::bind(addr, config, handler).await.unwrap().spawn()
}

pub async fn start_behaviour_sink(config: ServerConfig, sink: BehaviourSink) -> (RunningServer, Arc<BehaviourSink>) {
    let sink = Arc::new(sink);
    let server = start_server(config, Arc::clone(&sink)).await;
    (server, sink)
}

/// A plain SMTP client that shows every reply line, for asserting exact protocol behaviour.
pub struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl RawClient {
    /// Connects and returns the client together with the greeting.
    pub async fn connect(addr: SocketAddr) -> Result<(Self, String)> {
        let stream = TcpStream::connect(addr).await.context("connect")?;
        let (read_half, writer) = stream.into_split();
        let mut client = Self { reader: BufReader::new(read_half), writer };
        let greeting = client.read_reply().await?;
        Ok((client, greeting))
    }

    /// Connects and says EHLO.
    pub async fn connect_and_greet(addr: SocketAddr) -> Result<Self> {
        let (mut client, greeting) = Self::connect(addr).await?;
        if !greeting.starts_with("220 ") {
            bail!("unexpected greeting {greeting:?}");
        }
        let ehlo = client.command("EHLO client.test").await?;
        if !ehlo.ends_with("250 SMTPUTF8") {
            bail!("unexpected EHLO reply {ehlo:?}");
        }
        Ok(client)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).await.context("write")
    }

    /// Sends one command line and returns its reply.
    pub async fn command(&mut self, line: &str) -> Result<String> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }

    /// Reads one reply; the lines of a multi-line reply are joined with `\n`.
    pub async fn read_reply(&mut self) -> Result<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let num_read = tokio::time::timeout(TEST_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .context("reply timed out")??;
            if num_read == 0 {
                bail!("connection closed after {lines:?}");
            }
            let line = line.trim_end_matches("\r\n").to_owned();
            let is_last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if is_last {
                return Ok(lines.join("\n"));
            }
        }
    }

    /// Succeeds when the server closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) -> Result<()> {
        let mut rest = Vec::new();
        tokio::time::timeout(TEST_TIMEOUT, self.reader.read_to_end(&mut rest)).await.context("close timed out")??;
        if !rest.is_empty() {
            bail!("expected close, got {:?}", String::from_utf8_lossy(&rest));
        }
        Ok(())
    }

    /// Runs MAIL, RCPT and DATA and sends `wire_data` (already dot-stuffed, with the final
    /// `.` line); returns the reply to the message.
    pub async fn send_message(&mut self, from: &str, to: &str, wire_data: &[u8]) -> Result<String> {
        let reply = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if !reply.starts_with("250") {
            bail!("MAIL refused: {reply}");
        }
        let reply = self.command(&format!("RCPT TO:<{to}>")).await?;
        if !reply.starts_with("250") {
            bail!("RCPT refused: {reply}");
        }
        let reply = self.command("DATA").await?;
        if !reply.starts_with("354") {
            bail!("DATA refused: {reply}");
        }
        self.send(wire_data).await?;
        self.read_reply().await
    }
}
