//! The one place node processes are spawned and killed.
//!
//! A node runs as `just --no-deps <namepath> [args]` in its own process group, with stdin
//! `/dev/null` and stdout and stderr merged into one real pipe (a recipe that reopens
//! `/dev/stderr` works, which it would not on a socketpair). When the node's process exits, any
//! stray left in its group is sent SIGTERM, then SIGKILL after the grace period, and the pipe is
//! drained to its end before the node is reported terminal.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use odu_core::lane::Exit;
use tokio::io::AsyncReadExt;

use crate::trail::spool::Spool;

/// How long a process group gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// A node's first reads take at most this much.
const READ_SMALL: usize = 16 * 1024;
/// Once a read fills [`READ_SMALL`], reads take up to this much.
const READ_LARGE: usize = 256 * 1024;
/// A read shorter than this found the pipe nearly empty: the next read waits [`COALESCE_FOR`].
const COALESCE_BELOW: usize = 16 * 1024;
/// How long output gathers in a node's pipe after a short read: far below what a person
/// following a log notices, and a pipe of 1 MiB holds what even a fast writer sends meanwhile.
const COALESCE_FOR: Duration = Duration::from_millis(2);

/// What to run for one node attempt.
pub struct NodeLaunch {
    /// Shared with the lane's plan: a spawn copies no word of it.
    pub argv: Arc<[String]>,
    pub workspace: PathBuf,
    pub env: Environment,
    pub generation: u32,
}

/// The environment of every process a runner starts: the run's whole environment when the
/// coordinator sent it (a local runner may have been started before its run, with another
/// one), else the runner's own; and the lane's extra variables over either.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    pub base: Option<Arc<BTreeMap<String, String>>>,
    pub extra: Arc<BTreeMap<String, String>>,
    /// The process's own environment is the nodes' ([`Environment::adopt`]), and no other
    /// thread changes it: a node may be started with it as it is.
    own: bool,
}

impl Environment {
    /// `base` is kept only where it differs from the runner's own environment: a runner
    /// started for its run (not as a spare) spawns its nodes without rebuilding theirs.
    pub fn new(base: Option<BTreeMap<String, String>>, extra: BTreeMap<String, String>) -> Environment {
        let own = || {
            std::env::vars_os()
                .map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
                .collect::<Option<BTreeMap<String, String>>>()
        };
        let base = base.filter(|base| own().as_ref() != Some(base));
        Environment { base: base.map(Arc::new), extra: Arc::new(extra), own: false }
    }

    /// Makes this process's own environment the nodes' (the run's, else the process's own,
    /// with the lane's extra variables over it) and leaves nothing to apply per spawn: a
    /// command given any variable of its own copies the whole environment (a map entry and a C
    /// string per variable) at every spawn, while one given none passes the process's as it is.
    /// False, changing nothing, when a name or value cannot be in an environment (empty, `=` in
    /// a name, a NUL): each spawn then gets it as before, and fails as before.
    ///
    /// # Safety
    ///
    /// No other thread may read or change the process's environment meanwhile, through std or
    /// libc (see the caller: the runner process's one runtime thread).
    pub unsafe fn adopt(&mut self) -> bool {
        let Some(wanted) = self.whole() else { return false };
        for (name, _) in std::env::vars_os() {
            if !wanted.contains_key(&name) {
                // SAFETY: the caller guarantees no other thread touches the environment.
                unsafe { std::env::remove_var(&name) };
            }
        }
        for (name, value) in &wanted {
            if std::env::var_os(name).as_ref() != Some(value) {
                // SAFETY: as above; `whole` checked that the name and value can be set.
                unsafe { std::env::set_var(name, value) };
            }
        }
        *self = Environment { own: true, ..Environment::default() };
        true
    }

    /// The whole environment a node gets: the run's (else the process's own) with the extra
    /// variables over it; `None` if a name or value cannot be in an environment.
    fn whole(&self) -> Option<BTreeMap<std::ffi::OsString, std::ffi::OsString>> {
        let mut whole: BTreeMap<std::ffi::OsString, std::ffi::OsString> = match &self.base {
            Some(base) => base.iter().map(|(name, value)| (name.into(), value.into())).collect(),
            None => std::env::vars_os().collect(),
        };
        whole.extend(self.extra.iter().map(|(name, value)| (name.into(), value.into())));
        let settable = |(name, value): (&std::ffi::OsString, &std::ffi::OsString)| {
            let (name, value) = (name.as_encoded_bytes(), value.as_encoded_bytes());
            !name.is_empty() && !name.contains(&b'=') && !name.contains(&0) && !value.contains(&0)
        };
        whole.iter().all(settable).then_some(whole)
    }

