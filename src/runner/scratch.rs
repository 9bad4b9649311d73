//! The runner's scratch directory, and the reaping of the ones dead runners left behind.
//!
//! A runner keeps its log spools in a fresh private directory, `$TMPDIR/odu-runner-XXXXXX`
//! (mkdtemp, 0700). Inside it:
//! - `lock`, which the runner holds an exclusive `flock` on for its whole life. The lock is
//!   taken on a staged file that is then renamed to `lock`, so a `lock` that can be locked by
//!   anyone else means its runner is gone (the kernel drops a lock when its holder dies, however
//!   it dies); a pid is never trusted for that;
//! - `logs/`, the spools of node logs, a folder the file system is asked to place away from
//!   the rest of `$TMPDIR` ([`crate::private::spread_subfolders`]): a node's first byte creates
//!   its spool there, not among the files a build or a test suite just removed from `$TMPDIR`;
//! - `groups`, one line `<pgid> <from> <to>` per node process group the runner started, written
//!   before the node can have started anything else: the leader's start time, in clock ticks
//!   since boot as `/proc/<pid>/stat` counts it, lies between `from` and `to` (the clock read
//!   just before and just after the spawn, which costs far less than reading the leader's stat
//!   file; a pid cannot be reused within one spawn). A line `<pgid> <start>` (an older runner's)
//!   names the start exactly. The lines are stored into a shared mapping of the file
//!   ([`GroupsFile`]), so a node's record costs no system call; the file is allocated ahead of
//!   them and ends in zero bytes past the last line.
//!
//! [`reap_dead`] finds the directories of dead runners of this user under a `TMPDIR`, kills
//! what is left of their recorded process groups (SIGKILL: their runner is gone) and removes the
//! directories. The localhost lane calls it when its runner child exits, and every runner calls
//! it when it starts, which covers a runner killed on a remote host.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The name every runner scratch directory starts with.
pub const PREFIX: &str = "odu-runner-";
const LOCK: &str = "lock";
const GROUPS: &str = "groups";
const LOGS: &str = "logs";
/// A `groups` file is never read past this (a runner records a few bytes per node).
const GROUPS_CAP: u64 = 4 * 1024 * 1024;

/// A live runner's scratch directory: removed when dropped, its `lock` last, then its lock
/// released.
pub struct Scratch {
    // Field order is drop order: the directory goes first, the lock after it.
    dir: tempfile::TempDir,
    groups: GroupsFile,
    _lock: File,
    /// What `groups` holds, less the groups found gone ([`Scratch::forget_group`]).
    recorded: std::collections::HashMap<i32, Started>,
}

impl Scratch {
    /// Creates a fresh scratch directory under `$TMPDIR` and locks it.
    pub fn create() -> io::Result<Scratch> {
        let dir = crate::private::scratch(PREFIX)?;
        let staged = dir.path().join("lock.new");
        let lock = private_file().create_new(true).write(true).open(&staged)?;
        if !flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
            return Err(io::Error::other(format!("cannot lock {}", staged.display())));
        }
        std::fs::rename(&staged, dir.path().join(LOCK))?;
        let groups = GroupsFile::create(&dir.path().join(GROUPS))?;
        crate::private::spread_subfolders(dir.path());
        std::fs::create_dir(dir.path().join(LOGS))?;
        Ok(Scratch { dir, groups, _lock: lock, recorded: std::collections::HashMap::new() })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the node logs' spools go.
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join(LOGS)
    }

    /// Records a node's process group, whose leader was spawned within `started`, so that
    /// whoever finds this runner dead can end it.
    pub fn record_group(&mut self, pgid: i32, started: Started) -> io::Result<()> {
        // A group number is free again only once its group is gone: a second record of it is
        // of a new group, and replaces the first.
        self.recorded.insert(pgid, started);
        // Formatted on the stack: a line a node, written whole in one system call.
        let mut line = [0u8; 64];
        let mut cursor = io::Cursor::new(&mut line[..]);
        writeln!(cursor, "{pgid} {} {}", started.from, started.to)?;
        let len = usize::try_from(cursor.position()).unwrap_or(line.len());
        self.groups.append(&line[..len])
    }

    /// Leaves out group `pgid` whose leader started within `started`, found empty after its
    /// node's end: the end of the runner need not ask whether it still has members (one
    /// system call a node), nor tell it from a group that took its number since. A record of a
    /// newer group of that number (recorded before this word came) stays. The group stays in
    /// the `groups` file, where whoever finds the runner dead tells it apart the same way.
    pub fn forget_group(&mut self, pgid: i32, started: Started) {
        if self.recorded.get(&pgid) == Some(&started) {
            self.recorded.remove(&pgid);
        }
    }

    /// The recorded groups that still have members (strays of finished nodes included), where
    /// a process table tells them apart from reused group numbers (Linux); else none.
    pub fn live_groups(&self) -> Vec<i32> {
        if !cfg!(target_os = "linux") {
            return vec![];
        }
        // A group with no member at all needs no process table: reading /proc whole costs
        // more than the rest of a runner's shutdown, and after a clean run every group is empty.
        let occupied: Vec<(i32, Started)> = self
            .recorded
            .iter()
            .map(|(&pgid, &started)| (pgid, started))
            .filter(|&(pgid, _)| super::spawner::group_alive(pgid))
            .collect();
        if occupied.is_empty() {
            return vec![];
        }
        let table = processes();
        occupied
            .iter()
            .filter(|&&(pgid, start)| group_is_the_recorded_one(&table, pgid, start))
            .map(|&(pgid, _)| pgid)
            .collect()
    }
}

