//! The coordinator: the single event loop that owns a run.
//!
//! Inputs (lane reports, cancellation, ticks) become changes of the fan-in state; each change is
//! published to the run's cells, shown by the face and, on every terminal path, recorded in the
//! ledger. The coordinator lives inside the server (`odu serve`), one per live run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use odu_core::status::Outcome;
use std::sync::{Arc, Mutex};

use odu_proto::{Header, LaneInfo, NodesFrame, Phase, TruncatedLog};
use tokio::sync::mpsc;

use crate::client::face::Face;
use crate::clock::now_ms;
use crate::fan_in::{FanIn, Transition};
use crate::lane::{LaneCommand, LaneLogs, LaneReport, LaneSpec};
use crate::link::cell::{HeaderValue, Hub, NodesValue};
use crate::trail::ledger::{self, NodeRecord, RunRecord};
use crate::trail::spool::Spool;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub interrupted: bool,
}

impl Verdict {
    /// 0 green, 1 red, 130 interrupted.
    pub fn exit_code(&self) -> i32 {
        match (self.interrupted, self.outcome) {
            (true, _) => 130,
            (false, Outcome::Passed) => 0,
            _ => 1,
        }
    }
}

pub struct Coordinator {
    pub fan: FanIn,
    pub ci_dir: PathBuf,
    pub record: RunRecord,
    pub face: Box<dyn Face + Send>,
    pub interrupted: bool,
    pub unwritten: Unwritten,
}

/// What the run could not write to the checkout's disk: clients hear it through the header.
#[derive(Debug, Default)]
pub struct Unwritten {
    /// Logs cut short (their nodes are errored), in the order they were found.
    pub logs: Vec<TruncatedLog>,
    /// Why the latest write of the record failed, if it did.
    pub record: Option<String>,
}

/// A line for the server's log (`odu: …`). Never panics: that log may sit on the full disk
/// that is the reason for the line.
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "odu: {line}");
}

/// A live run as its server holds it: the cells, the trail and the lanes' command channels.
#[derive(Clone)]
pub struct RunHandles {
    /// `<sha7>#<seq>`.
    pub reference: String,
    pub nodes: Arc<Mutex<Hub<NodesValue>>>,
    pub header: Arc<Mutex<Hub<HeaderValue>>>,
    /// Trail spools by fan-in id.
    pub logs: Arc<BTreeMap<String, Spool>>,
    /// Lane command channels by platform.
    pub lanes: Arc<BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>>,
    /// Asks the coordinator to cancel the whole run.
    pub cancel_run: mpsc::UnboundedSender<()>,
}

/// How a finished run ended, with its final state and record.
pub struct Finished {
    pub verdict: Verdict,
    pub fan: FanIn,
    pub record: RunRecord,
    /// The header to publish as the run's last word (phase `ended`).
    pub header: Header,
}

/// The coordinator's side of the `nodes` cell.
struct NodesCell {
    hub: Arc<Mutex<Hub<NodesValue>>>,
    positions: BTreeMap<String, usize>,
    cell: NodesValue,
}

impl NodesCell {
    fn new(fan: &FanIn) -> NodesCell {
        let cell = NodesValue {
            revision: 1,
            name: Arc::from(fan.name.as_str()),
            order: Arc::new(fan.order.clone()),
            nodes: fan.ordered().map(|n| Arc::new(n.view.clone())).collect(),
        };
        let positions = fan.order.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        let hub = Hub::new(cell.share(), 1024);
        NodesCell { hub: Arc::new(Mutex::new(hub)), positions, cell }
    }

