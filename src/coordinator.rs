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

use crate::clock::now_ms;
use crate::face::Face;
use crate::fan_in::FanIn;
use crate::lane::{LaneCommand, LaneLogs, LaneReport, LaneSpec};
use crate::ledger::{self, NodeRecord, RunRecord};

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
}

impl Coordinator {
    /// Runs every lane to its end, or until interrupted.
    pub async fn run(mut self, specs: Vec<LaneSpec>) -> (Verdict, FanIn) {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let mut lanes: BTreeMap<String, mpsc::UnboundedSender<LaneCommand>> = BTreeMap::new();
        let mut open = 0usize;
        for spec in specs {
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
            let platform = spec.platform.clone();
            match LaneLogs::create(&spec) {
                Ok(logs) => {
                    tokio::spawn(crate::lane::run_local(spec, logs, cmd_rx, reports_tx.clone()));
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
        drop(reports_tx);
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
                    let changes = match report {
                        LaneReport::Nodes { platform, nodes } => self.fan.apply_lane(&platform, nodes),
                        LaneReport::Died { platform, .. } => self.fan.lane_died(&platform, now_ms()),
                        LaneReport::Closed { .. } => {
                            open -= 1;
                            vec![]
                        }
                    };
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
                    self.interrupt(&lanes);
                    shutting_down = true;
                }
                _ = sigterm.recv() => {
                    if interrupted { break; }
                    interrupted = true;
                    self.interrupt(&lanes);
                    shutting_down = true;
                }
                _ = ticker.tick() => self.face.tick(&self.fan),
            }
        }
        self.face.finish(&self.fan);
        self.save(true);
        let verdict = Verdict {
            outcome: if interrupted { Outcome::Incomplete } else { self.fan.outcome() },
            interrupted,
        };
        (verdict, self.fan)
    }

    fn interrupt(&mut self, lanes: &BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>) {
        eprintln!("odu: interrupted: stopping every node (press Ctrl-C again to leave at once)");
        self.interrupted = true;
        for change in self.fan.interrupt(now_ms()) {
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
