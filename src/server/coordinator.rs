//! The coordinator: the single event loop that owns a run, select → apply → execute.
//!
//! What happens to the run (lane reports, an interrupt, an operator's rerun or cancel, ticks)
//! is applied to the run's reducer ([`odu_core::Run`]); the coordinator carries out the
//! [`Effects`] it returns: it publishes the changed nodes and header to the run's cells, sends
//! commands to the lanes and writes the ledger record. It decides nothing itself. The
//! coordinator lives inside the server (`odu serve`), one per live run.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use odu_core::run::{Command, Effects, Phase, Refusal, RunEvent, RunRequest, Save};
use odu_core::{NodeId, NodeStatus, NodeView, Run};
use odu_proto::{Header, NodesFrame};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::clock::now_ms;
use crate::lane::{LaneCommand, LaneLogs, LaneReport, LaneSpec};
use crate::link::cell::{HeaderValue, Hub, NodesValue};
use crate::server::github::Poster;
use crate::trail::ledger::{self, RunRecord};
use crate::trail::retention;
use crate::trail::spool::Spool;

/// A run about to start: its reducer, where its ledger lives, and its record (what the run
/// does not decide: repo, seq, selectors, flags, pid).
pub struct Coordinator {
    pub run: Run,
    pub ci_dir: PathBuf,
    pub record: RunRecord,
    /// Where the run posts its GitHub commit statuses, if it does.
    pub post: Option<crate::server::github::Target>,
}

/// A line for the server's log (`odu: …`). Never panics: that log may sit on the full disk
/// that is the reason for the line.
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "odu: {line}");
}

/// A lane's answer to one command an operator's request became.
pub struct LaneAnswer {
    pub platform: String,
    /// The lane's reply; a dropped sender means the lane had finished.
    pub answer: oneshot::Receiver<Result<(), String>>,
}

/// An operator's request on its way to the coordinator, and where its answer goes: the lanes'
/// answers to the commands it became, or why the run refused it.
pub struct Asked {
    pub request: RunRequest,
    pub reply: oneshot::Sender<Result<Vec<LaneAnswer>, Refusal>>,
}

/// A live run as its server holds it: the cells, the trail and the way to the coordinator.
#[derive(Clone)]
pub struct RunHandles {
    /// `<sha7>#<seq>`.
    pub reference: String,
    pub nodes: Arc<Mutex<Hub<NodesValue>>>,
    pub header: Arc<Mutex<Hub<HeaderValue>>>,
    /// Trail spools by fan-in id.
    pub logs: Arc<BTreeMap<String, Spool>>,
    /// Reruns and cancels, answered by the coordinator.
    pub requests: mpsc::UnboundedSender<Asked>,
    /// Asks the coordinator to cancel the whole run.
    pub cancel_run: mpsc::UnboundedSender<()>,
    /// The aliases a node can be named by, as the run's record has them.
    pub aliases: Arc<std::collections::BTreeMap<String, String>>,
}

/// Why a request to a live run got no commands.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The run ended while the request was on its way.
    #[error("run {0} has ended")]
    Ended(String),
}

impl RunHandles {
    /// Hands `request` to the coordinator; the answer is the lanes' answers to the commands it
    /// became.
    pub async fn ask(&self, request: RunRequest) -> Result<Vec<LaneAnswer>, AskError> {
        let (reply, answer) = oneshot::channel();
        let ended = || AskError::Ended(self.reference.clone());
        self.requests.send(Asked { request, reply }).map_err(|_| ended())?;
        Ok(answer.await.map_err(|_| ended())??)
    }
}

/// How a finished run ended, with its final state and record.
pub struct Finished {
    pub record: RunRecord,
    /// The header to publish as the run's last word (phase `ended`).
    pub header: Header,
    /// The run's poster, still posting what it owes.
    pub poster: Option<Poster>,
}