    pub fn apply(&self, command: &mut std::process::Command) {
        if let Some(base) = &self.base {
            command.env_clear().envs(base.iter());
        }
        command.envs(self.extra.iter());
    }
}

/// A node process that was started: its group id, the child, and the read end of its output.
pub struct StartedNode {
    pub pgid: i32,
    /// When its leader started (for the scratch directory's record of its group).
    pub started: super::scratch::Started,
    child: NodeProcess,
    reader: tokio::net::unix::pipe::Receiver,
    generation: u32,
}

/// A node's process: started by this runner's own clone where it can be, else by std.
enum NodeProcess {
    Std(tokio::process::Child),
    #[cfg(target_os = "linux")]
    Cloned(super::clone::Leader),
}

impl NodeProcess {
    /// The exit status if the process exits within `within` (see
    /// [`super::clone::Leader::reap_within`]); `None` at once for a process std started
    /// (tokio reaps it).
    fn reap_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        match self {
            NodeProcess::Std(_) => None,
            #[cfg(target_os = "linux")]
            NodeProcess::Cloned(leader) => leader.reap_within(within),
        }
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            NodeProcess::Std(child) => child.wait().await,
            #[cfg(target_os = "linux")]
            NodeProcess::Cloned(leader) => leader.wait().await,
        }
    }

    fn kill(&mut self) {
        match self {
            NodeProcess::Std(child) => {
                let _ = child.start_kill();
            }
            #[cfg(target_os = "linux")]
            NodeProcess::Cloned(leader) => leader.kill(),
        }
    }
}

/// The read end of a node's pipe: watched by the reactor while odu waits to read it, or
/// parked (out of the reactor) while output gathers between two reads. A pipe the reactor
/// watches wakes it at every write the node makes, read or not: parked, it wakes nobody.
enum NodePipe {
    Live(tokio::net::unix::pipe::Receiver),
    Parked(OwnedFd),
    Gone,
}

impl NodePipe {
    /// The pipe in the reactor, put back there if it was parked.
    fn live(&mut self) -> std::io::Result<&mut tokio::net::unix::pipe::Receiver> {
        if let NodePipe::Parked(_) = self {
            let NodePipe::Parked(fd) = std::mem::replace(self, NodePipe::Gone) else { unreachable!() };
            *self = NodePipe::Live(tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd)?);
        }
        match self {
            NodePipe::Live(reader) => Ok(reader),
            _ => Err(std::io::Error::other("the node's pipe is gone")),
        }
    }

    /// Takes the pipe out of the reactor until [`NodePipe::live`].
    fn park(&mut self) {
        if let NodePipe::Live(_) = self {
            let NodePipe::Live(reader) = std::mem::replace(self, NodePipe::Gone) else { unreachable!() };
            if let Ok(fd) = reader.into_nonblocking_fd() {
                *self = NodePipe::Parked(fd);
            }
        }
    }
}

/// Starts one node attempt. Synchronous, so the caller knows the process group at once and the
/// next node of a chain starts without waiting for a task to be scheduled. A failure to start
/// is written to the spool and returned as the attempt's exit.
pub fn start_node(launch: NodeLaunch, spool: &Spool) -> Result<StartedNode, Exit> {
    let generation = launch.generation;
    let fail = |message: String| {
        let _ = spool.append(generation, format!("[odu] spawn failed: {message}\n").as_bytes());
        Exit::SpawnFailed
    };
    let (read_end, write_end) = pipe().map_err(|e| fail(format!("cannot create a pipe: {e}")))?;
    // An absolute program path spares every spawn the PATH search, which tries each directory
    // with a failing exec while the runner waits for the child to start.
    let program = resolve_program(&launch.argv[0]);
    #[cfg(target_os = "linux")]
    if launch.env.own && super::clone::available() {
        return start_cloned(&launch, &program, read_end, write_end, generation, &fail);
    }
    let mut cmd = std::process::Command::new(&program);
    launch.env.apply(&mut cmd);
    cmd.args(&launch.argv[1..]).current_dir(&launch.workspace).stdin(dev_null()).process_group(0);
    let dup = write_end.try_clone().map_err(|e| fail(e.to_string()))?;
    cmd.stdout(Stdio::from(write_end)).stderr(Stdio::from(dup));
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    // The one place a node process is created.
    #[allow(clippy::disallowed_methods)]
    let (spawned, started) = super::scratch::Started::around(|| cmd.spawn());
    // Our copies of the write end must close, or the pipe never reaches its end.
    drop(cmd);
    let child = spawned.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            fail(format!("{} is not on PATH", launch.argv[0]))
        } else {
            fail(e.to_string())
        }
    })?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    started_node(NodeProcess::Std(child), pgid, started, read_end, generation, &fail)
}

