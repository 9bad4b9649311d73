//! The coordinator: the single event loop that owns a run.
//!
//! Inputs (lane reports, signals, ticks) become changes of the fan-in state; each change is
//! shown by the face and, on every terminal path, recorded in the ledger.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use odu_core::status::Outcome;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use std::sync::{Arc, Mutex};

use odu_proto::NodesFrame;

use crate::cell::Hub;
use crate::cell::NodesValue;
use crate::clock::now_ms;
use crate::face::Face;
use crate::fan_in::FanIn;
use crate::lane::{LaneCommand, LaneLogs, LaneReport, LaneSpec};
use crate::ledger::{self, NodeRecord, RunRecord};
use crate::surface::SurfaceShared;

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
    pub face: Box<dyn Face>,
    pub interrupted: bool,
    /// Where to serve the surface (`.ci/odu.sock`), if anywhere.
    pub socket: Option<PathBuf>,
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
    /// Runs every lane to its end, or until interrupted.
    pub async fn run(mut self, specs: Vec<LaneSpec>) -> (Verdict, FanIn) {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let mut lanes: BTreeMap<String, mpsc::UnboundedSender<LaneCommand>> = BTreeMap::new();
        let mut open = 0usize;
        let mut trail = BTreeMap::new();
        let mut starts = Vec::new();
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
                    open += 1;
                }
                Err(e) => {
                    eprintln!(
                        "odu: cannot create the logs of lane {platform} in {}: {e}",
                        spec.log_dir.display()
                    );
                    for change in self.fan.lane_died(&platform, now_ms()) {
                        self.face.transition(&self.fan, &change);
                    }
                }
            }
        }
        // The surface is served before any lane starts, so provisioning is observable.
        let mut cell = NodesCell::new(&self.fan);
        let (cancel_tx, mut cancel_rx) = mpsc::unbounded_channel();
        let server = match &self.socket {
            Some(path) => match crate::surface::bind(path).await {
                Ok(listener) => {
                    let shared = SurfaceShared {
                        nodes: cell.hub.clone(),
                        logs: Arc::new(trail),
                        lanes: Arc::new(lanes.clone()),
                        cancel_run: cancel_tx,
                    };
                    Some(tokio::spawn(crate::surface::serve(listener, shared)))
                }
                Err(e) => {
                    eprintln!("odu: not serving {}: {e}", path.display());
                    None
                }
            },
            None => None,
        };
        for (spec, logs, cmd_rx) in starts {
            tokio::spawn(crate::lane::run_local(spec, logs, cmd_rx, reports_tx.clone()));
        }
        drop(reports_tx);
        // The record lists every node from the start, so clients find each log's path.
        self.save(false);
        self.face.start(&self.fan);
        let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut ticker = tokio::time::interval(Duration::from_millis(120));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut interrupted = false;
        let mut shutting_down = false;
        let shutdown_all = |lanes: &BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>| {
            for tx in lanes.values() {
                let _ = tx.send(LaneCommand::Shutdown);
            }
        };
        if open == 0 {
            shutting_down = true;
        }
        while open > 0 {
            tokio::select! {
                report = reports.recv() => {
                    let Some(report) = report else { break };
                    let (changes, touched) = match report {
                        LaneReport::Nodes { platform, nodes } => {
                            let touched: Vec<String> = nodes.iter().map(|n| format!("{}@{platform}", n.id)).collect();
                            (self.fan.apply_lane(&platform, nodes), touched)
                        }
                        LaneReport::Died { platform, .. } => {
                            let changes = self.fan.lane_died(&platform, now_ms());
                            let touched = changes.iter().map(|c| c.id.clone()).collect();
                            (changes, touched)
                        }
                        LaneReport::Closed { .. } => {
                            open -= 1;
                            (vec![], vec![])
                        }
                    };
                    cell.publish(&self.fan, &touched);
                    for change in &changes {
                        self.face.transition(&self.fan, change);
                    }
                    if !changes.is_empty() && self.fan.settled() {
                        self.save(false);
                    }
                    if self.fan.settled() && !shutting_down {
                        shutting_down = true;
                        shutdown_all(&lanes);
                    }
                }
                _ = sigint.recv() => {
                    if interrupted { break; }
                    interrupted = true;
                    self.interrupt(&lanes, &mut cell);
                    shutting_down = true;
                }
                Some(()) = cancel_rx.recv(), if !interrupted => {
                    interrupted = true;
                    self.interrupt(&lanes, &mut cell);
                    shutting_down = true;
                }
                _ = sigterm.recv() => {
                    if interrupted { break; }
                    interrupted = true;
                    self.interrupt(&lanes, &mut cell);
                    shutting_down = true;
                }
                _ = ticker.tick() => self.face.tick(&self.fan),
            }
        }
        self.face.finish(&self.fan);
        self.save(true);
        if let Some(server) = server {
            server.abort();
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
        let verdict = Verdict {
            outcome: if interrupted { Outcome::Incomplete } else { self.fan.outcome() },
            interrupted,
        };
        (verdict, self.fan)
    }

    fn interrupt(
        &mut self,
        lanes: &BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>,
        cell: &mut NodesCell,
    ) {
        eprintln!("odu: interrupted: stopping every node (press Ctrl-C again to leave at once)");
        self.interrupted = true;
        let changes = self.fan.interrupt(now_ms());
        let touched: Vec<String> = changes.iter().map(|c| c.id.clone()).collect();
        cell.publish(&self.fan, &touched);
        for change in changes {
            self.face.transition(&self.fan, &change);
        }
        for tx in lanes.values() {
            let _ = tx.send(LaneCommand::Shutdown);
        }
        self.save(true);
    }

    /// Writes the ledger record; `finished` stamps the finish time and drops the pid.
    fn save(&mut self, finished: bool) {
        let record = &mut self.record;
        record.nodes = self
            .fan
            .ordered()
            .map(|n| NodeRecord {
                id: n.id.clone(),
                status: n.view.status,
                exit_code: n.view.exit_code,
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
        if let Err(e) = ledger::write(&self.ci_dir, record) {
            eprintln!("odu: cannot write the run record under {}: {e}", self.ci_dir.display());
        }
    }
}
