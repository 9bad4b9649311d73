//! The run reducer: the state of one run across its lanes, changed only by [`Run::apply`].
//!
//! A run holds every node's view under its [`NodeId`] (`<task>@<platform>`), in one order (per
//! lane: its `_ci-setup`, then its tasks in dependency order), the state of each lane, and the
//! facts that are not node statuses (interrupted, logs cut short, a record that could not be
//! written). What happens to a run is a [`RunEvent`]; what its driver must do about it comes
//! back as [`Effects`]. An operator's rerun or cancel is a [`RunRequest`]: it changes nothing
//! here, it becomes a [`Command`] to the lane that owns the node (or a [`Refusal`]), and the
//! lane's next report shows what it did.
//!
//! Scheduling (which node starts, which is skipped) is each lane's own reducer
//! ([`crate::LaneState`]); the run mirrors what lanes report. It decides only what no lane can:
//! a lane that dies errors what it was running and skips what waited; an interrupt cancels what
//! runs, skips what waited and stops every lane; the run settles when every node is terminal and ends when every
//! lane closed and its final record was written. The outcome is computed from node statuses
//! alone (`passed` iff every node is `ok`), except that a run stopped as a whole is
//! `incomplete`.
//!
//! The same type is a client's copy of a served run ([`Run::mirror`]): it applies the frames
//! it receives ([`RunEvent::Observed`], [`RunEvent::HeaderObserved`]) and yields the same
//! transitions and verdict the server's run does.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::lane::{NodeReport, NodeView, TaskSpec, shell_words};
use crate::node_id::{NodeId, SETUP};
use crate::status::{NodeStatus, Outcome, RunOutcome};

#[cfg(test)]
mod tests;

/// Exit code of a command whose run passed.
pub const EXIT_PASSED: i32 = 0;
/// Exit code of a command whose run is red (failed, incomplete, unrecorded) or was refused.
pub const EXIT_RED: i32 = 1;
/// Exit code of a command whose run was interrupted.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Lanes are up and nodes are running (or about to).
    Running,
    /// Every node is terminal; lanes are closing.
    Settled,
    /// The run is over and its record is final. Nothing about it changes again.
    Ended,
}

/// What identifies a run, fixed when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMeta {
    /// `<sha7>#<seq>` (`<sha7>+dirty#<seq>` for a live-tree run).
    pub run: String,
    pub sha: String,
    /// `<sha7>` or `<sha7>+dirty`: the folder under `.ci`.
    pub label: String,
    pub pipeline: String,
    /// ms since the Unix epoch.
    pub started_at: u64,
}

/// One lane as a run is planned: its platform, its host and its tasks in dependency order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanePlan {
    pub platform: String,
    /// `localhost` or an ssh destination.
    pub host: String,
    pub tasks: Vec<TaskSpec>,
}

/// Where a lane is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaneStatus {
    /// Started; its runner has reported nothing yet (connecting, copying, configuring).
    Provisioning,
    /// Its runner reports node views.
    Running,
    /// Asked to stop (the run settled or was interrupted); its link is closing.
    Stopping,
    /// Closed after it was asked to stop.
    Finished,
    /// Its link died before it was asked to stop.
    Died,
}

impl LaneStatus {
    /// Whether the lane still takes commands.
    pub fn is_live(self) -> bool {
        matches!(self, LaneStatus::Provisioning | LaneStatus::Running)
    }
}

/// One lane of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    pub platform: String,
    pub host: String,
    pub status: LaneStatus,
    /// Why it died.
    pub death: Option<String>,
    /// Whether its link is still open (a lane that died is closing until it closes).
    pub open: bool,
}

/// A node that changed status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub node: NodeId,
    pub from: NodeStatus,
    pub to: NodeStatus,
}

/// A node's log cut short because it could not be written (a full disk); the node is errored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruncatedLog {
    pub node: NodeId,
    /// Why, as the write failed (`No space left on device (os error 28)`).
    pub reason: String,
}

/// Why a run stopped as a whole: it is `incomplete` whatever its nodes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Cancelled as a whole (Ctrl-C, `run.cancel`, a superseding run, the server stopping).
    Interrupted,
    /// Its server went away mid-run; someone else closed it.
    Abandoned,
}

