//! Starting a node's process with one `clone` of the runner's own, and waiting for it on its
//! pidfd.
//!
//! std's `Command` starts a process through `posix_spawn`, which maps a fresh stack for the
//! child and unmaps it at every spawn; tokio then opens a pidfd for the child and keeps a reaper
//! for it. Here the child shares the runner's memory and is suspended-on by the runner
//! (`CLONE_VM | CLONE_VFORK`, as `posix_spawn` does), and runs on one stack kept for the
//! process. Its exit is waited for on a pidfd the reactor watches, opened only when it is asked
//! for ([`Leader::wait`]): a node's end is usually told by the end of its output, and a pidfd
//! made at every clone (`CLONE_PIDFD`), registered with the reactor and closed again cost the
//! runner up to 17 % of its CPU over runs of short nodes (5 to 12 % in most series).
//!
//! The child also starts on the runner's own descriptor table (`CLONE_FILES`) and leaves it at
//! once for a copy of only its lowest few entries (`close_range(first, ~0, CLOSE_RANGE_UNSHARE)`),
//! where the parent put its stdin and output ([`Slots`]). A copy of the whole table, made by a
//! plain clone, takes a reference to every descriptor the runner holds, and `execve` then closes
//! each close-on-exec one again: with two descriptors a running node, each start cost time in
//! proportion to the nodes already running (at 2,000 nodes started at once, 4,000 descriptors
//! copied and closed by each of the last starts). A kernel without `close_range` (before 5.9) or
//! one that refuses it gets the plain clone.
//!
//! Between the clone and `execve` the child runs on borrowed memory while the runner waits:
//! it allocates nothing and takes no lock, only makes system calls on what the parent prepared
//! ([`ChildPlan`]), and reports a failing step through that plan before `_exit(127)`.
//! Every signal is blocked across the clone; the child sets any handled signal back to its
//! default (the runner's handlers must never run in it) before it restores the mask.
//!
//! Used only where the runner process's environment is the nodes' own (the `odu-runner`
//! process, once it adopted the run's): the child is given `environ` as it is, and no other
//! thread of that process changes it.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, OnceLock};

use tokio::io::unix::AsyncFd;

/// The child's stack: far more than `execve` and the steps before it use.
const STACK_SIZE: usize = 64 * 1024;

unsafe extern "C" {
    /// The process's environment, as `execve` takes it.
    static environ: *const *const libc::c_char;
}

/// The step of starting a node's process that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The clone itself: nothing was started.
    Clone,
    /// Leaving the runner's descriptor table for a small copy of its own ([`Slots`]).
    Unshare,
    /// Making the process the leader of its own process group.
    Group,
    /// Connecting its stdin, stdout and stderr.
    Streams,
    /// Entering its working directory.
    Directory,
    /// `execve` of the program.
    Exec,
}

/// Why a process was not started: the step, and the system's error.
#[derive(Debug)]
pub struct SpawnError {
    pub step: Step,
    pub error: std::io::Error,
}

/// What the child does, prepared by the parent: pointers into memory the parent keeps alive
/// (and does not touch) until the clone returns, which happens only once the child called
/// `execve` successfully or `_exit`.
struct ChildPlan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    out: RawFd,
    /// With the runner's descriptor table shared ([`Slots`]): the first descriptor the child's
    /// own table leaves out (`stdin` and `out` are below it).
    unshare_from: Option<libc::c_uint>,
    /// The signal mask to restore, the parent's before the clone.
    mask: libc::sigset_t,
    /// Set by the child on failure: the failing step and its errno.
    failed: Option<(Step, i32)>,
}