/// The `groups` file, appended to line by line. Where the system allows (Linux), the file is
/// allocated a chunk ahead of its lines and mapped shared, and a line is stored into the
/// mapping: the page cache holds it at once, so whoever finds this runner dead reads it
/// however the runner died, and no line costs a system call (a `write` to a file on disk costs
/// a journalled update of its times, at every node). The blocks are allocated before any line
/// is stored, so a full disk fails the allocation, not a store; the file then takes the lines
/// by `write` from where the mapping ended. The file ends in zero bytes past the last line,
/// which [`parse_groups`] skips as it skips any line cut short.
struct GroupsFile {
    file: File,
    /// Bytes of lines stored so far: where the next one goes.
    len: u64,
    #[cfg(target_os = "linux")]
    map: Option<Mapping>,
}

/// The first chunk a `groups` file is allocated and mapped in, and how much it grows by at
/// least: room for a few thousand lines.
#[cfg(target_os = "linux")]
const GROUPS_CHUNK: usize = 64 * 1024;

/// A shared, writable mapping of a whole file of `size` bytes.
#[cfg(target_os = "linux")]
struct Mapping {
    base: std::ptr::NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is owned by one `GroupsFile` and reached only through `&mut` of it.
#[cfg(target_os = "linux")]
unsafe impl Send for Mapping {}

#[cfg(target_os = "linux")]
impl Mapping {
    /// Allocates `file`'s first `size` bytes on its file system (the length grows to `size`)
    /// and maps them; `None` where either is refused.
    fn of(file: &File, size: usize) -> Option<Mapping> {
        let len = libc::off_t::try_from(size).ok()?;
        // SAFETY: posix_fallocate and mmap on a descriptor we own; the result is checked.
        unsafe {
            if libc::posix_fallocate(file.as_raw_fd(), 0, len) != 0 {
                return None;
            }
            let base = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            if base == libc::MAP_FAILED {
                return None;
            }
            Some(Mapping { base: std::ptr::NonNull::new(base.cast())?, size })
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `Mapping::of`, used by nothing after this.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

impl GroupsFile {
    /// Creates the file at `path` (readable too: a shared mapping that is written must be).
    fn create(path: &Path) -> io::Result<GroupsFile> {
        let file = private_file().create_new(true).read(true).write(true).open(path)?;
        #[cfg(target_os = "linux")]
        let map = Mapping::of(&file, GROUPS_CHUNK);
        Ok(GroupsFile {
            file,
            len: 0,
            #[cfg(target_os = "linux")]
            map,
        })
    }

    /// Stores `line` after the lines before it.
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        let stored = self.store_mapped(line);
        #[cfg(not(target_os = "linux"))]
        let stored = false;
        if !stored {
            std::os::unix::fs::FileExt::write_all_at(&self.file, line, self.len)?;
        }
        self.len += line.len() as u64;
        Ok(())
    }

    /// Stores `line` at `len` through the mapping, grown first (doubled, or to fit) when the
    /// line would pass its end; false where there is no mapping, or it could not grow (the
    /// caller then writes the line, and every later one).
    #[cfg(target_os = "linux")]
    fn store_mapped(&mut self, line: &[u8]) -> bool {
        let Ok(at) = usize::try_from(self.len) else { return false };
        let end = at + line.len();
        let larger = match &self.map {
            Some(map) if end > map.size => Some((map.size * 2).max(end)),
            _ => None,
        };
        if let Some(size) = larger {
            // The old mapping goes before the larger one is made.
            self.map = None;
            self.map = Mapping::of(&self.file, size);
        }
        let Some(map) = &self.map else { return false };
        // SAFETY: `at..end` lies within the mapping (grown above to hold it), which only this
        // `GroupsFile` writes, and within the file's allocated length.
        unsafe { std::ptr::copy_nonoverlapping(line.as_ptr(), map.base.as_ptr().add(at), line.len()) };
        true
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The rest first; the `lock` file and the folder then go with `dir`.
        clear_all_but_lock(self.dir.path());
    }
}

/// Removes everything in a scratch directory but its `lock` file. A runner killed while it
/// removes its directory (a host's session torn down, the OOM killer) then leaves the lock file,
/// free, by which the next runner knows the directory's runner is dead and removes it; without
/// it, the directory would look like one whose runner is still starting, and stay for good.
fn clear_all_but_lock(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name() == LOCK {
            continue;
        }
        let path = entry.path();
        let _ = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
    }
}

fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    options
}

fn flock(file: &File, operation: i32) -> bool {
    // SAFETY: flock on a descriptor we own; the lock lives as long as the open file.
    unsafe { libc::flock(file.as_raw_fd(), operation) == 0 }
}

/// Where a runner whose environment has this `TMPDIR` keeps its scratch directory (as
/// `std::env::temp_dir` would find it in that runner), with a relative one resolved against
/// this process's directory, which a local runner inherits.
pub fn root_for(tmpdir: Option<&std::ffi::OsStr>) -> PathBuf {
    let root = tmpdir.filter(|t| !t.is_empty()).map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    if root.is_absolute() {
        return root;
    }
    std::env::current_dir().map(|cwd| cwd.join(&root)).unwrap_or(root)
}

/// What one sweep of [`reap_dead`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Scratch directories of dead runners removed.
    pub dirs: usize,
    /// Process groups that still had members, killed.
    pub groups: usize,
}

