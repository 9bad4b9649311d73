//! The client side of the socket: how every command reaches the checkout's server. `connect`
//! checks `.ci` and the server's uid before it sends a byte; `ensure` starts a server in the
//! background when none answers. The faces that show a run live in [`face`].

pub mod face;
pub mod follow;
pub mod mcp;
pub mod monitor;
pub mod query;
pub mod waiting;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use odu_core::{NodeId, NodeView, Run, RunEvent};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use crate::error::{CliError, CliResult};
use crate::link::client::{Client, ClientError, ClientEvent};
use crate::link::socket::{CiDir, check_peer, socket_path};

/// A connection to the checkout's server.
pub type SurfaceClient = Client<OwnedReadHalf>;

/// How long a client keeps trying a server that is at its limits before saying so.
const BUSY_PATIENCE: Duration = Duration::from_secs(5);

/// Connects and shakes hands; `Ok(None)` when nothing answers on the socket. Nothing is sent
/// before `.ci` is found to be ours alone and the socket's peer to run as us: anything else
/// is refused, since whatever listens there would see the caller's environment and could
/// answer any verdict. A server at its limits (too many clients) is tried again for a few
/// seconds before its refusal is reported.
pub async fn connect(repo: &Path) -> CliResult<Option<SurfaceClient>> {
    let deadline = tokio::time::Instant::now() + BUSY_PATIENCE;
    let mut pause = Duration::from_millis(20);
    loop {
        let Some(ci) = CiDir::open(repo).map_err(crate::trail::ci::refuse_ci)? else { return Ok(None) };
        let Ok(stream) = UnixStream::connect(ci.socket()).await else { return Ok(None) };
        check_peer(&stream, &socket_path(repo)).map_err(CliError::refused)?;
        let (reader, writer) = stream.into_split();
        match Client::connect(reader, writer, "odu").await.map(Some) {
            Err(ClientError::Refused(e))
                if e.code == odu_proto::error_code::BUSY
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            outcome => return answer(repo, outcome),
        }
    }
}

fn answer(
    repo: &Path,
    outcome: Result<Option<SurfaceClient>, ClientError>,
) -> CliResult<Option<SurfaceClient>> {
    match outcome {
        Ok(client) => Ok(client),
        Err(ClientError::Refused(e)) if e.code == odu_proto::error_code::VERSION_MISMATCH => {
            Err(CliError::refused(format!(
                "the server on {} refused us: {}: stop it (it exits when idle) or use the same odu build",
                socket_path(repo).display(),
                e.message
            )))
        }
        // A server at its limits says so, and what to do.
        Err(ClientError::Refused(e)) => Err(CliError::from_rpc(e)),
        // A server that closes on us is shutting down: treat it as absent.
        Err(_) => Ok(None),
    }
}

/// Connects to the checkout's server, starting `odu serve --idle-timeout IDLE` in the
/// background (its own session, its output in `.ci/odu.serve.log`) when none answers. A `.ci`
/// odu must not use is refused before anything is created or started.
pub async fn ensure(repo: &Path, idle: &str) -> CliResult<SurfaceClient> {
    if let Some(client) = connect(repo).await? {
        return Ok(client);
    }
    start_server(repo, idle, crate::trail::ci::start_tracked_listing(repo)).await
}

/// [`ensure`] where no server answered a moment ago, with git's listing of `.ci` (which
/// [`crate::trail::ci::ensure_ci_dir_listed`] reads) already started beside other work.
pub async fn ensure_listed(
    repo: &Path,
    idle: &str,
    listing: std::io::Result<crate::tool::Pending>,
) -> CliResult<SurfaceClient> {
    if let Some(client) = connect(repo).await? {
        return Ok(client);
    }
    start_server(repo, idle, listing).await
}

