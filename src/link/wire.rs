//! Async framing over any byte stream: a line reader with the frame cap and a writer task.
//!
//! Local children, ssh channels, unix sockets and in-memory pipes all end up here as a
//! (reader, writer) pair, so every leg speaks through the same code.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use odu_proto::frame::MAX_FRAME_BYTES;
use odu_proto::{FrameError, Message, RawParams, RpcError, decode_line};
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
    #[error("frame exceeds the {} limit: closing the link", mib(*.0))]
    TooLarge(usize),
    #[error(
        "the server's buffers for unfinished requests are full ({} across its clients): closing this connection; send the request again once other clients are done",
        mib(*.0)
    )]
    OverBudget(usize),
    #[error("the link was closed to make room for another")]
    Shut,
    #[error("reading the link failed: {0}")]
    Io(#[from] std::io::Error),
}

fn mib(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) { format!("{} MiB", bytes >> 20) } else { format!("{bytes} bytes") }
}

/// Bytes that many links' buffers share: a link draws on it for whatever it holds beyond its own
/// allowance, and gives it back when its buffer shrinks or the link ends.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    free: AtomicUsize,
}

impl BufferPool {
    pub fn new(size: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool { size, free: AtomicUsize::new(size) })
    }

    /// Bytes not drawn by any link.
    pub fn free(&self) -> usize {
        self.free.load(Ordering::SeqCst)
    }

    fn take(&self, bytes: usize) -> bool {
        self.free.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |free| free.checked_sub(bytes)).is_ok()
    }

    fn give(&self, bytes: usize) {
        self.free.fetch_add(bytes, Ordering::SeqCst);
    }
}

/// How much a reader may buffer.
#[derive(Clone, Debug)]
pub struct FrameLimits {
    /// The largest decoded frame; a longer line closes the link.
    pub max_frame: usize,
    /// Room made for each read when the buffer is full.
    pub read_chunk: usize,
    /// Shared accounting for links that must not grow without bound together (many clients of
    /// one server); `None` for a link that is alone (a lane's runner, a client's server).
    pub budget: Option<Budget>,
}

/// A reader's place in a [`BufferPool`].
#[derive(Clone, Debug)]
pub struct Budget {
    pub pool: Arc<BufferPool>,
    /// Buffer bytes this link may hold without drawing on the pool.
    pub allowance: usize,
    /// Where the reader says how it is doing.
    pub gauge: Arc<ReadGauge>,
}

/// What a budgeted reader publishes about itself, for its owner to choose whom to close.
#[derive(Debug, Default)]
pub struct ReadGauge {
    /// Bytes of an unfinished frame the reader holds.
    pub unfinished: AtomicUsize,
    /// Lines read whole so far, or [`ReadGauge::SHUT`].
    pub lines: AtomicUsize,
}

impl ReadGauge {
    const SHUT: usize = usize::MAX;