/// Kills the leftover process groups of every dead runner of this user whose scratch
/// directory is directly under `root`, and removes those directories. Directories that are not
/// the user's own, not private, or whose runner still holds its lock are left alone.
pub fn reap_dead(root: &Path) -> Reaped {
    let mut reaped = Reaped::default();
    let mut table: Option<Vec<Proc>> = None;
    for dir in crate::private::entries_named(root, PREFIX) {
        if crate::private::check_owned(&dir).is_err() {
            continue;
        }
        // No `lock` yet: a runner still starting (or one from before locks): not ours to judge.
        let Ok(lock) = private_file().read(true).open(dir.join(LOCK)) else { continue };
        if !flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
            continue;
        }
        let table = table.get_or_insert_with(processes);
        for (pgid, start) in recorded_groups(&dir.join(GROUPS)) {
            if group_is_the_recorded_one(table, pgid, start)
                && super::spawner::kill_group(pgid, libc::SIGKILL)
            {
                reaped.groups += 1;
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            reaped.dirs += 1;
        }
    }
    reaped
}

fn recorded_groups(path: &Path) -> Vec<(i32, Started)> {
    let mut text = String::new();
    let Ok(file) = private_file().read(true).open(path) else { return vec![] };
    if file.take(GROUPS_CAP).read_to_string(&mut text).is_err() {
        return vec![];
    }
    parse_groups(&text)
}

/// `<pgid> <from> <to>` (or `<pgid> <start>`) lines; anything else (a line cut short by a
/// crash) is skipped.
fn parse_groups(text: &str) -> Vec<(i32, Started)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let pgid = fields.next()?.parse().ok().filter(|&p: &i32| p > 1)?;
            let from: u64 = fields.next()?.parse().ok()?;
            let to: u64 = match fields.next() {
                Some(to) => to.parse().ok().filter(|&to| to >= from)?,
                None => from,
            };
            fields.next().is_none().then_some((pgid, Started { from, to }))
        })
        .collect()
}

/// When a recorded group's leader started: a window of clock ticks since boot, as
/// `/proc/<pid>/stat` counts a process's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub from: u64,
    pub to: u64,
}