/// The coordinator's side of the `nodes` cell.
struct NodesCell {
    hub: Arc<Mutex<Hub<NodesValue>>>,
    positions: BTreeMap<NodeId, usize>,
    cell: NodesValue,
}

impl NodesCell {
    fn new(run: &Run) -> NodesCell {
        let cell = NodesValue {
            revision: 1,
            name: Arc::from(run.meta().pipeline.as_str()),
            order: Arc::new(run.order().iter().map(NodeId::to_string).collect()),
            nodes: run.views().iter().cloned().collect(),
        };
        let positions = run.order().iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        let hub = Hub::new(cell.share(), 1024);
        NodesCell { hub: Arc::new(Mutex::new(hub)), positions, cell }
    }

    /// Publishes the current views of `ids` as one delta.
    fn publish(&mut self, run: &Run, ids: &[NodeId]) {
        let mut nodes = Vec::new();
        for id in ids {
            if let (Some(&at), Some(view)) = (self.positions.get(id), run.view(id))
                && self.cell.nodes.get(at) != Some(view)
            {
                self.cell.nodes.set(at, view.clone());
                nodes.push(NodeView::clone(view));
            }
        }
        if nodes.is_empty() {
            return;
        }
        self.cell.revision += 1;
        let delta = NodesFrame::Delta { revision: self.cell.revision, nodes };
        self.hub.lock().expect("hub lock").publish(self.cell.share(), delta);
    }
}

/// The least time between two writes of a record for progress alone (a terminal write is
/// never held back): a second, and 5 ms a node past 200 nodes. Only a server that died leaves
/// its run to be read from the record (a live run is served from memory), and every write makes
/// a new file, a temporary copy renamed over the record, which on a file system that freed many
/// files lately costs up to a millisecond (a chain of 200 short nodes spent 8 % of the server's
/// CPU writing progress 120 ms apart). Each write rewrites every node, so a long run of many
/// nodes (a chain, whose length grows with its node count) costs the square of its size in
/// writes at a fixed gap: at 0.5 ms a node (a second up to 2,000 nodes), a chain of 2,000
/// nodes rewrote its record every second of its 50 s, a seventh of the server's CPU.
fn progress_gap(nodes: usize) -> Duration {
    Duration::from_secs(1).max(Duration::from_millis(5) * u32::try_from(nodes).unwrap_or(u32::MAX))
}

/// The effects of a burst of events, gathered to be carried out once (one `nodes` delta, one
/// header, one record write). A node changed by several of them is listed once, where it first
/// changed; whether it is listed already is asked of a set, not of the list: a burst of 2,000
/// nodes' reports compared each id with every one before it, a sixth of a wide run's server
/// instructions at 2,000 nodes and a cost that grew with the square of the burst.
#[derive(Default)]
struct Gathered {
    fx: Effects,
    listed: HashSet<NodeId>,
}

impl Gathered {
    fn add(&mut self, later: Effects) {
        let fx = &mut self.fx;
        for id in later.changed {
            if !self.listed.contains(&id) {
                self.listed.insert(id.clone());
                fx.changed.push(id);
            }
        }
        fx.transitions.extend(later.transitions);
        fx.header |= later.header;
        fx.commands.extend(later.commands);
        fx.save = fx.save.max(later.save);
    }
}

/// The running coordinator: the run and everything its effects reach.
struct Driver {
    run: Run,
    record: RunRecord,
    ci_dir: PathBuf,
    lanes: BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>,
    cell: NodesCell,
    header: Arc<Mutex<Hub<HeaderValue>>>,
    /// The header clients last heard.
    published: Header,
    /// When the record is written for progress alone: set by the first change it does not
    /// show yet, [`progress_gap`] after the last write (at once if that has passed).
    progress_save: Option<tokio::time::Instant>,
    /// A settled run's record write, due at this instant unless its lanes closed first (the
    /// final write then says everything it would have).
    settle_save: Option<tokio::time::Instant>,
    /// Told once every lane has closed.
    lanes_closed: Option<oneshot::Sender<()>>,
    poster: Option<Poster>,
    /// When the record was last written.
    saved_at: tokio::time::Instant,
}

