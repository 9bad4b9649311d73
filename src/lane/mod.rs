//! A lane as the coordinator sees it: a runner reached over a transport, driven through the
//! protocol client, with its logs written into the trail as bytes arrive.
//!
//! The localhost lane is `odu-runner --stdio` as a child process; every transport yields the
//! same (reader, writer) pair for the same client. A node's terminal status is released to the
//! coordinator only after its whole log reached the trail (the runner's `end` frame for that
//! generation), so nothing reports done with output still owed.

pub mod remote;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use odu_core::{NodeReport, SETUP, TaskSpec};
use odu_proto::{
    Configure, LANE_CLOSE, LogItem, NODE_CANCEL, NODE_LOG_GET, NODE_RERUN, NODES_GET, RUN_CONFIGURE,
};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;

use crate::link::client::{Client, ClientError, ClientEvent};
use crate::trail::ledger;
use crate::trail::spool::Spool;

/// What a remote lane needs besides its [`LaneSpec`].
#[derive(Clone, Debug)]
pub struct RemoteSource {
    pub entry: crate::hosts::HostEntry,
    /// `$ODU_SSH_CONFIG`: an ssh config file for every lane (an entry's own `ssh_config` wins).
    pub ssh_config: Option<PathBuf>,
    /// The coordinator's checkout, where bundles are made.
    pub repo: PathBuf,
    pub origin: Option<String>,
    pub sha: String,
    /// The bare cache's name on the host.
    pub slug: String,
    /// The platform the host must be: the entry's `platform`, else the lane's key.
    pub expect_platform: String,
    /// Names the run's worktree on the host (`<label>-<seq>`).
    pub run_name: String,
    /// `$ODU_FLAKE`: the flake a host of another platform builds its runner from (an entry's own
    /// `flake` wins).
    pub flake: Option<String>,
}

/// Everything a lane needs to run.
#[derive(Clone, Debug)]
pub struct LaneSpec {
    pub platform: String,
    /// `localhost` or an ssh destination, as configured.
    pub host: String,
    pub name: String,
    /// The worktree's top (the coordinator's; a remote lane puts its own in its place).
    pub workspace: PathBuf,
    /// Where in the worktree the nodes' `just` starts (`pkg` for a justfile in a package),
    /// relative to `workspace`; empty for its top.
    pub subdir: PathBuf,
    /// Said once at the top of the lane's setup log, before anything runs: what the run's
    /// snapshot lacks (an ignored dotenv file), the recipes the lane's OS leaves out.
    pub notes: Vec<String>,
    pub tasks: Vec<TaskSpec>,
    pub jobs: Option<usize>,
    pub env: BTreeMap<String, String>,
    /// `.ci/<label>/runs/<seq>/<platform>`: where the lane's logs of this run go.
    pub log_dir: PathBuf,
    /// `.ci/<label>/<platform>`: where each node's latest log is named (a hard link to this
    /// run's, made when the node starts).
    pub latest_dir: PathBuf,
    /// The runner binary for a local lane.
    pub runner: PathBuf,
    /// The whole environment of a local runner (and so of its nodes); `None` inherits the
    /// server's. Remote runners never get it.
    pub base_env: Option<BTreeMap<String, String>>,
    /// Where and what a remote lane runs; `None` for the localhost lane.
    pub remote: Option<RemoteSource>,
    /// The coordinator's dump of the lane's own worktree assigns no variable (a local lane
    /// only: a host reads its justfile's imports from its own disk).
    pub no_variables: bool,
    /// The `just` the coordinator ran, for a local runner to recognise (see
    /// [`Configure::just`]).
    pub known_just: Option<odu_proto::KnownJust>,
    /// A local runner already started for this lane while the run was planned.
    pub warm: Option<WarmRunner>,
    /// Where a local lane whose runner closed cleanly asks for a spare for the next run.
    pub spares: Option<Arc<Spares>>,
}

/// A local runner started before its run needs it, so that its process start is off the run's
/// path: the checkout's spare (started after the last run ended), else one started on the
/// runtime while the run is planned, beside the planning thread, which goes on with git at
/// once. Its lane takes it; one that no lane takes (the run was refused, or has no local lane)
/// is told to go when the last copy is dropped: its stdin closes, and it exits as it does at
/// the end of a lane.
#[derive(Clone)]
pub struct WarmRunner(Arc<Warm>);

struct Warm {
    /// The runner is the checkout's spare, started after the last run.
    spare: bool,
    slot: std::sync::Mutex<Unused>,
    /// Becomes true once the start was tried (the slot holds the child if it succeeded).
    tried: tokio::sync::watch::Sender<bool>,
}

struct Unused(Option<tokio::process::Child>);

impl WarmRunner {
    /// The spare runner of `spares` if it was started as this run would start `runner` (see
    /// [`Spares::take`]), else `runner` started as [`run_local`] would, on the current tokio
    /// runtime, without waiting for the process start.
    pub fn start(
        runner: &Path,
        base_env: Option<&BTreeMap<String, String>>,
        spares: Option<&Spares>,
    ) -> std::io::Result<WarmRunner> {
        if let Some(spare) = spares.and_then(|spares| spares.take(runner, base_env)) {
            return Ok(WarmRunner(Arc::new(Warm {
                spare: true,
                slot: std::sync::Mutex::new(Unused(Some(spare))),
                tried: tokio::sync::watch::Sender::new(true),
            })));
        }
        let warm = Arc::new(Warm {
            spare: false,
            slot: std::sync::Mutex::new(Unused(None)),
            tried: tokio::sync::watch::Sender::new(false),
        });
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let mut command = runner_command(runner, base_env);
        let filling = warm.clone();
        runtime.spawn(async move {
            let child = crate::tool::spawn_async(&mut command).ok();
            if let Ok(mut slot) = filling.slot.lock() {
                slot.0 = child;
            }
            filling.tried.send_replace(true);
            // Were this the last copy (the run let go of it meanwhile), the runner is told to go.
        });
        Ok(WarmRunner(warm))
    }