/// The child's side: system calls only, on the plan and the stack it was given.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildPlan`, alive and untouched by the parent until this
    // child execs or exits. Everything below is an async-signal-safe call on prepared data;
    // errno is the suspended parent thread's (the same thread pointer), read here only.
    unsafe {
        let plan = arg.cast::<ChildPlan>();
        let fail = |step: Step| -> ! {
            (*plan).failed = Some((step, *libc::__errno_location()));
            libc::_exit(127)
        };
        // On the runner's own table until this succeeds: nothing in it may change before.
        if let Some(first) = (*plan).unshare_from
            && libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, libc::CLOSE_RANGE_UNSHARE) != 0
        {
            fail(Step::Unshare);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(Step::Group);
        }
        for (from, to) in [((*plan).stdin, 0), ((*plan).out, 1), ((*plan).out, 2)] {
            if libc::dup2(from, to) < 0 {
                fail(Step::Streams);
            }
        }
        if libc::chdir((*plan).cwd) != 0 {
            fail(Step::Directory);
        }
        // A handler of the runner's would run here, on borrowed memory: every handled signal
        // goes back to its default (an ignored one stays ignored, as across exec).
        let mut handler: libc::sigaction = std::mem::zeroed();
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=64 {
            if libc::sigaction(signal, std::ptr::null(), &mut handler) == 0
                && handler.sa_sigaction != libc::SIG_DFL
                && handler.sa_sigaction != libc::SIG_IGN
            {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &(*plan).mask, std::ptr::null_mut());
        libc::execve((*plan).program, (*plan).argv, (*plan).envp);
        fail(Step::Exec)
    }
}

/// The stack every clone of this process runs its child on, mapped once, with a guard page
/// below it, and the descriptor slots the child starts from ([`Slots`]). The mutex keeps two
/// threads from cloning onto them at once.
struct Stack {
    top: *mut u8,
    /// `/dev/null`, opened once: a node's stdin unless it is given another.
    null: OwnedFd,
    /// `None` where the child cannot leave a shared table (no `close_range`): it is cloned with
    /// a copy of the whole table.
    slots: Option<Slots>,
}

// SAFETY: the stack is only used under its mutex, by one clone at a time.
unsafe impl Send for Stack {}

/// Two descriptors low in the runner's table, kept for its life: before each clone the node's
/// output (and its stdin, when it is not `/dev/null`) are put in them, and after it
/// `/dev/null` again, so that no node's pipe is held open by the runner. The child, sharing the
/// runner's table, takes a copy of the entries below `first` only (the runner's first few
/// descriptors: its stdio, the runtime's, these). A node's stdin is `/dev/null`, which the
/// stdin slot holds between clones: it is left as it is, two `dup3` a node fewer.
struct Slots {
    stdin: OwnedFd,
    out: OwnedFd,
    /// What the slots hold between clones.
    null: OwnedFd,
    first: libc::c_uint,
}

impl Slots {
    /// Opened while the runner holds few descriptors (at its start, [`prepare`]), so that they
    /// are low.
    fn open(null: &OwnedFd) -> Option<Slots> {
        // SAFETY: close_range of an empty range (nothing at or above the highest descriptor
        // number) closes nothing; it only says whether the kernel has the call.
        if unsafe { libc::syscall(libc::SYS_close_range, libc::c_uint::MAX, libc::c_uint::MAX, 0) } != 0 {
            return None;
        }
        let (stdin, out, null) = (null.try_clone().ok()?, null.try_clone().ok()?, null.try_clone().ok()?);
        let first = libc::c_uint::try_from(stdin.as_raw_fd().max(out.as_raw_fd()) + 1).ok()?;
        Some(Slots { stdin, out, null, first })
    }