impl Coordinator {
    /// Starts the run: the trail is claimed, the record written and the cells exist before any
    /// lane starts, so the server can serve them (provisioning included) from the first
    /// moment. The task ends with the run, its record final.
    ///
    /// `lanes_closed` fires once every lane has closed (its runner gone), before the final
    /// record is written: what the nodes ran in can be released beside that write.
    pub fn start(
        self,
        specs: Vec<LaneSpec>,
        lanes_closed: oneshot::Sender<()>,
    ) -> (RunHandles, tokio::task::JoinHandle<Finished>) {
        let Coordinator { run, ci_dir, record, post } = self;
        let reference = record.reference();
        let span = tracing::debug_span!("run", run = %reference);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let mut lanes: BTreeMap<String, mpsc::UnboundedSender<LaneCommand>> = BTreeMap::new();
        let mut trail = BTreeMap::new();
        let mut starts = Vec::new();
        let mut dead = Vec::new();
        for spec in specs {
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            let platform = spec.platform.clone();
            match LaneLogs::create(&spec) {
                Ok(logs) => {
                    for (id, spool) in &logs.spools {
                        trail.insert(NodeId::new(id.as_str(), platform.as_str()).to_string(), spool.clone());
                    }
                    starts.push((spec, logs, cmd_rx));
                    lanes.insert(platform, cmd_tx);
                }
                Err(e) => {
                    let reason = format!(
                        "cannot create the logs of lane {platform} in {}: {e}",
                        spec.log_dir.display()
                    );
                    note(&reason);
                    dead.push((platform, reason));
                }
            }
        }
        let cell = NodesCell::new(&run);
        let published = run.header();
        let header = Hub::new(HeaderValue { revision: 1, header: Arc::new(published.clone()) }, 64);
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let handles = RunHandles {
            reference,
            nodes: cell.hub.clone(),
            header: Arc::new(Mutex::new(header)),
            logs: Arc::new(trail),
            requests: requests_tx,
            cancel_run: cancel_tx,
            aliases: Arc::new(record.aliases.clone()),
        };
        let mut driver = Driver {
            run,
            record,
            ci_dir,
            lanes,
            cell,
            header: handles.header.clone(),
            published,
            progress_save: None,
            settle_save: None,
            lanes_closed: Some(lanes_closed),
            poster: post.map(Poster::start),
            saved_at: tokio::time::Instant::now(),
        };
        let _entered = span.enter();
        // The record reserved for the run already lists every node: it is written again once
        // something changes. Older runs' logs are pruned when it ends, not now: removing
        // thousands of files beside the run's own log files slows their creation (on ext4
        // without a journal, a new inode is found only past the recently freed ones).
        // A lane without logs never starts: it died, and it is closed.
        for (platform, reason) in dead {
            let at = now_ms();
            let mut gathered = Gathered::default();
            gathered.add(driver.apply(RunEvent::LaneDied { platform: platform.clone(), reason, at }));
            gathered.add(driver.apply(RunEvent::LaneClosed { platform, at }));
            driver.execute(gathered.fx);
        }
        for (spec, logs, cmd_rx) in starts {
            if spec.remote.is_some() {
                tokio::spawn(crate::lane::remote::run_remote(spec, logs, cmd_rx, reports_tx.clone()));
            } else {
                tokio::spawn(crate::lane::run_local(spec, logs, cmd_rx, reports_tx.clone()));
            }
        }
        drop(reports_tx);
        drop(_entered);
        let task = tokio::spawn(driver.drive(reports, cancel_rx, requests).instrument(span));
        (handles, task)
    }
}

/// How long a settled run's record may wait for its lanes to close before it is written
/// anyway: a local lane closes in milliseconds, and then one write says both.
const SETTLE_SAVE_GRACE: Duration = Duration::from_millis(200);

