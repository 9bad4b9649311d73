//! The log pane's memory: a ring of the focused node's most recent lines, each with the byte
//! offset it starts at, fed from the socket's log stream or from the trail file as it grows
//! ([`LogPane::catch_up`]: only the new bytes, or only the last window past the ring). What
//! scrolled out of the ring is read back from the trail file on demand, a window at a time, so
//! a log of any size costs the dashboard the same bounded memory.

use std::collections::VecDeque;

/// Lines the ring keeps at most.
pub const RING_LINES: usize = 4000;
/// Bytes the ring keeps at most.
pub const RING_BYTES: usize = 2 << 20;
/// A line longer than this is cut into several (a log without newlines stays bounded).
pub const MAX_LINE: usize = 16 * 1024;
/// How much of a trail file one read on demand takes.
const WINDOW: usize = 256 * 1024;

/// Where older parts of the log are read from: the node's trail file.
pub trait Source: Send {
    /// Bytes at `offset`, at most `len` of them (fewer at the end).
    fn read_at(&self, offset: u64, len: usize) -> Vec<u8>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source for std::fs::File {
    fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match FileExt::read_at(self, &mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        buf.truncate(got);
        buf
    }

    fn len(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }
}

/// What the pane shows: the live tail, or a page whose first line starts at a byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Follow,
    At(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    at: u64,
    text: String,
}

/// See the module documentation.
pub struct LogPane {
    lines: VecDeque<Line>,
    bytes: usize,
    partial: Vec<u8>,
    partial_at: u64,
    /// Bytes of the log seen so far.
    end: u64,
    pub generation: u32,
    /// The node writes nothing more to this generation.
    pub ended: bool,
    /// Bytes lost because this client fell behind.
    pub missed: u64,
    pub view: View,
    source: Option<Box<dyn Source>>,
}

impl Default for LogPane {
    fn default() -> Self {
        LogPane {
            lines: VecDeque::new(),
            bytes: 0,
            partial: Vec::new(),
            partial_at: 0,
            end: 0,
            generation: 0,
            ended: false,
            missed: 0,
            view: View::Follow,
            source: None,
        }
    }
}

/// A log line as the pane shows it: colours and other escapes dropped, a carriage return
/// keeping what was drawn last, tabs as spaces, other control characters left out.
pub fn clean(bytes: &[u8]) -> String {
    let bytes = match memchr::memrchr(b'\r', bytes) {
        Some(at) if at + 1 < bytes.len() => &bytes[at + 1..],
        Some(at) => &bytes[..at],
        None => bytes,
    };
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final; OSC: ESC ] … BEL or ESC \; others: one char.
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('@'..='~').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        while let Some(c) = chars.next() {
                            if c == '\x07' || (c == '\x1b' && chars.peek() == Some(&'\\')) {
                                if c == '\x1b' {
                                    chars.next();
                                }
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl LogPane {
    /// An empty pane whose older parts come from `source`.
    pub fn new(source: Option<Box<dyn Source>>) -> Self {
        LogPane { source, ..LogPane::default() }
    }

    /// The pane of a finished node: the last part of its trail file in the ring.
    pub fn tail_of(source: Box<dyn Source>) -> Self {
        let mut pane = LogPane::new(Some(source));
        pane.load_tail();
        pane.ended = true;
        pane
    }

    /// Empties the ring and fills it with the last window of the trail file (the view, the
    /// generation and what was missed stay).
    fn load_tail(&mut self) {
        let Some(source) = self.source.take() else { return };
        let len = source.len();
        let start = len.saturating_sub(WINDOW as u64);
        let bytes = source.read_at(start, WINDOW);
        let (view, generation, ended, missed) = (self.view, self.generation, self.ended, self.missed);
        *self = LogPane { view, generation, ended, missed, ..LogPane::default() };
        // A read that starts mid-line drops that line's end.
        let skip = if start > 0 { memchr::memchr(b'\n', &bytes).map_or(bytes.len(), |at| at + 1) } else { 0 };
        self.end = start + skip as u64;
        self.partial_at = self.end;
        self.push(&bytes[skip..]);
        self.source = Some(source);
    }

    /// Follows the trail file instead of the stream: takes what the file gained since the last
    /// look, or, when it gained more than the ring holds (or was started again), only its last
    /// window. One size check when nothing changed; true when the ring changed.
    pub fn catch_up(&mut self) -> bool {
        let Some(source) = &self.source else { return false };
        let len = source.len();
        if len == self.end {
            return false;
        }
        if len < self.end || len - self.end > RING_BYTES as u64 {
            self.load_tail();
            return true;
        }
        let bytes = source.read_at(self.end, (len - self.end) as usize);
        self.push(&bytes);
        true
    }

    /// Starts following the trail file: the ring is its last window, so offsets are the file's.
    pub fn follow_file(&mut self) {
        self.load_tail();
    }

    pub fn set_source(&mut self, source: Option<Box<dyn Source>>) {
        self.source = source;
    }

    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }

    /// A new generation starts from its first byte.
    pub fn restart(&mut self, generation: u32) {
        let (view, source) = (self.view, self.source.take());
        *self = LogPane::new(source);
        self.generation = generation;
        self.view = if matches!(view, View::Follow) { View::Follow } else { View::At(0) };
    }

    /// Appends the log's next bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE.saturating_sub(self.partial.len());
            let window = &bytes[..bytes.len().min(room + 1)];
            let (take, consumed, done) = match memchr::memchr(b'\n', window) {
                Some(at) => (at, at + 1, true),
                // A line longer than the room is cut where the room ends.
                None if window.len() > room => (room, room, true),
                None => (window.len(), window.len(), false),
            };
            self.partial.extend_from_slice(&bytes[..take]);
            self.end += consumed as u64;
            bytes = &bytes[consumed..];
            if done {
                self.finish_line();
            }
        }
    }