    /// Shuts a reader that has not read a whole line yet: it reads none after this. `false`
    /// when it already has (it is being served).
    pub fn shut_if_silent(&self) -> bool {
        self.lines.compare_exchange(0, ReadGauge::SHUT, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Whether the reader has not read a whole line yet.
    pub fn silent(&self) -> bool {
        self.lines.load(Ordering::SeqCst) == 0
    }
}

impl FrameLimits {
    /// A protocol link between odu's own processes: frames up to the protocol's 16 MiB, read
    /// in large chunks (log throughput depends on it).
    pub fn link() -> FrameLimits {
        FrameLimits { max_frame: MAX_FRAME_BYTES, read_chunk: 1 << 20, budget: None }
    }

    /// One client of a server among many: small requests, read in small chunks, the buffer
    /// returned after every frame, and its growth drawn from the server's pool.
    pub fn client_of_server(max_frame: usize, budget: Budget) -> FrameLimits {
        FrameLimits { max_frame, read_chunk: 16 * 1024, budget: Some(budget) }
    }

    /// The longest line that can carry a frame of `max_frame` bytes.
    fn max_line(&self) -> usize {
        self.max_frame.div_ceil(3) * 4
    }
}

/// What a budgeted reader holds of its pool; given back when dropped.
struct Charge {
    budget: Budget,
    /// Bytes drawn from the pool.
    held: usize,
}

impl Charge {
    /// Accounts for a buffer of `capacity` bytes: draws or gives back the difference.
    fn set(&mut self, capacity: usize) -> bool {
        let need = capacity.saturating_sub(self.budget.allowance);
        if need > self.held {
            if !self.budget.pool.take(need - self.held) {
                return false;
            }
        } else {
            self.budget.pool.give(self.held - need);
        }
        self.held = need;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.pool.give(self.held);
        self.budget.gauge.unfinished.store(0, Ordering::SeqCst);
    }
}

/// A reader's buffer. Small lines live on the heap; a budgeted reader's larger ones live in
/// memory mapped for them alone, which goes back to the system the moment it is let go
/// (freed heap memory often stays with the process, fragmented).
enum LineBuf {
    Heap(Vec<u8>),
    Mapped(Mapped),
}

impl LineBuf {
    fn data(&self) -> &[u8] {
        match self {
            LineBuf::Heap(v) => v,
            LineBuf::Mapped(m) => m.filled(),
        }
    }

    fn len(&self) -> usize {
        self.data().len()
    }

    fn capacity(&self) -> usize {
        match self {
            LineBuf::Heap(v) => v.capacity(),
            LineBuf::Mapped(m) => m.cap,
        }
    }

    /// Forgets the first `n` bytes.
    fn consume(&mut self, n: usize) {
        match self {
            LineBuf::Heap(v) => {
                v.drain(..n);
            }
            LineBuf::Mapped(m) => m.consume(n),
        }
    }

    /// Moves the data into a buffer of about `capacity` bytes (at least its length): on the
    /// heap up to `heap_max`, mapped above it. Returns the new capacity.
    fn resize(&mut self, capacity: usize, heap_max: usize) -> std::io::Result<usize> {
        let capacity = capacity.max(self.len());
        let next = if capacity <= heap_max {
            let mut v = Vec::with_capacity(capacity);
            v.extend_from_slice(self.data());
            LineBuf::Heap(v)
        } else {
            let mut m = Mapped::new(capacity)?;
            m.spare()[..self.len()].copy_from_slice(self.data());
            m.len = self.len();
            LineBuf::Mapped(m)
        };
        *self = next;
        Ok(self.capacity())
    }

    async fn read_from<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> std::io::Result<usize> {
        match self {
            LineBuf::Heap(v) => reader.read_buf(v).await,
            LineBuf::Mapped(m) => {
                let n = reader.read(m.spare()).await?;
                m.len += n;
                Ok(n)
            }
        }
    }
}

/// Anonymous memory mapped for one buffer, unmapped when dropped.
struct Mapped {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone, like a Vec's allocation.
unsafe impl Send for Mapped {}
// SAFETY: shared access only reads.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn new(capacity: usize) -> std::io::Result<Mapped> {
        let page = 4096;
        let cap = capacity.div_ceil(page) * page;
        // SAFETY: a new private anonymous mapping, owned by the value returned.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast()).expect("mmap returns no null mapping");
        Ok(Mapped { ptr, cap, len: 0 })
    }

    fn filled(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the mapping were written.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The part after the data. Anonymous mappings start zeroed, so all of it is initialised.
    fn spare(&mut self) -> &mut [u8] {
        // SAFETY: `len <= cap`, and the range is inside the mapping this value owns.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len), self.cap - self.len) }
    }

    fn consume(&mut self, n: usize) {
        // SAFETY: the whole mapping is initialised (see `spare`) and owned by this value.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) };
        all.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this value owns, once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
    }
}

/// Reads frames; undecodable lines (banners, motd) are logged to stderr and skipped.
///
/// Lines are gathered in the reader's own buffer and decoded in place, so a frame is copied
/// once from the link and once by the base64 decoder: log throughput depends on it.
pub struct FrameReader<R> {
    inner: R,
    buf: LineBuf,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// How far `buf[start..]` was searched for a newline.
    scanned: usize,
    eof: bool,
    label: &'static str,
    limits: FrameLimits,
    max_line: usize,
    charge: Option<Charge>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, label: &'static str) -> Self {
        FrameReader::with_limits(reader, label, FrameLimits::link())
    }

    pub fn with_limits(reader: R, label: &'static str, limits: FrameLimits) -> Self {
        let charge = limits.budget.clone().map(|budget| Charge { budget, held: 0 });
        let max_line = limits.max_line();
        FrameReader {
            inner: reader,
            buf: LineBuf::Heap(Vec::new()),
            start: 0,
            scanned: 0,
            eof: false,
            label,
            limits,
            max_line,
            charge,
        }
    }

    /// The next decoded frame's bytes, or `None` at end of stream.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            let Some(line) = self.next_line().await? else { return Ok(None) };
            match line {
                Err(e) => crate::error::say(format!("{}: skipped an undecodable line: {e}", self.label)),
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

    /// [`FrameReader::next`] with each message's params kept as their JSON text, for a reader
    /// that takes them straight into its own types.
    pub async fn next_raw(&mut self) -> Result<Option<Result<Message<RawParams>, RpcError>>, ReadError> {
        let Some(bytes) = self.next_frame().await? else { return Ok(None) };
        Ok(Some(Message::parse_raw(&bytes)))
    }

    /// Whether a whole line is already read and waiting: the next [`FrameReader::next`] then
    /// returns without reading the link.
    pub fn holds_a_line(&self) -> bool {
        let pending = &self.buf.data()[self.start..];
        memchr::memchr(b'\n', &pending[self.scanned.min(pending.len())..]).is_some()
            || (self.eof && !pending.is_empty())
    }

    async fn next_line(&mut self) -> Result<Option<Result<Option<Vec<u8>>, FrameError>>, ReadError> {
        loop {
            let pending = &self.buf.data()[self.start..];
            if let Some(at) = memchr::memchr(b'\n', &pending[self.scanned..]) {
                let end = self.start + self.scanned + at;
                if end - self.start > self.max_line {
                    return Err(ReadError::TooLarge(self.limits.max_frame));
                }
                let decoded = match decode_line(&self.buf.data()[self.start..end]) {
                    Err(FrameError::TooLarge(_)) => return Err(ReadError::TooLarge(self.limits.max_frame)),
                    other => other,
                };
                self.start = end + 1;
                self.scanned = 0;
                self.settle()?;
                return Ok(Some(decoded));
            }
            self.scanned = pending.len();
            if let Some(charge) = &self.charge {
                // Only a line without its end counts: whole lines waiting are being served.
                charge.budget.gauge.unfinished.store(self.scanned, Ordering::SeqCst);
            }
            if self.scanned > self.max_line {
                return Err(ReadError::TooLarge(self.limits.max_frame));
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
            self.make_room()?;
            let n = self.buf.read_from(&mut self.inner).await?;
            if n == 0 {
                self.eof = true;
            }
        }
    }

    /// Compacts the buffer and makes room for the next read, within the limits.
    fn make_room(&mut self) -> Result<(), ReadError> {
        if self.start > 0 {
            self.buf.consume(self.start);
            self.start = 0;
        }
        let chunk = self.limits.read_chunk;
        let Some(charge) = &mut self.charge else {
            if let LineBuf::Heap(v) = &mut self.buf {
                v.reserve(chunk);
            }
            return Ok(());
        };
        let (len, capacity) = (self.buf.len(), self.buf.capacity());
        let want = if capacity > chunk && capacity > 2 * (len + chunk) {
            // Most of a large buffer was consumed: give the rest back.
            len + chunk
        } else if capacity - len < chunk / 4 {
            // Double, but never past what the longest line needs (one more byte shows that a
            // line is too long).
            (capacity * 2).max(len + chunk).min(self.max_line + chunk)
        } else {
            return Ok(());
        };
        let over = |charge: &Charge| ReadError::OverBudget(charge.budget.pool.size);
        if want > capacity && !charge.set(want) {
            return Err(over(charge));
        }
        let got = self.buf.resize(want, chunk)?;
        if !charge.set(got) {
            return Err(over(charge));
        }
        Ok(())
    }

    /// After a frame: a budgeted reader with nothing left over gives its buffer back, so a
    /// large request costs nothing once answered. A reader shut before its first line hands
    /// over no line.
    fn settle(&mut self) -> Result<(), ReadError> {
        let Some(charge) = &mut self.charge else { return Ok(()) };
        let gauge = &charge.budget.gauge;
        gauge.unfinished.store(0, Ordering::SeqCst);
        gauge
            .lines
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n != ReadGauge::SHUT).then(|| n + 1))
            .map_err(|_| ReadError::Shut)?;
        if self.buf.len() == self.start && self.buf.capacity() > self.limits.read_chunk {
            self.buf = LineBuf::Heap(Vec::new());
            self.start = 0;
            charge.set(0);
        }
        Ok(())
    }
}

/// Frames shorter than this that are queued together go out in one write.
const GATHER_BYTES: usize = 64 * 1024;

/// Owns the write half: frames queued on the returned sender are written in order, flushed
/// whenever the queue runs dry. The task ends when every sender is dropped or a write fails.
///
/// Short frames queued together are written as one: the answers to a burst of requests (a
/// coordinator subscribing to every node's log) are a few writes, not one each, and so are the
/// frames of nodes that end together. A frame on its own, or a long one (a log chunk), is
/// written as it is, without a copy.
pub fn spawn_writer<W: AsyncWrite + Unpin + Send + 'static>(
    mut writer: W,
    capacity: usize,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(capacity);
    let task = tokio::spawn(async move {
        let mut gathered: Vec<u8> = Vec::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(frame) = next.take() {
                next = rx.try_recv().ok();
                let long = frame.len() >= GATHER_BYTES;
                if !gathered.is_empty() && (long || gathered.len() + frame.len() > GATHER_BYTES) {
                    writer.write_all(&gathered).await?;
                    gathered.clear();
                }
                if long || (gathered.is_empty() && next.is_none()) {
                    writer.write_all(&frame).await?;
                } else {
                    gathered.extend_from_slice(&frame);
                }
            }
            if !gathered.is_empty() {
                writer.write_all(&gathered).await?;
                gathered.clear();
            }
            // A burst's buffer is not kept by an idle link (a server holds one per client).
            if gathered.capacity() > GATHER_BYTES / 4 {
                gathered = Vec::new();
            }
            writer.flush().await?;
        }
        writer.shutdown().await.ok();
        Ok(())
    });
    (tx, task)
}

