//! The SMTP client: one connection to a relay at a time, reused for many transactions.
//!
//! lettre speaks the protocol. We open the TCP socket ourselves so that `TCP_NODELAY` is set:
//! lettre's stock transport leaves Nagle's algorithm on, and the small final `.` of every
//! message then waits for the peer's delayed ACK (about 40 ms a message, ~22 msg/s per
//! connection). We also drive MAIL/RCPT/DATA ourselves instead of `send()`, which drops the
//! connection on every rejected recipient; after a negative reply we `RSET` and go on.
//!
//! When the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one write and
//! their three replies are read after it; the message and its final `.` go out in one more.
//! A transaction then costs two round trips instead of four, and two writes instead of six.
//! lettre parses only the extensions it uses itself, so a second EHLO after the handshake
//! tells whether the server pipelines.

use std::fmt;
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Quit, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use sendwerk_core::{DeliveryOutcome, SmtpReply, classify_smtp_reply};
use tokio::net::TcpStream;

/// How to protect the connection to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// Plain SMTP (loopback or a trusted network only).
    #[default]
    None,
    /// STARTTLS when the server offers it, plain otherwise; the certificate is not verified
    /// (like Postfix's `may` level: encryption against passive listeners, the norm between MXs).
    Opportunistic,
    /// STARTTLS with a verified certificate, and fail when the server does not offer it.
    Required,
}

/// Where and how to deliver.
#[derive(Clone, serde::Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    #[serde(deserialize_with = "sendwerk_core::lenient::string")]
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    #[serde(deserialize_with = "sendwerk_core::lenient::option_string")]
    pub username: Option<String>,
    /// Never logged.
    #[serde(deserialize_with = "sendwerk_core::lenient::option_string")]
    pub password: Option<String>,
    /// Our name in EHLO.
    #[serde(deserialize_with = "sendwerk_core::lenient::string")]
    pub hello_name: String,
    #[serde(with = "humantime_secs")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_secs")]
    pub command_timeout: Duration,
    /// Reconnect after this many transactions on one connection.
    pub max_messages_per_connection: u32,
}

mod humantime_secs {
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds: f64 = serde::Deserialize::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 25,
            tls: RelayTls::None,
            username: None,
            password: None,
            hello_name: "localhost".to_owned(),
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            max_messages_per_connection: 10_000,
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("hello_name", &self.hello_name)
            .finish_non_exhaustive()
    }
}

/// Why no connection to the relay could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {address} timed out")]
    Timeout { address: String },
    #[error("connecting to {address}: {source}")]
    Io { address: String, source: std::io::Error },
    #[error("smtp greeting/ehlo with {address} failed: {detail}")]
    Handshake { address: String, detail: String },
    #[error("relay {address} does not offer STARTTLS, which the configuration requires")]
    StartTlsUnavailable { address: String },
    #[error("authentication at {address} failed: {detail}")]
    Auth { address: String, detail: String },
}

/// One open connection to the relay.
pub struct SmtpSession {
    connection: AsyncSmtpConnection,
    num_transactions: u32,
    max_transactions: u32,
    command_timeout: Duration,
    broken: bool,
    /// The server offers PIPELINING: the envelope goes out in one write.
    pipelining: bool,
    /// The last transaction found the connection dead before MAIL FROM was answered: nothing
    /// was sent, and a fresh connection may simply try again (servers close idle connections).
    died_before_transaction: bool,
}

/// Opens a connection: TCP with `TCP_NODELAY`, greeting, EHLO, STARTTLS and AUTH as configured.
pub async fn connect(config: &RelayConfig) -> Result<SmtpSession, ConnectError> {
    let address = format!("{}:{}", config.host, config.port);
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect((config.host.as_str(), config.port)))
        .await
        .map_err(|_| ConnectError::Timeout { address: address.clone() })?
        .map_err(|source| ConnectError::Io { address: address.clone(), source })?;
    stream.set_nodelay(true).map_err(|source| ConnectError::Io { address: address.clone(), source })?;
    let hello = ClientId::Domain(config.hello_name.clone());
    let handshake = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello);
    let mut connection = tokio::time::timeout(config.command_timeout, handshake)
        .await
        .map_err(|_| ConnectError::Handshake { address: address.clone(), detail: "timed out".into() })?
        .map_err(|error| ConnectError::Handshake { address: address.clone(), detail: error_text(&error) })?;
    if config.tls != RelayTls::None {
        if connection.can_starttls() {
            let parameters = TlsParameters::builder(config.host.clone())
                .dangerous_accept_invalid_certs(config.tls == RelayTls::Opportunistic)
                .build_rustls()
                .map_err(|error| ConnectError::Handshake { address: address.clone(), detail: error_text(&error) })?;
            connection
                .starttls(parameters, &hello)
                .await
                .map_err(|error| ConnectError::Handshake { address: address.clone(), detail: error_text(&error) })?;
        } else if config.tls == RelayTls::Required {
            return Err(ConnectError::StartTlsUnavailable { address });
        }
    }
    let pipelining = offers_pipelining(&mut connection, &hello, config.command_timeout)
        .await
        .map_err(|detail| ConnectError::Handshake { address: address.clone(), detail })?;
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        let credentials = Credentials::new(username.clone(), password.clone());
        connection
            .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
            .await
            .map_err(|error| ConnectError::Auth { address: address.clone(), detail: error_text(&error) })?;
    }
    Ok(SmtpSession {
        connection,
        num_transactions: 0,
        max_transactions: config.max_messages_per_connection.max(1),
        command_timeout: config.command_timeout,
        broken: false,
        pipelining,
        died_before_transaction: false,
    })
}