    /// Publishes the current views of `ids` as one delta.
    fn publish(&mut self, fan: &FanIn, ids: &[String]) {
        let mut nodes = Vec::new();
        for id in ids {
            if let (Some(&at), Some(node)) = (self.positions.get(id), fan.nodes.get(id))
                && *self.cell.nodes[at] != node.view
            {
                self.cell.nodes[at] = Arc::new(node.view.clone());
                nodes.push(node.view.clone());
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

impl Coordinator {
    /// Starts the run: the trail is claimed and the cells exist before any lane starts, so the
    /// server can serve them (provisioning included) from the first moment. The task ends with
    /// the run, its record final.
    pub fn start(mut self, specs: Vec<LaneSpec>) -> (RunHandles, tokio::task::JoinHandle<Finished>) {
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
                        trail.insert(format!("{id}@{platform}"), spool.clone());
                    }
                    starts.push((spec, logs, cmd_rx));
                    lanes.insert(platform, cmd_tx);
                }
                Err(e) => {
                    note(&format!(
                        "cannot create the logs of lane {platform} in {}: {e}",
                        spec.log_dir.display()
                    ));
                    dead.push(platform);
                }
            }
        }
        for platform in dead {
            for change in self.fan.lane_died(&platform, now_ms()) {
                self.face.transition(&self.fan, &change);
            }
        }
        self.face.flush();
        let cell = NodesCell::new(&self.fan);
        let header = Hub::new(HeaderValue { revision: 1, header: Arc::new(self.header(Phase::Running)) }, 64);
        let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
        let handles = RunHandles {
            reference: self.record.reference(),
            nodes: cell.hub.clone(),
            header: Arc::new(Mutex::new(header)),
            logs: Arc::new(trail),
            lanes: Arc::new(lanes.clone()),
            cancel_run: cancel_tx,
        };
        let open = starts.len();
        for (spec, logs, cmd_rx) in starts {
            if spec.remote.is_some() {
                tokio::spawn(crate::lane::remote::run_remote(spec, logs, cmd_rx, reports_tx.clone()));
            } else {
                tokio::spawn(crate::lane::run_local(spec, logs, cmd_rx, reports_tx.clone()));
            }
        }
        drop(reports_tx);
        // The record lists every node from the start, so clients find each log's path.
        self.save(false);
        let header_hub = handles.header.clone();
        let task = tokio::spawn(self.drive(open, lanes, reports, cancel_rx, cell, header_hub));
        (handles, task)
    }

    async fn drive(
        mut self,
        mut open: usize,
        lanes: BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>,
        mut reports: mpsc::UnboundedReceiver<LaneReport>,
        mut cancel_rx: mpsc::UnboundedReceiver<()>,
        mut cell: NodesCell,
        header: Arc<Mutex<Hub<HeaderValue>>>,
    ) -> Finished {
        self.face.start(&self.fan);
        let mut ticker = tokio::time::interval(Duration::from_millis(120));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut shutting_down = open == 0;
        let mut announced_settled = false;
        let mut unsaved = false;
        let shutdown_all = |lanes: &BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>| {
            for tx in lanes.values() {
                let _ = tx.send(LaneCommand::Shutdown);
            }
        };
        while open > 0 {
            tokio::select! {
                report = reports.recv() => {
                    let Some(report) = report else { break };
                    // Every report already waiting joins this one: a burst of node changes
                    // becomes one delta for every subscriber.
                    let mut changes = Vec::new();
                    let mut touched = Vec::new();
                    let mut next = Some(report);
                    while let Some(report) = next {
                        self.absorb(report, &mut open, &mut changes, &mut touched);
                        next = reports.try_recv().ok();
                    }
                    cell.publish(&self.fan, &touched);
                    for change in &changes {
                        self.face.transition(&self.fan, change);
                    }
                    self.face.flush();
                    if !changes.is_empty() {
                        if self.fan.settled() {
                            self.save(false);
                        } else {
                            // Saved on the next tick: a server that dies mid-run leaves a
                            // record that says which nodes were running.
                            unsaved = true;
                        }
                    }
                    if self.fan.settled() && !announced_settled {
                        announced_settled = true;
                        HeaderValue::publish(&mut header.lock().expect("hub lock"), self.header(Phase::Settled));
                    }
                    if self.fan.settled() && !shutting_down {
                        shutting_down = true;
                        shutdown_all(&lanes);
                    }
                }
                Some(()) = cancel_rx.recv(), if !self.interrupted => {
                    self.interrupt(&lanes, &mut cell);
                    shutting_down = true;
                }
                _ = ticker.tick() => {
                    self.face.tick(&self.fan);
                    if unsaved {
                        unsaved = false;
                        self.save(false);
                    }
                }
            }
        }
        self.face.finish(&self.fan);
        self.save(true);
        let verdict = Verdict {
            outcome: if self.interrupted { Outcome::Incomplete } else { self.fan.outcome() },
            interrupted: self.interrupted,
        };
        // The server publishes the ended header once the run's worktree and lock are released,
        // so a client that sees it can start the next run at once.
        let header = self.header(Phase::Ended);
        Finished { verdict, fan: self.fan, record: self.record, header }
    }