    /// The runner, once its start was tried; `None` if it could not start or was taken.
    async fn take(&self) -> Option<tokio::process::Child> {
        let _ = self.0.tried.subscribe().wait_for(|tried| *tried).await;
        self.0.slot.lock().ok()?.0.take()
    }
}

/// The checkout's spare local runner: started once a run whose local runner closed its lane
/// cleanly has ended, idle (no timer, no scratch use beyond its own folder) until the next run
/// takes it, so that a run's start does not wait for a runner process to start. A run takes it
/// only if it would start the very same runner: the same path, the file unchanged since, and
/// the same values of what the runner reads of its environment (its nodes get the run's
/// environment with the lane's configuration); any other run tells it to go and starts its own. The server tells it
/// to go when it stops, and waits for its scratch folder to be removed.
#[derive(Default)]
pub struct Spares(std::sync::Mutex<SpareSlot>);

#[derive(Default)]
struct SpareSlot {
    /// The idle spare, and what it was started as.
    idle: Option<(SpareKey, Unused)>,
    /// What the last cleanly closed local lane started, and with which environment, for
    /// [`Spares::refill`].
    wanted: Option<(SpareKey, Option<BTreeMap<String, String>>)>,
    /// The server is stopping: no spare is started any more.
    closed: bool,
}

/// What a runner was started as, as far as the runner itself is concerned: its nodes get the
/// run's whole environment with their lane's configuration (`Configure::base_env`), whatever
/// the runner's own.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpareKey {
    runner: PathBuf,
    /// The runner's file when it was started: a file rebuilt or replaced since is another runner.
    stamp: odu_proto::FileStamp,
    /// The variables of its environment that the runner process reads itself (`None`: the
    /// server's environment, inherited).
    own: Option<BTreeMap<String, String>>,
}

impl SpareKey {
    fn of(runner: &Path, env: Option<&BTreeMap<String, String>>) -> Option<SpareKey> {
        Some(SpareKey {
            runner: runner.to_path_buf(),
            stamp: crate::tool::file_stamp(runner)?,
            own: env.map(|env| {
                env.iter()
                    .filter(|(name, _)| read_by_the_runner(name))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            }),
        })
    }
}

/// Whether a runner reads the variable `name` of its own environment: `PATH` (where it finds
/// `just` and every node's program), `TMPDIR` (its scratch folder), its own `ODU_*` settings,
/// and what the loader, the allocator and the Rust runtime read. Whatever else a node sees is
/// the run's, sent with the lane's configuration.
fn read_by_the_runner(name: &str) -> bool {
    matches!(name, "PATH" | "TMPDIR" | "GLIBC_TUNABLES")
        || ["ODU_", "LD_", "MALLOC_", "RUST_"].iter().any(|prefix| name.starts_with(prefix))
}

impl std::fmt::Debug for Spares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spares")
    }
}

impl Spares {
    /// Takes the idle spare if it was started as `runner` with `env` would be now, as far as the
    /// runner itself is concerned (see [`SpareKey`]), and is alive;
    /// any other idle spare is told to go.
    fn take(&self, runner: &Path, env: Option<&BTreeMap<String, String>>) -> Option<tokio::process::Child> {
        let (key, mut spare) = self.0.lock().ok()?.idle.take()?;
        let mut child = spare.0.take()?;
        let alive = matches!(child.try_wait(), Ok(None));
        if alive && SpareKey::of(runner, env).is_some_and(|now| now == key) {
            return Some(child);
        }
        // Dropped as unused: its stdin closes and it exits as at the end of a lane.
        drop(Unused(Some(child)));
        None
    }

    /// Notes that a local lane started `runner` with `env` and closed cleanly: the next
    /// [`Spares::refill`] starts a spare like it.
    pub fn want(&self, runner: &Path, env: Option<&BTreeMap<String, String>>) {
        if let Ok(mut slot) = self.0.lock() {
            slot.wanted = SpareKey::of(runner, env).map(|key| (key, env.cloned()));
        }
    }

    /// Starts the spare that [`Spares::want`] asked for (on the current runtime), once the run
    /// that asked has ended and its clients heard it; an idle spare started otherwise goes.
    pub fn refill(&self) {
        let Ok(mut slot) = self.0.lock() else { return };
        let Some((key, env)) = slot.wanted.take() else { return };
        if slot.closed || slot.idle.as_ref().is_some_and(|(idle, _)| *idle == key) {
            return;
        }
        // A runner rebuilt since the lane started it is not started as a spare of that run.
        if crate::tool::file_stamp(&key.runner) != Some(key.stamp) {
            return;
        }
        let Ok(child) = crate::tool::spawn_async(&mut runner_command(&key.runner, env.as_ref())) else {
            return;
        };
        // The one it replaces (if any) is dropped as unused.
        slot.idle = Some((key, Unused(Some(child))));
    }

    /// Tells the spare to go and waits (bounded) for it to exit: it removes its scratch folder
    /// as it does at the end of a lane. No spare is started after this.
    pub async fn close(&self, bound: std::time::Duration) {
        let spare = match self.0.lock() {
            Ok(mut slot) => {
                slot.closed = true;
                slot.idle.take()
            }
            Err(_) => None,
        };
        let Some((_, mut spare)) = spare else { return };
        let Some(mut child) = spare.0.take() else { return };
        drop(child.stdin.take());
        if tokio::time::timeout(bound, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

impl std::fmt::Debug for WarmRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WarmRunner")
    }
}

impl Drop for Unused {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else { return };
        // Its link closes: the runner ends as after a lane, removing its scratch directory.
        drop(child.stdin.take());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            });
        }
        // Without a runtime the child is killed as it drops (kill_on_drop).
    }
}