/// What happens to a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEvent {
    /// A lane reported views of its nodes, under the lane's own ids (`ci::e2e`, `_ci-setup`).
    LaneReported { platform: String, nodes: Vec<NodeReport> },
    /// A node's log could not be written whole. The view that ends the node (errored) follows.
    LogTruncated { node: NodeId, reason: String },
    /// A lane's link died before it was asked to stop (or the lane could not even start).
    LaneDied { platform: String, reason: String, at: u64 },
    /// A lane's link closed. A lane that never started is reported died, then closed.
    LaneClosed { platform: String, at: u64 },
    /// The run is cancelled as a whole.
    Interrupted { at: u64 },
    /// The run's server went away mid-run: what ran is errored, what waited is skipped, and
    /// the run is over, `incomplete` (unless it had settled: then its nodes say how it ended).
    Abandoned { at: u64 },
    /// A write of the ledger record ([`Effects::save`]) ended; `error` says why it failed.
    RecordWritten { error: Option<String> },
    /// A client's copy: node views as a `nodes` cell frame carries them (fan-in ids).
    Observed { views: Vec<NodeView> },
    /// A client's copy: the run's header as its server published it.
    HeaderObserved(Header),
}

/// What an operator asks of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunRequest {
    /// Run the node again (and every node that needs it).
    Rerun(NodeId),
    /// Stop the node (or keep it from starting).
    Cancel(NodeId),
    /// Stop every node of a lane that is not terminal.
    CancelLane { platform: String },
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no node {0} in this run: odu status lists its nodes")]
    UnknownNode(NodeId),
    #[error("no lane {platform:?} in this run (lanes: {lanes:?})")]
    UnknownLane { platform: String, lanes: Vec<String> },
    #[error("lane {0} has finished")]
    LaneFinished(String),
    #[error("this is a copy of the run: ask the server that runs it")]
    NotOwner,
}

/// An order for one lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Rerun the node (its lane-local id is `node.task`).
    Rerun(NodeId),
    /// Cancel the node.
    Cancel(NodeId),
    /// Close the link: the runner kills its process groups and exits.
    Shutdown { platform: String },
}

impl Command {
    /// The platform of the lane the command goes to.
    pub fn platform(&self) -> &str {
        match self {
            Command::Rerun(node) | Command::Cancel(node) => &node.platform,
            Command::Shutdown { platform } => platform,
        }
    }
}

/// When the driver writes the ledger record ([`Run::record`]), then applies
/// [`RunEvent::RecordWritten`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Save {
    /// On the driver's next tick: a burst of changes is one write, and a server that dies
    /// mid-run leaves a record that says which nodes were running.
    Soon,
    /// Now: the run settled.
    Now,
    /// Now, and the record is final (its `finished_at` is set; the driver drops the pid). If
    /// there is no room for a temporary copy, overwrite the old record in place.
    Final,
}

/// What the driver must do after an event, in this order: publish the `nodes` delta
/// (`changed`), show the `transitions` (faces, the status poster), publish the header if it
/// changed, send the `commands`, write the record.
#[must_use = "effects must be carried out"]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Nodes whose views changed, in run order: the `nodes` cell's delta.
    pub changed: Vec<NodeId>,
    /// Status changes in the order they happened (a node may change twice).
    pub transitions: Vec<Transition>,
    /// The header ([`Run::header`]) changed.
    pub header: bool,
    pub commands: Vec<Command>,
    pub save: Option<Save>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }

    fn save(&mut self, save: Save) {
        self.save = self.save.max(Some(save));
    }
}

/// A run's lane as the header names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneInfo {
    pub platform: String,
    pub host: String,
}

/// The `header` cell of a run (the wire's shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub run: String,
    pub sha: String,
    pub label: String,
    pub pipeline: String,
    pub lanes: Vec<LaneInfo>,
    pub phase: Phase,
    pub outcome: RunOutcome,
    /// The run was cancelled as a whole.
    pub interrupted: bool,
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Logs that could not be written whole: each node is `errored`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated_logs: Vec<TruncatedLog>,
    /// Why the ledger record could not be written (in the `ended` header only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
    /// How posting the run's GitHub commit statuses stands (absent when the run posts none).
    /// The server fills it in; the run itself knows nothing of GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posting: Option<Posting>,
}