/// [`start_node`] by this runner's own clone ([`super::clone`]): the node gets the process's
/// environment as it is, which [`Environment::adopt`] made the run's.
#[cfg(target_os = "linux")]
fn start_cloned(
    launch: &NodeLaunch,
    program: &Path,
    read_end: OwnedFd,
    write_end: OwnedFd,
    generation: u32,
    fail: &dyn Fn(String) -> Exit,
) -> Result<StartedNode, Exit> {
    use super::clone::Step;
    use std::ffi::CString;
    use std::os::fd::AsFd;
    let c_string = |bytes: &[u8]| {
        CString::new(bytes)
            .map_err(|_| fail(format!("{:?} holds a NUL byte", String::from_utf8_lossy(bytes))))
    };
    // A name not found on PATH is never run from the working directory.
    if !program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Err(fail(format!("{} is not on PATH", launch.argv[0])));
    }
    let path = c_string(program.as_os_str().as_encoded_bytes())?;
    let argv = launch.argv.iter().map(|arg| c_string(arg.as_bytes())).collect::<Result<Vec<_>, _>>()?;
    let cwd = c_string(launch.workspace.as_os_str().as_encoded_bytes())?;
    // The one place a node process is created, where std does not; its stdin is /dev/null.
    let (spawned, started) =
        super::scratch::Started::around(|| super::clone::spawn(&path, &argv, &cwd, None, write_end.as_fd()));
    // Our copy of the write end must close, or the pipe never reaches its end.
    drop(write_end);
    let leader = spawned.map_err(|e| match (e.step, e.error.kind()) {
        (Step::Exec, std::io::ErrorKind::NotFound) => fail(format!("{} is not on PATH", launch.argv[0])),
        (Step::Directory, _) => fail(format!("cannot enter {}: {}", launch.workspace.display(), e.error)),
        (Step::Group, _) => fail(format!("cannot make the node a process group: {}", e.error)),
        (Step::Streams, _) => fail(format!("cannot connect the node's output: {}", e.error)),
        (Step::Clone | Step::Unshare | Step::Exec, _) => {
            fail(format!("cannot start {}: {}", program.display(), e.error))
        }
    })?;
    let pgid = leader.pid;
    started_node(NodeProcess::Cloned(leader), pgid, started, read_end, generation, fail)
}

/// A started node with its output's read end in the reactor; a pipe the reactor cannot take
/// ends the node at once.
fn started_node(
    mut child: NodeProcess,
    pgid: i32,
    started: super::scratch::Started,
    read_end: OwnedFd,
    generation: u32,
    fail: &dyn Fn(String) -> Exit,
) -> Result<StartedNode, Exit> {
    match pipe_receiver(read_end) {
        Ok(reader) => Ok(StartedNode { pgid, started, child, reader, generation }),
        Err(e) => {
            kill_group(pgid, libc::SIGKILL);
            child.kill();
            Err(fail(format!("cannot read the node's output: {e}")))
        }
    }
}

/// The read end of a node's fresh pipe, nonblocking, in the reactor. One `fcntl` sets the only
/// status flag it needs: tokio's checked conversion asks first whether it is a pipe opened for
/// reading (an `fstat` and a read of its flags), which a pipe odu just made is.
fn pipe_receiver(read_end: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; F_SETFL changes only its status flags, of which a
    // pipe made by pipe2(O_CLOEXEC) has none set (close-on-exec is a descriptor flag).
    if unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(read_end)
}