/// How a local runner is started: `--stdio`, its three pipes, and the run's environment.
fn runner_command(runner: &Path, base_env: Option<&BTreeMap<String, String>>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(runner);
    if let Some(env) = base_env {
        command.env_clear().envs(env);
    }
    command
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

impl LaneSpec {
    /// The directory the nodes' `just` starts in: the worktree's top, or `subdir` inside it.
    pub fn invocation_dir(&self) -> PathBuf {
        if self.subdir.as_os_str().is_empty() {
            self.workspace.clone()
        } else {
            self.workspace.join(&self.subdir)
        }
    }
}

/// What the coordinator asks of a lane.
#[derive(Debug)]
pub enum LaneCommand {
    Rerun {
        id: String,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    Cancel {
        id: String,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Close the link: the runner kills its process groups and exits.
    Shutdown,
}

/// What a lane tells the coordinator. Node ids are the lane's own (`ci::e2e`, `_ci-setup`).
#[derive(Debug)]
pub enum LaneReport {
    Nodes {
        platform: String,
        nodes: Vec<NodeReport>,
    },
    /// A node's log could not be written whole (a full disk): it was cut short, and the node
    /// is errored. Sent before the view that ends the node.
    LogTruncated {
        platform: String,
        id: String,
        reason: String,
    },
    /// The link died before the lane was shut down.
    Died {
        platform: String,
        reason: String,
    },
    /// The lane finished shutting down.
    Closed {
        platform: String,
    },
}

/// The trail spools of one lane, by lane-local node id.
pub struct LaneLogs {
    pub spools: BTreeMap<String, Spool>,
    /// Where each node's latest log is named, by lane-local node id, and what was there when
    /// the lane started.
    latest: BTreeMap<String, (PathBuf, ledger::LatestName)>,
    /// The run's folder (`.ci/<label>/runs/<seq>`), which holds a few names: where a latest
    /// name's replacement is linked before it is renamed into place.
    run_dir: PathBuf,
}

impl LaneLogs {
    /// Creates the run's log folder for the lane and the setup log, and claims every node's
    /// file in it (created when the node starts, writes or ends); the setup log is named the
    /// latest at once, each node's when it starts ([`LaneLogs::publish`]). A node whose latest
    /// name a folder blocks fails the lane, and the setup log says why (the client shows that
    /// line); a node whose file cannot be created is errored, its log cut short.
    pub fn create(spec: &LaneSpec) -> std::io::Result<LaneLogs> {
        ledger::make_lane_dir(&spec.latest_dir)?;
        ledger::make_run_lane_dir(&spec.log_dir)?;
        let run_dir = spec.log_dir.parent().map_or_else(|| spec.latest_dir.clone(), Path::to_path_buf);
        let mut logs = LaneLogs { spools: BTreeMap::new(), latest: BTreeMap::new(), run_dir };
        // One listing of the latest folder says what each name holds (the setup log's and every
        // node's): a `stat` per name walked the whole path each time.
        let names = ledger::LatestNames::read(&spec.latest_dir);
        let setup_name = format!("{SETUP}.log");
        let setup_latest = spec.latest_dir.join(&setup_name);
        let found = names.of(&setup_name)?;
        let setup_path = spec.log_dir.join(&setup_name);
        let setup = Spool::create(&setup_path)?;
        logs.spools.insert(SETUP.to_string(), setup);
        logs.latest.insert(SETUP.to_string(), (setup_latest, found));
        if let Err(e) = logs.publish(SETUP) {
            logs.narrate(&format!("cannot name {} the latest setup log: {e}", setup_path.display()));
        }
        for note in &spec.notes {
            logs.narrate(note);
        }
        for task in &spec.tasks {
            let name = format!("{}.log", odu_core::node_id::log_file_stem(&task.id));
            let (path, latest) = (spec.log_dir.join(&name), spec.latest_dir.join(&name));
            // The file itself is made when the node starts (named the latest), writes or ends:
            // creating every file up front held the lane's start back by one file per node.
            match names.of(&name) {
                Ok(found) => {
                    logs.spools.insert(task.id.clone(), Spool::deferred(&path));
                    logs.latest.insert(task.id.clone(), (latest, found));
                }
                Err(e) => {
                    let blocked = if latest.is_dir() { &latest } else { &path };
                    logs.narrate(&format!(
                        "lane {} died: cannot create the log {}: {e}",
                        spec.platform,
                        blocked.display()
                    ));
                    return Err(e);
                }
            }
        }
        Ok(logs)
    }

    /// Names node `id`'s log of this run the latest one of that node (the path GitHub shows).
    pub fn publish(&self, id: &str) -> std::io::Result<()> {
        let (Some(spool), Some((latest, found))) = (self.spools.get(id), self.latest.get(id)) else {
            return Ok(());
        };
        spool.ensure_file()?;
        // The run's log is new, so a name that held something at the lane's start holds an
        // older log (or a planted link): replaced at once, without the first link that would
        // fail on it and the check that the two name one file.
        match found {
            ledger::LatestName::Taken => ledger::replace_latest(&spool.state().path, latest, &self.run_dir),
            ledger::LatestName::Vacant => ledger::link_latest(&spool.state().path, latest, &self.run_dir),
        }
    }

    /// Files a runner's stderr into the setup log, a `[runner] …` line at a time: its
    /// diagnostics belong there, not on the user's terminal. The task ends with the stream.
    pub fn file_runner_stderr(
        &self,
        stderr: impl AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let setup_spool = self.spools.get(SETUP).cloned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(spool) = &setup_spool {
                    let _ = spool.append(spool.generation(), format!("[runner] {line}\n").as_bytes());
                }
            }
        })
    }

    /// Appends a coordinator line (`[odu] …`) to the setup log.
    pub fn narrate(&self, line: &str) {
        if let Some(spool) = self.spools.get(SETUP) {
            let _ = spool.append(spool.generation(), format!("[odu] {line}\n").as_bytes());
        }
    }
}