    /// Bytes this client never got: the ring notes the gap.
    pub fn missed(&mut self, bytes: u64) {
        if !self.partial.is_empty() {
            self.finish_line();
        }
        self.missed += bytes;
        self.end += bytes;
        self.partial_at = self.end;
        self.keep(Line { at: self.end, text: format!("[odu] {bytes} bytes of this log were missed") });
    }

    fn finish_line(&mut self) {
        let text = clean(&self.partial);
        self.partial.clear();
        let at = self.partial_at;
        self.partial_at = self.end;
        self.keep(Line { at, text });
    }

    fn keep(&mut self, line: Line) {
        self.bytes += line.text.len();
        self.lines.push_back(line);
        while self.lines.len() > RING_LINES || self.bytes > RING_BYTES {
            let Some(old) = self.lines.pop_front() else { break };
            self.bytes -= old.text.len();
        }
    }

    /// Lines in the ring (the unfinished last one included).
    pub fn ring_len(&self) -> usize {
        self.lines.len() + usize::from(!self.partial.is_empty())
    }

    /// Bytes the ring holds, roughly: what the pane costs in memory.
    pub fn ring_bytes(&self) -> usize {
        self.bytes + self.partial.len()
    }

    fn ring_line(&self, i: usize) -> Option<Line> {
        match self.lines.get(i) {
            Some(line) => Some(line.clone()),
            None if i == self.lines.len() && !self.partial.is_empty() => {
                Some(Line { at: self.partial_at, text: clean(&self.partial) })
            }
            None => None,
        }
    }

    fn ring_start(&self) -> u64 {
        self.lines.front().map_or(self.partial_at, |l| l.at)
    }

    /// Where a page of `height` lines that ends with the last line starts.
    fn bottom_top(&self, height: usize) -> u64 {
        let len = self.ring_len();
        if len <= height {
            // The ring may not hold a full page: the file has what went before.
            let top = self.ring_start();
            if top > 0 && self.source.is_some() && len < height {
                return self.back_in_file(top, height - len);
            }
            return top;
        }
        self.ring_line(len - height).map_or(0, |l| l.at)
    }