impl Started {
    /// The window around `spawn`: whatever it starts began within it.
    pub fn around<T>(spawn: impl FnOnce() -> T) -> (T, Started) {
        let from = boot_ticks();
        let spawned = spawn();
        (spawned, Started { from, to: boot_ticks() })
    }
}

/// Clock ticks since boot, as the kernel counts a process's start time (`CLOCK_BOOTTIME` in
/// units of `_SC_CLK_TCK`, rounded down).
pub fn boot_ticks() -> u64 {
    static TICK_NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let tick_ns = *TICK_NS.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        1_000_000_000 / u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
    });
    crate::clock::boot_ns() / tick_ns
}

/// One process, as far as reaping needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    pgid: i32,
    uid: u32,
    start: u64,
}

/// Whether process group `pgid` is still the one recorded with its leader started within
/// `started`, and every member is this user's: a group number can be reused once its group is
/// empty, and a reused one must not be killed. Without a process table (not Linux), the group
/// is trusted.
fn group_is_the_recorded_one(table: &[Proc], pgid: i32, started: Started) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let me = crate::private::euid();
    let members: Vec<&Proc> = table.iter().filter(|p| p.pgid == pgid).collect();
    if members.is_empty() || members.iter().any(|p| p.uid != me) {
        return false;
    }
    match members.iter().find(|p| p.pid == pgid) {
        // The leader still lives: it must be the very process that was recorded.
        Some(leader) => (started.from..=started.to).contains(&leader.start),
        // Every member of the recorded group started after its leader.
        None => members.iter().all(|p| p.start >= started.from),
    }
}

/// Every process on the machine (Linux: from /proc); empty where there is no /proc.
fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let uid = std::os::unix::fs::MetadataExt::uid(&entry.metadata().ok()?);
            let (pgid, start) = parse_stat(&std::fs::read_to_string(entry.path().join("stat")).ok()?)?;
            Some(Proc { pid, pgid, uid, start })
        })
        .collect()
}