/// Runs a local lane: spawns the runner and drives it until shutdown or death.
pub async fn run_local(
    spec: LaneSpec,
    logs: LaneLogs,
    commands: mpsc::UnboundedReceiver<LaneCommand>,
    reports: mpsc::UnboundedSender<LaneReport>,
) {
    let platform = spec.platform.clone();
    let starting = std::time::Instant::now();
    // The checkout's spare or a runner started while the run was planned, else one started now.
    let (child, spare) = match &spec.warm {
        Some(warm) => (warm.take().await, warm.0.spare),
        None => (None, false),
    };
    let child = match child {
        Some(child) => Ok(child),
        None => crate::tool::spawn_async(&mut runner_command(&spec.runner, spec.base_env.as_ref())),
    };
    if let Ok(child) = &child {
        let pid = child.id().unwrap_or_default();
        logs.narrate(&if spare {
            format!("lane {platform}: taking the spare runner started after the last run (pid {pid}), {} --stdio on localhost", spec.runner.display())
        } else {
            format!("lane {platform}: starting {} --stdio on localhost (pid {pid})", spec.runner.display())
        });
    }
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let reason = format!("cannot start the runner {}: {e}", spec.runner.display());
            die(&spec, &logs, &reports, reason, &BTreeMap::new());
            let _ = reports.send(LaneReport::Closed { platform });
            return;
        }
    };
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    {
        use std::os::fd::AsFd;
        crate::runner::spawner::enlarge_pipe(stdout.as_fd());
    }
    let stderr_task = logs.file_runner_stderr(child.stderr.take().expect("piped"));
    let end = drive(&spec, &logs, stdout, stdin, commands, &reports, Some(starting)).await;
    if end.closed {
        // The runner closed the lane and detached its stderr: the lane is closed once that
        // stderr is filed. Its exit is awaited aside (and forced, if it never comes).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stderr_task).await;
        // A runner that closed its lane cleanly is worth a spare like it for the next run.
        if let Some(spares) = &spec.spares {
            spares.want(&spec.runner, spec.base_env.as_ref());
        }
        let _ = reports.send(LaneReport::Closed { platform });
        tokio::spawn(async move {
            if !exit_or_kill(&mut child).await {
                reap_runner_leftovers(&spec).await;
            }
        });
        return;
    }
    // The link is closed: the runner kills its groups and exits on its own.
    let clean = exit_or_kill(&mut child).await;
    // A runner that exited cleanly ended its groups and removed its scratch itself: the sweep
    // for others' leftovers need not hold the lane's close (and the run's end) back.
    if clean {
        tokio::spawn(async move { reap_runner_leftovers(&spec).await });
    } else {
        reap_runner_leftovers(&spec).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stderr_task).await;
    let _ = reports.send(LaneReport::Closed { platform });
}

/// Waits for a runner whose link is closed to exit, for its nodes' grace period and a margin,
/// then kills it; whether it exited cleanly on its own.
async fn exit_or_kill(child: &mut tokio::process::Child) -> bool {
    match tokio::time::timeout(CLOSE_WAIT, child.wait()).await {
        Ok(status) => status.is_ok_and(|s| s.success()),
        Err(_) => {
            let _ = child.kill().await;
            false
        }
    }
}

/// Once the local runner has exited, however it ended: kills what is left of the process
/// groups it recorded and removes its scratch directory (a runner that exits cleanly has done
/// both itself; one killed outright has not).
async fn reap_runner_leftovers(spec: &LaneSpec) {
    let tmpdir = match &spec.base_env {
        Some(env) => env.get("TMPDIR").map(std::ffi::OsString::from),
        None => std::env::var_os("TMPDIR"),
    };
    let root = crate::runner::scratch::root_for(tmpdir.as_deref());
    let _ = tokio::task::spawn_blocking(move || crate::runner::scratch::reap_dead(&root)).await;
}

/// How a runner link ended.
pub struct LinkEnd {
    /// The runner's last report of every node.
    pub views: BTreeMap<String, NodeReport>,
    /// The runner answered `lane.close`: its process groups are ended, its scratch directory
    /// is gone and its stderr said its last. Only its exit is left.
    pub closed: bool,
}

