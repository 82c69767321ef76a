//! One SMTP session: the command state machine between the connection and the handler.

use std::mem;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::command::{Command, CommandError, parse_command};
use crate::handler::{Envelope, SessionInfo, SmtpHandler};
use crate::io::{LineLength, ReadError, SmtpIo};
use crate::reply::{Reply, write_reply};
use crate::server::SessionSettings;

/// Initial capacity of the message buffer; it grows as needed up to the size limit.
const INITIAL_MESSAGE_CAPACITY: usize = 64 * 1024;
/// A message buffer grown beyond this is released after the message instead of kept for the
/// next one, so a thousand idle sessions do not each hold on to a 12 MiB buffer.
const MAX_RETAINED_MESSAGE_CAPACITY: usize = 1024 * 1024;

const OK: Reply = Reply::ok();
/// 354 is an intermediate reply and carries no enhanced code.
const START_MAIL_INPUT: &[u8] = b"354 end data with <CR><LF>.<CR><LF>\r\n";
const BYE: Reply = Reply::fixed(221, "2.0.0", "bye");
const CANNOT_VRFY: Reply = Reply::fixed(252, "2.5.0", "cannot verify user, but will accept message");
const HELP: Reply = Reply::fixed(214, "2.0.0", "see https://www.rfc-editor.org/rfc/rfc5321");
const NEED_HELO: Reply = Reply::fixed(503, "5.5.1", "send EHLO or HELO first");
const NESTED_MAIL: Reply = Reply::fixed(503, "5.5.1", "nested MAIL command");
const NEED_MAIL: Reply = Reply::fixed(503, "5.5.1", "send MAIL first");
const NO_RECIPIENTS: Reply = Reply::fixed(554, "5.5.1", "no valid recipients");
const TOO_MANY_RECIPIENTS: Reply = Reply::fixed(452, "4.5.3", "too many recipients");
const MESSAGE_TOO_BIG: Reply = Reply::fixed(552, "5.3.4", "message size exceeds fixed maximum");
const LINE_TOO_LONG: Reply = Reply::fixed(500, "5.5.2", "line too long");
const IDLE_TIMEOUT: Reply = Reply::fixed(421, "4.4.2", "idle timeout, closing connection");
const SESSION_TIMEOUT: Reply = Reply::fixed(421, "4.4.2", "session timeout, closing connection");
const SHUTTING_DOWN: Reply = Reply::fixed(421, "4.3.0", "server shutting down, try again later");

fn reply_for_command_error(error: CommandError) -> Reply {
    match error {
        CommandError::Unknown => Reply::fixed(500, "5.5.2", "command not recognized"),
        CommandError::NotImplemented => Reply::fixed(502, "5.5.1", "command not implemented"),
        CommandError::Syntax => Reply::fixed(501, "5.5.4", "syntax error in parameters or arguments"),
        CommandError::BadSenderAddress => Reply::fixed(501, "5.1.7", "bad sender address syntax"),
        CommandError::BadRecipientAddress => Reply::fixed(501, "5.1.3", "bad recipient address syntax"),
        CommandError::UnsupportedParameter => Reply::fixed(555, "5.5.4", "parameter not recognized or not implemented"),
    }
}

/// What the session does after a command.
enum Flow {
    Continue,
    /// Write pending replies, then close.
    Close,
    /// Close at once without writing anything more.
    Drop,
    /// Reading failed mid-command (during DATA).
    ReadFailed(ReadError),
}

/// Where the session stands in RFC 5321's command order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before EHLO or HELO.
    Connected,
    /// After EHLO/HELO, outside a transaction.
    Greeted,
    /// After an accepted MAIL, until DATA ends or RSET.
    InTransaction,
}