/// A node's stdin: a copy of `/dev/null` opened once, which spares each node the open (a path
/// walk) of its own.
fn dev_null() -> Stdio {
    dev_null_fd().and_then(|null| null.try_clone_to_owned()).map_or_else(|_| Stdio::null(), Stdio::from)
}

/// The descriptor behind [`dev_null`], opened once (a node started by [`super::clone`] gets
/// the stdin that module keeps).
fn dev_null_fd() -> std::io::Result<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    static NULL: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .as_ref()
        .map(|null| null.as_fd())
        .ok_or_else(|| std::io::Error::other("/dev/null cannot be opened"))
}

/// How a node's process ended, and whether its group went with it.
pub struct NodeEnd {
    pub exit: Exit,
    /// The group was found empty after the node's end, so it is gone for good: nothing can
    /// join a group that does not exist, and its number may later name another's.
    pub group_gone: bool,
    /// What the ended node still holds, to be dropped once its end was acted on.
    pub spent: Spent,
}

/// A finished node's reaped process (its pidfd) and its pipe, read to its end. Dropping them
/// takes each out of the reactor and closes it, four system calls that a chain's next node
/// need not wait for: whoever hears of the node's end drops this after starting the next.
pub struct Spent {
    _process: NodeProcess,
    _pipe: NodePipe,
}

/// Runs a started node to its end: streams its output into `spool`, reaps its group, and
/// returns how it ended once the log is complete.
pub async fn finish_node(started: StartedNode, spool: &Spool) -> NodeEnd {
    let StartedNode { pgid, mut child, reader, generation, .. } = started;
    let mut reader = NodePipe::Live(reader);
    // Small until a read fills it: most nodes print little or nothing, and a large buffer per
    // node is an allocation (and page faults) that a node of a few lines does not need.
    let mut buf = small_buffer();
    let mut status = None;
    let mut drain_deadline = None;
    // Whether the group may still have members: true until it is found empty.
    let mut group_left = true;
    // After a short read the next waits a moment, so a node that writes many short lines one
    // write at a time (compilers, test runners, shell loops) is read in a few large chunks
    // rather than woken for line by line; its pipe holds far more than it writes meanwhile.
    let mut next_read_at: Option<tokio::time::Instant> = None;
    // Until then the end of the output is what tells the node's end (see [`WATCH_EXIT_AFTER`]).
    let mut watch_exit_from = Some(tokio::time::Instant::now() + WATCH_EXIT_AFTER);
    loop {
        tokio::select! {
            read = async {
                if let Some(at) = next_read_at {
                    tokio::time::sleep_until(at).await;
                }
                spool.room().await;
                buf.clear();
                reader.live()?.read_buf(&mut buf).await
            } => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Err(e) = spool.append(generation, &buf[..n]) {
                        tracing::warn!(generation, error = %e, "cannot write a log");
                    }
                    if n == buf.capacity() && n < READ_LARGE {
                        // A fast writer: read it in large chunks from now on, from a larger
                        // pipe (most nodes print little, and never need one).
                        buf = Vec::with_capacity(READ_LARGE);
                        if let NodePipe::Live(pipe) = &reader {
                            use std::os::fd::AsFd;
                            enlarge_pipe(pipe.as_fd());
                        }
                    }
                    next_read_at = (n < COALESCE_BELOW && status.is_none())
                        .then(|| tokio::time::Instant::now() + COALESCE_FOR);
                    if next_read_at.is_some() {
                        reader.park();
                    }
                }
            },
            exited = async {
                if let Some(at) = watch_exit_from {
                    tokio::time::sleep_until(at).await;
                    watch_exit_from = None;
                }
                child.wait().await
            }, if status.is_none() => {
                status = Some(exited);
                // The rest is drained at once: the node's end waits on it.
                next_read_at = None;
                // Strays left in the group are reaped: TERM now, KILL after the grace period.
                group_left = kill_group(pgid, libc::SIGTERM);
                drain_deadline = Some(tokio::time::Instant::now() + TERM_GRACE);
            }
            () = crate::clock::until(drain_deadline), if drain_deadline.is_some() => {
                if kill_group(pgid, libc::SIGKILL) {
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                } else {
                    group_left = false;
                    // The group is gone yet the pipe stays open: a process that left the group
                    // holds it. Stop waiting; say so in the log.
                    let _ = spool.append(
                        generation,
                        b"\n[odu] log truncated: a process outside the node's group still holds its output open\n",
                    );
                    break;
                }
            }
        }
    }
    give_back(buf);
    let status = match status {
        Some(status) => status,
        None => match child.reap_within(REAP_SPIN) {
            Some(status) => Ok(status),
            None => child.wait().await,
        },
    };
    // Whatever is still in the group after the pipe closed goes too. A group found empty once
    // its leader exited stays gone (nothing can join a group that does not exist), and its
    // number may since name another's.
    let strays = group_left && kill_group(pgid, libc::SIGTERM);
    if strays {
        escalate_later(pgid);
    }
    let exit = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::SpawnFailed,
        },
        Err(_) => Exit::SpawnFailed,
    };
    NodeEnd { exit, group_gone: !strays, spent: Spent { _process: child, _pipe: reader } }
}

