//! A log spool: bytes appended as they arrive, plus a watch of the length so readers can
//! follow it like `tail -f`. Readers pull, so a slow reader costs no memory of its own.
//!
//! Two kinds:
//! - a **file** spool (the coordinator's trail) keeps every byte in its file;
//! - a **windowed** spool (the runner's) keeps the first bytes of a log in a file, so a late
//!   subscriber replays any short log from the top, and the rest in a bounded in-memory window
//!   that readers drain. A live reader never loses a byte: when the window is full of bytes a
//!   reader has not read yet, the writer waits (the node's pipe fills and the node waits too).
//!   A reader that arrives after the window moved on is told how many bytes it missed. This
//!   keeps a long log off the runner's disk: the coordinator's trail is the durable copy.
//!
//! Each (re)start of a log is a new generation; a reader seeing a new generation starts over
//! from its first byte.
//!
//! Creating a file is the dearest thing a node costs (an inode allocated, a directory entry),
//! so a spool can defer its file until it is needed: a windowed spool's file appears with the
//! first byte of a generation (a node that prints nothing costs the runner no file), and a
//! deferred file spool's file with its first byte, its end, or [`Spool::ensure_file`] (the
//! trail names it the latest when the node starts). A reader finds it when it appears.
//!
//! A log the disk will not take whole (a full disk) is cut where the write failed and ends with
//! an `[odu] log truncated: <reason>` line; the spool remembers the reason ([`Spool::truncated`])
//! and drops the rest of that generation. A file spool keeps room for that line on the disk past
//! its end, so a write that fills the disk fails only after writing at least that much, which the
//! line then overwrites (no reader has seen those bytes yet).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, watch};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolState {
    pub generation: u32,
    pub path: PathBuf,
    pub len: u64,
    pub ended: bool,
}

/// The in-memory tail of a windowed spool.
struct Window {
    /// Bytes `[0, head)` of a log live in the file.
    head: u64,
    /// How many bytes past the head may wait in memory.
    capacity: usize,
    inner: Mutex<WindowInner>,
    /// Signalled when a reader advances (the writer may have room again).
    progress: Notify,
}

#[derive(Default)]
struct WindowInner {
    chunks: VecDeque<(u64, Arc<[u8]>)>,
    bytes: usize,
    /// Offsets of live readers.
    readers: Vec<Weak<AtomicU64>>,
    /// Until the first reader comes, the window holds what it has instead of dropping it.
    awaiting_first_reader: bool,
}

impl WindowInner {
    /// Drops chunks every live reader has read; with no reader at all (after the first one
    /// left), drops the oldest beyond `capacity`.
    fn evict(&mut self, capacity: usize) {
        self.readers.retain(|r| r.strong_count() > 0);
        let slowest = self.readers.iter().filter_map(Weak::upgrade).map(|r| r.load(Ordering::SeqCst)).min();
        while let Some((offset, chunk)) = self.chunks.front() {
            let end = offset + chunk.len() as u64;
            let read_by_all = slowest.is_some_and(|s| end <= s);
            let unwatched = slowest.is_none() && !self.awaiting_first_reader && self.bytes > capacity;
            if !(read_by_all || unwatched) {
                break;
            }
            self.bytes -= chunk.len();
            self.chunks.pop_front();
        }
    }
}

/// How much room a file spool keeps on the disk past its end for the truncation line (the line
/// is cut to fit).
const TRUNCATION_ROOM: usize = 512;

/// Where a spool's bytes go.
struct Sink {
    file: Option<File>,
    /// Where the current generation's file is created when it is first needed.
    deferred: Option<PathBuf>,
    /// Whether room past the end of the file is held ([`keep_room`]); only once a byte is
    /// written, so an empty log allocates nothing.
    room_kept: bool,
    /// Why the current generation's file stopped taking bytes.
    truncated: Option<String>,
    /// A file spool keeps room past the end of its file while it may grow ([`keep_room`]).
    keeps_room: bool,
}

