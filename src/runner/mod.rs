//! The lane side: `odu-runner --stdio` serves one client (the coordinator) over the protocol.
//!
//! It starts idle, accepts one `run.configure`, seeds `_ci-setup`, and schedules nodes through
//! the lane reducer. One actor task owns all state; node tasks, stream tasks and the reader
//! talk to it by messages. When its input closes (the coordinator went away), every process
//! group it started is killed and it exits. Nothing but protocol frames is written to stdout.
//!
//! Its spools live in a private scratch directory that also records its process groups (see
//! `scratch`): if the runner is killed outright, the next runner on the host (or, on
//! localhost, the lane that started it) ends those groups and removes the directory.

#[cfg(target_os = "linux")]
pub mod clone;
pub mod linger;
pub mod scratch;
pub mod spawner;
pub mod variables;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use odu_core::lane::{Exit, LaneEffect, LaneEvent, LaneState};
use odu_core::{NodeView, SETUP};
use odu_proto::{
    Configure, LANE_CLOSE, Message, NODE_CANCEL, NODE_LOG_GET, NODE_RERUN, NODES_GET, NodeParams, NodesFrame,
    RUN_CONFIGURE, RawParams, RpcError, error_code, log_item_frame,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::clock::now_ms;
use crate::link::cell::{Hub, NodesValue, Views};
use crate::link::wire::{FrameReader, Served, ServerLink, spawn_writer};
use crate::tool::just::{MIN_JUST, parse_version};
use crate::trail::spool::{Spool, SpoolChunk, SpoolReader};
use std::sync::Arc;

/// Bytes per log frame on the wire.
pub const LOG_CHUNK: usize = 256 * 1024;

/// The first bytes of every node's log stay in a spool file, so any client can replay a short
/// log from the top; the rest passes through memory (see `spool`).
pub const LOG_HEAD: u64 = 4 * 1024 * 1024;

/// How many unread bytes of a node's log may wait in the runner's memory.
pub const LOG_WINDOW: usize = 4 * 1024 * 1024;

enum ActorMsg {
    Request {
        id: Value,
        method: String,
        /// As sent: each request reads them straight into its own type.
        params: RawParams,
    },
    CancelStream(Value),
    Exited {
        id: String,
        generation: u32,
        exit: Exit,
        /// The node's process group (and when its leader started), found gone at its end: no
        /// longer one to end.
        gone_group: Option<(i32, scratch::Started)>,
        /// Its process's pidfd and its pipe, dropped once the node's end was acted on (the
        /// next node of a chain started).
        spent: Option<spawner::Spent>,
    },
    /// The lane's variables, evaluated once by `_ci-setup`: every node gets them.
    Variables(Vec<String>),
    /// A process group `_ci-setup` started (to evaluate the variables), to record and end like
    /// a node's.
    SetupGroup {
        generation: u32,
        pgid: i32,
        started: scratch::Started,
    },
    Shutdown,
}

struct Running {
    generation: u32,
    /// The node's process group; for the setup node, which runs in the runner itself, the group
    /// of the `just` evaluating the variables while there is one.
    pgid: Option<i32>,
}

/// The log of a node stopped (cancelled, or rerun) while it waited for its process.
const STOPPED_BEFORE_SPAWN: &str = "[odu] stopped before its process was started\n";

/// A node attempt waiting in [`Actor::starting`] for its process.
struct Start {
    id: String,
    generation: u32,
    argv: Arc<[String]>,
}

struct Actor {
    out: mpsc::Sender<Vec<u8>>,
    me: mpsc::UnboundedSender<ActorMsg>,
    lane: Option<LaneState>,
    name: String,
    workspace: PathBuf,
    env: spawner::Environment,
    /// `NAME=VALUE` overrides placed before every node's recipe (see `variables`).
    overrides: Vec<String>,
    /// The coordinator found no variable to evaluate (see [`Configure::no_variables`]).
    no_variables: bool,
    /// The `just` the coordinator already ran on this host (see [`Configure::just`]).
    known_just: Option<odu_proto::KnownJust>,
    hub: Hub<NodesValue>,
    revision: u64,
    /// The cell's node views, in order, shared with published snapshots.
    cell_nodes: Views,
    cell_order: Arc<Vec<String>>,
    cell_name: Arc<str>,
    /// Looked up by id at every start and end of a node, as `running` is: hashed, like the
    /// lane's index (see `LaneState`).
    spools: HashMap<String, Spool>,
    scratch: scratch::Scratch,
    /// Nodes spawned and not yet heard to exit (a node waiting in `starting` is not here).
    running: HashMap<String, Running>,
    /// Nodes the lane started whose process is still to be spawned, in the lane's order: when
    /// one event starts many nodes, one is spawned per turn of the actor's loop (see
    /// [`Actor::run`]).
    starting: VecDeque<Start>,
    streams: BTreeMap<String, AbortHandle>,
    host: Host,
    /// Holds the nodes' new statuses and their logs' ends while the lane is busy.
    linger: Arc<linger::Linger>,
}

/// Whose process a runner is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// Another process's (tests): once its lane is closed it only answers, and it leaves the
    /// process's environment alone, giving each node the run's.
    Shared,
    /// Its own, the `odu-runner` process: it takes the run's environment as its own when its
    /// lane is configured (so a spawn passes it as it is), and once the lane is closed it
    /// reports its peak RSS, then detaches its stderr, so the lane's log has all of it with the
    /// answer and nobody waits for the process's exit.
    Own,
}