/// How long a node runs before its process's exit is watched for as well as the end of its
/// output. Nearly always the output ends with the process (its writers are the process and its
/// children), and the exit is then asked for at once ([`REAP_SPIN`]); only a process that
/// leaves a stray holding its output open ends before its output does, and its strays are then
/// ended this much later at most. A node that ends sooner costs no pidfd, no registration with
/// the reactor and no close: up to 17 % of the runner's CPU over runs of short nodes (5 to 12 %
/// in most series).
const WATCH_EXIT_AFTER: Duration = Duration::from_millis(100);

/// How long a node's process is asked for its exit, without sleeping, once its output ended
/// (all its writers closed it, as a process does on its way out). Its exit usually lands
/// within microseconds of that, on another core; a sleep until its pidfd says so woke the
/// runner a second time for most nodes of a chain (2.6 sleeps a node in all, 2.1 with this),
/// and a wake-up after a sleep costs more than this spin.
const REAP_SPIN: Duration = Duration::from_micros(30);

/// At most this many [`READ_SMALL`] buffers wait for the next nodes: as many as nodes usually
/// finish at once.
const KEPT_BUFFERS: usize = 8;

std::thread_local! {
    /// Read buffers of finished nodes, for the next ones: a buffer of [`READ_SMALL`] is too
    /// large for the allocator's caches, and a request of that size first has it sort every
    /// small block freed since the last such request (glibc's `malloc_consolidate`), a cost on
    /// every node that reads nothing.
    static BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty read buffer of [`READ_SMALL`], a kept one if there is one.
fn small_buffer() -> Vec<u8> {
    BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_else(|| Vec::with_capacity(READ_SMALL))
}

/// Keeps `buf` for a next node if it is a [`READ_SMALL`] one and few are kept.
fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() != READ_SMALL {
        return;
    }
    buf.clear();
    BUFFERS.with_borrow_mut(|kept| {
        if kept.len() < KEPT_BUFFERS {
            kept.push(buf);
        }
    });
}

/// `name` as an absolute path found on PATH (or `name` itself when it has a slash or is not
/// found, so the spawn reports the error). A runner's PATH does not change, so a name found
/// once is not looked up again: every node runs `just`, and the search costs a `stat` per
/// directory on PATH.
pub fn resolve_program(name: &str) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static FOUND: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    if name.contains('/') {
        return name.into();
    }
    let mut found = FOUND.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = found.as_ref().and_then(|found| found.get(name)) {
        return path.clone();
    }
    match crate::tool::find_on_path(std::env::var_os("PATH").as_deref(), name) {
        Some(path) => {
            found.get_or_insert_with(HashMap::new).insert(name.to_string(), path.clone());
            path
        }
        None => name.into(),
    }
}

/// Asks for a larger pipe buffer: with the default 64 KiB, a node printing fast and a reader
/// draining fast ping-pong on every 64 KiB. Best effort; the kernel caps it at
/// `/proc/sys/fs/pipe-max-size`.
pub fn enlarge_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a descriptor we hold; F_SETPIPE_SZ only resizes the pipe's buffer.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// A node's output pipe: close-on-exec ends, of the default size until the node turns out to
/// print fast ([`finish_node`] enlarges it then).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    crate::tool::pipe()
}