/// What a server is asked once a client has greeted it. A request's params are the JSON text
/// they came as: each request reads them into its own type.
#[derive(Debug)]
pub enum Served {
    Request {
        id: serde_json::Value,
        method: String,
        params: RawParams,
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
            let message = match self.frames.next_raw().await? {
                Some(Ok(m)) => m,
                Some(Err(error)) => {
                    self.reply(Message::err(serde_json::Value::Null, error)).await;
                    continue;
                }
                None => return Ok(None),
            };
            match message {
                Message::Request { id, method, params } if method == HANDSHAKE => {
                    match answer_handshake(id, &params, self.role) {
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
                    if let Ok(c) = serde_json::from_str::<CancelStream>(params.get()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use odu_proto::frame::encode_frame;

    fn reader(
        pool: &Arc<BufferPool>,
        max_frame: usize,
    ) -> (FrameReader<tokio::io::DuplexStream>, tokio::io::DuplexStream, Arc<ReadGauge>) {
        let (ours, theirs) = tokio::io::duplex(4 << 20);
        let gauge = Arc::new(ReadGauge::default());
        let budget = Budget { pool: pool.clone(), allowance: 64 << 10, gauge: gauge.clone() };
        (
            FrameReader::with_limits(ours, "test", FrameLimits::client_of_server(max_frame, budget)),
            theirs,
            gauge,
        )
    }

    /// A writer that keeps each write it is given apart.
    #[derive(Clone, Default)]
    struct Writes(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_queued_together_are_written_in_order_short_ones_as_one_write() {
        let writes = Writes::default();
        let (out, task) = spawn_writer(writes.clone(), 512);
        // Queued before the writer task first runs (one thread): 300 short frames, a long one
        // amid them, then 100 more short ones.
        let mut frames: Vec<Vec<u8>> = (0..300u32).map(|i| format!("frame {i}\n").into_bytes()).collect();
        frames.push(vec![b'L'; GATHER_BYTES + 1]);
        frames.extend((300..400u32).map(|i| format!("frame {i}\n").into_bytes()));
        for frame in &frames {
            out.try_send(frame.clone()).unwrap();
        }
        drop(out);
        task.await.unwrap().unwrap();
        let writes = writes.0.lock().unwrap().clone();
        assert_eq!(writes.concat(), frames.concat(), "every byte, in order");
        assert_eq!(
            writes.len(),
            3,
            "short ones gathered, the long one alone: {:?}",
            writes.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(writes[1].len(), GATHER_BYTES + 1, "the long frame is written on its own");

        // A frame that finds the queue empty is written as it is.
        let writes = Writes::default();
        let (out, task) = spawn_writer(writes.clone(), 4);
        out.send(b"one\n".to_vec()).await.unwrap();
        tokio::task::yield_now().await;
        out.send(b"two\n".to_vec()).await.unwrap();
        drop(out);
        task.await.unwrap().unwrap();
        assert_eq!(writes.0.lock().unwrap().concat(), b"one\ntwo\n");
    }

    #[tokio::test]
    async fn a_reader_says_whether_a_whole_line_waits_without_reading_the_link() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut frames = FrameReader::new(ours, "test");
        assert!(!frames.holds_a_line(), "nothing read yet");
        let mut bytes = Vec::new();
        for text in [&b"one"[..], b"two", b"three"] {
            encode_frame(text, &mut bytes);
        }
        // The third line arrives without its end.
        bytes.pop();
        theirs.write_all(&bytes).await.unwrap();
        assert_eq!(frames.next_frame().await.unwrap().unwrap(), b"one");
        assert!(frames.holds_a_line(), "the second line came in the same read");
        assert_eq!(frames.next_frame().await.unwrap().unwrap(), b"two");
        assert!(!frames.holds_a_line(), "the third is not whole yet");
        theirs.write_all(b"\n").await.unwrap();
        assert_eq!(frames.next_frame().await.unwrap().unwrap(), b"three");
        assert!(!frames.holds_a_line());
        // A last line cut by the end of the stream still counts, once the end was seen.
        let mut last = Vec::new();
        encode_frame(b"four", &mut last);
        encode_frame(b"five", &mut last);
        last.pop();
        theirs.write_all(&last).await.unwrap();
        drop(theirs);
        assert_eq!(frames.next_frame().await.unwrap().unwrap(), b"four");
        assert_eq!(frames.next_frame().await.unwrap().unwrap(), b"five");
        assert!(!frames.holds_a_line());
        assert!(frames.next_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_budgeted_reader_gives_its_buffer_back_after_each_frame() {
        let pool = BufferPool::new(4 << 20);
        let (mut frames, mut peer, gauge) = reader(&pool, 1 << 20);
        let mut line = Vec::new();
        encode_frame(&vec![b'x'; 600 << 10], &mut line);
        peer.write_all(&line).await.unwrap();
        assert_eq!(frames.next_frame().await.unwrap().unwrap().len(), 600 << 10);
        assert_eq!(pool.free(), 4 << 20, "the pool is whole again");
        assert!(frames.buf.capacity() <= 16 << 10, "{}", frames.buf.capacity());
        assert_eq!(gauge.unfinished.load(Ordering::SeqCst), 0);
        assert_eq!(gauge.lines.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn readers_that_outgrow_the_shared_pool_are_closed_and_give_it_back() {
        let pool = BufferPool::new(256 << 10);
        let (mut first, mut a, _) = reader(&pool, 1 << 20);
        let (mut second, mut b, _) = reader(&pool, 1 << 20);
        // An unfinished line of 200 KiB draws on the pool beyond its 64 KiB allowance ...
        a.write_all(&vec![b'A'; 200 << 10]).await.unwrap();
        let first = tokio::spawn(async move { first.next_frame().await.map(|_| ()) });
        let drawn = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while pool.free() == 256 << 10 {
                tokio::task::yield_now().await;
            }
        });
        drawn.await.expect("the first reader draws on the pool");
        // ... so a second one finds too little left for its own.
        b.write_all(&vec![b'A'; 200 << 10]).await.unwrap();
        let error = second.next_frame().await.unwrap_err();
        assert!(matches!(error, ReadError::OverBudget(_)), "{error}");
        assert!(error.to_string().contains("buffers for unfinished requests are full"), "{error}");
        drop(second);
        first.abort();
        let _ = first.await;
        assert_eq!(pool.free(), 256 << 10, "every byte drawn came back");
    }

    #[tokio::test]
    async fn a_reader_shut_before_its_first_line_hands_over_none_and_one_served_cannot_be_shut() {
        let pool = BufferPool::new(1 << 20);
        let mut line = Vec::new();
        encode_frame(b"{}", &mut line);
        let (mut silent, mut a, gauge) = reader(&pool, 1 << 20);
        assert!(gauge.shut_if_silent());
        a.write_all(&line).await.unwrap();
        assert!(matches!(silent.next_frame().await, Err(ReadError::Shut)));
        let (mut served, mut b, gauge) = reader(&pool, 1 << 20);
        b.write_all(&line).await.unwrap();
        assert!(served.next_frame().await.unwrap().is_some());
        assert!(!gauge.shut_if_silent(), "a reader that was served stays");
    }

    #[tokio::test]
    async fn a_line_over_the_readers_cap_closes_it_with_the_cap_named() {
        let pool = BufferPool::new(32 << 20);
        let (mut frames, mut peer, _) = reader(&pool, 1 << 20);
        tokio::spawn(async move {
            let _ = peer.write_all(&vec![b'A'; 2 << 20]).await;
        });
        let error = frames.next_frame().await.unwrap_err();
        assert!(error.to_string().contains("exceeds the 1 MiB limit"), "{error}");
        assert!(frames.buf.capacity() <= (1 << 20) / 3 * 4 + (32 << 10), "{}", frames.buf.capacity());
    }
}
