//! The server of one checkout (`odu serve`): it owns `.ci/odu.sock`, outlives runs, starts them
//! on `run.start` (one at a time), and serves every run it knows: the live one from its cells,
//! finished ones from the ledger and the trail.
//!
//! Lifecycle:
//! - one server per checkout: an exclusive `flock` on `.ci/odu.serve.lock`, then the socket
//!   (a stale one is reclaimed, a live one never stolen);
//! - on start it closes the records of runs whose server died mid-run (`ledger::recover`);
//! - it serves at most [`MAX_CLIENTS`] clients at once, each request at most
//!   [`MAX_REQUEST`] bytes, and every client's unfinished requests together within a pool; a
//!   client over its share is closed with an error, and when the server is full a new client
//!   takes the place of one holding an unfinished request or silent since it connected, or is
//!   told the server is full;
//! - a `run.start` is prepared on its own task: a client that goes away (or a `--supersede`)
//!   abandons it before it commits, so the run never starts and the checkout is free again;
//! - it exits when idle (no live run, no client) for `--idle-timeout`, when its socket is
//!   removed or replaced, or on SIGINT/SIGTERM (cancelling the live run first; a second signal
//!   leaves at once). Its runners notice their stdin closing and kill their process groups.

pub mod coordinator;
pub mod github;
pub mod serve;
pub mod start;
pub mod surface;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use odu_proto::{Header, Phase, RpcError, RunOutcome, StartParams, Started};
use tokio::sync::{Notify, oneshot, watch};

use crate::error::CliError;
use crate::link::cell::{HeaderValue, Hub, RunsValue};
use crate::link::wire::{Budget, BufferPool, FrameLimits, ReadGauge};
use crate::server::coordinator::RunHandles;
use crate::trail::ledger::{self, RunRecord};

/// Clients served at once (followers, status queries, run starts).
pub const MAX_CLIENTS: usize = 256;
/// The largest request a client may send: a `run.start` carries the client's environment.
pub const MAX_REQUEST: usize = 1 << 20;
/// Buffer each client may hold for its requests without drawing on the shared pool.
pub const CLIENT_ALLOWANCE: usize = 64 << 10;
/// What all clients' unfinished requests may hold beyond their allowances, together.
pub const REQUEST_POOL: usize = 32 << 20;

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
    /// A `run.start` is preparing (git, just): no second one may begin, unless it supersedes
    /// this one.
    starting: Option<Starting>,
}

struct Starting {
    claim: Claim,
    /// Turns true once a committed preparation is live or has failed.
    settled: watch::Receiver<bool>,
}

/// Why a `run.start` was given up before its run began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abandoned {
    ClientGone,
    Superseded,
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Abandoned::ClientGone => "its client went away before the run began",
            Abandoned::Superseded => "another run started with --supersede replaced it before it began",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commitment {
    Pending,
    Committed,
    Abandoned(Abandoned),
}

/// Where a `run.start` stands: its preparation commits to starting the run, or its client (or
/// a `--supersede`) abandons it; whichever comes first wins, once.
#[derive(Clone)]
struct Claim(Arc<watch::Sender<Commitment>>);

impl Claim {
    fn new() -> Claim {
        Claim(Arc::new(watch::Sender::new(Commitment::Pending)))
    }

    fn settle(&self, to: Commitment) -> bool {
        let mut won = false;
        self.0.send_if_modified(|now| {
            won = *now == Commitment::Pending;
            if won {
                *now = to;
            }
            won
        });
        won
    }

    fn commit(&self) -> bool {
        self.settle(Commitment::Committed)
    }

    fn abandon(&self, why: Abandoned) -> bool {
        self.settle(Commitment::Abandoned(why))
    }

    fn abandoned_now(&self) -> Option<Abandoned> {
        match *self.0.borrow() {
            Commitment::Abandoned(why) => Some(why),
            _ => None,
        }
    }