/// Resolves when the poster's report changes (never, without a poster or once it finished).
async fn posting_changed(posting: &mut Option<tokio::sync::watch::Receiver<crate::server::github::Report>>) {
    if let Some(watch) = posting
        && watch.changed().await.is_ok()
    {
        return;
    }
    *posting = None;
    std::future::pending().await
}

impl Driver {
    async fn drive(
        mut self,
        mut reports: mpsc::UnboundedReceiver<LaneReport>,
        mut cancel_rx: mpsc::UnboundedReceiver<()>,
        mut requests: mpsc::UnboundedReceiver<Asked>,
    ) -> Finished {
        let mut posting = self.poster.as_ref().map(Poster::watch);
        while self.run.phase() != Phase::Ended {
            tokio::select! {
                report = reports.recv() => {
                    let Some(report) = report else { break };
                    // Every report already waiting joins this one: a burst of node changes
                    // becomes one delta for every subscriber.
                    let mut gathered = Gathered::default();
                    let mut next = Some(report);
                    while let Some(report) = next {
                        let later = self.absorb(report);
                        gathered.add(later);
                        next = reports.try_recv().ok();
                    }
                    self.execute(gathered.fx);
                }
                Some(()) = cancel_rx.recv() => {
                    let fx = self.apply(RunEvent::Interrupted { at: now_ms() });
                    self.execute(fx);
                    if let Some(poster) = &self.poster {
                        poster.stop("interrupted");
                    }
                }
                () = posting_changed(&mut posting) => self.publish_header(),
                () = crate::clock::until(self.settle_save) => self.save(Save::Now),
                () = crate::clock::until(self.progress_save) => self.save(Save::Soon),
                Some(asked) = requests.recv() => self.answer(asked),
            }
        }
        // Every lane's reports ended without a word of its closing: each is closed now.
        let open: Vec<String> =
            self.run.lanes().iter().filter(|l| l.open).map(|l| l.platform.clone()).collect();
        for platform in open {
            let fx = self.apply(RunEvent::LaneClosed { platform, at: now_ms() });
            self.execute(fx);
        }
        self.drop_unstarted_logs();
        prune_older_runs(&self.ci_dir);
        // The server publishes the ended header once the run's lock is released, so a client
        // that sees it can start the next run at once.
        let mut header = self.run.header();
        header.posting = self.poster.as_ref().map(|p| p.report().posting());
        Finished { header, record: self.record, poster: self.poster }
    }

    /// A node that never started (skipped, or cancelled before it ran) leaves no log: its
    /// file, claimed empty when the run started, is removed once the run is over.
    fn drop_unstarted_logs(&self) {
        for (id, view) in self.run.nodes() {
            let never_ran = matches!(view.status, NodeStatus::Skipped | NodeStatus::Cancelled);
            if view.started_at.is_some() || !never_ran {
                continue;
            }
            if let Err(e) =
                ledger::remove_empty_trail(&self.ci_dir, &self.record.label, self.record.seq, &id.to_string())
            {
                note(&format!("the empty log of {id} stays: {e}"));
            }
        }
    }

    /// Applies one event; every transition is a diagnostic.
    fn apply(&mut self, event: RunEvent) -> Effects {
        let fx = self.run.apply(event);
        for t in &fx.transitions {
            tracing::debug!(run = %self.run.meta().run, node = %t.node, from = ?t.from, to = ?t.to, "transition");
        }
        fx
    }

    /// Turns one lane report into a run event.
    fn absorb(&mut self, report: LaneReport) -> Effects {
        match report {
            LaneReport::Nodes { platform, nodes } => self.apply(RunEvent::LaneReported { platform, nodes }),
            LaneReport::LogTruncated { platform, id, reason } => {
                let node = NodeId::new(id, platform);
                note(&format!("the log of {node} could not be written whole: {reason}"));
                self.apply(RunEvent::LogTruncated { node, reason })
            }
            LaneReport::Died { platform, reason } => {
                self.apply(RunEvent::LaneDied { platform, reason, at: now_ms() })
            }
            LaneReport::Closed { platform } => self.apply(RunEvent::LaneClosed { platform, at: now_ms() }),
        }
    }