/// Serves the lane protocol on (reader, writer) until the reader closes or `shutdown` fires,
/// then kills every process group it started.
pub async fn serve<R, W>(
    reader: R,
    writer: W,
    shutdown: impl std::future::Future<Output = ()>,
    host: Host,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Log frames are up to ~460 KiB each: a short queue bounds the runner's memory, and a full
    // queue is the backpressure that slows log readers (never the nodes themselves).
    let (out, writer_task) = spawn_writer(writer, 16);
    let scratch = scratch::Scratch::create()?;
    // Whatever runners died on this host before us leave no process or file behind.
    let root = std::env::temp_dir();
    tokio::task::spawn_blocking(move || scratch::reap_dead(&root));
    let (me, inbox) = mpsc::unbounded_channel();
    let actor = Actor {
        out: out.clone(),
        me: me.clone(),
        lane: None,
        name: String::new(),
        workspace: PathBuf::new(),
        env: spawner::Environment::default(),
        overrides: Vec::new(),
        no_variables: false,
        known_just: None,
        hub: Hub::new(
            NodesValue { revision: 0, name: Arc::from(""), order: Arc::default(), nodes: Views::default() },
            1024,
        ),
        revision: 0,
        cell_nodes: Views::default(),
        cell_order: Arc::default(),
        cell_name: Arc::from(""),
        spools: HashMap::new(),
        scratch,
        running: HashMap::new(),
        starting: VecDeque::new(),
        streams: BTreeMap::new(),
        host,
        linger: Arc::new(linger::Linger::new(linger::REPORT_WINDOW)),
    };
    let actor_task = tokio::spawn(actor.run(inbox));
    let mut link = ServerLink::new(FrameReader::new(reader, "odu-runner"), out.clone(), "runner");
    tokio::pin!(shutdown);
    // Once the coordinator has pinged, its silence means the link is gone (a cut cable sends no
    // EOF): stop as if stdin had closed.
    let silence = std::time::Duration::from_millis(odu_proto::HEARTBEAT_SILENCE_MS);
    let mut heard_ping = false;
    let mut last_heard = tokio::time::Instant::now();
    let mut watchdog = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let served = tokio::select! {
            served = link.next() => served,
            _ = &mut shutdown => break,
            // Not before the first ping: an idle runner (the checkout's spare) wakes for nothing.
            _ = watchdog.tick(), if heard_ping => {
                if last_heard.elapsed() > silence {
                    tracing::warn!(silence_s = silence.as_secs(), "no heartbeat from the coordinator: stopping");
                    break;
                }
                continue;
            }
        };
        last_heard = tokio::time::Instant::now();
        match served {
            Ok(Some(Served::Request { id, method, .. })) if method == odu_proto::PING => {
                heard_ping = true;
                let _ = out.send(Message::ok(id, Value::Null).to_frame()).await;
            }
            Ok(Some(Served::Request { id, method, params })) => {
                let _ = me.send(ActorMsg::Request { id, method, params });
            }
            Ok(Some(Served::CancelStream(id))) => {
                let _ = me.send(ActorMsg::CancelStream(id));
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "the link to the coordinator failed");
                break;
            }
        }
    }
    // The link holds a sender too: the writer ends only when every sender is gone.
    drop(link);
    let _ = me.send(ActorMsg::Shutdown);
    drop(me);
    let _ = actor_task.await;
    drop(out);
    let _ = writer_task.await;
    Ok(())
}