    /// Applies one lane report to the fan-in: its transitions join `changes`, the nodes it
    /// touched join `touched`.
    fn absorb(
        &mut self,
        report: LaneReport,
        open: &mut usize,
        changes: &mut Vec<Transition>,
        touched: &mut Vec<String>,
    ) {
        match report {
            LaneReport::Nodes { platform, nodes } => {
                let ids: Vec<String> = nodes.iter().map(|n| format!("{}@{platform}", n.id)).collect();
                changes.extend(self.fan.apply_lane(&platform, nodes));
                // A node that runs again (a rerun) starts a new log.
                let again =
                    |id: &String| self.fan.nodes.get(id).is_some_and(|n| !n.view.status.is_terminal());
                self.unwritten.logs.retain(|cut| !ids.iter().any(|id| *id == cut.node && again(id)));
                touched.extend(ids);
            }
            LaneReport::LogTruncated { platform, id, reason } => {
                let node = format!("{id}@{platform}");
                note(&format!("the log of {node} could not be written whole: {reason}"));
                self.unwritten.logs.retain(|cut| cut.node != node);
                self.unwritten.logs.push(TruncatedLog { node, reason });
            }
            LaneReport::Died { platform, .. } => {
                let died = self.fan.lane_died(&platform, now_ms());
                touched.extend(died.iter().map(|c| c.id.clone()));
                changes.extend(died);
            }
            LaneReport::Closed { .. } => *open -= 1,
        }
    }

    fn header(&self, phase: Phase) -> Header {
        Header {
            run: self.record.reference(),
            sha: self.record.sha.clone(),
            label: self.record.label.clone(),
            pipeline: self.record.pipeline.clone(),
            lanes: self
                .fan
                .lanes
                .iter()
                .map(|(p, h)| LaneInfo { platform: p.clone(), host: h.clone() })
                .collect(),
            phase,
            outcome: match phase {
                Phase::Ended => self.record.outcome.clone(),
                _ if self.interrupted => Outcome::Incomplete.as_str().into(),
                Phase::Settled => self.fan.outcome().as_str().into(),
                Phase::Running => "running".into(),
            },
            interrupted: self.interrupted,
            started_at: self.record.started_at,
            finished_at: self.record.finished_at,
            truncated_logs: self.unwritten.logs.clone(),
            record_error: match phase {
                Phase::Ended => self.unwritten.record.clone(),
                _ => None,
            },
        }
    }

    fn interrupt(
        &mut self,
        lanes: &BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>,
        cell: &mut NodesCell,
    ) {
        self.interrupted = true;
        let changes = self.fan.interrupt(now_ms());
        let touched: Vec<String> = changes.iter().map(|c| c.id.clone()).collect();
        cell.publish(&self.fan, &touched);
        for change in changes {
            self.face.transition(&self.fan, &change);
        }
        self.face.flush();
        for tx in lanes.values() {
            let _ = tx.send(LaneCommand::Shutdown);
        }
        self.save(true);
    }

    /// Writes the ledger record; `finished` stamps the finish time and drops the pid. A failed
    /// write is remembered (the `ended` header carries the last one) and noted in the server's
    /// log; a later write that succeeds clears it.
    fn save(&mut self, finished: bool) {
        let record = &mut self.record;
        record.nodes = self
            .fan
            .ordered()
            .map(|n| NodeRecord {
                id: n.id.clone(),
                status: n.view.status,
                exit_code: n.view.exit_code,
                started_at: n.view.started_at,
                duration_ms: n.view.duration_ms,
                log: n.log.clone(),
            })
            .collect();
        let outcome = if self.interrupted { Outcome::Incomplete } else { self.fan.outcome() };
        record.outcome =
            if finished || self.fan.settled() { outcome.as_str().into() } else { "running".into() };
        if finished {
            record.finished_at = Some(now_ms());
            record.pid = None;
        }
        let path = format!(".ci/{}/runs/{}.json", record.label, record.seq);
        let mut written = ledger::write(&self.ci_dir, record);
        if finished && let Err(e) = &written {
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
            && self.unwritten.record.as_ref() != Some(error)
        {
            note(&format!("the run record is not up to date: {error}"));
        }
        self.unwritten.record = error;
    }
}