    /// Carries out what the run asks, in its order: the `nodes` delta, the header, the lanes'
    /// commands, the record.
    fn execute(&mut self, fx: Effects) {
        self.cell.publish(&self.run, &fx.changed);
        if let Some(poster) = &self.poster {
            for t in &fx.transitions {
                let duration = self.run.view(&t.node).and_then(|v| v.duration_ms);
                poster.transition(&t.node.to_string(), t.to, duration, &self.run.log_path(&t.node));
            }
        }
        if fx.header {
            self.publish_header();
        }
        let commanded = !fx.commands.is_empty();
        for command in fx.commands {
            let _ = self.send(command);
        }
        match fx.save {
            None => {}
            Some(Save::Soon) => {
                let due = self.saved_at + progress_gap(self.record.nodes.len());
                self.progress_save.get_or_insert(due);
            }
            // The lanes were just told to stop (the run settled): the record is written once
            // they have closed, with the final write, or after a grace if they are slow to.
            Some(Save::Now) if commanded => {
                self.settle_save.get_or_insert(tokio::time::Instant::now() + SETTLE_SAVE_GRACE);
            }
            Some(kind) => {
                if self.run.lanes().iter().all(|lane| !lane.open)
                    && let Some(closed) = self.lanes_closed.take()
                {
                    let _ = closed.send(());
                }
                self.save(kind)
            }
        }
    }

    /// Publishes the header if clients would see it change. The `ended` header is the
    /// server's to publish, after it released the run's lock.
    fn publish_header(&mut self) {
        let mut header = self.run.header();
        header.posting = self.poster.as_ref().map(|p| p.report().posting());
        if header.phase == Phase::Ended || header == self.published {
            return;
        }
        self.published = header.clone();
        HeaderValue::publish(&mut self.header.lock().expect("hub lock"), header);
    }

    /// Sends one command to its lane; a rerun or cancel comes with the lane's answer.
    fn send(&self, command: Command) -> Option<LaneAnswer> {
        let platform = command.platform().to_string();
        let lane = self.lanes.get(&platform);
        let (lane_command, answer) = match command {
            Command::Shutdown { .. } => (LaneCommand::Shutdown, None),
            Command::Rerun(node) => {
                let (reply, answer) = oneshot::channel();
                (LaneCommand::Rerun { id: node.task, reply }, Some(answer))
            }
            Command::Cancel(node) => {
                let (reply, answer) = oneshot::channel();
                (LaneCommand::Cancel { id: node.task, reply }, Some(answer))
            }
        };
        // A lane that is gone drops the command, and with it the reply: it has finished.
        if let Some(lane) = lane {
            let _ = lane.send(lane_command);
        }
        answer.map(|answer| LaneAnswer { platform, answer })
    }

    /// An operator's request: refused by the run, or commands to its lanes whose answers go
    /// back to the asker.
    fn answer(&mut self, asked: Asked) {
        tracing::debug!(run = %self.run.meta().run, request = ?asked.request, "request");
        let answer = self
            .run
            .request(asked.request)
            .map(|commands| commands.into_iter().filter_map(|command| self.send(command)).collect());
        let _ = asked.reply.send(answer);
    }