pub(crate) struct Session<'a, R, W, H> {
    io: SmtpIo<R, W>,
    handler: &'a H,
    settings: &'a SessionSettings,
    max_message_bytes: usize,
    max_recipients: usize,
    info: SessionInfo,
    stage: Stage,
    said_ehlo: bool,
    envelope: Envelope,
    line: Vec<u8>,
    message: BytesMut,
    shutdown_rx: watch::Receiver<bool>,
}

impl<'a, R, W, H> Session<'a, R, W, H>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: SmtpHandler,
{
    pub(crate) fn new(
        io: SmtpIo<R, W>,
        handler: &'a H,
        settings: &'a SessionSettings,
        info: SessionInfo,
        shutdown_rx: watch::Receiver<bool>,
    ) -> Self {
        Self {
            io,
            handler,
            settings,
            max_message_bytes: settings.config.max_message_bytes,
            max_recipients: settings.config.max_recipients,
            info,
            stage: Stage::Connected,
            said_ehlo: false,
            envelope: Envelope::default(),
            line: Vec::with_capacity(256),
            message: BytesMut::new(),
            shutdown_rx,
        }
    }

    /// Serves the session until QUIT, a closing reply, end of input or a limit.
    pub(crate) async fn run(mut self) {
        self.io.out().extend_from_slice(&self.settings.greeting);
        loop {
            let in_transaction = self.stage == Stage::InTransaction;
            if !in_transaction && *self.shutdown_rx.borrow() {
                self.push_reply(&SHUTTING_DOWN);
                break;
            }
            // Between transactions a shutdown interrupts the wait; inside one it does not, so
            // that a started transaction can finish.
            let shutdown_rx_opt = (!in_transaction).then_some(&mut self.shutdown_rx);
            let flow = match self.io.read_command_line(&mut self.line, shutdown_rx_opt).await {
                Ok(LineLength::TooLong) => {
                    self.push_reply(&LINE_TOO_LONG);
                    Flow::Continue
                }
                Ok(LineLength::Fits) => {
                    let line = mem::take(&mut self.line);
                    let flow = self.handle_command_line(&line).await;
                    self.line = line;
                    flow
                }
                Err(error) => Flow::ReadFailed(error),
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => break,
                Flow::Drop => return,
                Flow::ReadFailed(ReadError::Io(error)) => {
                    // The socket is broken (or the client stopped reading): nothing more to say.
                    tracing::debug!(error = %error, "connection failed");
                    return;
                }
                Flow::ReadFailed(error) => {
                    self.handle_read_error(error);
                    break;
                }
            }
        }
        self.io.close().await;
    }

    fn handle_read_error(&mut self, error: ReadError) {
        match error {
            ReadError::Eof => tracing::debug!("client closed the connection"),
            ReadError::IdleTimeout => {
                tracing::debug!("idle timeout");
                self.push_reply(&IDLE_TIMEOUT);
            }
            ReadError::SessionTimeout => {
                tracing::debug!("session timeout");
                self.push_reply(&SESSION_TIMEOUT);
            }
            ReadError::Shutdown => self.push_reply(&SHUTTING_DOWN),
            ReadError::Io(error) => tracing::debug!(error = %error, "connection failed"),
        }
    }

