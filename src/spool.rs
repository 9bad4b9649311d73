//! A log spool: a file written as bytes arrive, plus a watch of its length so readers can
//! follow it like `tail -f`. Readers pull from the file, so a slow reader costs no memory and
//! never slows the writer.
//!
//! Each (re)start of a log is a new generation; a reader seeing a new generation starts over
//! from the first byte of the new file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolState {
    pub generation: u32,
    pub path: PathBuf,
    pub len: u64,
    pub ended: bool,
}

/// The writing side, shared by whoever appends (a node's reader task, the lane task).
#[derive(Clone)]
pub struct Spool {
    state: Arc<watch::Sender<SpoolState>>,
    file: Arc<std::sync::Mutex<Option<File>>>,
}

impl Spool {
    /// A spool whose generation 0 is the (truncated) file at `path`.
    pub fn create(path: &Path) -> std::io::Result<Spool> {
        let file = open_truncated(path)?;
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len: 0, ended: false };
        Ok(Spool {
            state: Arc::new(watch::channel(state).0),
            file: Arc::new(std::sync::Mutex::new(Some(file))),
        })
    }

    /// A spool over an existing file (appending after its current content).
    pub fn append_to(path: &Path) -> std::io::Result<Spool> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let state = SpoolState { generation: 0, path: path.to_path_buf(), len, ended: false };
        Ok(Spool {
            state: Arc::new(watch::channel(state).0),
            file: Arc::new(std::sync::Mutex::new(Some(file))),
        })
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
        if self.state.borrow().generation != generation {
            return Ok(());
        }
        if let Some(file) = file.as_mut() {
            file.write_all(bytes)?;
        }
        self.state.send_modify(|s| s.len += bytes.len() as u64);
        Ok(())
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

fn open_truncated(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).write(true).truncate(true).open(path)
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
    End,
}

/// Follows a spool from the first byte of the current generation.
pub struct SpoolReader {
    rx: watch::Receiver<SpoolState>,
    generation: Option<u32>,
    file: Option<File>,
    offset: u64,
    end_sent: bool,
    chunk: usize,
}

impl SpoolReader {
    pub fn new(spool: &Spool, chunk: usize) -> Self {
        SpoolReader { rx: spool.subscribe(), generation: None, file: None, offset: 0, end_sent: false, chunk }
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
                let bytes = self.read_upto(state.len);
                return Some(SpoolChunk::Start { generation: state.generation, bytes });
            }
            if self.offset < state.len {
                let bytes = self.read_upto(state.len);
                if !bytes.is_empty() {
                    return Some(SpoolChunk::Bytes(bytes));
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

    fn read_upto(&mut self, len: u64) -> Vec<u8> {
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