/// A commit status odu owes GitHub, as the run's ledger record lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unposted {
    pub context: String,
    /// GitHub's state: `pending`, `success`, `failure` or `error`.
    pub state: String,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub attempts: u32,
}

/// How posting a run's GitHub commit statuses stands, as its header carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// Statuses not yet on GitHub.
    pub owed: usize,
    /// odu still tries to post them (false once it gave up on every one still owed).
    pub trying: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The `nodes` cell of a run: its name, its order and every view in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodesCell {
    pub name: String,
    pub order: Vec<NodeId>,
    pub nodes: Vec<NodeView>,
}

/// One node as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedNode {
    pub id: NodeId,
    pub status: NodeStatus,
    pub exit_code: Option<i32>,
    pub started_at: Option<u64>,
    pub duration_ms: Option<u64>,
    /// `.ci/<label>/<platform>/<task>.log`, relative to the checkout.
    pub log: String,
}

/// What of the ledger record the run decides: the rest (repo, seq, selectors, flags, pid) is
/// the driver's. A final record has `finished_at` and no pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub outcome: RunOutcome,
    pub finished_at: Option<u64>,
    pub lanes: Vec<LaneInfo>,
    pub nodes: Vec<RecordedNode>,
}

/// How a run ended, once its outcome is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub interrupted: bool,
    /// The ledger holds how the run ended (false when the final record could not be written).
    pub recorded: bool,
}

impl Verdict {
    /// 130 interrupted; 0 passed and recorded; else 1.
    pub fn exit_code(&self) -> i32 {
        match (self.interrupted, self.outcome, self.recorded) {
            (true, _, _) => EXIT_INTERRUPTED,
            (false, Outcome::Passed, true) => EXIT_PASSED,
            _ => EXIT_RED,
        }
    }
}

/// Who holds the run: its server (which commands lanes and writes the record) or a client's
/// copy (which only applies what it observes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Owner,
    Mirror,
}

/// The header facts whose change republishes the header.
#[derive(PartialEq)]
struct HeaderKey {
    phase: Phase,
    outcome: RunOutcome,
    stop: Option<Stop>,
    finished_at: Option<u64>,
    truncated: u64,
    record_error: Option<String>,
}

/// One run: see the module documentation.
#[derive(Clone, Debug)]
pub struct Run {
    meta: RunMeta,
    role: Role,
    lanes: Vec<Lane>,
    order: Vec<NodeId>,
    /// Views in run order (ids and needs are fan-in ids).
    nodes: Vec<NodeView>,
    /// How many of `nodes` are not terminal, kept by every change of a status: whether the run
    /// settled is asked at every event, and a scan of the nodes made that cost grow with them.
    unsettled: usize,
    index: BTreeMap<NodeId, usize>,
    stop: Option<Stop>,
    finished_at: Option<u64>,
    truncated: Vec<TruncatedLog>,
    /// Bumped whenever `truncated` changes.
    truncated_revision: u64,
    record_error: Option<String>,
    /// Every lane closed and the final record was written (or its write failed).
    ended: bool,
    transitions: Vec<Transition>,
}

impl Run {
    /// A run about to start: every node pending. The driver writes its record once before any
    /// lane starts, so clients find every log's path from the first moment.
    pub fn new(meta: RunMeta, plans: &[LanePlan]) -> Run {
        let mut run = Run::empty(meta, Role::Owner);
        for plan in plans {
            run.lanes.push(Lane {
                platform: plan.platform.clone(),
                host: plan.host.clone(),
                status: LaneStatus::Provisioning,
                death: None,
                open: true,
            });
            let setup = NodeView::pending(SETUP, format!("(provision {})", plan.host), vec![]);
            run.insert(&plan.platform, setup);
            for task in &plan.tasks {
                let mut needs = task.needs.clone();
                needs.push(SETUP.into());
                run.insert(&plan.platform, NodeView::pending(&task.id, shell_words(&task.argv), needs));
            }
        }
        run
    }