    async fn handle_command_line(&mut self, line: &[u8]) -> Flow {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(error) => {
                self.push_reply(&reply_for_command_error(error));
                return Flow::Continue;
            }
        };
        match command {
            Command::Ehlo { client_name } => {
                self.greet(client_name, true);
                Flow::Continue
            }
            Command::Helo { client_name } => {
                self.greet(client_name, false);
                Flow::Continue
            }
            Command::Mail { reverse_path, declared_size_opt } => {
                self.handle_mail(reverse_path, declared_size_opt).await
            }
            Command::Rcpt { forward_path } => self.handle_rcpt(forward_path).await,
            Command::Data => self.handle_data().await,
            Command::Rset => {
                self.reset_transaction();
                self.push_reply(&OK);
                Flow::Continue
            }
            Command::Noop => {
                self.push_reply(&OK);
                Flow::Continue
            }
            Command::Quit => {
                self.push_reply(&BYE);
                Flow::Close
            }
            Command::Vrfy => {
                self.push_reply(&CANNOT_VRFY);
                Flow::Continue
            }
            Command::Help => {
                self.push_reply(&HELP);
                Flow::Continue
            }
        }
    }

    fn greet(&mut self, client_name: &str, is_ehlo: bool) {
        self.reset_transaction();
        self.stage = Stage::Greeted;
        self.said_ehlo = is_ehlo;
        self.info.set_helo_name(client_name);
        let response = if is_ehlo { &self.settings.ehlo_response } else { &self.settings.helo_response };
        self.io.out().extend_from_slice(response);
    }

    async fn handle_mail(&mut self, reverse_path: &str, declared_size_opt: Option<u64>) -> Flow {
        match self.stage {
            Stage::Connected => return self.respond(&NEED_HELO),
            Stage::InTransaction => return self.respond(&NESTED_MAIL),
            Stage::Greeted => {}
        }
        let max_message_bytes = u64::try_from(self.max_message_bytes).unwrap_or(u64::MAX);
        if declared_size_opt.is_some_and(|declared_size| declared_size > max_message_bytes) {
            return self.respond(&MESSAGE_TOO_BIG);
        }
        let reply = self.handler.mail_from(&self.info, reverse_path).await;
        if reply.is_positive() {
            self.envelope.set_reverse_path(reverse_path);
            self.stage = Stage::InTransaction;
        }
        self.respond(&reply)
    }

    async fn handle_rcpt(&mut self, forward_path: &str) -> Flow {
        if self.stage != Stage::InTransaction {
            return self.respond(&NEED_MAIL);
        }
        if self.envelope.num_forward_paths() >= self.max_recipients {
            return self.respond(&TOO_MANY_RECIPIENTS);
        }
        let reply = self.handler.rcpt_to(&self.info, self.envelope.reverse_path(), forward_path).await;
        if reply.is_positive() {
            self.envelope.add_forward_path(forward_path);
        }
        self.respond(&reply)
    }

    async fn handle_data(&mut self) -> Flow {
        if self.stage != Stage::InTransaction {
            return self.respond(&NEED_MAIL);
        }
        if self.envelope.num_forward_paths() == 0 {
            return self.respond(&NO_RECIPIENTS);
        }
        self.io.out().extend_from_slice(START_MAIL_INPUT);
        // Reclaims the previous message's allocation if the handler has dropped it.
        self.message.reserve(INITIAL_MESSAGE_CAPACITY);
        let fits = match self.io.read_message(&mut self.message, self.max_message_bytes).await {
            Ok(fits) => fits,
            Err(error) => return Flow::ReadFailed(error),
        };
        if !fits {
            tracing::debug!(max_message_bytes = self.max_message_bytes, "message too big");
            self.message = BytesMut::new();
            self.reset_transaction();
            return self.respond(&MESSAGE_TOO_BIG);
        }
        let message = self.message.split().freeze();
        if message.len() > MAX_RETAINED_MESSAGE_CAPACITY {
            self.message = BytesMut::new();
        }
        let reply = self.handler.data(&self.info, &self.envelope, message).await;
        self.reset_transaction();
        self.respond(&reply)
    }

    fn reset_transaction(&mut self) {
        self.envelope.clear();
        if self.stage == Stage::InTransaction {
            self.stage = Stage::Greeted;
        }
    }

    fn respond(&mut self, reply: &Reply) -> Flow {
        if reply.closes_without_reply() {
            return Flow::Drop;
        }
        self.push_reply(reply);
        if reply.closes_after_reply() { Flow::Close } else { Flow::Continue }
    }

    fn push_reply(&mut self, reply: &Reply) {
        let with_enhanced_code = self.said_ehlo;
        write_reply(self.io.out(), reply, with_enhanced_code);
    }
}

#[cfg(test)]
mod tests;