    /// Puts `out`, and `stdin` if given (else the slot's `/dev/null` stays), in the slots
    /// (each close-on-exec, as every descriptor of the runner's is); their numbers for the
    /// child. On failure the slots hold `/dev/null` again: a node that never starts leaves none
    /// of its pipes with the runner.
    fn fill(&self, stdin: Option<BorrowedFd<'_>>, out: BorrowedFd<'_>) -> std::io::Result<(RawFd, RawFd)> {
        let stdin = stdin.map(|fd| (fd.as_raw_fd(), &self.stdin));
        for (from, slot) in [Some((out.as_raw_fd(), &self.out)), stdin].into_iter().flatten() {
            // SAFETY: dup3 onto a descriptor this struct owns replaces only what it held.
            if unsafe { libc::dup3(from, slot.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
                let error = std::io::Error::last_os_error();
                self.empty(stdin.is_some());
                return Err(error);
            }
        }
        Ok((self.stdin.as_raw_fd(), self.out.as_raw_fd()))
    }

    /// `/dev/null` back in the output slot, and in the stdin slot too when `stdin_filled`:
    /// the node's pipes are no longer the runner's to hold.
    fn empty(&self, stdin_filled: bool) {
        let stdin = stdin_filled.then_some(&self.stdin);
        for slot in [Some(&self.out), stdin].into_iter().flatten() {
            // SAFETY: as in `fill`. It cannot fail on two open descriptors but for EINTR or
            // EBUSY (a racing open of the same number, which nothing here makes): retried.
            while unsafe { libc::dup3(self.null.as_raw_fd(), slot.as_raw_fd(), libc::O_CLOEXEC) } < 0
                && matches!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINTR | libc::EBUSY))
            {
            }
        }
    }
}

/// Maps the stack and opens the [`Slots`] now, while the process holds few descriptors: a
/// process that spawns nodes calls it at its start (else the first node does).
pub fn prepare() {
    drop(stack());
}

fn stack() -> std::io::Result<std::sync::MutexGuard<'static, Option<Stack>>> {
    static STACK: Mutex<Option<Stack>> = Mutex::new(None);
    let mut held = STACK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if held.is_none() {
        // SAFETY: sysconf has no preconditions; mmap of fresh anonymous memory and mprotect of
        // its first page touch nothing else.
        unsafe {
            let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).unwrap_or(4096);
            let base = libc::mmap(
                std::ptr::null_mut(),
                page + STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            libc::mprotect(base, page, libc::PROT_NONE);
            let null = match std::fs::File::open("/dev/null") {
                Ok(null) => OwnedFd::from(null),
                Err(error) => {
                    libc::munmap(base, page + STACK_SIZE);
                    return Err(error);
                }
            };
            let slots = Slots::open(&null);
            // The stack grows down from its top.
            *held = Some(Stack { top: base.cast::<u8>().add(page + STACK_SIZE), null, slots });
        }
    }
    Ok(held)
}

/// Whether this kernel gives a clone its pidfd, one the reactor can wait on (Linux 5.3 and
/// later), asked once: else nodes start the way std starts a process.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        // SAFETY: pidfd_open of this process only makes a descriptor, closed at once.
        unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
            if fd < 0 {
                return false;
            }
            libc::close(fd as RawFd);
        }
        true
    })
}

