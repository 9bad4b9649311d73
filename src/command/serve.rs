//! `odu serve`: the checkout's server in the foreground (or as `odu run` starts it).

use std::time::Duration;

use crate::cli::ServeArgs;
use crate::error::{CliError, CliResult};
use crate::server::serve::{self as server, ServeOptions};

pub fn serve(args: ServeArgs) -> CliResult<i32> {
    // Taken first, so no process this server starts inherits it.
    let ready = args.ready_fd.and_then(adopt_ready_pipe);
    // The client's answers: a memfd, close-on-exec already; a number naming no regular file is
    // left alone.
    let found_file = args.found_fd.and_then(|fd| take_inherited(fd, libc::S_IFREG));
    if let Some(found) = found_file.and_then(crate::tool::Found::from_file) {
        crate::tool::adopt(found);
    }
    let cwd = super::current_dir()?;
    let repo = crate::tool::git::toplevel_quick(&cwd)?;
    let idle_timeout = match args.idle_timeout.as_deref() {
        None | Some("0") | Some("never") => None,
        Some(text) => Some(super::parse_duration(text, "--idle-timeout")?),
    };
    // One malloc arena for the whole process, before any thread exists: the runtime's worker,
    // the thread that drives it and the blocking pool each took an arena of their own, and
    // memory freed on one thread but taken on another kept every arena's pages (wide2000: the
    // server's peak RSS 35 -> 23.4 MiB, its anonymous memory 25 -> 13.2 MiB). Its threads
    // seldom allocate at the same moment: the server runs on one worker.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's settings, under malloc's own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // One worker: the server's tasks each take short steps, and with a second worker every
    // event a lane reported woke the other thread too (a 200-node chain: server CPU 41.0 ->
    // 36.0 ms, wall 0.893 -> 0.857 s). Blocking work (planning, a worktree, a prune, reaping)
    // runs on the blocking pool, beside it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))?;
    let code =
        runtime.block_on(server::serve(repo, ServeOptions { idle_timeout, verbose: !args.quiet, ready }))?;
    // Lanes still closing are not waited for: their runners die with their stdin.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

/// The pipe named by `--ready-fd`, marked close-on-exec; `None` when `fd` is not an open pipe
/// (a number given by hand, say), which is then left alone.
fn adopt_ready_pipe(fd: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let pipe = take_inherited(fd, libc::S_IFIFO)?;
    // SAFETY: fcntl only sets the flags of a descriptor this process now owns.
    (unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } == 0).then_some(pipe)
}

/// Descriptor `fd`, handed over through exec, owned from now on if it is open and of `kind`
/// (`S_IFIFO`, `S_IFREG`); `None` for a standard stream or anything else, left alone.
fn take_inherited(fd: i32, kind: libc::mode_t) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fstat on a descriptor number only reads its kind; it is taken over only once it
    // is known to be open and of that kind, which nothing else in this process owns (it was
    // handed over through exec, and nothing has run yet).
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if fd < 3 || libc::fstat(fd, &mut stat) != 0 || stat.st_mode & libc::S_IFMT != kind {
            return None;
        }
        Some(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}