/// How long a runner may take to close its lane: the grace its nodes get to end, and a margin.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Drives one runner link to its end.
pub async fn drive<R, W>(
    spec: &LaneSpec,
    logs: &LaneLogs,
    reader: R,
    writer: W,
    mut commands: mpsc::UnboundedReceiver<LaneCommand>,
    reports: &mpsc::UnboundedSender<LaneReport>,
    started: Option<std::time::Instant>,
) -> LinkEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut link = LaneLink::new(spec);
    let mut client = match Client::connect(reader, writer, "odu").await {
        Ok(client) => client,
        Err(e) => {
            die(spec, logs, reports, format!("runner handshake failed: {e}"), &link.views);
            return LinkEnd { views: link.views, closed: false };
        }
    };
    logs.narrate(&format!("lane {}: runner attached ({})", spec.platform, client.peer_build));
    let setup = async {
        link.nodes_stream = client.send(NODES_GET, json!({})).await?;
        let configure = Configure {
            name: spec.name.clone(),
            workspace: spec.invocation_dir().display().to_string(),
            tasks: spec.tasks.clone(),
            jobs: spec.jobs,
            env: spec.env.clone(),
            no_variables: spec.no_variables && spec.remote.is_none(),
            just: spec.known_just.clone().filter(|_| spec.remote.is_none()),
            base_env: spec.base_env.clone().filter(|_| spec.remote.is_none()),
        };
        client.call_with(RUN_CONFIGURE, &configure).await?;
        for id in logs.spools.keys() {
            let stream = client.send(NODE_LOG_GET, json!({ "id": id })).await?;
            link.log_streams.insert(stream, id.clone());
        }
        Ok::<_, ClientError>(())
    };
    if let Err(e) = setup.await {
        die(spec, logs, reports, format!("runner refused the lane: {e}"), &link.views);
        return LinkEnd { views: link.views, closed: false };
    }
    // What a run's start costs on a lane: the runner's own start, the handshake, configure.
    if let Some(started) = started {
        tracing::debug!(
            platform = %spec.platform,
            elapsed_us = started.elapsed().as_micros() as u64,
            "runner started, attached and configured"
        );
    }
    let mut pending_replies: BTreeMap<u64, tokio::sync::oneshot::Sender<Result<(), String>>> =
        BTreeMap::new();
    let silence = std::time::Duration::from_millis(odu_proto::HEARTBEAT_SILENCE_MS);
    let every = std::time::Duration::from_millis(odu_proto::HEARTBEAT_EVERY_MS);
    // Checked every second, so a silent link is found within a second of the limit.
    let mut heartbeat = tokio::time::interval(std::time::Duration::from_secs(1));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    let mut last_ping: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            // In this order: a chatty link never keeps a cancel or the lane's shutdown waiting.
            biased;
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silence {
                    let reason = format!(
                        "no word from the runner on {} for {}s: the link is down",
                        spec.host,
                        last_heard.elapsed().as_secs()
                    );
                    die(spec, logs, reports, reason, &link.views);
                    return LinkEnd { views: link.views, closed: false };
                }
                if last_ping.is_none_or(|at| at.elapsed() >= every) {
                    last_ping = Some(tokio::time::Instant::now());
                    let _ = client.send(odu_proto::PING, json!({})).await;
                }
            }
            command = commands.recv() => match command {
                Some(LaneCommand::Rerun { id, reply }) => match client.send(NODE_RERUN, json!({ "id": id })).await {
                    Ok(req) => { pending_replies.insert(req, reply); }
                    Err(e) => { let _ = reply.send(Err(e.to_string())); }
                },
                Some(LaneCommand::Cancel { id, reply }) => {
                    link.cancelled.insert(id.clone());
                    match client.send(NODE_CANCEL, json!({ "id": id })).await {
                        Ok(req) => { pending_replies.insert(req, reply); }
                        Err(e) => { let _ = reply.send(Err(e.to_string())); }
                    }
                }
                Some(LaneCommand::Shutdown) | None => {
                    for (id, spool) in &logs.spools {
                        // A node still running when the run stops says so at the end of its log.
                        let running = link.views.get(id).is_some_and(|v| v.status == odu_core::NodeStatus::Running);
                        if running && id != SETUP {
                            let line = format!("\n[odu] interrupted: the run was stopped (lane {})\n", spec.platform);
                            let _ = spool.append(spool.generation(), line.as_bytes());
                        }
                        spool.end(spool.generation());
                    }
                    // Whatever the runner still sends (a last delta, the end of a log) is
                    // past what the run records; its answer is what counts.
                    let closed = tokio::time::timeout(CLOSE_WAIT, client.call(LANE_CLOSE, json!({})))
                        .await
                        .is_ok_and(|answer| answer.is_ok());
                    return LinkEnd { views: link.views, closed };
                }
            },
            event = client.next(), if link.items_first() => match event {
                Ok(Some(ClientEvent::Item { stream, value })) => {
                    last_heard = tokio::time::Instant::now();
                    link.on_item(logs, stream, &value, &mut |truncations, released| {
                        pass_on(spec, reports, truncations, released);
                    });
                }
                Ok(Some(ClientEvent::Response { id, result })) => {
                    last_heard = tokio::time::Instant::now();
                    if let Some(reply) = pending_replies.remove(&id) {
                        let _ = reply.send(result.map(|_| ()).map_err(|e| e.message));
                    }
                }
                Ok(None) => {
                    die(spec, logs, reports, "the runner's link closed".into(), &link.views);
                    return LinkEnd { views: link.views, closed: false };
                }
                Err(e) => {
                    die(spec, logs, reports, format!("the runner's link failed: {e}"), &link.views);
                    return LinkEnd { views: link.views, closed: false };
                }
            },
            // A report whose logs take long to name goes a slice at a time; between two, the
            // coordinator gets its turn (this task woke it, so it waits on this thread until
            // this task yields), then the link's items that come within a slice's time (the
            // end of a log a view waits for).
            () = tokio::task::yield_now(), if link.naming() => {
                link.name_some(logs, &mut |truncations, released| pass_on(spec, reports, truncations, released));
            }
        }
    }
}

/// Tells the coordinator what a lane's link released: the nodes whose logs turned out cut
/// short first, then the views.
fn pass_on(
    spec: &LaneSpec,
    reports: &mpsc::UnboundedSender<LaneReport>,
    truncations: Vec<(String, String)>,
    released: Vec<NodeReport>,
) {
    for (id, reason) in truncations {
        let _ = reports.send(LaneReport::LogTruncated { platform: spec.platform.clone(), id, reason });
    }
    if !released.is_empty() {
        let _ = reports.send(LaneReport::Nodes { platform: spec.platform.clone(), nodes: released });
    }
}

/// Marks the lane dead in its logs and tells the coordinator.
pub fn die(
    spec: &LaneSpec,
    logs: &LaneLogs,
    reports: &mpsc::UnboundedSender<LaneReport>,
    reason: String,
    views: &BTreeMap<String, NodeReport>,
) {
    logs.narrate(&format!("lane {} died: {reason}", spec.platform));
    for (id, spool) in &logs.spools {
        let running = views.get(id).is_some_and(|v| v.status == odu_core::NodeStatus::Running);
        if running && id != SETUP {
            let _ = spool.append(spool.generation(), format!("\n[odu] lane died: {reason}\n").as_bytes());
        }
        spool.end(spool.generation());
    }
    tracing::debug!(platform = %spec.platform, reason = %reason, "lane died");
    let _ = reports.send(LaneReport::Died { platform: spec.platform.clone(), reason });
}

/// A runner's `nodes` frame (an [`odu_proto::NodesFrame`]) as its lane reads it: each view's state only
/// (a [`NodeReport`]), read in one pass. The frame's other fields (its kind, its revision, a
/// snapshot's name and order) and each view's needs are skipped over, and a view's command is
/// borrowed from the frame and kept only for the setup node: the run has every other node's
/// from its plan, and a view repeats them at every transition (parsing them into shared
/// strings and lists was about half of what the lane's link spent on a report).
#[derive(serde::Deserialize)]
struct ReportFrame<'a> {
    #[serde(borrow)]
    nodes: Vec<ReportedView<'a>>,
}