impl Sink {
    /// Gives back the room kept past the end of the file: cutting a file at its own length
    /// frees the blocks allocated beyond it.
    fn release_room(&self) {
        if let (true, Some(file)) = (self.keeps_room && self.room_kept, &self.file) {
            let _ = file.metadata().and_then(|m| file.set_len(m.len()));
        }
    }
}

impl Sink {
    fn new(file: Option<File>, deferred: Option<PathBuf>, keeps_room: bool) -> Sink {
        Sink { file, deferred, room_kept: false, truncated: None, keeps_room }
    }

    /// The current generation's file, created now if it was deferred.
    fn file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none()
            && let Some(path) = &self.deferred
        {
            self.file = Some(open_truncated(path)?);
            self.deferred = None;
        }
        self.file.as_mut().ok_or_else(|| std::io::Error::other("the log has no file"))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.release_room();
    }
}

/// The writing side, shared by whoever appends (a node's reader task, the lane task).
#[derive(Clone)]
pub struct Spool {
    state: Arc<watch::Sender<SpoolState>>,
    sink: Arc<Mutex<Sink>>,
    window: Option<Arc<Window>>,
}

impl Spool {
    fn new(sink: Sink, state: SpoolState, window: Option<Arc<Window>>) -> Spool {
        Spool { state: Arc::new(watch::channel(state).0), sink: Arc::new(Mutex::new(sink)), window }
    }

