//! Async framing over any byte stream: a line reader with the frame cap and a writer task.
//!
//! Local children, ssh channels, unix sockets and in-memory pipes all end up here as a
//! (reader, writer) pair, so every leg speaks through the same code.

use odu_proto::frame::MAX_LINE_BYTES;
use odu_proto::{FrameError, Message, RpcError, decode_line};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
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

/// Reads frames; undecodable lines (banners, motd) are reported to `on_garbage` and skipped.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    label: &'static str,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, label: &'static str) -> Self {
        FrameReader { inner: BufReader::with_capacity(1 << 18, reader), line: Vec::new(), label }
    }

    /// The next message, or `None` at end of stream.
    pub async fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            self.line.clear();
            let n =
                (&mut self.inner).take(MAX_LINE_BYTES as u64 + 2).read_until(b'\n', &mut self.line).await?;
            if n == 0 {
                return Ok(None);
            }
            if self.line.last() != Some(&b'\n') && n as u64 > MAX_LINE_BYTES as u64 {
                return Err(ReadError::TooLarge);
            }
            match decode_line(&self.line) {
                Ok(None) => continue,
                Ok(Some(bytes)) => {
                    return Ok(Some(match Message::parse(&bytes) {
                        Ok(message) => Incoming::Message(message),
                        Err(error) => Incoming::Invalid(error),
                    }));
                }
                Err(FrameError::TooLarge(_)) => return Err(ReadError::TooLarge),
                Err(e @ FrameError::NotBase64 { .. }) => {
                    eprintln!("{}: skipped an undecodable line: {e}", self.label);
                }
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
