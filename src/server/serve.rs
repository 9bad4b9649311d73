//! The `odu serve` process around the server's state: the checkout's lock, the socket, the
//! accept loop that admits clients, idle exit and signals.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use odu_proto::{Message, RpcError};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

use crate::clock::now_ms;
use crate::error::{CliError, CliResult};
use crate::link::socket::CiDir;
use crate::server::{Server, log_line};
use crate::trail::ledger;

/// Options of `odu serve`.
pub struct ServeOptions {
    pub idle_timeout: Option<Duration>,
    pub verbose: bool,
    /// Told (one byte, then closed) once the socket takes clients.
    pub ready: Option<std::os::fd::OwnedFd>,
}

/// Holds `.ci/odu.serve.lock` (an exclusive flock) for the server's life.
struct ServeLock(#[allow(dead_code)] std::fs::File);

fn lock_checkout(ci: &Path) -> CliResult<ServeLock> {
    use std::os::fd::AsRawFd;
    let path = ci.join(ledger::SERVE_LOCK);
    let file = crate::trail::ci::open_lock(&path)
        .map_err(|e| CliError::refused(format!("cannot open {}: {e}", path.display())))?;
    // A client asking whether a server is up (`ledger::served`) holds a shared lock for an
    // instant: only a lock still held after a moment is another server's.
    // SAFETY: flock on a descriptor this function owns.
    let mut tries = 0;
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        tries += 1;
        if tries == 50 {
            return Err(CliError::refused(format!(
                "another odu server already serves this checkout ({} is locked)",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(ServeLock(file))
}

/// The identity of the socket file this server bound, to notice it being removed or replaced.
fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Tells a client the server cannot take it, and closes the connection. The frame is a few
/// hundred bytes on a fresh socket: it fits its buffer, so the write never waits.
fn refuse(stream: UnixStream, refusal: RpcError) {
    use std::io::Write;
    if let Ok(mut stream) = stream.into_std() {
        let _ = stream.write(&Message::err(serde_json::Value::Null, refusal).to_frame());
    }
}

/// Raises the soft limit on open files towards the hard one: every client is a descriptor,
/// beside each run's pipes and logs. Kept modest, as runners and recipes inherit it.
fn raise_fd_limit() {
    const WANT: libc::rlim_t = 16 * 1024;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit on a struct this function owns.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < WANT {
            limit.rlim_cur = WANT.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Serves the checkout at `repo` until idle, signalled, or unseated. Returns the exit code.
pub async fn serve(repo: PathBuf, options: ServeOptions) -> CliResult<i32> {
    raise_fd_limit();
    // Caught from before the socket is bound: a client (or a test) that sees the socket, or the
    // ready byte, and signals the server at once finds it handling the signal, not killed by it.
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let ci = crate::trail::ci::ensure_ci_dir(&repo)?;
    // Held for the server's life: the socket is bound and removed through it.
    let ci_dir = CiDir::open(&repo)
        .map_err(crate::trail::ci::refuse_ci)?
        .ok_or_else(|| CliError::refused(format!("{} vanished as the server started", ci.display())))?;
    let _lock = lock_checkout(&ci)?;
    let shown = crate::link::socket::socket_path(&repo);
    let listener: UnixListener = crate::link::socket::bind(&ci_dir)
        .await
        .map_err(|e| CliError::refused(format!("cannot serve {}: {e}", shown.display())))?;
    if let Some(ready) = options.ready {
        // A starter that went away is no reason not to serve.
        let _ = std::io::Write::write_all(&mut std::fs::File::from(ready), b"1");
    }
    // Unseated when the socket at the name clients use is removed or replaced (with `.ci`, say).
    let identity = socket_identity(&shown);
    let recovered = ledger::recover(&ci, now_ms());
    let server = Server::new(repo, ci, shown.clone(), options.verbose);
    for run in &recovered {
        log_line(&format!("run {run} was cut short by a server that died: recorded incomplete"));
    }
    server.say(&format!("serving {} (pid {})", shown.display(), std::process::id()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<Instant> = None;
    let reason = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match server.admit() {
                    Ok(guard) => {
                        tokio::spawn(crate::server::surface::serve_client(stream, server.clone(), guard));
                    }
                    Err(refusal) => refuse(stream, refusal),
                },
                Err(e) => {
                    // Out of descriptors, most likely: the connection waits in the backlog.
                    log_line(&format!("cannot accept a client: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = tick.tick() => {
                if socket_identity(&shown) != identity {
                    break "its socket was removed or replaced";
                }
                if server.busy() {
                    idle_since = None;
                } else if let Some(timeout) = options.idle_timeout {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= timeout {
                        break "idle";
                    }
                }
            }
            _ = sigint.recv() => break "interrupted",
            _ = sigterm.recv() => break "terminated",
        }
    };
    server.say(&format!("stopping: {reason}"));
    // The live run is cancelled and recorded; a second signal leaves at once.
    tokio::select! {
        _ = async {
            server.cancel_live(Duration::from_secs(15)).await;
            // What the run posted `pending` gets its `error`; a short while, not forever.
            server.finish_posting(Duration::from_secs(10)).await;
            // An ended run's worktree is not left half removed.
            server.finish_releasing(Duration::from_secs(60)).await;
            // The idle runner kept for the next run leaves no scratch folder behind.
            server.close_spares(Duration::from_secs(5)).await;
        } => {}
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    drop(listener);
    if socket_identity(&shown) == identity {
        let _ = std::fs::remove_file(ci_dir.socket());
    }
    Ok(0)
}