/// Starts `program` (a path: nothing is looked up on PATH) with `argv` in `cwd`, in a process
/// group of its own, stdin from `stdin` (`None`: `/dev/null`) and stdout and stderr into
/// `out`, with this process's environment.
pub fn spawn(
    program: &CStr,
    argv: &[CString],
    cwd: &CStr,
    stdin: Option<BorrowedFd<'_>>,
    out: BorrowedFd<'_>,
) -> Result<Leader, SpawnError> {
    let clone_error = |error| SpawnError { step: Step::Clone, error };
    let argv_ptrs: Vec<*const libc::c_char> =
        argv.iter().map(|arg| arg.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let mut held = stack().map_err(clone_error)?;
    let Some(stack) = held.as_mut() else { return Err(clone_error(std::io::Error::other("no stack"))) };
    let mut cloned = clone_child(stack, program, &argv_ptrs, cwd, stdin, out);
    if matches!(&cloned, Err(SpawnError { step: Step::Unshare, .. })) {
        // The kernel has close_range but refused this use of it: every clone copies the table.
        stack.slots = None;
        cloned = clone_child(stack, program, &argv_ptrs, cwd, stdin, out);
    }
    drop(held);
    let pid = cloned?;
    Ok(Leader { pid, pidfd: None, status: None })
}

/// One clone onto `stack`, sharing the runner's descriptor table when it has [`Slots`]: the
/// child's pid once it has exec'd, or the step that failed (the child then reaped).
fn clone_child(
    stack: &Stack,
    program: &CStr,
    argv: &[*const libc::c_char],
    cwd: &CStr,
    stdin: Option<BorrowedFd<'_>>,
    out: BorrowedFd<'_>,
) -> Result<i32, SpawnError> {
    let stdin_given = stdin.is_some();
    let (stdin, out, unshare_from) = match &stack.slots {
        Some(slots) => {
            let (stdin, out) =
                slots.fill(stdin, out).map_err(|error| SpawnError { step: Step::Streams, error })?;
            (stdin, out, Some(slots.first))
        }
        None => (stdin.map_or(stack.null.as_raw_fd(), |fd| fd.as_raw_fd()), out.as_raw_fd(), None),
    };
    let shared = if unshare_from.is_some() { libc::CLONE_FILES } else { 0 };
    // SAFETY: the plan points at `program`, `argv`, `cwd` and the environment, all alive
    // across the clone; the child only reads them, and the parent is suspended until the child
    // execs or exits (CLONE_VFORK), so the two never run on the plan at once. Signals are
    // blocked across the clone so that none is handled on the child's borrowed memory before
    // it reset the handlers. With CLONE_FILES the child changes no entry of the shared table
    // before it has left it.
    unsafe {
        let mut plan = ChildPlan {
            program: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: environ,
            cwd: cwd.as_ptr(),
            stdin,
            out,
            unshare_from,
            mask: std::mem::zeroed(),
            failed: None,
        };
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut plan.mask);
        let pid = libc::clone(
            child,
            stack.top.cast::<libc::c_void>(),
            libc::CLONE_VM | libc::CLONE_VFORK | shared | libc::SIGCHLD,
            (&raw mut plan).cast::<libc::c_void>(),
        );
        let clone_errno = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &plan.mask, std::ptr::null_mut());
        if let Some(slots) = &stack.slots {
            slots.empty(stdin_given);
        }
        if pid < 0 {
            return Err(SpawnError { step: Step::Clone, error: clone_errno });
        }
        if let Some((step, errno)) = std::ptr::read_volatile(&raw const plan.failed) {
            // The child has called _exit: reaped now, so no zombie is left.
            reap_exited(pid);
            return Err(SpawnError { step, error: std::io::Error::from_raw_os_error(errno) });
        }
        Ok(pid)
    }
}