    /// The lines of the page the pane shows, at most `height` of them.
    pub fn page(&self, height: usize) -> Vec<String> {
        match self.view {
            View::Follow => {
                let len = self.ring_len();
                let top = self.bottom_top(height);
                if top < self.ring_start() {
                    return self.page_at(top, height);
                }
                (len.saturating_sub(height)..len).filter_map(|i| self.ring_line(i)).map(|l| l.text).collect()
            }
            View::At(top) => self.page_at(top, height),
        }
    }

    fn page_at(&self, top: u64, height: usize) -> Vec<String> {
        if top >= self.ring_start() || self.source.is_none() {
            let from = self.ring_index(top);
            return (from..self.ring_len())
                .take(height)
                .filter_map(|i| self.ring_line(i))
                .map(|l| l.text)
                .collect();
        }
        let mut out = self.file_lines(top, height).into_iter().map(|l| l.text).collect::<Vec<_>>();
        // A page that reaches the ring goes on in the ring.
        if out.len() < height {
            let from = self.ring_index(top);
            let mut rest: Vec<String> = (from..self.ring_len())
                .filter_map(|i| self.ring_line(i))
                .map(|l| l.text)
                .take(height - out.len())
                .collect();
            out.append(&mut rest);
        }
        out
    }

    /// The index of the ring line at or after `offset`.
    fn ring_index(&self, offset: u64) -> usize {
        let i = self.lines.partition_point(|l| l.at < offset);
        if i == self.lines.len() && !self.partial.is_empty() && self.partial_at < offset {
            return self.ring_len();
        }
        i
    }