/// The spool file of the node at `index` in scheduling order, for one attempt, in the scratch
/// directory's `logs` folder.
fn spool_file(logs: &Path, index: usize, generation: u32) -> PathBuf {
    logs.join(format!("{index}.{generation}.log"))
}

/// Points this process's stderr at /dev/null: whoever reads the other end hears its end.
fn detach_stderr() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto descriptor 2, which this process owns as its stderr; `null` stays
        // open until after the call.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO) };
    }
}

/// The process's stdin and stdout as async streams: pipes are driven by the reactor directly
/// (the hot path of log throughput); anything else falls back to tokio's blocking adapters.
pub fn stdio() -> (Box<dyn AsyncRead + Unpin + Send>, Box<dyn AsyncWrite + Unpin + Send>) {
    use std::os::fd::AsFd;
    let reader: Box<dyn AsyncRead + Unpin + Send> = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(tokio::net::unix::pipe::Receiver::from_owned_fd)
    {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdin()),
    };
    let writer: Box<dyn AsyncWrite + Unpin + Send> = match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(tokio::net::unix::pipe::Sender::from_owned_fd)
    {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdout()),
    };
    (reader, writer)
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<ActorMsg>) {
        // The `lane.close` request to answer once the lane is closed.
        let mut closing = None;
        loop {
            // A spawn returns once its child has exec'd, which on a machine busy with the
            // lane's other nodes waits a round of the scheduler (some 6 ms at 2,000 nodes on
            // two cores): spawning a wide lane's nodes in one go left those that ended
            // meanwhile unreaped and unreported until the last had started. So one node is
            // spawned per turn, after every message already waiting (an exit frees a node's
            // dependents sooner), and the runtime runs the other tasks (reaping, reading logs,
            // writing frames) between two spawns.
            let msg = if self.starting.is_empty() {
                inbox.recv().await
            } else {
                match inbox.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.start_next();
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                ActorMsg::Request { id, method, .. } if method == LANE_CLOSE => {
                    closing = Some(id);
                    break;
                }
                ActorMsg::Request { id, method, params } => {
                    let reply = self.handle_request(id.clone(), &method, &params);
                    if let Some(reply) = reply {
                        let _ = self.out.send(reply.to_frame()).await;
                    }
                }
                ActorMsg::CancelStream(id) => {
                    if let Some(handle) = self.streams.remove(&id.to_string()) {
                        handle.abort();
                        let _ = self.out.send(Message::ok(id, Value::Null).to_frame()).await;
                    }
                }
                ActorMsg::Exited { id, generation, exit, gone_group, spent } => {
                    tracing::debug!(node = %id, generation, exit = ?exit, "exited");
                    if let Some((pgid, started)) = gone_group {
                        self.scratch.forget_group(pgid, started);
                    }
                    if self.running.get(&id).is_some_and(|r| r.generation == generation) {
                        self.running.remove(&id);
                    }
                    self.apply(LaneEvent::NodeExited { id, generation, exit, at: now_ms() });
                    drop(spent);
                }
                ActorMsg::Variables(overrides) => self.overrides = overrides,
                ActorMsg::SetupGroup { generation, pgid, started } => {
                    if let Err(e) = self.scratch.record_group(pgid, started) {
                        tracing::warn!(error = %e, "cannot record the process group");
                    }
                    if let Some(r) = self.running.get_mut(SETUP).filter(|r| r.generation == generation) {
                        r.pgid = Some(pgid);
                    }
                }
                ActorMsg::Shutdown => break,
            }
        }
        for handle in self.streams.values() {
            handle.abort();
        }
        // The running nodes' groups, and any stray still left in a finished node's group.
        let mut pgids: Vec<i32> = self.running.values().filter_map(|r| r.pgid).collect();
        pgids.extend(self.scratch.live_groups());
        pgids.sort_unstable();
        pgids.dedup();
        // A lane whose nodes all ended with their groups (the usual close) has none to end,
        // and starts no thread to find that out (24–105 µs of its close, measured).
        if !pgids.is_empty() {
            tokio::task::spawn_blocking(move || spawner::terminate_groups(&pgids)).await.ok();
        }
        // Dropping the scratch directory removes it, spools and all.
        drop(self.scratch);
        if let Some(id) = closing {
            if self.host == Host::Own {
                crate::clock::report_peak_rss("odu-runner");
                detach_stderr();
            }
            let _ = self.out.send(Message::ok(id, Value::Null).to_frame()).await;
            // The writer sends the answer before this task drops the lane's state (every node's
            // spool, stream and record): the coordinator hears the close, and the run ends, about
            // half a millisecond sooner at 200 nodes.
            tokio::task::yield_now().await;
        }
    }

    /// Answers a request; `None` when the answer comes later (streams answer when they end).
    fn handle_request(&mut self, id: Value, method: &str, params: &RawValue) -> Option<Message> {
        let result = match method {
            RUN_CONFIGURE => self.configure(params),
            NODES_GET => {
                let linger = self.linger.clone();
                let gate = move || {
                    let linger = linger.clone();
                    async move { linger.pass().await }
                };
                let task = self.hub.subscribe().forward_gated(&self.out, &id, gate);
                self.streams.insert(id.to_string(), task.abort_handle());
                return None;
            }
            NODE_LOG_GET => match self.node_param(params) {
                Ok(node) => {
                    let Some(spool) = self.spools.get(&node) else {
                        return Some(Message::err(
                            id,
                            RpcError::refused(format!("no node {node:?} in this lane")),
                        ));
                    };
                    let mut reader = SpoolReader::new(spool, LOG_CHUNK);
                    let out = self.out.clone();
                    let stream = id.clone();
                    let linger = self.linger.clone();
                    let task = tokio::spawn(async move {
                        while let Some(chunk) = reader.next().await {
                            // A log's end goes with its node's new status; its bytes never wait.
                            if matches!(chunk, SpoolChunk::End) {
                                linger.pass().await;
                            }
                            if out.send(log_item_frame(&stream, chunk.as_log())).await.is_err() {
                                break;
                            }
                        }
                    });
                    self.streams.insert(id.to_string(), task.abort_handle());
                    return None;
                }
                Err(e) => Err(e),
            },
            NODE_RERUN => self
                .node_param(params)
                .and_then(|node| self.operate(LaneEvent::RerunRequested { id: node, at: now_ms() })),
            NODE_CANCEL => self
                .node_param(params)
                .and_then(|node| self.operate(LaneEvent::CancelRequested { id: node, at: now_ms() })),
            other => Err(RpcError::new(error_code::METHOD_NOT_FOUND, format!("unknown method {other:?}"))),
        };
        Some(match result {
            Ok(value) => Message::ok(id, value),
            Err(error) => Message::err(id, error),
        })
    }

    fn node_param(&self, params: &RawValue) -> Result<String, RpcError> {
        let p: NodeParams =
            serde_json::from_str(params.get()).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        if self.lane.is_none() {
            return Err(RpcError::refused("the runner is not configured yet: send run.configure first"));
        }
        Ok(p.id)
    }

    fn operate(&mut self, event: LaneEvent) -> Result<Value, RpcError> {
        let lane = self.lane.as_mut().ok_or_else(|| RpcError::refused("the runner is not configured yet"))?;
        let effects = lane.apply(event).map_err(|r| RpcError::refused(r.to_string()))?;
        self.execute(effects);
        Ok(json!({"ok": true}))
    }

    fn configure(&mut self, params: &RawValue) -> Result<Value, RpcError> {
        if self.lane.is_some() {
            return Err(RpcError::refused("runner is already configured (one run per runner process)"));
        }
        let c: Configure =
            serde_json::from_str(params.get()).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let setup_command = format!("(workspace {})", c.workspace);
        let lane = LaneState::new(&c.tasks, &setup_command, c.jobs).map_err(RpcError::invalid_params)?;
        // A spool's file is created with its first byte: a node that prints nothing costs none.
        let logs = self.scratch.logs();
        for (index, id) in lane.order().iter().enumerate() {
            let spool = Spool::windowed(&spool_file(&logs, index, 0), LOG_HEAD, LOG_WINDOW);
            self.spools.insert(id.clone(), spool);
        }
        self.name = c.name;
        self.workspace = PathBuf::from(c.workspace);
        self.env = spawner::Environment::new(c.base_env, c.env);
        if self.host == Host::Own {
            // SAFETY: the runner process has one runtime thread, this one; the blocking pool's
            // threads only reap dead runners' scratch (file system calls, kill) and end process
            // groups, none of which reads the environment.
            let adopted = unsafe { self.env.adopt() };
            if !adopted {
                tracing::debug!("the run's environment is given to each node: it cannot be the runner's own");
            }
        }
        self.no_variables = c.no_variables;
        self.known_just = c.just;
        self.lane = Some(lane);
        self.revision += 1;
        let lane = self.lane.as_ref().expect("just set");
        self.cell_order = Arc::new(lane.order().to_vec());
        self.cell_nodes = lane.views().into_iter().collect();
        self.cell_name = Arc::from(self.name.as_str());
        self.hub.replace(self.snapshot());
        let effects = self.lane.as_mut().expect("just set").apply(LaneEvent::Started { at: now_ms() });
        self.execute(effects.unwrap_or_default());
        Ok(json!({"ok": true}))
    }

    fn spool_path(&self, index: usize, generation: u32) -> PathBuf {
        spool_file(&self.scratch.logs(), index, generation)
    }

    fn snapshot(&self) -> NodesValue {
        NodesValue {
            revision: self.revision,
            name: self.cell_name.clone(),
            order: self.cell_order.clone(),
            nodes: self.cell_nodes.clone(),
        }
    }

    fn apply(&mut self, event: LaneEvent) {
        let Some(lane) = self.lane.as_mut() else { return };
        if let Ok(effects) = lane.apply(event) {
            self.execute(effects);
        }
    }

    fn execute(&mut self, effects: Vec<LaneEffect>) {
        let mut spawned_now = false;
        for effect in effects {
            match effect {
                LaneEffect::Kill { id, generation } => {
                    if let Some(at) =
                        self.starting.iter().position(|s| s.id == id && s.generation == generation)
                    {
                        // Never spawned: nothing to kill; its log says so, and ends.
                        self.starting.remove(at);
                        if let Some(spool) = self.spools.get(&id) {
                            let _ = spool.append(generation, STOPPED_BEFORE_SPAWN.as_bytes());
                            spool.end(generation);
                        }
                    } else if let Some(pgid) =
                        self.running.get(&id).filter(|r| r.generation == generation).and_then(|r| r.pgid)
                    {
                        spawner::kill_group(pgid, libc::SIGTERM);
                        spawner::escalate_later(pgid);
                    }
                }
                LaneEffect::ResetLog { id, generation } => {
                    let index = self.lane.as_ref().and_then(|l| l.position(&id));
                    if let (Some(index), Some(spool)) = (index, self.spools.get(&id)) {
                        let old = spool.state().path;
                        let path = self.spool_path(index, generation);
                        if let Err(e) = spool.reset(generation, &path) {
                            tracing::warn!(node = %id, error = %e, "cannot reset the log");
                        }
                        let _ = std::fs::remove_file(old);
                    }
                }
                LaneEffect::Spawn { id, generation, argv } => {
                    // The first spawns at once (a chain's next node loses no turn); the
                    // others of the same event wait their turn.
                    if self.starting.is_empty() && !spawned_now {
                        spawned_now = true;
                        self.spawn(id, generation, argv);
                    } else {
                        self.starting.push_back(Start { id, generation, argv });
                    }
                }
                LaneEffect::EndLog { id, generation, note } => {
                    if let Some(spool) = self.spools.get(&id) {
                        if let Some(note) = note {
                            let _ = spool.append(generation, note.as_bytes());
                        }
                        spool.end(generation);
                    }
                }
                LaneEffect::Publish { changed } => {
                    let Some(lane) = self.lane.as_ref() else { continue };
                    let mut nodes: Vec<NodeView> = Vec::with_capacity(changed.len());
                    for &at in &changed {
                        if let Some(view) = lane.view_at(at) {
                            self.cell_nodes.set(at, view.clone());
                            nodes.push(view.clone());
                        }
                    }
                    self.revision += 1;
                    let delta = NodesFrame::Delta { revision: self.revision, nodes };
                    let snapshot = self.snapshot();
                    self.hub.publish(snapshot, delta);
                }
            }
        }
        // After the effects: a lane this settled lets its last reports go at once.
        self.linger.set_busy(self.lane.as_ref().is_some_and(|lane| !lane.settled()));
        self.linger.set_starting(!self.starting.is_empty());
    }

    /// Spawns the node whose turn it is in [`Actor::starting`].
    fn start_next(&mut self) {
        if let Some(Start { id, generation, argv }) = self.starting.pop_front() {
            let at = now_ms();
            self.spawn(id.clone(), generation, argv);
            self.apply(LaneEvent::NodeSpawned { id, generation, at });
        }
    }

    fn spawn(&mut self, id: String, generation: u32, argv: Arc<[String]>) {
        let Some(spool) = self.spools.get(&id).cloned() else { return };
        self.running.insert(id.clone(), Running { generation, pgid: None });
        let me = self.me.clone();
        let workspace = self.workspace.clone();
        if id == SETUP {
            let env = self.env.clone();
            let no_variables = self.no_variables;
            let known = self.known_just.clone();
            tokio::spawn(async move {
                let tell = me.clone();
                let on_group = move |pgid, started| {
                    let _ = tell.send(ActorMsg::SetupGroup { generation, pgid, started });
                };
                // just's dump (which runs nothing of the justfile) is read while its version is
                // checked; it is used only once the check passed.
                let (exit, dump) = if no_variables {
                    (prepare_workspace(&workspace, &env, &spool, generation, known).await, None)
                } else {
                    let (exit, dump) = tokio::join!(
                        prepare_workspace(&workspace, &env, &spool, generation, known),
                        variables::dump(&workspace, &env, &on_group)
                    );
                    (exit, Some(dump))
                };
                if exit == Exit::Code(0)
                    && let Some(dump) = dump
                {
                    let overrides =
                        evaluate_variables(&workspace, &env, &on_group, dump, &spool, generation).await;
                    let _ = me.send(ActorMsg::Variables(overrides));
                }
                spool.end(generation);
                let _ = me.send(ActorMsg::Exited { id, generation, exit, gone_group: None, spent: None });
            });
            return;
        }
        let argv = variables::with_overrides(argv, &self.overrides);
        let launch = spawner::NodeLaunch { argv, workspace, env: self.env.clone(), generation };
        match spawner::start_node(launch, &spool) {
            Ok(started) => {
                tracing::debug!(node = %id, generation, pgid = started.pgid, "spawned");
                if let Err(e) = self.scratch.record_group(started.pgid, started.started) {
                    tracing::warn!(node = %id, error = %e, "cannot record the process group");
                }
                if let Some(r) = self.running.get_mut(&id) {
                    r.pgid = Some(started.pgid);
                }
                let group = (started.pgid, started.started);
                tokio::spawn(async move {
                    let end = spawner::finish_node(started, &spool).await;
                    let (exit, gone_group) = (end.exit, end.group_gone.then_some(group));
                    // The actor is woken before the log's reader, though both see the log
                    // ended: the log's `end` frame is then queued just before the node's new
                    // status, and the two leave in one write.
                    let spent = Some(end.spent);
                    let _ = me.send(ActorMsg::Exited { id, generation, exit, gone_group, spent });
                    spool.end(generation);
                });
            }
            Err(exit) => {
                spool.end(generation);
                let _ = me.send(ActorMsg::Exited { id, generation, exit, gone_group: None, spent: None });
            }
        }
    }
}