    /// A client's copy of a served run, from its header and a `nodes` snapshot: every node
    /// `pending`, so that applying the snapshot ([`RunEvent::Observed`]) yields the transitions
    /// this client missed. Views whose id is not a node id are left out.
    pub fn mirror(header: &Header, order: &[NodeId], views: &[NodeView]) -> Run {
        let meta = RunMeta {
            run: header.run.clone(),
            sha: header.sha.clone(),
            label: header.label.clone(),
            pipeline: header.pipeline.clone(),
            started_at: header.started_at,
        };
        let mut run = Run::empty(meta, Role::Mirror);
        run.lanes = header
            .lanes
            .iter()
            .map(|l| Lane {
                platform: l.platform.clone(),
                host: l.host.clone(),
                status: LaneStatus::Running,
                death: None,
                open: true,
            })
            .collect();
        let known: BTreeMap<NodeId, &NodeView> =
            views.iter().filter_map(|v| Some((NodeId::parse(&v.id)?, v))).collect();
        for id in order {
            let Some(view) = known.get(id) else { continue };
            if run.index.contains_key(id) {
                continue;
            }
            let mut pending = NodeView::pending(&view.id, view.command.clone(), view.needs.clone());
            pending.generation = view.generation;
            run.index.insert(id.clone(), run.nodes.len());
            run.order.push(id.clone());
            run.unsettled += usize::from(!pending.status.is_terminal());
            run.nodes.push(pending);
        }
        run.observe_header(header);
        run
    }

    fn empty(meta: RunMeta, role: Role) -> Run {
        Run {
            meta,
            role,
            lanes: Vec::new(),
            order: Vec::new(),
            nodes: Vec::new(),
            unsettled: 0,
            index: BTreeMap::new(),
            stop: None,
            finished_at: None,
            truncated: Vec::new(),
            truncated_revision: 0,
            record_error: None,
            ended: false,
            transitions: Vec::new(),
        }
    }

    /// Adds a lane's node under its fan-in id, its needs qualified and sorted.
    fn insert(&mut self, platform: &str, mut view: NodeView) {
        let id = NodeId::new(view.id.as_str(), platform);
        view.id = id.to_string();
        let mut needs: Vec<String> =
            view.needs.iter().map(|n| NodeId::new(n.as_str(), platform).to_string()).collect();
        needs.sort();
        needs.dedup();
        view.needs = needs.into();
        self.index.insert(id.clone(), self.nodes.len());
        self.order.push(id);
        self.unsettled += usize::from(!view.status.is_terminal());
        self.nodes.push(view);
    }

    /// Applies one event; the effects say what the driver must do.
    pub fn apply(&mut self, event: RunEvent) -> Effects {
        let before = self.header_key();
        let mut fx = Effects::default();
        let mut touched = BTreeSet::new();
        match event {
            RunEvent::LaneReported { platform, nodes } => {
                self.lane_reported(&platform, nodes, &mut fx, &mut touched);
            }
            RunEvent::LogTruncated { node, reason } => {
                if self.index.contains_key(&node) {
                    self.truncated.retain(|cut| cut.node != node);
                    self.truncated.push(TruncatedLog { node, reason });
                    self.truncated_revision += 1;
                }
            }
            RunEvent::LaneDied { platform, reason, at } => {
                self.lane_died(&platform, reason, at, &mut fx, &mut touched);
            }
            RunEvent::LaneClosed { platform, at } => {
                let Some(lane) = self.lanes.iter_mut().find(|l| l.platform == platform) else {
                    return self.finish(fx, touched, before);
                };
                if !lane.open {
                    return self.finish(fx, touched, before);
                }
                if lane.status.is_live() {
                    let reason = "its link closed before it was asked to stop".to_string();
                    self.lane_died(&platform, reason, at, &mut fx, &mut touched);
                }
                let lane = self.lanes.iter_mut().find(|l| l.platform == platform).expect("found above");
                lane.open = false;
                if lane.status == LaneStatus::Stopping {
                    lane.status = LaneStatus::Finished;
                }
                if self.lanes.iter().all(|l| !l.open) {
                    self.finished_at = Some(at);
                    fx.save(Save::Final);
                }
            }
            RunEvent::Interrupted { at } => self.interrupt(at, &mut fx, &mut touched),
            RunEvent::Abandoned { at } => {
                if !self.ended {
                    let settled = self.settled();
                    for pos in 0..self.nodes.len() {
                        let to = match self.nodes[pos].status {
                            NodeStatus::Running => NodeStatus::Errored,
                            NodeStatus::Pending => NodeStatus::Skipped,
                            _ => continue,
                        };
                        self.end_node(pos, to, at, &mut fx, &mut touched);
                    }
                    // A run that had settled lost nothing: its nodes say how it ended.
                    if !settled {
                        self.stop = self.stop.or(Some(Stop::Abandoned));
                    }
                    for lane in &mut self.lanes {
                        lane.open = false;
                        if lane.status != LaneStatus::Died {
                            lane.status = LaneStatus::Finished;
                        }
                    }
                    self.finished_at = Some(at);
                    self.ended = true;
                    fx.save(Save::Final);
                }
            }
            RunEvent::RecordWritten { error } => {
                self.record_error = error;
                if self.finished_at.is_some() && self.lanes.iter().all(|l| !l.open) {
                    self.ended = true;
                }
            }
            RunEvent::Observed { views } => self.observed(views, &mut fx, &mut touched),
            RunEvent::HeaderObserved(header) => self.observe_header(&header),
        }
        self.finish(fx, touched, before)
    }