/// One view of a [`ReportFrame`].
#[derive(serde::Deserialize)]
struct ReportedView<'a> {
    id: String,
    #[serde(borrow)]
    command: std::borrow::Cow<'a, str>,
    status: odu_core::NodeStatus,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    started_at: Option<u64>,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    generation: u32,
}

impl From<ReportedView<'_>> for NodeReport {
    fn from(view: ReportedView<'_>) -> NodeReport {
        NodeReport {
            setup_command: NodeReport::carries_command(&view.id).then(|| Arc::from(view.command.as_ref())),
            id: view.id,
            status: view.status,
            exit_code: view.exit_code,
            started_at: view.started_at,
            duration_ms: view.duration_ms,
            generation: view.generation,
        }
    }
}

/// The coordinator's mirror of one runner: its views, the log streams, and the terminal gate.
struct LaneLink {
    nodes_stream: u64,
    log_streams: BTreeMap<u64, String>,
    /// The runner's latest report of each node.
    views: BTreeMap<String, NodeReport>,
    /// Per node: the log generation seen and whether its end arrived.
    log_state: BTreeMap<String, (u32, bool)>,
    /// Reused buffer for decoded log bytes.
    scratch: Vec<u8>,
    /// Views not yet released, in arrival order: a terminal view waits for its log to be
    /// complete, and everything after it waits too, so the coordinator never sees a dependent
    /// start before its need finished.
    held: std::collections::VecDeque<NodeReport>,
    /// Nodes whose released terminal view was errored because their log was cut short, with
    /// why, not yet reported.
    truncations: Vec<(String, String)>,
    /// The lane's platform, for the lines odu adds to logs it ends.
    platform: String,
    /// Nodes an operator asked to cancel whose log has not ended yet: it ends with a line
    /// saying so, for whoever reads the trail.
    cancelled: std::collections::BTreeSet<String>,
    /// Nodes whose log of this run is named the latest already.
    published: std::collections::BTreeSet<String>,
    /// A report's views not yet looked at: each waits for its log to be named the latest
    /// ([`LaneLink::name_some`]).
    unnamed: std::collections::VecDeque<NodeReport>,
    /// How long naming logs may go on before what is named is passed on ([`NAMING_SLICE`]).
    naming_slice: std::time::Duration,
    /// Until when the link's other items go before naming goes on, after a slice.
    items_until: Option<std::time::Instant>,
}

/// How long naming the logs of the nodes one report starts may go on before the views whose
/// logs are named are passed on and the lane's task yields. Naming costs two or three file
/// operations a node; where each of them waits for the disk (a file system mounted
/// `dirsync`) or for a server (a network file system), a burst of 1,000 nodes took 6 s to
/// name, and until then nobody heard of the lane, not even that its setup had ended. As long
/// as the runner's report window during a burst: a slice that a busy machine's scheduling
/// alone can outlast would pass an ordinary burst on in parts, waking every follower of the
/// run for each.
const NAMING_SLICE: std::time::Duration = std::time::Duration::from_millis(500);

/// Where a lane's link passes on what it releases: the nodes whose logs turned out cut short
/// (with why), then the views the coordinator may now apply.
type Release<'a> = dyn FnMut(Vec<(String, String)>, Vec<NodeReport>) + 'a;

impl LaneLink {
    fn new(spec: &LaneSpec) -> Self {
        LaneLink {
            platform: spec.platform.clone(),
            cancelled: std::collections::BTreeSet::new(),
            published: std::collections::BTreeSet::new(),
            nodes_stream: 0,
            log_streams: BTreeMap::new(),
            views: BTreeMap::new(),
            log_state: BTreeMap::new(),
            scratch: Vec::new(),
            held: std::collections::VecDeque::new(),
            truncations: Vec::new(),
            unnamed: std::collections::VecDeque::new(),
            naming_slice: NAMING_SLICE,
            items_until: None,
        }
    }

    fn log_complete(&self, view: &NodeReport) -> bool {
        self.log_state
            .get(&view.id)
            .is_some_and(|&(generation, ended)| generation == view.generation && ended)
    }

    /// Releases held views from the front while they may be shown. A node whose log could not
    /// be written whole ends `errored`, never `ok` (nor `failed`: its log does not show why).
    fn release(&mut self, logs: &LaneLogs) -> Vec<NodeReport> {
        let mut released = Vec::new();
        while let Some(front) = self.held.front() {
            let superseded =
                self.log_state.get(&front.id).is_some_and(|&(generation, _)| generation > front.generation);
            if front.status.is_terminal() && !self.log_complete(front) && !superseded {
                break;
            }
            let Some(mut view) = self.held.pop_front() else { break };
            if matches!(view.status, odu_core::NodeStatus::Ok | odu_core::NodeStatus::Failed)
                && let Some(spool) = logs.spools.get(&view.id)
                && spool.generation() == view.generation
                && let Some(reason) = spool.truncated()
            {
                view.status = odu_core::NodeStatus::Errored;
                self.truncations.push((view.id.clone(), reason));
            }
            released.push(view);
        }
        released
    }

    /// Whether a report's views still wait for their logs to be named.
    fn naming(&self) -> bool {
        !self.unnamed.is_empty()
    }

    /// Whether the link's next item goes before the naming goes on: always, unless naming
    /// waits and the items have had a slice's time since the last slice of it.
    fn items_first(&self) -> bool {
        !self.naming() || self.items_until.is_some_and(|until| std::time::Instant::now() < until)
    }

    /// Takes a report's views in order, naming the log of each node that starts the latest
    /// (the setup log was named when the lane's logs were made): a node is heard to start
    /// only once its log is there. Passes on what that releases once the views run out or
    /// the naming took a slice, whichever comes first.
    fn name_some(&mut self, logs: &LaneLogs, release: &mut Release<'_>) {
        let slice = std::time::Instant::now();
        while let Some(view) = self.unnamed.pop_front() {
            // A node fast enough to be first seen already ended started all the same.
            let starts = (view.status == odu_core::NodeStatus::Running || view.started_at.is_some())
                && view.id != SETUP
                && self.published.insert(view.id.clone());
            if starts && let Err(e) = logs.publish(&view.id) {
                logs.narrate(&format!("cannot name the log of {} the latest: {e}", view.id));
            }
            self.held.push_back(view);
            if starts && slice.elapsed() >= self.naming_slice {
                break;
            }
        }
        self.items_until = self.naming().then(|| std::time::Instant::now() + self.naming_slice);
        self.pass_on(logs, release);
    }

