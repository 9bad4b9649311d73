//! The server of one checkout (`odu serve`): it owns `.ci/odu.sock`, outlives runs, starts them
//! on `run.start` (one at a time), and serves every run it knows: the live one from its cells,
//! finished ones from the ledger and the trail.
//!
//! Lifecycle:
//! - one server per checkout: an exclusive `flock` on `.ci/odu.serve.lock`, then the socket
//!   (a stale one is reclaimed, a live one never stolen);
//! - on start it closes the records of runs whose server died mid-run (`ledger::recover`);
//! - it exits when idle (no live run, no client) for `--idle-timeout`, when its socket is
//!   removed or replaced, or on SIGINT/SIGTERM (cancelling the live run first; a second signal
//!   leaves at once). Its runners notice their stdin closing and kill their process groups.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use odu_proto::{Header, Phase, RpcError, StartParams, Started};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cell::{HeaderValue, Hub, RunsValue};
use crate::clock::now_ms;
use crate::coordinator::RunHandles;
use crate::error::{CliError, CliResult};
use crate::face::Face;
use crate::fan_in::{FanIn, Transition};
use crate::start;
use crate::surface::CiDir;
use crate::trail::ledger::{self, RunRecord};

/// What a request's `run` names.
pub enum Target {
    Live(RunHandles),
    Stored(Box<RunRecord>),
}

struct Live {
    handles: RunHandles,
    done: watch::Receiver<bool>,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    /// A `run.start` is preparing (git, just): no second one may begin.
    starting: bool,
}

pub struct Server {
    pub repo: PathBuf,
    pub ci: PathBuf,
    pub socket: PathBuf,
    state: Mutex<State>,
    pub runs: Mutex<Hub<RunsValue>>,
    clients: AtomicUsize,
    /// Print a line per run start and end (a foreground `odu serve`).
    verbose: bool,
}

/// Counts a connected client for as long as it lives.
pub struct ClientGuard(Arc<Server>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The faces of a run inside the server: silent (clients show the run).
struct Quiet;

impl Face for Quiet {
    fn transition(&mut self, _fan: &FanIn, _change: &Transition) {}
}

impl Server {
    /// The server of the checkout at `repo` (its `.ci` is `ci`), knowing the ledger's runs. It
    /// serves whatever connections it is handed: [`serve`] binds the socket and accepts them.
    pub fn new(repo: PathBuf, ci: PathBuf, socket: PathBuf, verbose: bool) -> Arc<Server> {
        let history: Vec<_> = ledger::list(&ci).iter().map(RunRecord::summary).collect();
        Arc::new(Server {
            repo,
            ci,
            socket,
            state: Mutex::new(State::default()),
            runs: Mutex::new(Hub::new(RunsValue { revision: 1, runs: Arc::new(history) }, 256)),
            clients: AtomicUsize::new(0),
            verbose,
        })
    }

    pub fn client(self: &Arc<Self>) -> ClientGuard {
        self.clients.fetch_add(1, Ordering::SeqCst);
        ClientGuard(self.clone())
    }

    fn say(&self, line: &str) {
        if self.verbose {
            log_line(line);
        }
    }

    /// The run a request names: the live one, or one from the ledger; no name means the live
    /// run, else the latest.
    pub fn target(&self, run: Option<&str>) -> Result<Target, RpcError> {
        let live = self.state.lock().expect("state lock").live.as_ref().map(|l| l.handles.clone());
        match (run, live) {
            (None, Some(handles)) => return Ok(Target::Live(handles)),
            (Some(r), Some(handles)) if r == handles.reference => return Ok(Target::Live(handles)),
            _ => {}
        }
        ledger::find(&self.ci, run).map(|r| Target::Stored(Box::new(r))).map_err(RpcError::refused)
    }

    /// `run.start`: one run per checkout; `supersede` cancels the live one and waits for its end.
    pub async fn start_run(self: &Arc<Self>, params: StartParams) -> Result<Started, RpcError> {
        loop {
            let busy = {
                let mut state = self.state.lock().expect("state lock");
                if state.starting {
                    return Err(RpcError::refused(
                        "another run is being started in this checkout: try again in a moment",
                    ));
                }
                match &state.live {
                    Some(live) => Some((live.handles.clone(), live.done.clone())),
                    None => {
                        state.starting = true;
                        None
                    }
                }
            };
            let Some((handles, mut done)) = busy else { break };
            if !params.flags.supersede {
                return Err(RpcError::refused(format!(
                    "run {} is in progress in this checkout: follow it with odu attach, stop it with odu cancel, or pass --supersede to replace it",
                    handles.reference
                )));
            }
            self.say(&format!("superseding run {}", handles.reference));
            let _ = handles.cancel_run.send(());
            let _ = done.wait_for(|ended| *ended).await;
        }
        let repo = self.repo.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let env = params.env.clone();
            start::prepare(&repo, &params, env.as_ref(), Box::new(Quiet))
        })
        .await
        .unwrap_or_else(|e| Err(CliError::refused(format!("preparing the run failed: {e}"))));
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                self.state.lock().expect("state lock").starting = false;
                return Err(RpcError::refused(e.message));
            }
        };
        let start::Prepared { coordinator, specs, started, guards } = prepared;
        let summary = coordinator.record.summary();
        let (handles, task) = coordinator.start(specs);
        let (done_tx, done_rx) = watch::channel(false);
        {
            let mut state = self.state.lock().expect("state lock");
            state.live = Some(Live { handles: handles.clone(), done: done_rx });
            state.starting = false;
        }
        RunsValue::publish(&mut self.runs.lock().expect("hub lock"), summary);
        self.say(&format!("run {} started", started.run));
        let server = self.clone();
        tokio::spawn(async move {
            let finished = match task.await {
                Ok(finished) => Some(finished),
                Err(e) => {
                    log_line(&format!("run {} failed inside the server: {e}", handles.reference));
                    None
                }
            };
            // Release the worktree and the run lock before anyone hears that the run ended.
            let _ = tokio::task::spawn_blocking(move || drop(guards)).await;
            server.state.lock().expect("state lock").live = None;
            let header = match finished {
                Some(finished) => {
                    match &finished.header.record_error {
                        Some(error) => {
                            log_line(&format!("run {} ended unrecorded: {error}", handles.reference))
                        }
                        None => server
                            .say(&format!("run {} ended: {}", handles.reference, finished.record.outcome)),
                    }
                    RunsValue::publish(&mut server.runs.lock().expect("hub lock"), finished.record.summary());
                    finished.header
                }
                // Its clients still hear that it ended, and that its record may be stale.
                None => Header {
                    phase: Phase::Ended,
                    outcome: "incomplete".into(),
                    record_error: Some(
                        "the run failed inside the server: its record may be out of date".into(),
                    ),
                    ..(*handles.header.lock().expect("hub lock").current().header).clone()
                },
            };
            HeaderValue::publish(&mut handles.header.lock().expect("hub lock"), header);
            let _ = done_tx.send(true);
        });
        Ok(started)
    }

    fn busy(&self) -> bool {
        let state = self.state.lock().expect("state lock");
        state.live.is_some() || state.starting || self.clients.load(Ordering::SeqCst) > 0
    }

    /// Cancels the live run, if any, and waits (bounded) for its end.
    async fn cancel_live(&self, bound: Duration) {
        let live = {
            let state = self.state.lock().expect("state lock");
            state.live.as_ref().map(|l| (l.handles.clone(), l.done.clone()))
        };
        if let Some((handles, mut done)) = live {
            self.say(&format!("cancelling run {}", handles.reference));
            let _ = handles.cancel_run.send(());
            let _ = tokio::time::timeout(bound, done.wait_for(|ended| *ended)).await;
        }
    }
}