    /// Turns an operator's request into commands for the lane that owns the node. Nothing
    /// changes here: the lane answers (it may still refuse, e.g. a cancel of a node that
    /// already finished) and its next report shows what it did.
    pub fn request(&self, request: RunRequest) -> Result<Vec<Command>, Refusal> {
        if self.role == Role::Mirror {
            return Err(Refusal::NotOwner);
        }
        match request {
            RunRequest::Rerun(node) => {
                self.live_lane_of(&node)?;
                Ok(vec![Command::Rerun(node)])
            }
            RunRequest::Cancel(node) => {
                self.live_lane_of(&node)?;
                Ok(vec![Command::Cancel(node)])
            }
            RunRequest::CancelLane { platform } => {
                let lane = self.lane(&platform).ok_or_else(|| Refusal::UnknownLane {
                    platform: platform.clone(),
                    lanes: self.lanes.iter().map(|l| l.platform.clone()).collect(),
                })?;
                if !lane.status.is_live() {
                    return Err(Refusal::LaneFinished(platform));
                }
                Ok(self
                    .order
                    .iter()
                    .zip(&self.nodes)
                    .filter(|(id, view)| id.platform == platform && !view.status.is_terminal())
                    .map(|(id, _)| Command::Cancel(id.clone()))
                    .collect())
            }
        }
    }

    fn live_lane_of(&self, node: &NodeId) -> Result<&Lane, Refusal> {
        if !self.index.contains_key(node) {
            return Err(Refusal::UnknownNode(node.clone()));
        }
        let lane = self.lane(&node.platform).ok_or_else(|| Refusal::UnknownNode(node.clone()))?;
        if lane.status.is_live() { Ok(lane) } else { Err(Refusal::LaneFinished(lane.platform.clone())) }
    }

    fn lane_reported(
        &mut self,
        platform: &str,
        reports: Vec<NodeReport>,
        fx: &mut Effects,
        touched: &mut BTreeSet<usize>,
    ) {
        let Some(lane) = self.lanes.iter_mut().find(|l| l.platform == platform) else { return };
        // A lane told to stop (or dead) speaks no more: a report still in flight must not undo
        // what the interrupt or the death decided.
        if !lane.status.is_live() {
            return;
        }
        lane.status = LaneStatus::Running;
        for report in reports {
            let id = NodeId::new(report.id.as_str(), platform);
            let Some(&pos) = self.index.get(&id) else { continue };
            let mut next = self.nodes[pos].clone();
            report.apply_to(&mut next);
            // A node that runs again (a rerun) starts a new log.
            if !next.status.is_terminal() && self.truncated.iter().any(|cut| cut.node == id) {
                self.truncated.retain(|cut| cut.node != id);
                self.truncated_revision += 1;
            }
            self.replace(pos, next, fx, touched);
        }
        self.after_nodes_changed(fx);
    }