/// Starts `odu serve` for the checkout and connects to it.
async fn start_server(
    repo: &Path,
    idle: &str,
    listing: std::io::Result<crate::tool::Pending>,
) -> CliResult<SurfaceClient> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let exe =
        std::env::current_exe().map_err(|e| CliError::refused(format!("cannot locate odu itself: {e}")))?;
    let ci = crate::trail::ci::ensure_ci_dir_listed(repo, listing)?;
    let log_path = ci.join("odu.serve.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)
        .map_err(|e| CliError::refused(format!("cannot open {}: {e}", log_path.display())))?;
    // The server says on this pipe when its socket takes clients; without it (no pipe to be
    // had), the socket is polled.
    let ready = crate::tool::pipe().ok();
    // What this client's checks learned (git's answers, just's version and dump), for the new
    // server to use instead of asking again: it knows nothing yet.
    let found = crate::tool::found().into_file();
    let mut command = std::process::Command::new(exe);
    command.args(["serve", "--idle-timeout", idle]);
    if let Some((_, write_end)) = &ready {
        command.args(["--ready-fd", &write_end.as_raw_fd().to_string()]);
    }
    if let Some(found) = &found {
        command.args(["--found-fd", &found.as_raw_fd().to_string()]);
    }
    command
        // A GitHub token reaches the server only inside a run.start, held in its memory, never
        // in its environment (which every process it starts would inherit).
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .current_dir(repo)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| CliError::refused(e.to_string()))?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        let inherit = [
            ready.as_ref().map(|(_, write_end)| write_end.as_raw_fd()),
            found.as_ref().map(AsRawFd::as_raw_fd),
        ];
        // SAFETY: setsid and fcntl are async-signal-safe. The server leaves the terminal's
        // session, so a Ctrl-C meant for `odu run` never reaches it, and keeps the ready pipe's
        // write end and the found answers' file through exec (the starter's copies close below).
        unsafe {
            command.pre_exec(move || {
                libc::setsid();
                for fd in inherit.into_iter().flatten() {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                }
                Ok(())
            });
        }
    }
    let mut child = crate::tool::spawn(&mut command)
        .map_err(|e| CliError::refused(format!("cannot start a server (odu serve): {e}")))?;
    drop(found);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    if let Some((read_end, write_end)) = ready {
        drop(write_end);
        // One byte: the socket takes clients. The end of the pipe without one: the server
        // exited (another may have won the race) or closed it; the loop below tells which.
        if let Ok(mut reader) = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end) {
            let mut byte = [0u8; 1];
            let _ = tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut reader, &mut byte))
                .await;
        }
    }
    loop {
        if let Some(client) = connect(repo).await? {
            // The server outlives us; its exit status is not ours to collect.
            std::mem::forget(child);
            return Ok(client);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another server may have won the race for the socket.
            if let Some(client) = connect(repo).await? {
                return Ok(client);
            }
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            return Err(CliError::refused(format!(
                "the server (odu serve) could not start ({status}): {}",
                if last.is_empty() { format!("see {}", log_path.display()) } else { last }
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::refused(format!(
                "the server (odu serve) did not answer on {} within 10s: see {}",
                socket_path(repo).display(),
                log_path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The first item of a cell, then the stream is closed.
pub async fn first_item<T: serde::de::DeserializeOwned>(
    client: &mut SurfaceClient,
    method: &str,
    params: serde_json::Value,
) -> CliResult<T> {
    let stream = client.send(method, params).await.map_err(refused)?;
    loop {
        match client.next().await.map_err(refused)? {
            Some(ClientEvent::Item { stream: s, value }) if s == stream => {
                let item = serde_json::from_str(value.get())
                    .map_err(|e| CliError::refused(format!("the server sent an odd {method} item: {e}")))?;
                let _ = client.cancel_stream(stream).await;
                return Ok(item);
            }
            Some(ClientEvent::Response { id, result: Err(e) }) if id == stream => {
                return Err(CliError::from_rpc(e));
            }
            Some(_) => {}
            None => return Err(CliError::refused("the server closed the link")),
        }
    }
}

/// A client's copy of a run from its header and a `nodes` snapshot (its order and views),
/// with the snapshot applied: what happened before the client looked, as the run's own
/// reducer sees it.
pub fn mirror_of(header: &odu_proto::Header, order: &[String], views: Vec<NodeView>) -> Run {
    let order: Vec<NodeId> = order.iter().filter_map(|id| NodeId::parse(id)).collect();
    let mut run = Run::mirror(header, &order, &views);
    let _ = run.apply(RunEvent::Observed { views });
    run
}

/// The exit code of every command that reports on a run: its verdict's (0 passed and
/// recorded, 1 red, 130 interrupted), or `undecided` while the run has no outcome yet.
pub fn exit_code(run: &Run, undecided: i32) -> i32 {
    run.verdict().map_or(undecided, |verdict| verdict.exit_code())
}

/// A broken link to the server, or its refusal, as a CLI error.
pub fn refused(e: ClientError) -> CliError {
    match e {
        ClientError::Refused(e) => CliError::from_rpc(e),
        other => CliError::refused(format!("the server failed us: {other}")),
    }
}