/// Evaluates the justfile's variables once for the lane, saying in the setup log which ones
/// every node shares, or why each node evaluates its own.
async fn evaluate_variables(
    workspace: &Path,
    env: &spawner::Environment,
    on_group: &(dyn Fn(i32, scratch::Started) + Sync),
    dump: Result<String, String>,
    spool: &Spool,
    generation: u32,
) -> Vec<String> {
    let say = |line: String| {
        let _ = spool.append(generation, format!("[odu] {line}\n").as_bytes());
    };
    match variables::evaluate_once(workspace, env, on_group, dump).await {
        Ok(overrides) if overrides.is_empty() => Vec::new(),
        Ok(overrides) => {
            let names: Vec<&str> =
                overrides.iter().filter_map(|o| o.split_once('=').map(|(n, _)| n)).collect();
            say(format!(
                "variables evaluated once for this lane, every node gets the same values: {}",
                names.join(", ")
            ));
            overrides
        }
        Err(reason) => {
            say(format!(
                "variables are evaluated by each node, as by separate just invocations (a backtick runs once per node): {reason}"
            ));
            Vec::new()
        }
    }
}

/// `_ci-setup` on a lane whose workspace is provided: check it exists and `just` is usable,
/// narrating each step into the setup log.
async fn prepare_workspace(
    workspace: &Path,
    env: &spawner::Environment,
    spool: &Spool,
    generation: u32,
    known: Option<odu_proto::KnownJust>,
) -> Exit {
    let say = |line: String| {
        let _ = spool.append(generation, format!("[odu] {line}\n").as_bytes());
    };
    if !workspace.is_dir() {
        say(format!("provided workspace {} does not exist", workspace.display()));
        return Exit::SpawnFailed;
    }
    say(format!("using provided workspace {}", workspace.display()));
    // The very program every node of the lane runs (nodes spawn it by this path).
    let just = spawner::resolve_program("just");
    // The very file the coordinator asked a moment ago on this host need not be asked again.
    let asked = known.filter(|k| {
        Path::new(&k.path) == just && crate::tool::file_stamp(&just).is_some_and(|stamp| stamp == k.file)
    });
    let answer = match asked {
        Some(k) => Ok((true, k.version, String::new())),
        None => spawner::tool_output(&just.to_string_lossy(), &["--version"], workspace, env).await,
    };
    match answer {
        Ok((true, stdout, _)) => {
            let version = stdout.trim().to_string();
            match parse_version(&version) {
                Some(v) if v >= MIN_JUST => {
                    say(format!("{version} ({})", just.display()));
                    Exit::Code(0)
                }
                _ => {
                    say(format!(
                        "{version} is too old: odu needs just >= {}.{} (pip install rust-just, or cargo install just)",
                        MIN_JUST.0, MIN_JUST.1
                    ));
                    Exit::SpawnFailed
                }
            }
        }
        Ok((false, _, stderr)) => {
            say(format!("just --version failed: {}", stderr.trim()));
            Exit::SpawnFailed
        }
        Err(e) => {
            say(format!(
                "just is not usable on this lane ({e}): install just >= 1.57 (pip install rust-just, or cargo install just)"
            ));
            Exit::SpawnFailed
        }
    }
}