    /// A lane's link died: its running nodes are `errored`, its pending ones `skipped`,
    /// terminal ones untouched. A lane that dies before its setup finished errors the setup
    /// node (its log says why), not just skips it.
    fn lane_died(
        &mut self,
        platform: &str,
        reason: String,
        at: u64,
        fx: &mut Effects,
        touched: &mut BTreeSet<usize>,
    ) {
        let Some(lane) = self.lanes.iter_mut().find(|l| l.platform == platform) else { return };
        if matches!(lane.status, LaneStatus::Died | LaneStatus::Finished) {
            return;
        }
        lane.status = LaneStatus::Died;
        lane.death = Some(reason);
        let setup = NodeId::new(SETUP, platform);
        if let Some(&pos) = self.index.get(&setup)
            && self.nodes[pos].status == NodeStatus::Pending
        {
            self.end_node(pos, NodeStatus::Errored, at, fx, touched);
        }
        for pos in 0..self.nodes.len() {
            if self.order[pos].platform != platform {
                continue;
            }
            let to = match self.nodes[pos].status {
                NodeStatus::Running => NodeStatus::Errored,
                NodeStatus::Pending => NodeStatus::Skipped,
                _ => continue,
            };
            self.end_node(pos, to, at, fx, touched);
        }
        self.after_nodes_changed(fx);
    }

    /// Cancels what runs, skips what waited (it will never run: an ended run has no `pending`
    /// node, however it ended), and stops every lane. A run that already settled is not
    /// interrupted: nothing of it is left to stop.
    fn interrupt(&mut self, at: u64, fx: &mut Effects, touched: &mut BTreeSet<usize>) {
        if self.role == Role::Mirror || self.stop.is_some() || self.ended || self.settled() {
            return;
        }
        self.stop = Some(Stop::Interrupted);
        for pos in 0..self.nodes.len() {
            let to = match self.nodes[pos].status {
                NodeStatus::Running => NodeStatus::Cancelled,
                NodeStatus::Pending => NodeStatus::Skipped,
                _ => continue,
            };
            self.end_node(pos, to, at, fx, touched);
        }
        self.shut_down(fx);
        self.finished_at = Some(at);
        fx.save(Save::Final);
    }

    /// Ends a node the run itself decided about; a running node's duration runs until `at`.
    fn end_node(
        &mut self,
        pos: usize,
        to: NodeStatus,
        at: u64,
        fx: &mut Effects,
        touched: &mut BTreeSet<usize>,
    ) {
        let mut next = self.nodes[pos].clone();
        if next.status == NodeStatus::Running {
            next.duration_ms = next.started_at.map(|s| at.saturating_sub(s));
        }
        next.status = to;
        self.replace(pos, next, fx, touched);
    }

    /// After node changes: the record is saved (now once settled, else soon), and a settled
    /// run stops its lanes.
    fn after_nodes_changed(&mut self, fx: &mut Effects) {
        if fx.transitions.is_empty() || self.role == Role::Mirror {
            return;
        }
        if self.settled() {
            fx.save(Save::Now);
            self.shut_down(fx);
        } else {
            fx.save(Save::Soon);
        }
    }

    fn shut_down(&mut self, fx: &mut Effects) {
        for lane in &mut self.lanes {
            if lane.status.is_live() {
                lane.status = LaneStatus::Stopping;
                fx.commands.push(Command::Shutdown { platform: lane.platform.clone() });
            }
        }
    }

    /// A client's copy applies views as served. A node seen first already past `running`
    /// shows its `running` step too, so every face sees each node start.
    fn observed(&mut self, views: Vec<NodeView>, fx: &mut Effects, touched: &mut BTreeSet<usize>) {
        for view in views {
            let Some(&pos) = NodeId::parse(&view.id).as_ref().and_then(|id| self.index.get(id)) else {
                continue;
            };
            let current = &self.nodes[pos];
            if current.status == NodeStatus::Pending && view.status.is_terminal() && view.started_at.is_some()
            {
                let mut running = current.clone();
                running.status = NodeStatus::Running;
                running.started_at = view.started_at;
                self.replace(pos, running, fx, touched);
            }
            self.replace(pos, view, fx, touched);
        }
    }