    /// Up to `count` lines of the trail file from `top` (before the ring only).
    fn file_lines(&self, top: u64, count: usize) -> Vec<Line> {
        let Some(source) = &self.source else { return Vec::new() };
        let limit = self.ring_start();
        let want = (limit.saturating_sub(top) as usize).min(WINDOW);
        let bytes = source.read_at(top, want);
        let mut out = Vec::new();
        let mut at = top;
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            if out.len() == count {
                break;
            }
            if !piece.ends_with(b"\n") && at + (piece.len() as u64) < limit {
                // Cut by the window: the rest is on the next read.
                break;
            }
            out.push(Line { at, text: clean(piece.strip_suffix(b"\n").unwrap_or(piece)) });
            at += piece.len() as u64;
        }
        out
    }

    /// The offset `k` lines before the line at `top`, read from the trail file.
    fn back_in_file(&self, top: u64, k: usize) -> u64 {
        let Some(source) = &self.source else { return top };
        let start = top.saturating_sub(WINDOW as u64);
        let bytes = source.read_at(start, (top - start) as usize);
        // Line starts strictly before `top`.
        let mut starts: Vec<u64> = Vec::new();
        if start == 0 && top > 0 {
            starts.push(0);
        }
        for at in memchr::memchr_iter(b'\n', &bytes) {
            let next = start + at as u64 + 1;
            if next < top {
                starts.push(next);
            }
        }
        match starts.len().checked_sub(k) {
            Some(i) => starts[i],
            None => starts.first().copied().unwrap_or(top),
        }
    }

    /// The offset of the line the page starts with now.
    fn current_top(&self, height: usize) -> u64 {
        match self.view {
            View::Follow => self.bottom_top(height),
            View::At(top) => top,
        }
    }

    /// Scrolls `k` lines towards the start of the log.
    pub fn up(&mut self, k: usize, height: usize) {
        let top = self.current_top(height);
        let ring_start = self.ring_start();
        let new = if top >= ring_start {
            let i = self.ring_index(top);
            if i >= k {
                self.ring_line(i - k).map_or(top, |l| l.at)
            } else if ring_start > 0 && self.source.is_some() {
                self.back_in_file(ring_start, k - i)
            } else {
                ring_start
            }
        } else {
            self.back_in_file(top, k)
        };
        self.view = View::At(new);
    }

    /// Scrolls `k` lines towards the end; reaching the last page follows again.
    pub fn down(&mut self, k: usize, height: usize) {
        let View::At(top) = self.view else { return };
        let bottom = self.bottom_top(height);
        let new = if top >= self.ring_start() {
            let i = self.ring_index(top) + k;
            self.ring_line(i).map_or(bottom, |l| l.at)
        } else {
            let lines = self.file_lines(top, k + 1);
            match lines.get(k) {
                Some(line) => line.at,
                // The window reached the ring: the rest of the way is in the ring.
                None if self.ring_start() - top <= WINDOW as u64 => {
                    self.ring_line(k - lines.len()).map_or(bottom, |l| l.at)
                }
                // As far as one window goes.
                None => lines.last().map_or(top, |l| l.at),
            }
        };
        self.view = if new >= bottom { View::Follow } else { View::At(new) };
    }

    pub fn top(&mut self) {
        self.view = View::At(if self.source.is_some() { 0 } else { self.ring_start() });
    }

    pub fn bottom(&mut self) {
        self.view = View::Follow;
    }

    pub fn toggle_follow(&mut self, height: usize) {
        self.view = match self.view {
            View::Follow => View::At(self.current_top(height)),
            View::At(_) => View::Follow,
        };
    }

    /// The first line at or after the page's top (forward) or before it (backward) whose text
    /// contains `needle` (case-insensitive), within the ring; the page moves to it.
    pub fn find(&mut self, needle: &str, forward: bool, height: usize) -> bool {
        if needle.is_empty() {
            return false;
        }
        let needle = needle.to_lowercase();
        let top = self.current_top(height);
        let i = self.ring_index(top);
        let hit = |j: &usize| self.ring_line(*j).is_some_and(|l| l.text.to_lowercase().contains(&needle));
        let found = if forward {
            (i + 1..self.ring_len()).find(hit)
        } else {
            (0..i.min(self.ring_len())).rev().find(hit)
        };
        match found.and_then(|j| self.ring_line(j)) {
            Some(line) => {
                self.view = View::At(line.at);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Memory(Vec<u8>);

    impl Source for Memory {
        fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
            let start = (offset as usize).min(self.0.len());
            let end = (start + len).min(self.0.len());
            self.0[start..end].to_vec()
        }
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn numbered(n: usize) -> Vec<u8> {
        (0..n).map(|i| format!("line {i}\n")).collect::<String>().into_bytes()
    }

    #[test]
    fn follow_shows_the_last_lines_and_the_unfinished_one() {
        let mut pane = LogPane::default();
        pane.push(b"one\ntwo\nthr");
        pane.push(b"ee\nfour");
        assert_eq!(pane.page(3), ["two", "three", "four"]);
        assert_eq!(pane.page(10), ["one", "two", "three", "four"]);
    }

    #[test]
    fn escapes_and_carriage_returns_are_cleaned() {
        assert_eq!(clean(b"\x1b[1;31mred\x1b[0m text"), "red text");
        assert_eq!(clean(b"10%\r50%\r100%"), "100%");
        assert_eq!(clean(b"a\tb"), "a    b");
        assert_eq!(clean(b"\x1b]0;title\x07shown"), "shown");
    }

    #[test]
    fn the_ring_stays_bounded_whatever_the_log() {
        let mut pane = LogPane::default();
        let chunk = numbered(1000);
        for _ in 0..50 {
            pane.push(&chunk);
        }
        assert!(pane.ring_len() <= RING_LINES);
        // A log with no newline at all is cut into bounded lines.
        let mut pane = LogPane::default();
        pane.push(&vec![b'x'; 10 * RING_BYTES]);
        assert!(pane.ring_bytes() <= RING_BYTES + MAX_LINE);
    }

    #[test]
    fn scrolling_past_the_ring_reads_the_trail() {
        let log = numbered(10_000);
        let mut pane = LogPane::new(Some(Box::new(Memory(log.clone()))));
        pane.push(&log);
        assert_eq!(pane.page(2), ["line 9998", "line 9999"]);
        assert!(pane.ring_len() < 10_000, "the ring holds only the tail");
        pane.top();
        assert_eq!(pane.page(2), ["line 0", "line 1"]);
        pane.down(3, 2);
        assert_eq!(pane.page(2), ["line 3", "line 4"]);
        pane.up(2, 2);
        assert_eq!(pane.page(2), ["line 1", "line 2"]);
        // Up from the ring's first line goes on in the file.
        pane.bottom();
        pane.up(RING_LINES + 5, 2);
        let first = pane.page(1)[0].clone();
        assert_eq!(first, format!("line {}", 10_000 - 2 - RING_LINES - 5));
        // Down to the end follows again.
        pane.down(20_000, 2);
        assert_eq!(pane.view, View::Follow);
    }

    #[test]
    fn a_finished_nodes_tail_comes_from_its_file() {
        let log = numbered(100_000);
        let pane = LogPane::tail_of(Box::new(Memory(log)));
        assert_eq!(pane.page(1), ["line 99999"]);
        assert!(pane.ended);
    }

    /// A trail file that a node is still writing.
    #[derive(Clone, Default)]
    struct Growing(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Growing {
        fn write(&self, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
    }

    impl Source for Growing {
        fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
            Memory(self.0.lock().unwrap().clone()).read_at(offset, len)
        }
        fn len(&self) -> u64 {
            self.0.lock().unwrap().len() as u64
        }
    }

    #[test]
    fn following_the_file_takes_new_bytes_or_only_the_last_window() {
        let file = Growing::default();
        file.write(b"one\ntwo\nthr");
        let mut pane = LogPane::new(Some(Box::new(file.clone())));
        pane.follow_file();
        assert_eq!(pane.page(3), ["one", "two", "thr"]);
        assert!(!pane.catch_up(), "nothing new: nothing read");
        file.write(b"ee\nfour\n");
        assert!(pane.catch_up());
        assert_eq!(pane.page(3), ["two", "three", "four"]);
        // More than the ring holds: only the last window is read, the ring starts again there.
        let big = numbered(500_000);
        file.write(&big);
        assert!(pane.catch_up());
        assert_eq!(pane.page(2), ["line 499998", "line 499999"]);
        assert!(pane.ring_bytes() <= WINDOW);
        // Scrolling back still reaches the start through the file.
        pane.top();
        assert_eq!(pane.page(2), ["one", "two"]);
        pane.bottom();
        file.write(b"last");
        assert!(pane.catch_up());
        assert_eq!(pane.page(1), ["last"]);
        // A file started again (the node ran again) is read from its tail.
        *file.0.lock().unwrap() = b"again\n".to_vec();
        assert!(pane.catch_up());
        assert_eq!(pane.page(5), ["again"]);
    }

    #[test]
    fn toggling_follow_freezes_the_page() {
        let mut pane = LogPane::default();
        pane.push(&numbered(10));
        pane.toggle_follow(2);
        pane.push(b"more\n");
        assert_eq!(pane.page(2), ["line 8", "line 9"]);
        pane.toggle_follow(2);
        assert_eq!(pane.page(2), ["line 9", "more"]);
    }

    #[test]
    fn find_moves_the_page_to_the_next_match() {
        let mut pane = LogPane::default();
        pane.push(b"a\nneedle one\nb\nc\nneedle two\nd\n");
        pane.top();
        assert!(pane.find("NEEDLE", true, 2));
        assert_eq!(pane.page(1), ["needle one"]);
        assert!(pane.find("needle", true, 2));
        assert_eq!(pane.page(1), ["needle two"]);
        assert!(pane.find("needle", false, 2));
        assert_eq!(pane.page(1), ["needle one"]);
        assert!(!pane.find("absent", true, 2));
    }
}