/// Sends `signal` to process group `pgid`; true when the group still had members.
pub fn kill_group(pgid: i32, signal: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions; a negative pid addresses the group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Whether any process of the group is still alive.
pub fn group_alive(pgid: i32) -> bool {
    kill_group(pgid, 0)
}

/// SIGKILLs the group after the grace period if it is still there.
pub fn escalate_later(pgid: i32) {
    tokio::spawn(async move {
        tokio::time::sleep(TERM_GRACE).await;
        if group_alive(pgid) {
            kill_group(pgid, libc::SIGKILL);
        }
    });
}

/// TERM every group, wait up to the grace period for them to go, KILL what is left. Blocking:
/// used on the way out, when nothing else is left to do.
pub fn terminate_groups(pgids: &[i32]) {
    let alive: Vec<i32> = pgids.iter().copied().filter(|&p| kill_group(p, libc::SIGTERM)).collect();
    let deadline = std::time::Instant::now() + TERM_GRACE;
    while std::time::Instant::now() < deadline && alive.iter().any(|&p| group_alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in alive {
        kill_group(p, libc::SIGKILL);
    }
}

/// Runs a short tool command to completion (stdin closed), returning its stdout on success.
pub async fn tool_output(
    program: &str,
    args: &[&str],
    dir: &Path,
    env: &Environment,
) -> std::io::Result<(bool, String, String)> {
    let mut command = std::process::Command::new(program);
    env.apply(&mut command);
    #[allow(clippy::disallowed_methods)]
    let out = tokio::process::Command::from(command)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> BTreeMap<String, String> {
        std::env::vars().collect()
    }

    #[test]
    fn a_finished_nodes_small_read_buffer_serves_the_next_node_emptied_and_a_large_one_does_not() {
        // A thread of its own: the kept buffers are per thread.
        std::thread::spawn(|| {
            let mut first = small_buffer();
            first.extend_from_slice(b"output of a node");
            let at = first.as_ptr();
            give_back(first);
            let next = small_buffer();
            assert_eq!((next.as_ptr(), next.len(), next.capacity()), (at, 0, READ_SMALL));
            // A fast writer's large buffer goes back to the allocator.
            give_back(Vec::with_capacity(READ_LARGE));
            assert_eq!(BUFFERS.with_borrow(Vec::len), 0);
            // No more than a few wait.
            for _ in 0..KEPT_BUFFERS + 3 {
                give_back(Vec::with_capacity(READ_SMALL));
            }
            assert_eq!(BUFFERS.with_borrow(Vec::len), KEPT_BUFFERS);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_whole_environment_is_the_runs_with_the_extra_over_it_if_it_can_be_one() {
        let vars = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let base = vars(&[("A", "run"), ("B", "run"), ("ODU_TEST_NOT_OWN", "1")]);
        let env = Environment::new(Some(base), vars(&[("B", "lane"), ("C", "lane")]));
        let whole: Vec<(String, String)> = env
            .whole()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        let want = [("A", "run"), ("B", "lane"), ("C", "lane"), ("ODU_TEST_NOT_OWN", "1")];
        assert_eq!(whole, want.map(|(k, v)| (k.to_string(), v.to_string())));
        // Names and values no environment can hold: each spawn gets them as it always did.
        for bad in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0y")] {
            let env = Environment::new(None, vars(&[bad]));
            assert!(env.whole().is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_runs_environment_replaces_the_runners_own_only_where_they_differ() {
        let extra = BTreeMap::from([("ODU_RUN".to_string(), "1a2b3c4#1".to_string())]);
        // The runner was started with the run's environment: nothing to rebuild per node.
        assert!(Environment::new(Some(own()), extra.clone()).base.is_none());
        assert!(Environment::new(None, extra.clone()).base.is_none());
        // A spare started for another run: its nodes get this run's environment, whole.
        let mut other = own();
        other.insert("ODU_TEST_ONLY_IN_THE_RUN".into(), "1".into());
        let env = Environment::new(Some(other.clone()), extra);
        assert_eq!(env.base.as_deref(), Some(&other));
        let (ok, printed, _) = tool_output("env", &["-0"], &std::env::temp_dir(), &env).await.unwrap();
        assert!(ok);
        let mut seen: Vec<&str> = printed.split_terminator('\0').collect();
        seen.sort_unstable();
        // The lane's extra variables over the run's (a test run inside a node has ODU_RUN).
        let mut whole = other.clone();
        whole.insert("ODU_RUN".into(), "1a2b3c4#1".into());
        let mut want: Vec<String> = whole.iter().map(|(k, v)| format!("{k}={v}")).collect();
        want.sort_unstable();
        assert_eq!(seen, want);
    }
}