    /// A client's copy takes from the header what node statuses do not say.
    fn observe_header(&mut self, header: &Header) {
        if header.interrupted {
            self.stop = Some(Stop::Interrupted);
        } else if header.outcome == RunOutcome::Incomplete && header.phase == Phase::Ended {
            // Closed by someone else: the ledger says `incomplete` whatever its nodes say.
            self.stop = Some(Stop::Abandoned);
        }
        self.finished_at = header.finished_at;
        if self.truncated != header.truncated_logs {
            self.truncated = header.truncated_logs.clone();
            self.truncated_revision += 1;
        }
        self.record_error = header.record_error.clone();
        if header.phase == Phase::Ended {
            self.ended = true;
            for lane in &mut self.lanes {
                lane.open = false;
                lane.status = LaneStatus::Finished;
            }
        }
    }

    /// Puts `next` in place of the node at `pos`, noting what changed.
    fn replace(&mut self, pos: usize, next: NodeView, fx: &mut Effects, touched: &mut BTreeSet<usize>) {
        let node = &mut self.nodes[pos];
        if *node == next {
            return;
        }
        let (from, generation) = (node.status, node.generation);
        *node = next;
        match (from.is_terminal(), node.status.is_terminal()) {
            (false, true) => self.unsettled -= 1,
            (true, false) => self.unsettled += 1,
            _ => {}
        }
        touched.insert(pos);
        if from != node.status {
            // A node first seen already ended (its running view folded away on the way) still
            // ran: every face hears it start before it hears it end.
            let ran_unseen = node.status.is_terminal()
                && node.started_at.is_some()
                && (from == NodeStatus::Pending || (from.is_terminal() && generation != node.generation));
            if ran_unseen {
                let id = self.order[pos].clone();
                fx.transitions.push(Transition { node: id.clone(), from, to: NodeStatus::Running });
                fx.transitions.push(Transition { node: id, from: NodeStatus::Running, to: node.status });
            } else {
                fx.transitions.push(Transition { node: self.order[pos].clone(), from, to: node.status });
            }
        }
    }

    fn finish(&mut self, mut fx: Effects, touched: BTreeSet<usize>, before: HeaderKey) -> Effects {
        fx.changed = touched.into_iter().map(|pos| self.order[pos].clone()).collect();
        fx.header = self.header_key() != before;
        self.transitions = fx.transitions.clone();
        fx
    }

    fn header_key(&self) -> HeaderKey {
        HeaderKey {
            phase: self.phase(),
            outcome: self.reported_outcome(),
            stop: self.stop,
            finished_at: self.finished_at,
            truncated: self.truncated_revision,
            record_error: self.record_error.clone(),
        }
    }

    // ---- projections ----

    /// The run under the reference (`<label>#<seq>`) the ledger reserved for it: a run is
    /// made before its number, so that the record reserving the number lists its nodes.
    pub fn numbered(mut self, run: String) -> Run {
        self.meta.run = run;
        self
    }

    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    /// How long the run took: to its `finished_at` once it has one, else until `now`.
    pub fn duration_ms(&self, now: u64) -> u64 {
        self.finished_at.unwrap_or(now).saturating_sub(self.meta.started_at)
    }

    pub fn lanes(&self) -> &[Lane] {
        &self.lanes
    }

    pub fn lane(&self, platform: &str) -> Option<&Lane> {
        self.lanes.iter().find(|l| l.platform == platform)
    }

    /// Node ids in run order.
    pub fn order(&self) -> &[NodeId] {
        &self.order
    }

    /// Each task of the run once (whatever platforms it runs on), in run order: the rows of
    /// the faces that draw the run as tasks × platforms. Whether a task is listed already is
    /// asked of a set: asked of the list, a run of 2,000 nodes compared each name with every
    /// one before it.
    pub fn tasks(&self) -> Vec<&str> {
        let mut listed = std::collections::HashSet::new();
        self.order.iter().map(|id| id.task.as_str()).filter(|task| listed.insert(*task)).collect()
    }

    /// Node views in run order.
    pub fn views(&self) -> &[NodeView] {
        &self.nodes
    }