/// A started process, the leader of its own group, waited for on its pidfd. Reaped once: its
/// pid stays its own until then, so a signal sent to it (or its group) reaches no other, and a
/// pidfd opened for it any time before names it.
pub struct Leader {
    pub pid: i32,
    /// Opened by the first [`Leader::wait`] that needs it; kept after the process is reaped,
    /// and closed with the leader.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Leader {
    /// Waits for the process to exit and reaps it; its exit status from then on. Asks the
    /// kernel only once its pidfd is readable: a caller that polls this afresh at every turn
    /// of a loop (a node's output read chunk by chunk) makes no system call for it after the
    /// first, which opens the pidfd (readable at once if the process has exited since).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            let pidfd = match &self.pidfd {
                Some(pidfd) => pidfd,
                None => match open_pidfd(self.pid) {
                    Ok(pidfd) => self.pidfd.insert(pidfd),
                    // No descriptor to be had (the runner at its limit of open files): the
                    // process is asked now and then instead.
                    Err(_) => {
                        if self.try_wait()?.is_none() {
                            tokio::time::sleep(POLL_WITHOUT_PIDFD).await;
                        }
                        continue;
                    }
                },
            };
            let mut ready = pidfd.readable().await?;
            let reaped = reap(self.pid)?;
            if reaped.is_none() {
                ready.clear_ready();
            }
            drop(ready);
            if let Some(status) = reaped {
                // The pidfd stays open, out of the way, until the leader is dropped: closing
                // it is no part of learning how the process ended.
                self.status = Some(status);
            }
        }
    }

    /// Reaps the process if it exits within `within`, asking the kernel again and again
    /// without sleeping: its exit status, else `None` (then [`Leader::wait`] sleeps for it).
    /// For a process whose output just ended, which is exiting on another core: its exit is a
    /// few microseconds away, and a wake-up on its pidfd costs the runner more than that.
    pub fn reap_within(&mut self, within: std::time::Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.try_wait() {
                Ok(Some(status)) => return Some(status),
                Err(_) => return None,
                Ok(None) if std::time::Instant::now() >= deadline => return None,
                Ok(None) => std::thread::yield_now(),
            }
        }
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none()
            && let Some(status) = reap(self.pid)?
        {
            self.status = Some(status);
        }
        Ok(self.status)
    }

    /// Sends SIGKILL to the process itself (not yet reaped, so its pid is still its own).
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// How often a process is asked for its exit where no pidfd could be opened for it.
const POLL_WITHOUT_PIDFD: std::time::Duration = std::time::Duration::from_millis(50);

/// A pidfd for child `pid` (not yet reaped, so the pid is still its own), in the reactor.
fn open_pidfd(pid: i32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open makes a new descriptor, owned from here on.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else; the AsyncFd owns it from
    // here on, open and the same until it drops.
    unsafe {
        let fd = OwnedFd::from_raw_fd(fd as RawFd);
        AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).map_err(|e| e.into_parts().1)
    }
}

/// Reaps child `pid`, which has exited or is about to (blocking until it has).
fn reap_exited(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid of our own child writes one int, which `status` is.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
}