/// Asks again with EHLO (allowed at any time between transactions, RFC 5321 4.1.4) and looks
/// for PIPELINING among the extensions; a refusal means no pipelining.
async fn offers_pipelining(
    connection: &mut AsyncSmtpConnection,
    hello: &ClientId,
    command_timeout: Duration,
) -> Result<bool, String> {
    let response = match tokio::time::timeout(command_timeout, connection.command(Ehlo::new(hello.clone())))
        .await
        .map_err(|_| "EHLO timed out".to_owned())?
    {
        Ok(response) => response,
        // A server that refuses a repeated EHLO still works, one command at a time.
        Err(error) if error.status().is_some() => return Ok(false),
        Err(error) => return Err(error_text(&error)),
    };
    // The first line is the server's name, the others one extension each.
    Ok(response.message().skip(1).any(|line| {
        line.split_ascii_whitespace().next().is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
    }))
}

/// MAIL FROM, RCPT TO and DATA as one pipelined group: lettre writes a command's text in one
/// write, so the group goes out as one.
struct EnvelopeGroup {
    mail: Mail,
    rcpt: Rcpt,
}

impl fmt::Display for EnvelopeGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.mail, self.rcpt, Data)
    }
}

/// The message content after DATA's 354: dot-stuffed (RFC 5321 4.5.2), ended by `CRLF . CRLF`,
/// written as one.
struct Content<'a>(&'a str);

impl fmt::Display for Content<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.0.split_inclusive("\r\n") {
            if line.starts_with('.') {
                f.write_str(".")?;
            }
            f.write_str(line)?;
        }
        if !self.0.is_empty() && !self.0.ends_with("\r\n") {
            f.write_str("\r\n")?;
        }
        f.write_str(".\r\n")
    }
}

type CommandResult = Result<
    Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
    tokio::time::error::Elapsed,
>;

/// Whether the server answered at all (positively or not), as opposed to a timeout or a
/// network failure.
fn answered(result: &CommandResult) -> bool {
    match result {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => error.status().is_some(),
        Err(_) => false,
    }
}

/// The text of a lettre error: for a negative reply, the server's own words.
fn error_text(error: &lettre::transport::smtp::Error) -> String {
    match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error.to_string(),
    }
}