    /// A file spool whose generation 0 is the (truncated) file at `path`.
    pub fn create(path: &Path) -> std::io::Result<Spool> {
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len: 0, ended: false };
        Ok(Spool::new(Sink::new(Some(open_truncated(path)?), None, true), state, None))
    }

    /// A file spool whose generation 0 is the file at `path`, created (truncated) when first
    /// needed: its first byte, its end, or [`Spool::ensure_file`].
    pub fn deferred(path: &Path) -> Spool {
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len: 0, ended: false };
        Spool::new(Sink::new(None, Some(path.to_path_buf()), true), state, None)
    }

    /// Creates the current generation's file if it was deferred. A file that cannot be created
    /// cuts the log short ([`Spool::truncated`] says why), like a write the disk refuses.
    pub fn ensure_file(&self) -> std::io::Result<()> {
        let mut sink = self.sink.lock().expect("spool lock");
        match sink.file() {
            Ok(_) => Ok(()),
            Err(e) => {
                sink.truncated.get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }

    /// A windowed spool: the first `head` bytes of each generation in the file at `path`
    /// (created with the generation's first byte), the rest in memory, at most `capacity`
    /// bytes of it unread.
    pub fn windowed(path: &Path, head: u64, capacity: usize) -> Spool {
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len: 0, ended: false };
        let window = Window {
            head,
            capacity,
            inner: Mutex::new(WindowInner { awaiting_first_reader: true, ..WindowInner::default() }),
            progress: Notify::new(),
        };
        Spool::new(Sink::new(None, Some(path.to_path_buf()), false), state, Some(Arc::new(window)))
    }

    /// A file spool over an existing file (appending after its current content).
    pub fn append_to(path: &Path) -> std::io::Result<Spool> {
        // Not O_APPEND: a truncation line may have to overwrite the tail of a failed write.
        let mut file = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        let len = file.seek(SeekFrom::End(0))?;
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len, ended: false };
        let mut sink = Sink::new(Some(file), None, true);
        keep_room(sink.file.as_ref().expect("just opened"), len);
        sink.room_kept = true;
        Ok(Spool::new(sink, state, None))
    }

    pub fn generation(&self) -> u32 {
        self.state.borrow().generation
    }

    pub fn state(&self) -> SpoolState {
        self.state.borrow().clone()
    }

    /// Why the current generation's log was cut short (it could not be written whole), if it was.
    pub fn truncated(&self) -> Option<String> {
        self.sink.lock().expect("spool lock").truncated.clone()
    }

    /// Starts generation `generation` in a fresh file at `path` (which may be the old path). A
    /// windowed spool's file is created with the generation's first byte; a file spool's at
    /// once, so the old generation's bytes never pass for the new one's.
    pub fn reset(&self, generation: u32, path: &Path) -> std::io::Result<()> {
        let mut sink = self.sink.lock().expect("spool lock");
        let (file, deferred) = if self.window.is_some() {
            (None, Some(path.to_path_buf()))
        } else {
            (Some(open_truncated(path)?), None)
        };
        // The old generation's file (dropped here) gives its room back.
        *sink = Sink::new(file, deferred, sink.keeps_room);
        if let Some(window) = &self.window {
            let mut inner = window.inner.lock().expect("window lock");
            inner.chunks.clear();
            inner.bytes = 0;
            for reader in inner.readers.iter().filter_map(Weak::upgrade) {
                reader.store(0, Ordering::SeqCst);
            }
        }
        self.state.send_modify(|s| {
            *s = SpoolState { generation, path: path.to_path_buf(), len: 0, ended: false };
        });
        Ok(())
    }

    /// Appends bytes to generation `generation`; bytes of an older generation are dropped.
    ///
    /// When the file will not take them (a full disk), the log is cut there, ending with an
    /// `[odu] log truncated: <reason>` line if that fits, and the error is returned; every later
    /// byte of the generation is dropped ([`Spool::truncated`] says why).
    pub fn append(&self, generation: u32, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut sink = self.sink.lock().expect("spool lock");
        let len = {
            let state = self.state.borrow();
            if state.generation != generation || sink.truncated.is_some() {
                return Ok(());
            }
            state.len
        };
        let in_file = match &self.window {
            Some(window) => window.head.saturating_sub(len).min(bytes.len() as u64) as usize,
            None => bytes.len(),
        };
        if in_file > 0 {
            let keeps_room = sink.keeps_room;
            let first = !sink.room_kept;
            let written = match sink.file() {
                Ok(file) => {
                    if keeps_room && first {
                        // Room for the truncation line is held before the first byte is written.
                        keep_room(file, len);
                    }
                    match file.write_all(&bytes[..in_file]) {
                        Ok(()) => {
                            if keeps_room {
                                keep_room(file, len + in_file as u64);
                            }
                            Ok(())
                        }
                        Err(e) => {
                            let end = cut(file, len, &e);
                            Err((e, end))
                        }
                    }
                }
                // The file could not be created: nothing of this generation reaches the disk.
                Err(e) => Err((e, len)),
            };
            sink.room_kept |= keeps_room;
            if let Err((e, end)) = written {
                sink.truncated = Some(e.to_string());
                self.state.send_modify(|s| s.len = end);
                return Err(e);
            }
        }
        if let Some(window) = &self.window
            && in_file < bytes.len()
        {
            let mut inner = window.inner.lock().expect("window lock");
            let rest: Arc<[u8]> = Arc::from(&bytes[in_file..]);
            inner.bytes += rest.len();
            inner.chunks.push_back((len + in_file as u64, rest));
            inner.evict(window.capacity);
        }
        self.state.send_modify(|s| s.len += bytes.len() as u64);
        Ok(())
    }

    /// Waits until the window has room for more bytes (at once for a file spool). Whoever
    /// feeds the spool from a pipe calls this before reading more.
    pub async fn room(&self) {
        let Some(window) = &self.window else { return };
        loop {
            let notified = window.progress.notified();
            {
                let mut inner = window.inner.lock().expect("window lock");
                inner.evict(window.capacity);
                if inner.bytes <= window.capacity {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Marks generation `generation` complete. (The room kept past the end of its file is given
    /// back when the spool goes, once the run is over: the setup log may grow after its end.)
    pub fn end(&self, generation: u32) {
        if self.window.is_none() && self.state.borrow().generation == generation {
            // A deferred file spool's log exists once it ends, empty or not.
            let _ = self.ensure_file();
        }
        self.state.send_if_modified(|s| {
            let changed = s.generation == generation && !s.ended;
            s.ended |= s.generation == generation;
            changed
        });
    }

    /// Reopens an ended log for more bytes of the same generation (the trail's setup log).
    pub fn reopen(&self) {
        self.state.send_if_modified(|s| std::mem::replace(&mut s.ended, false));
    }

    pub fn subscribe(&self) -> watch::Receiver<SpoolState> {
        self.state.subscribe()
    }
}

/// Never through a symlink: a link planted where a log goes is refused, not followed.
fn open_truncated(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).write(true).truncate(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Keeps [`TRUNCATION_ROOM`] bytes allocated past `len` without growing the file, so a write
/// that fills the disk still writes that much first. Best effort: a filesystem without
/// `fallocate`, or a disk already full, keeps none.
fn keep_room(file: &File, len: u64) {
    use std::os::fd::AsRawFd;
    let Ok(offset) = libc::off_t::try_from(len) else { return };
    // SAFETY: fallocate on a descriptor the caller owns; KEEP_SIZE leaves its length alone.
    unsafe {
        libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, TRUNCATION_ROOM as libc::off_t)
    };
}

/// After a write into `file` failed with `error`: ends the log with the truncation line and
/// returns its new length. Bytes from `published` on were never shown to a reader, so the line
/// overwrites the tail of what the failed write got onto the disk (room it already holds); when
/// that was too little, the line goes after it if it fits, else the log just ends there.
fn cut(file: &mut File, published: u64, error: &std::io::Error) -> u64 {
    let reached = file.stream_position().unwrap_or(published).max(published);
    let line = truncation_line(&error.to_string());
    let at = reached.saturating_sub(line.len() as u64).max(published);
    let end = match file.seek(SeekFrom::Start(at)).and_then(|_| file.write_all(&line)) {
        Ok(()) => at + line.len() as u64,
        Err(_) => at,
    };
    // Drops what the failed write left past the line (or a partial line).
    let _ = file.set_len(end);
    let _ = file.seek(SeekFrom::Start(end));
    end
}

/// `\n[odu] log truncated: <reason>\n`, at most [`TRUNCATION_ROOM`] bytes.
fn truncation_line(reason: &str) -> Vec<u8> {
    const HEAD: &str = "\n[odu] log truncated: ";
    let mut reason = reason.replace('\n', " ");
    let room = TRUNCATION_ROOM - HEAD.len() - 1;
    if reason.len() > room {
        let mut at = room;
        while !reason.is_char_boundary(at) {
            at -= 1;
        }
        reason.truncate(at);
    }
    format!("{HEAD}{reason}\n").into_bytes()
}

/// One read of a spool: what a follower sends next.
#[derive(Debug, PartialEq, Eq)]
pub enum SpoolChunk {
    /// The start of a generation, with its first bytes.
    Start {
        generation: u32,
        bytes: Vec<u8>,
    },
    Bytes(Vec<u8>),
    /// This many bytes left the window before this reader got to them.
    Missed(u64),
    End,
}

impl SpoolChunk {
    /// The chunk as the wire's log encoders take it.
    pub fn as_log(&self) -> odu_proto::LogChunk<'_> {
        match self {
            SpoolChunk::Start { generation, bytes } => {
                odu_proto::LogChunk::Snapshot { generation: *generation, bytes }
            }
            SpoolChunk::Bytes(bytes) => odu_proto::LogChunk::Append(bytes),
            SpoolChunk::Missed(bytes) => odu_proto::LogChunk::Missed(*bytes),
            SpoolChunk::End => odu_proto::LogChunk::End,
        }
    }
}

/// Follows a spool from the first byte of the current generation.
pub struct SpoolReader {
    rx: watch::Receiver<SpoolState>,
    window: Option<Arc<Window>>,
    /// This reader's offset, as the window sees it.
    position: Arc<AtomicU64>,
    generation: Option<u32>,
    /// The current generation's file, opened once it exists.
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    end_sent: bool,
    chunk: usize,
}

/// What [`SpoolReader::next`] reads of the spool's state at a wake-up.
struct Seen {
    generation: u32,
    len: u64,
    ended: bool,
}

impl SpoolReader {
    pub fn new(spool: &Spool, chunk: usize) -> Self {
        let position = Arc::new(AtomicU64::new(0));
        if let Some(window) = &spool.window {
            let mut inner = window.inner.lock().expect("window lock");
            inner.readers.push(Arc::downgrade(&position));
            inner.awaiting_first_reader = false;
        }
        SpoolReader {
            rx: spool.subscribe(),
            window: spool.window.clone(),
            position,
            generation: None,
            path: PathBuf::new(),
            file: None,
            offset: 0,
            end_sent: false,
            chunk,
        }
    }

    /// The next chunk; `None` once the spool is gone (its writers dropped) and drained.
    pub async fn next(&mut self) -> Option<SpoolChunk> {
        loop {
            // The state's scalars, and its path only for a new generation: a reader wakes a few
            // times a node, and a copy of the whole state at each was a path copied each time.
            let (state, new_attempt) = {
                let state = self.rx.borrow_and_update();
                let new_attempt = self.generation != Some(state.generation);
                if new_attempt {
                    self.path.clone_from(&state.path);
                }
                (Seen { generation: state.generation, len: state.len, ended: state.ended }, new_attempt)
            };
            if new_attempt {
                self.generation = Some(state.generation);
                // Opened by the first read that needs it: a log that stays empty (most nodes
                // print nothing) is never opened, nor looked for before its file exists.
                self.file = None;
                self.offset = 0;
                self.end_sent = false;
                let bytes = match self.read_upto(state.len) {
                    Ok(bytes) => bytes,
                    Err(missed) => return Some(SpoolChunk::Missed(missed)),
                };
                return Some(SpoolChunk::Start { generation: state.generation, bytes });
            }
            if self.offset < state.len {
                match self.read_upto(state.len) {
                    Ok(bytes) if !bytes.is_empty() => return Some(SpoolChunk::Bytes(bytes)),
                    Ok(_) => {}
                    Err(missed) => return Some(SpoolChunk::Missed(missed)),
                }
            }
            if state.ended && self.offset >= state.len && !self.end_sent {
                self.end_sent = true;
                return Some(SpoolChunk::End);
            }
            if !state.ended {
                self.end_sent = false;
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Reads the next bytes up to `len`; `Err(n)` when `n` bytes left the window unread (the
    /// offset then skips past them).
    fn read_upto(&mut self, len: u64) -> Result<Vec<u8>, u64> {
        let result = match &self.window {
            Some(window) if self.offset >= window.head => self.read_window(window.clone(), len),
            Some(window) => Ok(self.read_file(len.min(window.head))),
            None => Ok(self.read_file(len)),
        };
        self.position.store(self.offset, Ordering::SeqCst);
        if let Some(window) = &self.window {
            window.progress.notify_waiters();
        }
        result
    }

    fn read_window(&mut self, window: Arc<Window>, len: u64) -> Result<Vec<u8>, u64> {
        let inner = window.inner.lock().expect("window lock");
        let start = inner.chunks.front().map_or(len, |(offset, _)| *offset);
        if self.offset < start {
            let missed = start - self.offset;
            self.offset = start;
            return Err(missed);
        }
        let want = (len.saturating_sub(self.offset)).min(self.chunk as u64) as usize;
        let mut out = Vec::with_capacity(want);
        for (offset, chunk) in &inner.chunks {
            let end = offset + chunk.len() as u64;
            if end <= self.offset {
                continue;
            }
            let from = (self.offset - offset) as usize;
            let take = (chunk.len() - from).min(want - out.len());
            out.extend_from_slice(&chunk[from..from + take]);
            self.offset += take as u64;
            if out.len() == want {
                break;
            }
        }
        Ok(out)
    }

    fn read_file(&mut self, len: u64) -> Vec<u8> {
        let want = (len.saturating_sub(self.offset)).min(self.chunk as u64);
        if want == 0 {
            return Vec::new();
        }
        if self.file.is_none() {
            // A deferred file appears with its generation's first byte.
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else { return Vec::new() };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        // read_to_end fills spare capacity without zeroing it first.
        let mut buf = Vec::with_capacity(want as usize);
        let filled = file.take(want).read_to_end(&mut buf).unwrap_or(0);
        self.offset += filled as u64;
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(reader: &mut SpoolReader) -> (Vec<u8>, u64) {
        let (mut bytes, mut missed) = (Vec::new(), 0);
        while let Some(chunk) = reader.next().await {
            match chunk {
                SpoolChunk::Start { bytes: b, .. } | SpoolChunk::Bytes(b) => bytes.extend(b),
                SpoolChunk::Missed(n) => missed += n,
                SpoolChunk::End => break,
            }
        }
        (bytes, missed)
    }

    #[tokio::test]
    async fn a_live_reader_of_a_windowed_spool_loses_nothing_and_the_writer_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::windowed(&dir.path().join("log"), 10, 16);
        let mut reader = SpoolReader::new(&spool, 7);
        let writer = spool.clone();
        let expected: Vec<u8> = (0..200u8).collect();
        let data = expected.clone();
        let feed = tokio::spawn(async move {
            for piece in data.chunks(9) {
                writer.room().await;
                writer.append(0, piece).unwrap();
            }
            writer.end(0);
        });
        let (bytes, missed) = drain(&mut reader).await;
        feed.await.unwrap();
        assert_eq!(missed, 0);
        assert_eq!(bytes, expected);
    }

    #[tokio::test]
    async fn a_log_the_disk_refuses_says_why_and_drops_the_rest_of_its_generation() {
        // /dev/full refuses every write with ENOSPC, like a full disk.
        let spool = Spool::create(Path::new("/dev/full")).unwrap();
        let err = spool.append(0, b"hello\n").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        let reason = spool.truncated().expect("the spool says why");
        assert!(reason.contains("No space left"), "{reason}");
        spool.append(0, b"more\n").expect("later bytes are dropped quietly");
        assert_eq!(spool.state().len, 0, "readers are shown nothing that is not on disk");
        spool.reset(1, Path::new("/dev/full")).unwrap();
        assert_eq!(spool.truncated(), None, "a new generation starts whole");
    }

    #[test]
    fn a_cut_log_ends_with_the_reason_over_bytes_no_reader_saw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = open_truncated(&path).unwrap();
        file.write_all(&[b'a'; 1000]).unwrap();
        let error = std::io::Error::from_raw_os_error(libc::ENOSPC);
        // 600 bytes were shown to readers; the failed write got 400 more onto the disk.
        let end = cut(&mut file, 600, &error);
        let text = std::fs::read(&path).unwrap();
        assert_eq!(end, 1000, "the line takes the room the failed write already held");
        assert_eq!(text.len(), 1000);
        assert!(text[..600].iter().all(|&b| b == b'a'), "shown bytes are never rewritten");
        let last = String::from_utf8_lossy(&text);
        assert_eq!(last.lines().last(), Some("[odu] log truncated: No space left on device (os error 28)"));
        // When the failed write got too little onto the disk, the line goes after it.
        let end = cut(&mut file, 995, &error);
        assert_eq!(end, 995 + truncation_line(&error.to_string()).len() as u64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
    }

    #[test]
    fn a_truncation_line_fits_the_room_kept_for_it() {
        let line = truncation_line(&"é".repeat(2000));
        assert!(line.len() <= TRUNCATION_ROOM);
        assert!(line.starts_with(b"\n[odu] log truncated: ") && line.ends_with(b"\n"));
        assert!(std::str::from_utf8(&line).is_ok());
    }

    #[tokio::test]
    async fn a_late_reader_replays_the_head_and_is_told_what_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::windowed(&dir.path().join("log"), 10, 16);
        // A first reader comes and goes, so the window is free to move on.
        drop(SpoolReader::new(&spool, 64));
        let data: Vec<u8> = (0..100u8).collect();
        for piece in data.chunks(8) {
            spool.append(0, piece).unwrap();
        }
        spool.end(0);
        let mut late = SpoolReader::new(&spool, 64);
        let (bytes, missed) = drain(&mut late).await;
        assert_eq!(&bytes[..10], &data[..10], "the head replays from the file");
        assert_eq!(bytes.len() as u64 + missed, 100);
        assert!(missed > 0);
        assert_eq!(&bytes[10..], &data[(10 + missed) as usize..]);
    }
}