/// (process group, start time) from a `/proc/<pid>/stat` line. The command name may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // After the name: state (3), ppid (4), pgrp (5), …, starttime (22).
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_killed_while_it_removes_its_scratch_leaves_it_for_the_next_runner_to_reap() {
        // A dead runner's directory, as a runner killed midway through its own removal leaves
        // it: only what `clear_all_but_lock` has not reached yet, and the lock, which is free.
        let root = tempfile::tempdir().unwrap();
        let dir = crate::private::scratch_in(root.path(), PREFIX).unwrap().keep();
        std::fs::write(dir.join(LOCK), b"").unwrap();
        std::fs::write(dir.join(GROUPS), b"").unwrap();
        std::fs::create_dir(dir.join(LOGS)).unwrap();
        std::fs::write(dir.join(LOGS).join("0.0.log"), b"spooled").unwrap();
        clear_all_but_lock(&dir);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, [LOCK], "the lock is what goes last");
        assert_eq!(reap_dead(root.path()), Reaped { dirs: 1, groups: 0 });
        assert!(!dir.exists(), "the next runner removes what the killed one left");
    }

    #[test]
    fn a_group_found_gone_is_forgotten_unless_its_number_was_recorded_again() {
        // In this process's TMPDIR, removed when dropped.
        let mut scratch = Scratch::create().unwrap();
        let at = |from| Started { from, to: from };
        scratch.record_group(100, at(5)).unwrap();
        scratch.record_group(200, at(6)).unwrap();
        scratch.forget_group(100, at(5));
        // Number 200 names a newer group now: the word about the old one leaves it.
        scratch.record_group(200, at(9)).unwrap();
        scratch.forget_group(200, at(6));
        assert_eq!(scratch.recorded, std::collections::HashMap::from([(200, at(9))]));
        // Every group stays in the file, for whoever finds this runner dead.
        let file = std::fs::read_to_string(scratch.path().join(GROUPS)).unwrap();
        assert_eq!(parse_groups(&file), [(100, at(5)), (200, at(6)), (200, at(9))]);
    }

    #[test]
    fn groups_past_the_first_chunks_and_past_a_lost_mapping_are_all_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GROUPS);
        let mut groups = GroupsFile::create(&path).unwrap();
        let at = |from| Started { from, to: from + 1 };
        let mut expected = vec![];
        let mut record = |groups: &mut GroupsFile, pgid: i32| {
            groups
                .append(format!("{pgid} {} {}\n", at(pgid as u64).from, at(pgid as u64).to).as_bytes())
                .unwrap();
            expected.push((pgid, at(pgid as u64)));
        };
        // Several chunks' worth of lines: the mapping grows twice.
        for pgid in 10_000..30_000 {
            record(&mut groups, pgid);
        }
        #[cfg(target_os = "linux")]
        {
            assert!(
                groups.map.as_ref().is_some_and(|m| m.size >= 4 * GROUPS_CHUNK),
                "the mapping grew twice: {:?}",
                groups.map.as_ref().map(|m| m.size)
            );
            // A mapping the system refuses to grow: the lines go on by `write`, after the last.
            groups.map = None;
        }
        for pgid in 30_000..30_100 {
            record(&mut groups, pgid);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse_groups(&text), expected);
        assert_eq!(recorded_groups(&path), expected, "as a reaper reads it");
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (odd) name)) S 1 4240 4240 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some((4240, 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn groups_lines_cut_short_are_skipped() {
        let at = |from, to| Started { from, to };
        assert_eq!(
            parse_groups("100 5 6\n1 7 7\n0 3 4\n200 9\n300 8 7\n400 1 2 3\n30"),
            vec![(100, at(5, 6)), (200, at(9, 9))]
        );
    }

    #[test]
    fn a_spawned_process_starts_within_the_window_read_around_its_spawn() {
        for _ in 0..20 {
            let (child, started) =
                Started::around(|| crate::tool::spawn(&mut std::process::Command::new("true")).unwrap());
            let mut child = child;
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
            let (_, start) = parse_stat(&stat).unwrap();
            child.wait().unwrap();
            assert!((started.from..=started.to).contains(&start), "{start} not in {started:?}");
        }
    }

    #[test]
    fn a_reused_group_number_is_not_the_recorded_group() {
        let me = crate::private::euid();
        let p = |pid, pgid, uid, start| Proc { pid, pgid, uid, start };
        let group_is_the_recorded_one = |table: &[Proc], pgid, start| {
            group_is_the_recorded_one(table, pgid, Started { from: start, to: start })
        };
        // The leader is alive and is the recorded one.
        assert!(group_is_the_recorded_one(&[p(50, 50, me, 7), p(51, 50, me, 9)], 50, 7));
        // The number now names another leader.
        assert!(!group_is_the_recorded_one(&[p(50, 50, me, 99)], 50, 7));
        // The leader is gone; its children remain.
        assert!(group_is_the_recorded_one(&[p(51, 50, me, 8)], 50, 7));
        // A member older than the recorded leader cannot be of that group.
        assert!(!group_is_the_recorded_one(&[p(51, 50, me, 3)], 50, 7));
        // Someone else's process is never killed.
        assert!(!group_is_the_recorded_one(&[p(51, 50, me.wrapping_add(1), 8)], 50, 7));
        assert!(!group_is_the_recorded_one(&[], 50, 7));
        // A leader started within the recorded window is the recorded one; outside it, not.
        let window = Started { from: 6, to: 8 };
        assert!(super::group_is_the_recorded_one(&[p(50, 50, me, 8)], 50, window));
        assert!(!super::group_is_the_recorded_one(&[p(50, 50, me, 9)], 50, window));
        assert!(!super::group_is_the_recorded_one(&[p(51, 50, me, 5)], 50, window));
    }

    #[test]
    fn a_live_runner_is_left_alone_and_a_dead_one_is_reaped() {
        let root = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let private_dir = |name: &str| {
            let dir = root.path().join(format!("{PREFIX}{name}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            dir
        };
        let live = private_dir("live");
        let lock = private_file().create_new(true).write(true).open(live.join(LOCK)).unwrap();
        assert!(flock(&lock, libc::LOCK_EX | libc::LOCK_NB));
        let dead = private_dir("dead");
        std::fs::write(dead.join(LOCK), "").unwrap();
        std::fs::write(dead.join(GROUPS), "").unwrap();
        let starting = private_dir("starting");
        let open = root.path().join(format!("{PREFIX}open"));
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(open.join(LOCK), "").unwrap();
        let reaped = reap_dead(root.path());
        assert_eq!(reaped, Reaped { dirs: 1, groups: 0 });
        assert!(live.exists() && starting.exists() && open.exists() && !dead.exists());
        drop(lock);
        assert_eq!(reap_dead(root.path()).dirs, 1);
        assert!(!live.exists());
    }
}