/// Turns a lettre result into an outcome: replies through the classifier, everything else
/// (network error, timeout, garbage) into a temporary failure.
fn reply_of(
    result: &Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> Option<SmtpReply> {
    match result {
        Ok(response) => {
            let lines: Vec<&str> = response.message().collect();
            Some(SmtpReply::from_lines(u16::from(response.code()), &lines))
        }
        Err(error) => error.status().map(|code| SmtpReply::from_lines(u16::from(code), &[error_text(error)])),
    }
}

/// Where in the transaction a failure happened, for the detail text.
#[derive(Debug, Clone, Copy)]
enum Stage {
    MailFrom,
    RcptTo,
    Data,
    Message,
}

impl SmtpSession {
    /// Whether the last `deliver` found the connection already dead (no reply to MAIL FROM):
    /// the message was not sent and may be retried at once on a new connection.
    pub fn died_before_transaction(&self) -> bool {
        self.died_before_transaction
    }

    /// Whether this connection can carry another transaction.
    pub fn is_reusable(&self) -> bool {
        !self.broken && !self.connection.has_broken() && self.num_transactions < self.max_transactions
    }

    /// One transaction: MAIL FROM, RCPT TO, DATA and the message (which must use CRLF line
    /// endings; dot-stuffing happens here). Every reply passes the one classifier.
    pub async fn deliver(&mut self, return_path: &str, recipient: &str, message: &[u8]) -> DeliveryOutcome {
        self.num_transactions += 1;
        self.died_before_transaction = false;
        // An empty return path is the null sender `<>` (bounces, auto-replies).
        let from = if return_path.is_empty() {
            None
        } else {
            match return_path.parse::<Address>() {
                Ok(address) => Some(address),
                Err(error) => return self.local_failure(format!("return path {return_path:?} is not valid: {error}")),
            }
        };
        let to = match recipient.parse::<Address>() {
            Ok(address) => address,
            Err(error) => {
                return DeliveryOutcome::PermanentFailure(SmtpReply {
                    code: 553,
                    enhanced: sendwerk_core::EnhancedStatus::parse("5.1.3"),
                    text: format!("recipient address not accepted by the smtp client: {error}"),
                });
            }
        };
        let (mail, rcpt) = (Mail::new(from, vec![]), Rcpt::new(to, vec![]));
        let rejected = if self.pipelining {
            self.pipelined_envelope(mail, rcpt).await
        } else {
            match self.step(Stage::MailFrom, mail).await {
                None => match self.step(Stage::RcptTo, rcpt).await {
                    None => self.step(Stage::Data, Data).await,
                    rejected => rejected,
                },
                rejected => rejected,
            }
        };
        if let Some(outcome) = rejected {
            self.reset_after_rejection().await;
            return outcome;
        }
        let result = match std::str::from_utf8(message) {
            Ok(text) => tokio::time::timeout(self.command_timeout, self.connection.command(Content(text))).await,
            // Raw 8-bit content: lettre's own writer (two writes).
            Err(_) => tokio::time::timeout(self.command_timeout, self.connection.message(message)).await,
        };
        self.finish(Stage::Message, result)
    }

    /// Sends MAIL, RCPT and DATA at once and reads their three replies; `None` when all were
    /// positive and the server waits for the content. The first negative reply decides the
    /// outcome, as it would have without pipelining.
    async fn pipelined_envelope(&mut self, mail: Mail, rcpt: Rcpt) -> Option<DeliveryOutcome> {
        let mut results: Vec<(Stage, CommandResult)> = Vec::with_capacity(3);
        let first =
            tokio::time::timeout(self.command_timeout, self.connection.command(EnvelopeGroup { mail, rcpt })).await;
        let mut connection_alive = answered(&first);
        results.push((Stage::MailFrom, first));
        for stage in [Stage::RcptTo, Stage::Data] {
            if !connection_alive {
                break;
            }
            let result = tokio::time::timeout(self.command_timeout, self.connection.read_response()).await;
            connection_alive = answered(&result);
            results.push((stage, result));
        }
        let data_accepted = results.len() == 3 && matches!(results[2].1, Ok(Ok(_)));
        let (stage, result) = results.into_iter().find(|(_, result)| !matches!(result, Ok(Ok(_))))?;
        if !connection_alive {
            self.broken = true;
        } else if data_accepted {
            // MAIL or RCPT was refused but DATA still got 354: end the empty message at once.
            let empty = tokio::time::timeout(self.command_timeout, self.connection.command(Content(""))).await;
            if !answered(&empty) {
                self.broken = true;
            }
        }
        Some(self.finish(stage, result))
    }

    /// Sends one command; `None` when the reply was positive and the transaction goes on.
    async fn step<C: fmt::Display>(&mut self, stage: Stage, command: C) -> Option<DeliveryOutcome> {
        let result = tokio::time::timeout(self.command_timeout, self.connection.command(command)).await;
        if matches!(result, Ok(Ok(_))) {
            return None;
        }
        Some(self.finish(stage, result))
    }

    fn local_failure(&mut self, detail: String) -> DeliveryOutcome {
        DeliveryOutcome::TemporaryFailure { reply: None, detail }
    }

    fn finish(&mut self, stage: Stage, result: CommandResult) -> DeliveryOutcome {
        let after_message = matches!(stage, Stage::Message);
        let Ok(result) = result else {
            self.broken = true;
            if after_message {
                return DeliveryOutcome::Unknown {
                    detail: "timed out waiting for the reply to the message; a duplicate delivery is possible".into(),
                };
            }
            return DeliveryOutcome::TemporaryFailure {
                reply: None,
                detail: format!("timed out waiting for the reply to {stage:?}"),
            };
        };
        match reply_of(&result) {
            Some(reply) => classify_smtp_reply(reply),
            None => {
                self.broken = true;
                self.died_before_transaction = matches!(stage, Stage::MailFrom);
                let detail = result.err().map(|error| error_text(&error)).unwrap_or_default();
                if after_message {
                    DeliveryOutcome::Unknown {
                        detail: format!(
                            "connection failed after the message was sent ({detail}); a duplicate delivery is possible"
                        ),
                    }
                } else {
                    DeliveryOutcome::TemporaryFailure {
                        reply: None,
                        detail: format!("connection failed at {stage:?}: {detail}"),
                    }
                }
            }
        }
    }

    /// After a rejected MAIL, RCPT or DATA the transaction is abandoned with RSET so the
    /// connection can carry the next one; if even that fails the connection is dropped.
    async fn reset_after_rejection(&mut self) {
        if self.broken || self.connection.has_broken() {
            return;
        }
        let reset = tokio::time::timeout(self.command_timeout, self.connection.command(Rset)).await;
        if !matches!(reset, Ok(Ok(_))) {
            self.broken = true;
        }
    }

    /// Ends the session politely.
    pub async fn quit(mut self) {
        if !self.broken && !self.connection.has_broken() {
            let _ = tokio::time::timeout(self.command_timeout, self.connection.command(Quit)).await;
        }
    }
}