    /// Writes the ledger record as the run has it. A failed write is remembered by the run
    /// (the `ended` header carries the last one) and noted in the server's log; a later write
    /// that succeeds clears it.
    fn save(&mut self, kind: Save) {
        self.progress_save = None;
        self.settle_save = None;
        self.saved_at = tokio::time::Instant::now();
        self.record.take_run(&self.run);
        if let Some(poster) = &self.poster {
            self.record.unposted = poster.report().owed;
        }
        let record = &self.record;
        let path = format!(".ci/{}/runs/{}.json", record.label, record.seq);
        let mut written = ledger::write(&self.ci_dir, record);
        if kind == Save::Final
            && let Err(e) = &written
        {
            // No room for a temporary copy (a full disk): the final record takes the old one's
            // place, so the ledger never keeps a `running` record of a run that ended (which
            // would later read as a server that died mid-run).
            if ledger::overwrite(&self.ci_dir, record).is_ok() {
                note(&format!("{path} was rewritten in place: no room for a temporary copy ({e})"));
                written = Ok(());
            }
        }
        let error = written.err().map(|e| format!("cannot write {path}: {e}"));
        if let Some(error) = &error
            && self.run.record_error() != Some(error.as_str())
        {
            note(&format!("the run record is not up to date: {error}"));
        }
        let fx = self.apply(RunEvent::RecordWritten { error });
        self.execute(fx);
    }
}

/// Removes the logs of the runs past the newest few ([`retention::prune`]), off the event loop,
/// when a run ends: a run still going is `running`, so it is never pruned. What was removed
/// goes to the server's log.
fn prune_older_runs(ci: &std::path::Path) {
    let ci = ci.to_path_buf();
    tokio::task::spawn_blocking(move || match retention::prune(&ci, retention::keep_runs(), now_ms()) {
        Ok(pruned) => {
            if !pruned.runs.is_empty() {
                let runs: Vec<&str> = pruned.runs.iter().map(|r| r.run.as_str()).collect();
                note(&format!(
                    "pruned the logs of {} run(s) ({}), keeping the last {}: {}",
                    runs.len(),
                    retention::format_bytes(pruned.bytes),
                    pruned.keep,
                    runs.join(", ")
                ));
            }
            for line in pruned.notes {
                note(&line);
            }
        }
        Err(e) => note(&format!("cannot prune old runs' logs: {e}")),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_writes_of_a_large_record_are_spaced_by_its_size() {
        assert_eq!(progress_gap(1), Duration::from_secs(1));
        assert_eq!(progress_gap(200), Duration::from_secs(1));
        assert_eq!(progress_gap(1000), Duration::from_secs(5));
        assert_eq!(progress_gap(2000), Duration::from_secs(10));
        // Writes per node-second stay bounded whatever the size: nothing grows as N squared.
        let per_write = |n: usize| n as f64 / progress_gap(n).as_secs_f64();
        assert!(per_write(20_000) <= per_write(2_000) * 1.01);
    }
    use odu_core::NodeStatus;
    use odu_core::run::Transition;

    #[test]
    fn a_burst_of_effects_is_carried_out_once() {
        let (a, b) = (NodeId::new("a", "p"), NodeId::new("b", "p"));
        let step = |node: &NodeId, to| Transition { node: node.clone(), from: NodeStatus::Pending, to };
        let mut gathered = Gathered::default();
        gathered.add(Effects {
            changed: vec![a.clone()],
            transitions: vec![step(&a, NodeStatus::Running)],
            save: Some(Save::Soon),
            ..Effects::default()
        });
        gathered.add(Effects {
            changed: vec![b.clone(), a.clone()],
            transitions: vec![step(&b, NodeStatus::Ok)],
            header: true,
            commands: vec![Command::Shutdown { platform: "p".into() }],
            save: Some(Save::Now),
        });
        let fx = &gathered.fx;
        assert_eq!(fx.changed, vec![a.clone(), b.clone()], "each node once, in the order first changed");
        assert_eq!(fx.transitions.len(), 2);
        assert!(fx.header);
        assert_eq!(fx.commands.len(), 1);
        assert_eq!(fx.save, Some(Save::Now), "the most urgent write wins");
        gathered.add(Effects::default());
        assert_eq!(gathered.fx.save, Some(Save::Now));
    }
}