    /// Resolves once the claim is abandoned (never, once committed).
    async fn abandoned(&self) -> Abandoned {
        let mut watch = self.0.subscribe();
        loop {
            if let Some(why) = self.abandoned_now() {
                return why;
            }
            if watch.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn is(&self, other: &Claim) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Abandons a `run.start` whose caller stopped waiting (its client went away).
struct AbandonOnDrop {
    server: Arc<Server>,
    claim: Option<Claim>,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take()
            && claim.abandon(Abandoned::ClientGone)
        {
            self.server.stop_starting(&claim);
            self.server.say("a run.start was abandoned: its client went away before the run began");
        }
    }
}

/// The clients being served, each with what the server may need to close it for.
#[derive(Default)]
struct Clients {
    next_id: u64,
    live: BTreeMap<u64, ClientSlot>,
}

struct ClientSlot {
    /// How the client's reader is doing: an unfinished request, requests read.
    gauge: Arc<ReadGauge>,
    evict: Arc<Notify>,
}

pub struct Server {
    pub repo: PathBuf,
    pub ci: PathBuf,
    pub socket: PathBuf,
    state: Mutex<State>,
    pub runs: Mutex<Hub<RunsValue>>,
    clients: Mutex<Clients>,
    /// Shared by every client's request buffer.
    requests: Arc<BufferPool>,
    /// Print a line per run start and end (a foreground `odu serve`).
    verbose: bool,
    /// The posters of runs that ended while they still owed GitHub statuses.
    posting: Mutex<Vec<(String, watch::Receiver<github::Report>)>>,
    /// How many ended runs' worktrees are still being removed.
    releasing: watch::Sender<usize>,
    /// The local runner kept ready for the next run.
    spares: Arc<crate::lane::Spares>,
}

/// One ended run's worktree being removed: counted in [`Server::releasing`] while it lives.
struct Releasing(Arc<Server>);

impl Releasing {
    fn new(server: &Arc<Server>) -> Releasing {
        server.releasing.send_modify(|n| *n += 1);
        Releasing(server.clone())
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        self.0.releasing.send_modify(|n| *n -= 1);
    }
}

/// A client's place among the server's clients, for as long as it lives.
pub struct ClientGuard {
    server: Arc<Server>,
    id: u64,
    gauge: Arc<ReadGauge>,
    evict: Arc<Notify>,
}

impl ClientGuard {
    /// How the client's requests are read: small, within its share of the server's pool.
    pub fn limits(&self) -> FrameLimits {
        FrameLimits::client_of_server(
            MAX_REQUEST,
            Budget {
                pool: self.server.requests.clone(),
                allowance: CLIENT_ALLOWANCE,
                gauge: self.gauge.clone(),
            },
        )
    }

    /// Resolves when the server closes this client to make room for another.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// Why a client was closed to make room for another.
pub fn evicted_error() -> RpcError {
    RpcError::new(
        odu_proto::error_code::BUSY,
        format!(
            "closed to make room: the odu server of this checkout is at its connection limit ({MAX_CLIENTS} clients) and this connection held an unfinished request, or had sent none"
        ),
    )
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.server.clients.lock().expect("clients lock").live.remove(&self.id);
    }
}

impl Server {
    /// The server of the checkout at `repo` (its `.ci` is `ci`), knowing the ledger's runs. It
    /// serves whatever connections it is handed: [`serve`] binds the socket and accepts them.
    pub fn new(repo: PathBuf, ci: PathBuf, socket: PathBuf, verbose: bool) -> Arc<Server> {
        // Read without the nodes: a long history of a large graph is megabytes of them.
        let history = ledger::summaries(&ci, None).map(|(runs, _)| runs).unwrap_or_default();
        Arc::new(Server {
            repo,
            ci,
            socket,
            state: Mutex::new(State::default()),
            runs: Mutex::new(Hub::new(RunsValue { revision: 1, runs: Arc::new(history) }, 256)),
            clients: Mutex::new(Clients::default()),
            requests: BufferPool::new(REQUEST_POOL),
            verbose,
            posting: Mutex::new(Vec::new()),
            releasing: watch::Sender::new(0),
            spares: Arc::default(),
        })
    }

    /// Takes a new client in. At the limit, one that is not being served is closed to make
    /// room: the one holding the most of an unfinished request, else the oldest that has not
    /// sent a whole request yet (odu's clients send their handshake at once), so clients that
    /// trickle requests or say nothing cannot keep others out. When every client is being
    /// served, the new one is refused.
    pub fn admit(self: &Arc<Self>) -> Result<ClientGuard, RpcError> {
        let mut clients = self.clients.lock().expect("clients lock");
        if clients.live.len() >= MAX_CLIENTS {
            let holder = clients
                .live
                .iter()
                .map(|(id, slot)| (slot.gauge.unfinished.load(Ordering::SeqCst), *id))
                .filter(|(unfinished, _)| *unfinished > 0)
                .max()
                .map(|(_, id)| id);
            // A silent one is shut atomically: if its first line arrives meanwhile, it stays.
            let victim = holder.or_else(|| {
                clients
                    .live
                    .iter()
                    .find(|(_, slot)| slot.gauge.silent() && slot.gauge.shut_if_silent())
                    .map(|(id, _)| *id)
            });
            let Some(victim) = victim else {
                return Err(RpcError::new(
                    odu_proto::error_code::BUSY,
                    format!(
                        "the odu server of this checkout is at its connection limit ({MAX_CLIENTS} clients): end some of its clients (odu attach, logs -f, wait) or try again later"
                    ),
                ));
            };
            if let Some(slot) = clients.live.remove(&victim) {
                slot.evict.notify_one();
            }
        }
        clients.next_id += 1;
        let id = clients.next_id;
        let (gauge, evict) = (Arc::new(ReadGauge::default()), Arc::new(Notify::new()));
        clients.live.insert(id, ClientSlot { gauge: gauge.clone(), evict: evict.clone() });
        Ok(ClientGuard { server: self.clone(), id, gauge, evict })
    }

    /// Clients being served.
    pub fn client_count(&self) -> usize {
        self.clients.lock().expect("clients lock").live.len()
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

    /// `run.start`: one run per checkout; `supersede` cancels the live run (or abandons one still
    /// being prepared) and waits for its end. The preparation runs on its own task: when the
    /// caller stops waiting (its client went away) before the preparation commits, the run is
    /// abandoned: it never starts, and the checkout is free for the next `run.start` at once.
    pub async fn start_run(self: &Arc<Self>, params: StartParams) -> Result<Started, RpcError> {
        enum Busy {
            Live(RunHandles, watch::Receiver<bool>),
            Starting(watch::Receiver<bool>),
        }
        let (claim, settled) = loop {
            let busy = {
                let mut state = self.state.lock().expect("state lock");
                match (&state.starting, &state.live) {
                    (Some(starting), _) => {
                        if !params.flags.supersede {
                            return Err(RpcError::refused(
                                "another run is being started in this checkout: wait for it to start (then odu attach follows it), or pass --supersede to replace it",
                            ));
                        }
                        if starting.claim.abandon(Abandoned::Superseded) {
                            state.starting = None;
                            self.say("superseding a run still being prepared");
                            continue;
                        }
                        // It committed: wait for it to be live, then cancel it.
                        Busy::Starting(starting.settled.clone())
                    }
                    (None, Some(live)) => Busy::Live(live.handles.clone(), live.done.clone()),
                    (None, None) => {
                        let claim = Claim::new();
                        let (settled_tx, settled_rx) = watch::channel(false);
                        state.starting = Some(Starting { claim: claim.clone(), settled: settled_rx });
                        break (claim, settled_tx);
                    }
                }
            };
            match busy {
                Busy::Starting(mut settled) => {
                    let _ = settled.wait_for(|settled| *settled).await;
                }
                Busy::Live(handles, mut done) => {
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
            }
        };
        let mut abandon = AbandonOnDrop { server: self.clone(), claim: Some(claim.clone()) };
        let (answer, answered) = oneshot::channel();
        let server = self.clone();
        let task_claim = claim.clone();
        tokio::spawn(async move {
            let repo = server.repo.clone();
            let spares = server.spares.clone();
            let commit_claim = task_claim.clone();
            // Blocking work (git, just, config files): if it never returns, only this task
            // waits for it.
            let prepared = tokio::task::spawn_blocking(move || {
                let env = params.env.clone();
                start::prepare(&repo, &params, env.as_ref(), &spares, &|| commit_claim.commit())
            })
            .await
            .unwrap_or_else(|e| Err(CliError::refused(format!("preparing the run failed: {e}"))));
            let result = match prepared {
                Ok(prepared) => Ok(server.go_live(prepared, &task_claim)),
                Err(e) => {
                    server.stop_starting(&task_claim);
                    if let Some(why) = task_claim.abandoned_now() {
                        server.say(&format!(
                            "an abandoned run.start ({why}) finished preparing: nothing started"
                        ));
                    }
                    Err(e.to_rpc())
                }
            };
            let _ = settled.send(true);
            let _ = answer.send(result);
        });
        let result = tokio::select! {
            result = answered => result
                .unwrap_or_else(|_| Err(RpcError::refused("preparing the run failed inside the server: see odu.serve.log"))),
            why = claim.abandoned() => Err(RpcError::refused(format!("this run did not start: {why}"))),
        };
        abandon.claim = None;
        result
    }

    /// Frees the checkout for the next `run.start`, if `claim` still holds it.
    fn stop_starting(&self, claim: &Claim) {
        let mut state = self.state.lock().expect("state lock");
        if state.starting.as_ref().is_some_and(|s| s.claim.is(claim)) {
            state.starting = None;
        }
    }

    /// Starts a prepared run and makes it the live one.
    fn go_live(self: &Arc<Self>, prepared: start::Prepared, claim: &Claim) -> Started {
        let start::Prepared { coordinator, specs, started, guards } = prepared;
        let summary = coordinator.record.summary();
        let (lanes_closed, closed) = tokio::sync::oneshot::channel();
        let (handles, task) = coordinator.start(specs, lanes_closed);
        let (done_tx, done_rx) = watch::channel(false);
        {
            let mut state = self.state.lock().expect("state lock");
            state.live = Some(Live { handles: handles.clone(), done: done_rx });
            if state.starting.as_ref().is_some_and(|s| s.claim.is(claim)) {
                state.starting = None;
            }
        }
        RunsValue::publish(&mut self.runs.lock().expect("hub lock"), summary);
        self.say(&format!("run {} started", started.run));
        let server = self.clone();
        let (snapshot, lock) = guards;
        // The worktree goes once no runner is left in it (or the run's task is gone), beside
        // the final record's write; clients hear that the run ended without waiting for it (a
        // checkout of thousands of files takes a while to remove, and nothing needs it gone).
        // The server does not stop before it is gone.
        let releasing = Releasing::new(self);
        tokio::spawn(async move {
            let _ = closed.await;
            let _ = tokio::task::spawn_blocking(move || drop(snapshot)).await;
            drop(releasing);
        });
        tokio::spawn(async move {
            let finished = task.await;
            let finished = match finished {
                Ok(finished) => Some(finished),
                Err(e) => {
                    log_line(&format!("run {} failed inside the server: {e}", handles.reference));
                    None
                }
            };
            // The run lock is released before anyone hears that the run ended: here, as closing
            // one descriptor costs less than handing it to another thread.
            drop(lock);
            server.state.lock().expect("state lock").live = None;
            let mut still_posting = None;
            let header = match finished {
                Some(mut finished) => {
                    if let Some(poster) = finished.poster.take() {
                        poster.ended();
                        still_posting = Some((poster, finished.record.clone()));
                    }
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
                    outcome: RunOutcome::Incomplete,
                    record_error: Some(
                        "the run failed inside the server: its record may be out of date".into(),
                    ),
                    ..(*handles.header.lock().expect("hub lock").current().header).clone()
                },
            };
            HeaderValue::publish(&mut handles.header.lock().expect("hub lock"), header.clone());
            if let Some((poster, record)) = still_posting {
                server.keep_posting(poster, record, header, &handles);
            }
            let _ = done_tx.send(true);
            // Once its clients heard the end, the next run's runner starts: off both runs' paths.
            // The forwarders the ended header just woke wait in this thread's queue, behind this
            // task: yield to them first, and start the process off the runtime's threads (a
            // process start holds its thread until the child has exec'd), or every client heard
            // the end a millisecond or two later.
            tokio::task::yield_now().await;
            let spares = server.spares.clone();
            let _ = tokio::task::spawn_blocking(move || spares.refill()).await;
        });
        started
    }

    fn busy(&self) -> bool {
        let state = self.state.lock().expect("state lock");
        state.live.is_some()
            || state.starting.is_some()
            || self.client_count() > 0
            || self.owes_statuses()
            || *self.releasing.borrow() > 0
    }

    /// A poster of an ended run still tries to post what it owes.
    fn owes_statuses(&self) -> bool {
        let mut posting = self.posting.lock().expect("posting lock");
        posting.retain(|(_, report)| !report.borrow().done && report.has_changed().is_ok());
        !posting.is_empty()
    }

    /// How posting stands for an ended run whose poster still works.
    pub fn posting_of(&self, run: &str) -> Option<odu_proto::Posting> {
        let posting = self.posting.lock().expect("posting lock");
        posting.iter().find(|(r, _)| r == run).map(|(_, report)| report.borrow().posting())
    }

    /// Waits (bounded) until no ended run's worktree is still being removed.
    /// Tells the spare runner to go, waiting (bounded) for it to remove its scratch folder.
    pub async fn close_spares(&self, bound: Duration) {
        self.spares.close(bound).await;
    }

    async fn finish_releasing(&self, bound: Duration) {
        let mut releasing = self.releasing.subscribe();
        let _ = tokio::time::timeout(bound, releasing.wait_for(|n| *n == 0)).await;
    }

    /// Waits (bounded) for the posters of ended runs to finish.
    async fn finish_posting(&self, bound: Duration) {
        let watches: Vec<_> =
            self.posting.lock().expect("posting lock").iter().map(|(_, w)| w.clone()).collect();
        let all = async {
            for mut watch in watches {
                let _ = watch.wait_for(|r| r.done || r.settled).await;
            }
        };
        let _ = tokio::time::timeout(bound, all).await;
    }

    /// Keeps a run's poster going after the run ended: each change of what it owes rewrites
    /// the run's record (`unposted`) and republishes its ended header (`posting`), until the
    /// poster finishes. Meanwhile the server does not idle out.
    fn keep_posting(
        self: &Arc<Self>,
        poster: github::Poster,
        mut record: RunRecord,
        mut header: Header,
        handles: &RunHandles,
    ) {
        let mut watch = poster.watch();
        self.posting.lock().expect("posting lock").push((record.reference(), watch.clone()));
        let (ci, hub) = (self.ci.clone(), handles.header.clone());
        tokio::spawn(async move {
            // The report as it stands first (the poster may have finished already), then each
            // change.
            let mut first = true;
            while std::mem::take(&mut first) || watch.changed().await.is_ok() {
                watch.borrow_and_update();
                let report = poster.report();
                if report.owed != record.unposted {
                    record.unposted = report.owed.clone();
                    if let Err(e) = ledger::write(&ci, &record) {
                        log_line(&format!(
                            "cannot record the statuses run {} still owes: {e}",
                            record.reference()
                        ));
                    }
                }
                let posting = Some(report.posting());
                if header.posting != posting {
                    header.posting = posting;
                    HeaderValue::publish(&mut hub.lock().expect("hub lock"), header.clone());
                }
                if report.done {
                    break;
                }
            }
        });
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
pub(crate) fn log_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "odu serve: {line}");
}