/// Reaps child `pid` if it has exited: its exit status, else `None`.
fn reap(pid: i32) -> std::io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid of our own child writes one int, which `status` is.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if reaped == 0 {
            return Ok(None);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

impl Drop for Leader {
    /// A process nobody waited for is reaped when it exits, by a task of the runtime, so it
    /// does not stay a zombie for the runner's life.
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        let (pid, pidfd) = (self.pid, self.pidfd.take());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut leader = Leader { pid, pidfd, status: None };
                let _ = leader.wait().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn c(text: &str) -> CString {
        CString::new(text).unwrap()
    }

    /// Runs `sh -c script` through [`spawn`] in `dir`; its output and how it ended.
    async fn run(script: &str, dir: &std::path::Path) -> (String, ExitStatus, i32) {
        run_program("sh", &["-c", script], dir).await
    }

    /// Runs `program` (found on PATH) with `args` through [`spawn`] in `dir`, stdin `/dev/null`.
    async fn run_program(program: &str, args: &[&str], dir: &std::path::Path) -> (String, ExitStatus, i32) {
        run_with_stdin(program, args, dir, None).await
    }

    /// Runs `program` (found on PATH) with `args` and `stdin` through [`spawn`] in `dir`.
    async fn run_with_stdin(
        program: &str,
        args: &[&str],
        dir: &std::path::Path,
        stdin: Option<BorrowedFd<'_>>,
    ) -> (String, ExitStatus, i32) {
        let (read, write) = crate::tool::pipe().unwrap();
        let cwd = c(dir.to_str().unwrap());
        let path = super::super::spawner::resolve_program(program);
        let argv: Vec<CString> = std::iter::once(program).chain(args.iter().copied()).map(c).collect();
        let path = c(path.to_str().unwrap());
        let mut leader = spawn(&path, &argv, &cwd, stdin, write.as_fd()).unwrap();
        drop(write);
        let pid = leader.pid;
        let status = leader.wait().await.unwrap();
        let mut out = String::new();
        std::fs::File::from(read).read_to_string(&mut out).unwrap();
        (out, status, pid)
    }

    use std::io::Write;
    use std::os::fd::AsFd;

    /// Starts `sh -c script` through [`spawn`] in `dir` and reads its output to the end, as the
    /// runner hears it before it asks for the exit: the leader, not yet waited for, and what it
    /// printed.
    fn start_and_read(script: &str, dir: &std::path::Path) -> (Leader, String) {
        let (read, write) = crate::tool::pipe().unwrap();
        let sh = c(super::super::spawner::resolve_program("sh").to_str().unwrap());
        let leader =
            spawn(&sh, &[c("sh"), c("-c"), c(script)], &c(dir.to_str().unwrap()), None, write.as_fd())
                .unwrap();
        drop(write);
        let mut out = String::new();
        std::fs::File::from(read).read_to_string(&mut out).unwrap();
        (leader, out)
    }

    #[tokio::test]
    async fn a_cloned_process_leads_its_own_group_in_its_folder_with_one_output() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo pid $$; echo group $(cut -d' ' -f5 /proc/$$/stat); pwd; echo to-stderr >&2; read line || echo stdin-empty; exit 3";
        let (out, status, pid) = run(script, dir.path()).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("pid {pid}"));
        assert_eq!(lines[1], format!("group {pid}"), "the leader of a group of its own");
        assert_eq!(
            std::path::Path::new(lines[2]).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
        assert_eq!(&lines[3..], ["to-stderr", "stdin-empty"]);
        assert_eq!(status.code(), Some(3));
        // Reaped: the pid is no child of this process any more.
        assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) }, -1);
    }

    #[tokio::test]
    async fn a_process_whose_output_ended_is_reaped_within_the_spin_or_left_to_wait_for() {
        let dir = tempfile::tempdir().unwrap();
        let start = |script: &str| start_and_read(script, dir.path());
        // Output ended by the exit itself: reaped without a sleep on the pidfd, in most tries
        // (the exit lands within the spin unless the machine preempts the exiting process).
        let mut reaped = 0;
        for _ in 0..20 {
            let (mut leader, out) = start("echo done; exit 4");
            assert_eq!(out, "done\n");
            match leader.reap_within(std::time::Duration::from_millis(50)) {
                Some(status) => {
                    assert_eq!(status.code(), Some(4));
                    reaped += 1;
                }
                None => assert_eq!(leader.wait().await.unwrap().code(), Some(4)),
            }
        }
        assert!(reaped >= 15, "reaped within the spin {reaped} times of 20");
        // Output closed by a process that goes on: the spin gives up at its deadline, and the
        // process is still waited for (and reaped) when it ends.
        let (mut leader, out) = start("exec >&- 2>&-; sleep 0.3; exit 5");
        assert_eq!(out, "");
        let asked = std::time::Instant::now();
        assert!(leader.reap_within(std::time::Duration::from_micros(200)).is_none());
        assert!(asked.elapsed() < std::time::Duration::from_millis(100), "the spin is bounded");
        assert_eq!(leader.wait().await.unwrap().code(), Some(5));
    }

    #[tokio::test]
    async fn a_pidfd_is_opened_only_when_the_exit_is_waited_for_and_tells_an_exit_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let start = |script: &str| start_and_read(script, dir.path());
        // Ended with its output and reaped by the spin: no pidfd was ever made for it.
        let (mut leader, out) = start("echo quick; exit 6");
        assert_eq!(out, "quick\n");
        let status = match leader.reap_within(std::time::Duration::from_secs(5)) {
            Some(status) => status,
            None => leader.wait().await.unwrap(),
        };
        assert_eq!(status.code(), Some(6));
        assert!(leader.pidfd.is_none(), "a pidfd was made for a process reaped without one");
        // Exited (a zombie) before anyone waited: the pidfd opened then is readable at once.
        let (mut leader, _) = start("exit 7");
        let pid = leader.pid;
        let exited = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
            && std::time::Instant::now() < exited
        {
            std::thread::yield_now();
        }
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), leader.wait()).await;
        assert_eq!(
            status.expect("a pidfd opened after the exit was never readable").unwrap().code(),
            Some(7)
        );
        assert!(leader.pidfd.is_some());
        // Still running when waited for: woken by its exit.
        let (mut leader, _) = start("exec >&- 2>&-; sleep 0.2; exit 8");
        assert_eq!(leader.wait().await.unwrap().code(), Some(8));
    }

    #[tokio::test]
    async fn a_leader_dropped_unwaited_is_reaped_when_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let (read, write) = crate::tool::pipe().unwrap();
        let sh = c(super::super::spawner::resolve_program("sh").to_str().unwrap());
        let argv = [c("sh"), c("-c"), c("exec >&- 2>&-; sleep 0.2")];
        let leader = spawn(&sh, &argv, &c(dir.path().to_str().unwrap()), None, write.as_fd()).unwrap();
        drop((write, read));
        let pid = leader.pid;
        drop(leader);
        // The runtime's task reaps it once it exits: no zombie is left.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(std::time::Instant::now() < deadline, "the dropped leader was never reaped");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_given_stdin_is_the_nodes_and_the_next_node_reads_dev_null_again() {
        let dir = tempfile::tempdir().unwrap();
        let (read, write) = crate::tool::pipe().unwrap();
        std::fs::File::from(write).write_all(b"given\n").unwrap();
        let (out, _, _) = run_with_stdin("sh", &["-c", "cat"], dir.path(), Some(read.as_fd())).await;
        assert_eq!(out, "given\n");
        // The runner kept no copy of that stdin in its slot: a node's stdin is /dev/null again.
        let (out, _, _) = run("read line && echo read $line || echo stdin-empty", dir.path()).await;
        assert_eq!(out, "stdin-empty\n");
    }

    extern "C" fn count_usr1(_: libc::c_int) {
        HANDLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    static HANDLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[tokio::test]
    async fn the_node_gets_the_runners_mask_and_default_handlers_and_the_runner_keeps_its_own() {
        // SAFETY: a handler that only counts, and a mask change, for this test's thread.
        let mut usr2: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::signal(libc::SIGUSR1, count_usr1 as *const () as libc::sighandler_t);
            libc::sigemptyset(&mut usr2);
            libc::sigaddset(&mut usr2, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr2, std::ptr::null_mut());
        }
        let dir = tempfile::tempdir().unwrap();
        // SIGUSR2 (12) blocked, as in the thread that started it; nothing else. (Not through a
        // shell: dash clears its mask.)
        let (out, _, _) = run_program("grep", &["SigBlk", "/proc/self/status"], dir.path()).await;
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["SigBlk:", "0000000000000800"]);
        let (out, status, _) = run("kill -USR1 $$; echo survived", dir.path()).await;
        assert_eq!((out.as_str(), status.signal()), ("", Some(libc::SIGUSR1)), "the default action ended it");
        assert_eq!(HANDLED.load(std::sync::atomic::Ordering::SeqCst), 0, "the runner's handler never ran");
        // The runner's own mask and handler are as they were.
        let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now) };
        assert_eq!(unsafe { libc::sigismember(&now, libc::SIGUSR2) }, 1);
        assert_eq!(unsafe { libc::sigismember(&now, libc::SIGUSR1) }, 0);
        unsafe { libc::raise(libc::SIGUSR1) };
        assert_eq!(HANDLED.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// The device and inode behind descriptor `fd` of this process, if open.
    fn identity(fd: RawFd) -> Option<(u64, u64)> {
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        (unsafe { libc::fstat(fd, &mut stat) } == 0).then_some((stat.st_dev, stat.st_ino))
    }

    #[tokio::test]
    async fn a_node_gets_none_of_the_runners_many_descriptors_and_the_runner_keeps_them_all() {
        // 1,500 pipes of the runner's, inheritable on purpose (no close-on-exec): a clone that
        // copied the runner's table would hand them all to the node.
        prepare();
        let held: Vec<(RawFd, RawFd)> = (0..1_500)
            .map(|_| {
                let mut fds = [0; 2];
                assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
                (fds[0], fds[1])
            })
            .collect();
        let before: Vec<_> = (0..3).map(identity).collect();
        let dir = tempfile::tempdir().unwrap();
        let (out, status, _) = run("ls /proc/$$/fd", dir.path()).await;
        assert!(status.success());
        let mut node_fds: Vec<RawFd> = out.lines().map(|l| l.parse().unwrap()).collect();
        node_fds.sort_unstable();
        let lowest_held = held.iter().map(|(r, _)| *r).min().unwrap();
        let inherited: Vec<_> = node_fds.iter().filter(|fd| **fd >= lowest_held).collect();
        assert!(inherited.is_empty(), "the node holds none of the runner's pipes, yet: {inherited:?}");
        assert!(node_fds.starts_with(&[0, 1, 2]), "{node_fds:?}");
        // The runner's own stdio and every pipe are as they were.
        assert_eq!((0..3).map(identity).collect::<Vec<_>>(), before);
        for (read, write) in &held {
            assert!(
                unsafe { libc::fcntl(*read, libc::F_GETFD) } >= 0
                    && unsafe { libc::fcntl(*write, libc::F_GETFD) } >= 0
            );
        }
        // A failing start leaves the table as it was too.
        let null = std::fs::File::open("/dev/null").unwrap();
        let (_read, write) = crate::tool::pipe().unwrap();
        let gone = c(dir.path().join("gone").to_str().unwrap());
        assert!(spawn(&c("/bin/sh"), &[c("sh")], &gone, Some(null.as_fd()), write.as_fd()).is_err());
        assert_eq!((0..3).map(identity).collect::<Vec<_>>(), before);
        for (read, write) in held {
            assert_eq!(unsafe { libc::close(read) + libc::close(write) }, 0, "still open, so closed once");
        }
    }

    #[tokio::test]
    async fn without_slots_a_clone_copies_the_table_and_still_starts_the_node() {
        let (read, write) = crate::tool::pipe().unwrap();
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let argv = [c("sh"), c("-c"), c("echo plain; read line || echo stdin-empty")];
        let ptrs: Vec<*const libc::c_char> =
            argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let pid = {
            let held = stack().unwrap();
            let plain = Stack { top: held.as_ref().unwrap().top, null, slots: None };
            clone_child(&plain, &c("/bin/sh"), &ptrs, &c(dir.path().to_str().unwrap()), None, write.as_fd())
                .unwrap()
        };
        drop(write);
        let mut out = String::new();
        std::fs::File::from(read).read_to_string(&mut out).unwrap();
        reap_exited(pid);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["plain", "stdin-empty"],
            "stdin is the stack's /dev/null"
        );
    }

    #[tokio::test]
    async fn each_failing_step_is_named() {
        let (_read, write) = crate::tool::pipe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cwd = c(dir.path().to_str().unwrap());
        let missing = spawn(&c("/nonexistent/just"), &[c("just")], &cwd, None, write.as_fd()).err().unwrap();
        assert_eq!((missing.step, missing.error.kind()), (Step::Exec, std::io::ErrorKind::NotFound));
        let gone = c(dir.path().join("gone").to_str().unwrap());
        let no_dir = spawn(&c("/bin/sh"), &[c("sh")], &gone, None, write.as_fd()).err().unwrap();
        assert_eq!((no_dir.step, no_dir.error.kind()), (Step::Directory, std::io::ErrorKind::NotFound));
    }
}
