//! Async framing over any byte stream: a line reader with the frame cap and a writer task.
//!
//! Local children, ssh channels, unix sockets and in-memory pipes all end up here as a
//! (reader, writer) pair, so every leg speaks through the same code.

use odu_proto::frame::MAX_LINE_BYTES;
use odu_proto::{FrameError, Message, RpcError, decode_line};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// What reading the next frame gave.
#[derive(Debug)]
pub enum Incoming {
    Message(Message),
    /// A decodable frame that is not a JSON-RPC message: answer with this error.
    Invalid(RpcError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("frame exceeds the 16 MiB limit: closing the link")]
    TooLarge,
    #[error("reading the link failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames; undecodable lines (banners, motd) are logged to stderr and skipped.
///
/// Lines are gathered in the reader's own buffer and decoded in place, so a frame is copied
/// once from the link and once by the base64 decoder: log throughput depends on it.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// How far `buf[start..]` was searched for a newline.
    scanned: usize,
    eof: bool,
    label: &'static str,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, label: &'static str) -> Self {
        FrameReader { inner: reader, buf: Vec::new(), start: 0, scanned: 0, eof: false, label }
    }

    /// The next decoded frame's bytes, or `None` at end of stream.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            let Some(line) = self.next_line().await? else { return Ok(None) };
            match line {
                Err(e) => eprintln!("{}: skipped an undecodable line: {e}", self.label),
                Ok(None) => continue,
                Ok(Some(bytes)) => return Ok(Some(bytes)),
            }
        }
    }

    /// The next message, or `None` at end of stream.
    pub async fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
        let Some(bytes) = self.next_frame().await? else { return Ok(None) };
        Ok(Some(match Message::parse(&bytes) {
            Ok(message) => Incoming::Message(message),
            Err(error) => Incoming::Invalid(error),
        }))
    }

    async fn next_line(&mut self) -> Result<Option<Result<Option<Vec<u8>>, FrameError>>, ReadError> {
        loop {
            let pending = &self.buf[self.start..];
            if let Some(at) = memchr::memchr(b'\n', &pending[self.scanned..]) {
                let end = self.start + self.scanned + at;
                let decoded = match decode_line(&self.buf[self.start..end]) {
                    Err(FrameError::TooLarge(_)) => return Err(ReadError::TooLarge),
                    other => other,
                };
                self.start = end + 1;
                self.scanned = 0;
                return Ok(Some(decoded));
            }
            self.scanned = pending.len();
            if self.scanned > MAX_LINE_BYTES {
                return Err(ReadError::TooLarge);
            }
            if self.eof {
                if pending.is_empty() {
                    return Ok(None);
                }
                // A last line without its newline still counts.
                let decoded = decode_line(pending);
                self.start = self.buf.len();
                self.scanned = 0;
                return Ok(Some(decoded));
            }
            // Compact, then read more.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(1 << 20);
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                self.eof = true;
            }
        }
    }
}

/// Owns the write half: frames queued on the returned sender are written in order, flushed
/// whenever the queue runs dry. The task ends when every sender is dropped or a write fails.
pub fn spawn_writer<W: AsyncWrite + Unpin + Send + 'static>(
    mut writer: W,
    capacity: usize,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity);
    let task = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            writer.write_all(&frame).await?;
            while let Ok(frame) = rx.try_recv() {
                writer.write_all(&frame).await?;
            }
            writer.flush().await?;
        }
        writer.shutdown().await.ok();
        Ok(())
    });
    (tx, task)
}

/// What a server is asked once a client has greeted it.
#[derive(Debug)]
pub enum Served {
    Request {
        id: serde_json::Value,
        method: String,
        params: serde_json::Value,
    },
    /// The client stops one of its streams.
    CancelStream(serde_json::Value),
}

/// The server's side of one link: it answers the handshake, refuses requests before it,
/// answers unreadable frames with an error, and hands everything else to the server.
pub struct ServerLink<R> {
    frames: FrameReader<R>,
    out: mpsc::Sender<Vec<u8>>,
    /// Names this end in a protocol refusal ("runner", "server").
    role: &'static str,
    greeted: bool,
}

impl<R: AsyncRead + Unpin> ServerLink<R> {
    pub fn new(frames: FrameReader<R>, out: mpsc::Sender<Vec<u8>>, role: &'static str) -> Self {
        ServerLink { frames, out, role, greeted: false }
    }

    /// The next greeted request or stream cancel; `Ok(None)` when the link is over (closed, or
    /// a client of another protocol version was refused).
    pub async fn next(&mut self) -> Result<Option<Served>, ReadError> {
        use odu_proto::{
            CANCEL_STREAM, CancelStream, HANDSHAKE, HandshakeAnswer, answer_handshake, error_code,
        };
        loop {
            let message = match self.frames.next().await? {
                Some(Incoming::Message(m)) => m,
                Some(Incoming::Invalid(error)) => {
                    self.reply(Message::err(serde_json::Value::Null, error)).await;
                    continue;
                }
                None => return Ok(None),
            };
            match message {
                Message::Request { id, method, params } if method == HANDSHAKE => {
                    match answer_handshake(id, params, self.role) {
                        HandshakeAnswer::Accept(reply) => {
                            self.greeted = true;
                            self.reply(reply).await;
                        }
                        HandshakeAnswer::Refuse(reply) => {
                            self.reply(reply).await;
                            return Ok(None);
                        }
                        HandshakeAnswer::Invalid(reply) => self.reply(reply).await,
                    }
                }
                Message::Request { id, .. } if !self.greeted => {
                    let error = RpcError::new(error_code::NO_HANDSHAKE, "send the handshake first");
                    self.reply(Message::err(id, error)).await;
                }
                Message::Request { id, method, params } => {
                    return Ok(Some(Served::Request { id, method, params }));
                }
                Message::Notification { method, params } if method == CANCEL_STREAM => {
                    if let Ok(c) = serde_json::from_value::<CancelStream>(params) {
                        return Ok(Some(Served::CancelStream(c.id)));
                    }
                }
                Message::Notification { .. } | Message::Response { .. } => {}
            }
        }
    }

    async fn reply(&self, message: Message) {
        let _ = self.out.send(message.to_frame()).await;
    }
}
