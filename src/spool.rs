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

/// The writing side, shared by whoever appends (a node's reader task, the lane task).
#[derive(Clone)]
pub struct Spool {
    state: Arc<watch::Sender<SpoolState>>,
    file: Arc<Mutex<Option<File>>>,
    window: Option<Arc<Window>>,
}

impl Spool {
    fn new(file: File, state: SpoolState, window: Option<Arc<Window>>) -> Spool {
        Spool { state: Arc::new(watch::channel(state).0), file: Arc::new(Mutex::new(Some(file))), window }
    }

    /// A file spool whose generation 0 is the (truncated) file at `path`.
    pub fn create(path: &Path) -> std::io::Result<Spool> {
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len: 0, ended: false };
        Ok(Spool::new(open_truncated(path)?, state, None))
    }

    /// A windowed spool: the first `head` bytes of each generation in the file at `path`, the
    /// rest in memory, at most `capacity` bytes of it unread.
    pub fn windowed(path: &Path, head: u64, capacity: usize) -> std::io::Result<Spool> {
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len: 0, ended: false };
        let window = Window {
            head,
            capacity,
            inner: Mutex::new(WindowInner { awaiting_first_reader: true, ..WindowInner::default() }),
            progress: Notify::new(),
        };
        Ok(Spool::new(open_truncated(path)?, state, Some(Arc::new(window))))
    }

    /// A file spool over an existing file (appending after its current content).
    pub fn append_to(path: &Path) -> std::io::Result<Spool> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len, ended: false };
        Ok(Spool::new(file, state, None))
    }

    pub fn generation(&self) -> u32 {
        self.state.borrow().generation
    }

    pub fn state(&self) -> SpoolState {
        self.state.borrow().clone()
    }

    /// Starts generation `generation` in a fresh file at `path` (which may be the old path).
    pub fn reset(&self, generation: u32, path: &Path) -> std::io::Result<()> {
        let mut file = self.file.lock().expect("spool lock");
        *file = Some(open_truncated(path)?);
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
    pub fn append(&self, generation: u32, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut file = self.file.lock().expect("spool lock");
        let len = {
            let state = self.state.borrow();
            if state.generation != generation {
                return Ok(());
            }
            state.len
        };
        let in_file = match &self.window {
            Some(window) => window.head.saturating_sub(len).min(bytes.len() as u64) as usize,
            None => bytes.len(),
        };
        if let Some(file) = file.as_mut() {
            file.write_all(&bytes[..in_file])?;
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

    /// Marks generation `generation` complete.
    pub fn end(&self, generation: u32) {
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

/// Follows a spool from the first byte of the current generation.
pub struct SpoolReader {
    rx: watch::Receiver<SpoolState>,
    window: Option<Arc<Window>>,
    /// This reader's offset, as the window sees it.
    position: Arc<AtomicU64>,
    generation: Option<u32>,
    file: Option<File>,
    offset: u64,
    end_sent: bool,
    chunk: usize,
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
            file: None,
            offset: 0,
            end_sent: false,
            chunk,
        }
    }

    /// The next chunk; `None` once the spool is gone (its writers dropped) and drained.
    pub async fn next(&mut self) -> Option<SpoolChunk> {
        loop {
            let state = self.rx.borrow_and_update().clone();
            if self.generation != Some(state.generation) {
                self.generation = Some(state.generation);
                self.file = File::open(&state.path).ok();
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
        let spool = Spool::windowed(&dir.path().join("log"), 10, 16).unwrap();
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
    async fn a_late_reader_replays_the_head_and_is_told_what_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::windowed(&dir.path().join("log"), 10, 16).unwrap();
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
