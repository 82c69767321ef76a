//! Buffered connection I/O with limits: bounded command lines, DATA content, batched replies
//! and the idle and session timeouts.
//!
//! Replies are collected in `out` and written only when the session is about to wait for input
//! that is not buffered yet. Pipelined commands that arrived in one segment are thus answered in
//! one write, and a client that waits for a reply always gets it before the server waits.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};

use crate::data::{DataDecoder, find_byte};

/// Read buffer size: large enough that a pipelined burst or a typical message arrives whole.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Longest command line accepted, line ending included (RFC 5321 asks for at least 512).
pub(crate) const MAX_COMMAND_LINE_BYTES: usize = 4096;
/// Replies pending beyond this size are written even while more input is buffered.
const MAX_PENDING_OUTPUT_BYTES: usize = 64 * 1024;

/// Why reading from the client stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed the connection.
    Eof,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// The session lasted longer than the session timeout.
    SessionTimeout,
    /// The server is shutting down and the session is between transactions.
    Shutdown,
    /// The socket failed, or a write did not complete within the idle timeout.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// Whether a command line fitted into [`MAX_COMMAND_LINE_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineLength {
    Fits,
    TooLong,
}

pub(crate) struct SmtpIo<R, W> {
    reader: BufReader<R>,
    writer: W,
    out: Vec<u8>,
    idle_timeout: Duration,
    session_deadline: Instant,
}

impl<R, W> SmtpIo<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    pub(crate) fn new(reader: R, writer: W, idle_timeout: Duration, session_timeout: Duration) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, reader),
            writer,
            out: Vec::with_capacity(1024),
            idle_timeout,
            session_deadline: Instant::now() + session_timeout,
        }
    }

    /// The pending output, to append replies to.
    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Writes all pending replies.
    pub(crate) async fn flush(&mut self) -> Result<(), ReadError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.writer.write_all(&self.out).await?;
            self.writer.flush().await
        };
        match timeout(self.idle_timeout, write).await {
            Ok(result) => result?,
            Err(_elapsed) => return Err(ReadError::Io(io::ErrorKind::TimedOut.into())),
        }
        self.out.clear();
        Ok(())
    }

    /// Flushes pending replies and half-closes the connection; errors no longer matter here.
    pub(crate) async fn close(mut self) {
        if self.flush().await.is_ok() {
            let _ = timeout(self.idle_timeout, self.writer.shutdown()).await;
        }
    }

    /// Reads one command line into `line` (without CRLF or LF). A line longer than the limit is
    /// read to its end and thrown away. With `shutdown_rx_opt`, a shutdown signal interrupts
    /// the wait.
    pub(crate) async fn read_command_line(
        &mut self,
        line: &mut Vec<u8>,
        mut shutdown_rx_opt: Option<&mut watch::Receiver<bool>>,
    ) -> Result<LineLength, ReadError> {
        line.clear();
        let deadline = self.idle_deadline();
        let mut length = LineLength::Fits;
        loop {
            let num_buffered = self.fill(deadline, shutdown_rx_opt.as_deref_mut()).await?;
            if num_buffered == 0 {
                return Err(ReadError::Eof);
            }
            let buffered = self.reader.buffer();
            let (chunk, is_complete) = match find_byte(b'\n', buffered) {
                Some(index) => (&buffered[..index + 1], true),
                None => (buffered, false),
            };
            if length == LineLength::Fits {
                if line.len() + chunk.len() > MAX_COMMAND_LINE_BYTES {
                    length = LineLength::TooLong;
                    line.clear();
                } else {
                    line.extend_from_slice(chunk);
                }
            }
            let num_consumed = chunk.len();
            self.reader.consume(num_consumed);
            if is_complete {
                break;
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        Ok(length)
    }

    /// Reads DATA content up to and including the end-of-data line into `message`. Returns
    /// false when the message exceeded `max_message_bytes` (its content is then discarded).
    pub(crate) async fn read_message(
        &mut self,
        message: &mut BytesMut,
        max_message_bytes: usize,
    ) -> Result<bool, ReadError> {
        let mut decoder = DataDecoder::new(max_message_bytes);
        loop {
            let deadline = self.idle_deadline();
            if self.fill(deadline, None).await? == 0 {
                return Err(ReadError::Eof);
            }
            let (num_consumed, is_finished) = decoder.decode(self.reader.buffer(), message);
            self.reader.consume(num_consumed);
            if is_finished {
                return Ok(!decoder.overflowed());
            }
        }
    }

    fn idle_deadline(&self) -> Instant {
        (Instant::now() + self.idle_timeout).min(self.session_deadline)
    }

    /// Makes sure input is buffered and returns how much; 0 means end of input. Before waiting
    /// on the socket, all pending replies are written.
    async fn fill(
        &mut self,
        deadline: Instant,
        shutdown_rx_opt: Option<&mut watch::Receiver<bool>>,
    ) -> Result<usize, ReadError> {
        let num_buffered = self.reader.buffer().len();
        if num_buffered > 0 {
            if self.out.len() > MAX_PENDING_OUTPUT_BYTES {
                self.flush().await?;
            }
            return Ok(num_buffered);
        }
        self.flush().await?;
        let session_deadline = self.session_deadline;
        let read = timeout_at(deadline, self.reader.fill_buf());
        let result = match shutdown_rx_opt {
            Some(shutdown_rx) => tokio::select! {
                biased;
                result = read => result,
                _ = shutdown_rx.wait_for(|is_shutting_down| *is_shutting_down) => {
                    return Err(ReadError::Shutdown);
                }
            },
            None => read.await,
        };
        match result {
            Ok(Ok(buffered)) => Ok(buffered.len()),
            Ok(Err(error)) => Err(ReadError::Io(error)),
            Err(_elapsed) if deadline >= session_deadline => Err(ReadError::SessionTimeout),
            Err(_elapsed) => Err(ReadError::IdleTimeout),
        }
    }
}