/// A line for the server's log (`odu serve: …`). Never panics: that log may sit on a full disk.
fn log_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "odu serve: {line}");
}

/// Options of `odu serve`.
pub struct ServeOptions {
    pub idle_timeout: Option<Duration>,
    pub verbose: bool,
}

/// Holds `.ci/odu.serve.lock` (an exclusive flock) for the server's life.
struct ServeLock(#[allow(dead_code)] std::fs::File);

fn lock_checkout(ci: &Path) -> CliResult<ServeLock> {
    use std::os::fd::AsRawFd;
    let path = ci.join(ledger::SERVE_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
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

/// Serves the checkout at `repo` until idle, signalled, or unseated. Returns the exit code.
pub async fn serve(repo: PathBuf, options: ServeOptions) -> CliResult<i32> {
    let ci = start::ensure_ci_dir(&repo)?;
    // Held for the server's life: the socket is bound and removed through it.
    let ci_dir = CiDir::open(&repo)
        .map_err(start::refuse_ci)?
        .ok_or_else(|| CliError::refused(format!("{} vanished as the server started", ci.display())))?;
    let _lock = lock_checkout(&ci)?;
    let shown = crate::surface::socket_path(&repo);
    let listener: UnixListener = crate::surface::bind(&ci_dir)
        .await
        .map_err(|e| CliError::refused(format!("cannot serve {}: {e}", shown.display())))?;
    // Unseated when the socket at the name clients use is removed or replaced (with `.ci`, say).
    let identity = socket_identity(&shown);
    let recovered = ledger::recover(&ci, now_ms());
    let server = Server::new(repo, ci, shown.clone(), options.verbose);
    for run in &recovered {
        log_line(&format!("run {run} was cut short by a server that died: recorded incomplete"));
    }
    server.say(&format!("serving {} (pid {})", shown.display(), std::process::id()));
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since: Option<Instant> = None;
    let reason = loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let guard = server.client();
                    tokio::spawn(crate::surface::serve_client(stream, server.clone(), guard));
                }
            }
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
        _ = server.cancel_live(Duration::from_secs(15)) => {}
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    drop(listener);
    if socket_identity(&shown) == identity {
        let _ = std::fs::remove_file(ci_dir.socket());
    }
    Ok(0)
}