    /// Every node with its view, in run order.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeId, &NodeView)> {
        self.order.iter().zip(&self.nodes)
    }

    pub fn view(&self, id: &NodeId) -> Option<&NodeView> {
        self.index.get(id).map(|&pos| &self.nodes[pos])
    }

    /// When the run ended, as its record says (`None` while it lives).
    pub fn finished_at(&self) -> Option<u64> {
        self.finished_at
    }

    /// The node's log, relative to the checkout.
    pub fn log_path(&self, id: &NodeId) -> String {
        id.log_path(&self.meta.label)
    }

    pub fn count(&self, status: NodeStatus) -> usize {
        self.nodes.iter().filter(|n| n.status == status).count()
    }

    /// Status changes made by the last [`Run::apply`].
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    /// Every node is terminal.
    pub fn settled(&self) -> bool {
        debug_assert_eq!(self.unsettled == 0, self.nodes.iter().all(|n| n.status.is_terminal()));
        self.unsettled == 0
    }

    pub fn phase(&self) -> Phase {
        if self.ended {
            Phase::Ended
        } else if self.settled() {
            Phase::Settled
        } else {
            Phase::Running
        }
    }

    /// Why the run stopped as a whole, if it did.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    pub fn interrupted(&self) -> bool {
        self.stop == Some(Stop::Interrupted)
    }

    /// The outcome of the nodes as they stand: `passed` iff every node is `ok`, `incomplete`
    /// while any is not terminal or was cancelled, and whenever the run stopped as a whole.
    pub fn outcome(&self) -> Outcome {
        if self.stop.is_some() {
            return Outcome::Incomplete;
        }
        Outcome::of(self.nodes.iter().map(|n| &n.status))
    }

    /// The outcome as the header and the record say it: `running` until the run settled,
    /// stopped as a whole, or ended.
    pub fn reported_outcome(&self) -> RunOutcome {
        if self.stop.is_none() && self.phase() == Phase::Running {
            RunOutcome::Running
        } else {
            self.outcome().into()
        }
    }

    /// How the run ended, once its outcome is decided.
    pub fn verdict(&self) -> Option<Verdict> {
        let outcome = self.reported_outcome().decided()?;
        Some(Verdict { outcome, interrupted: self.interrupted(), recorded: self.record_error.is_none() })
    }

    /// Logs cut short, in the order they were found.
    pub fn truncated_logs(&self) -> &[TruncatedLog] {
        &self.truncated
    }

    /// Why the latest write of the record failed, if it did.
    pub fn record_error(&self) -> Option<&str> {
        self.record_error.as_deref()
    }

    fn lane_infos(&self) -> Vec<LaneInfo> {
        self.lanes.iter().map(|l| LaneInfo { platform: l.platform.clone(), host: l.host.clone() }).collect()
    }

    /// The `header` cell.
    pub fn header(&self) -> Header {
        let phase = self.phase();
        Header {
            run: self.meta.run.clone(),
            sha: self.meta.sha.clone(),
            label: self.meta.label.clone(),
            pipeline: self.meta.pipeline.clone(),
            lanes: self.lane_infos(),
            phase,
            outcome: self.reported_outcome(),
            interrupted: self.interrupted(),
            started_at: self.meta.started_at,
            finished_at: self.finished_at,
            truncated_logs: self.truncated.clone(),
            record_error: if phase == Phase::Ended { self.record_error.clone() } else { None },
            posting: None,
        }
    }

    /// The `nodes` cell.
    pub fn nodes_cell(&self) -> NodesCell {
        NodesCell { name: self.meta.pipeline.clone(), order: self.order.clone(), nodes: self.nodes.clone() }
    }

    /// What the ledger record holds of the run.
    pub fn record(&self) -> Recorded {
        Recorded {
            outcome: self.reported_outcome(),
            finished_at: self.finished_at,
            lanes: self.lane_infos(),
            nodes: self
                .nodes()
                .map(|(id, view)| RecordedNode {
                    id: id.clone(),
                    status: view.status,
                    exit_code: view.exit_code,
                    started_at: view.started_at,
                    duration_ms: view.duration_ms,
                    log: self.log_path(id),
                })
                .collect(),
        }
    }
}