    /// Passes on what may be released now (see [`Release`]).
    fn pass_on(&mut self, logs: &LaneLogs, release: &mut Release<'_>) {
        let released = self.release(logs);
        release(std::mem::take(&mut self.truncations), released);
    }

    /// Handles one stream item, passing on the views it makes releasable to the coordinator.
    /// A report's views are named a slice at a time: while [`LaneLink::naming`], the caller
    /// yields, then calls [`LaneLink::name_some`] again or handles the next item.
    fn on_item(&mut self, logs: &LaneLogs, stream: u64, value: &RawValue, release: &mut Release<'_>) {
        if stream == self.nodes_stream {
            let Ok(frame) = serde_json::from_str::<ReportFrame<'_>>(value.get()) else { return };
            // Behind views still waiting for their names, a report waits its turn.
            let waiting = self.naming();
            for view in frame.nodes {
                let report = NodeReport::from(view);
                self.views.insert(report.id.clone(), report.clone());
                self.unnamed.push_back(report);
            }
            if !waiting {
                self.name_some(logs, release);
            }
            return;
        }
        let Some(id) = self.log_streams.get(&stream).cloned() else { return };
        let Some(spool) = logs.spools.get(&id) else { return };
        // The data is decoded straight from the frame into the trail's buffer.
        let Ok(item) = LogItem::parse(value.get()) else { return };
        self.scratch.clear();
        if item.decode_append(&mut self.scratch).is_err() {
            self.scratch.extend_from_slice(b"\n[odu] an undecodable log chunk was dropped\n");
        }
        match item {
            LogItem::Snapshot { generation, .. } => {
                if id == SETUP {
                    // The setup log also holds the coordinator's narration: append, never reset.
                    spool.reopen();
                    let _ = spool.append(spool.generation(), &self.scratch);
                } else {
                    let known = self.log_state.get(&id).map(|s| s.0);
                    if known.is_some_and(|g| g != generation) {
                        // A new attempt: an earlier cancel is not this attempt's.
                        self.cancelled.remove(&id);
                    }
                    if known.is_some() || generation > 0 {
                        let path = spool.state().path;
                        let _ = spool.reset(generation, &path);
                    }
                    let _ = spool.append(generation, &self.scratch);
                }
                self.log_state.insert(id.clone(), (generation, false));
            }
            LogItem::Append { .. } => {
                let _ = spool.append(spool.generation(), &self.scratch);
            }
            LogItem::End => {
                if let Some(state) = self.log_state.get_mut(&id) {
                    state.1 = true;
                }
                if id != SETUP {
                    if self.cancelled.remove(&id) {
                        let line = format!("\n[odu] cancelled by operator (lane {})\n", self.platform);
                        let _ = spool.append(spool.generation(), line.as_bytes());
                    }
                    spool.end(spool.generation());
                }
                self.pass_on(logs, release);
            }
            LogItem::Missed { bytes } => {
                let note = format!("\n[odu] log truncated: {bytes} bytes were lost on the link\n");
                let _ = spool.append(spool.generation(), note.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odu_core::NodeView;
    use odu_proto::{LogChunk, NodesFrame};

    fn spec(dir: &Path, ids: &[&str]) -> LaneSpec {
        LaneSpec {
            platform: "x86_64-linux".into(),
            host: "localhost".into(),
            name: "ci".into(),
            workspace: dir.join("work"),
            subdir: PathBuf::new(),
            notes: vec![],
            tasks: ids
                .iter()
                .map(|id| TaskSpec { id: (*id).into(), argv: vec!["true".into()], needs: vec![] })
                .collect(),
            jobs: None,
            env: BTreeMap::new(),
            log_dir: dir.join("runs/1/x86_64-linux"),
            latest_dir: dir.join("x86_64-linux"),
            runner: PathBuf::from("odu-runner"),
            base_env: None,
            remote: None,
            no_variables: false,
            known_just: None,
            warm: None,
            spares: None,
        }
    }

    fn running(id: &str) -> NodeView {
        NodeView {
            status: odu_core::NodeStatus::Running,
            ..NodeView::pending(id, "just --no-deps", Vec::new())
        }
    }

    fn frame(nodes: Vec<NodeView>) -> Box<RawValue> {
        serde_json::value::to_raw_value(&NodesFrame::Delta { revision: 1, nodes }).unwrap()
    }

    fn log(chunk: LogChunk<'_>) -> Box<RawValue> {
        RawValue::from_string(String::from_utf8(odu_proto::log_frame_json(chunk)).unwrap()).unwrap()
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The nodes stream's id in these tests; node `a`'s log stream is 2.
    const NODES: u64 = 1;
    const A_LOG: u64 = 2;

    /// A lane of nodes `a`, `b` and `c` in a temporary folder, its link, and what the link
    /// passed on, each time, with which latest names existed at that moment.
    struct Lane {
        _dir: tempfile::TempDir,
        spec: LaneSpec,
        logs: LaneLogs,
        link: LaneLink,
        passed: Vec<(Vec<String>, Vec<String>)>,
    }

    impl Lane {
        fn new() -> Lane {
            let dir = tempfile::tempdir().unwrap();
            let spec = spec(dir.path(), &["a", "b", "c"]);
            let logs = LaneLogs::create(&spec).unwrap();
            let mut link = LaneLink::new(&spec);
            link.nodes_stream = NODES;
            link.log_streams.insert(A_LOG, "a".into());
            Lane { _dir: dir, spec, logs, link, passed: Vec::new() }
        }

        /// Records what the link passes on, with the latest names there at that moment.
        fn pass_on(passed: &mut Vec<(Vec<String>, Vec<String>)>, latest: &Path, views: Vec<NodeReport>) {
            let mut named: Vec<String> = std::fs::read_dir(latest)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != "_ci-setup.log")
                .collect();
            named.sort();
            passed.push((views.into_iter().map(|v| v.id).collect(), named));
        }

        fn item(&mut self, stream: u64, value: &RawValue) {
            let (passed, latest) = (&mut self.passed, &self.spec.latest_dir);
            self.link
                .on_item(&self.logs, stream, value, &mut |_, views| Lane::pass_on(passed, latest, views));
        }

        /// Names slice after slice until no view waits, as the lane's task does.
        fn name_the_rest(&mut self) {
            while self.link.naming() {
                let (passed, latest) = (&mut self.passed, &self.spec.latest_dir);
                self.link.name_some(&self.logs, &mut |_, views| Lane::pass_on(passed, latest, views));
            }
        }

        /// The ids of each non-empty release, in order.
        fn released(&self) -> Vec<Vec<String>> {
            self.passed.iter().map(|(ids, _)| ids.clone()).filter(|ids| !ids.is_empty()).collect()
        }
    }

    #[test]
    fn a_runners_views_are_read_as_reports_with_only_the_setup_nodes_command() {
        let mut lane = Lane::new();
        let setup = NodeView {
            status: odu_core::NodeStatus::Ok,
            started_at: Some(10),
            duration_ms: Some(4),
            exit_code: Some(0),
            ..NodeView::pending(SETUP, "(workspace /w \"quoted\")", Vec::new())
        };
        let failed = NodeView {
            status: odu_core::NodeStatus::Failed,
            exit_code: Some(3),
            started_at: Some(20),
            duration_ms: Some(7),
            generation: 2,
            ..NodeView::pending("a", "just --no-deps a", vec![SETUP.to_string()])
        };
        // A snapshot, as the runner sends first: its name and order are skipped over.
        let snapshot = NodesFrame::Snapshot {
            revision: 1,
            name: "ci".into(),
            order: names(&[SETUP, "a"]),
            nodes: vec![setup, failed],
        };
        lane.item(NODES, &serde_json::value::to_raw_value(&snapshot).unwrap());
        let want = [
            NodeReport {
                id: SETUP.into(),
                status: odu_core::NodeStatus::Ok,
                exit_code: Some(0),
                started_at: Some(10),
                duration_ms: Some(4),
                generation: 0,
                setup_command: Some("(workspace /w \"quoted\")".into()),
            },
            NodeReport {
                id: "a".into(),
                status: odu_core::NodeStatus::Failed,
                exit_code: Some(3),
                started_at: Some(20),
                duration_ms: Some(7),
                generation: 2,
                setup_command: None,
            },
        ];
        // Both ended, so both wait for the end of their logs; the link holds the runner's word.
        assert_eq!(lane.link.views.values().cloned().collect::<Vec<_>>(), want);
        assert!(lane.released().is_empty());
    }

    #[test]
    fn a_report_whose_logs_name_slowly_passes_on_each_named_slice_before_naming_the_rest() {
        let mut lane = Lane::new();
        // Every naming outlasts the slice.
        lane.link.naming_slice = std::time::Duration::ZERO;
        lane.item(NODES, &frame(vec![running("a"), running("b"), running("c")]));
        assert!(lane.link.naming());
        // The link knows the runner's word at once, for a lane that dies meanwhile.
        assert!(lane.link.views.values().all(|v| v.status == odu_core::NodeStatus::Running));
        lane.name_the_rest();
        assert_eq!(
            lane.passed,
            vec![
                (names(&["a"]), names(&["a.log"])),
                (names(&["b"]), names(&["a.log", "b.log"])),
                (names(&["c"]), names(&["a.log", "b.log", "c.log"])),
            ],
            "each view goes once its own log is named, before the next is"
        );
    }

    #[test]
    fn the_end_of_a_log_that_a_view_waits_for_is_heard_between_two_slices() {
        let mut lane = Lane::new();
        lane.item(NODES, &frame(vec![running("a")]));
        lane.item(A_LOG, &log(LogChunk::Snapshot { generation: 0, bytes: b"" }));
        lane.link.naming_slice = std::time::Duration::ZERO;
        let a_ok = NodeView { status: odu_core::NodeStatus::Ok, started_at: Some(1), ..running("a") };
        lane.item(NODES, &frame(vec![a_ok, running("b"), running("c")]));
        assert!(lane.link.naming());
        // `a` ended, but its log has not: its end waits, and `b` (named) waits behind it.
        lane.item(A_LOG, &log(LogChunk::End));
        lane.name_the_rest();
        assert_eq!(lane.released(), vec![names(&["a"]), names(&["a", "b"]), names(&["c"])]);
    }

    #[test]
    fn a_report_that_comes_while_another_is_being_named_waits_behind_it() {
        let mut lane = Lane::new();
        lane.link.naming_slice = std::time::Duration::ZERO;
        lane.item(NODES, &frame(vec![running("a"), running("b")]));
        // The slice is over: the naming goes on before the link's next item.
        assert!(!lane.link.items_first());
        lane.item(NODES, &frame(vec![running("c")]));
        lane.name_the_rest();
        assert!(lane.link.items_first());
        let ids: Vec<Vec<String>> = lane.passed.iter().map(|(ids, _)| ids.clone()).collect();
        assert_eq!(ids, vec![names(&["a"]), names(&["b"]), names(&["c"])], "nothing passed on out of turn");
    }

    #[test]
    fn a_report_whose_logs_name_quickly_is_passed_on_whole() {
        let mut lane = Lane::new();
        lane.item(NODES, &frame(vec![running("a"), running("b"), running("c")]));
        assert!(!lane.link.naming());
        assert_eq!(lane.passed, vec![(names(&["a", "b", "c"]), names(&["a.log", "b.log", "c.log"]))]);
    }
}
