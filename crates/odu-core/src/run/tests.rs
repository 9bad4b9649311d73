//! The run's rules without a runtime: each lane is the real lane reducer ([`LaneState`]),
//! driven by hand or by a seeded generator, its published views fed into the [`Run`], the
//! run's commands fed back into the lanes.

use std::collections::BTreeMap;

use super::*;
use crate::lane::{Exit, LaneEffect, LaneEvent, LaneState};

fn task(id: &str, needs: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        argv: vec!["just".into(), "--no-deps".into(), id.into()],
        needs: needs.iter().map(|s| s.to_string()).collect(),
    }
}

fn id(text: &str) -> NodeId {
    NodeId::parse(text).expect("a node id")
}

fn meta() -> RunMeta {
    RunMeta {
        run: "3f9a2c1#1".into(),
        sha: "3f9a2c1d5e0b7a4c9e8f6d3b2a1c0e9f8d7c6b5a".into(),
        label: "3f9a2c1".into(),
        pipeline: "ci".into(),
        started_at: 1_000,
    }
}

/// A lane of the simulation: the runner's reducer and what the run asked of it.
struct SimLane {
    state: LaneState,
    /// Told to shut down, or its link died: it reports nothing more.
    gone: bool,
    closed: bool,
}

/// A run and its lanes, driven without a runtime. Every step checks the run's invariants.
struct Sim {
    run: Run,
    lanes: BTreeMap<String, SimLane>,
    now: u64,
    /// A client's copy, fed what a server publishes.
    mirror: Option<Run>,
    /// Statuses before the last apply, to check its transitions against.
    statuses: Vec<NodeStatus>,
    /// The record writes the run asked for.
    saves: Vec<Save>,
    /// The effects of the last apply.
    last: Effects,
}

impl Sim {
    fn new(plans: &[(&str, Vec<TaskSpec>)]) -> Sim {
        Sim::with_jobs(plans, None)
    }

    fn with_jobs(plans: &[(&str, Vec<TaskSpec>)], jobs: Option<usize>) -> Sim {
        let plans: Vec<LanePlan> = plans
            .iter()
            .map(|(platform, tasks)| LanePlan {
                platform: platform.to_string(),
                host: "localhost".into(),
                tasks: tasks.clone(),
            })
            .collect();
        let run = Run::new(meta(), &plans);
        let lanes = plans
            .iter()
            .map(|p| {
                let state = LaneState::new(&p.tasks, "(workspace)", jobs).expect("a valid lane");
                (p.platform.clone(), SimLane { state, gone: false, closed: false })
            })
            .collect();
        let statuses = run.views().iter().map(|v| v.status).collect();
        Sim { run, lanes, now: 1_000, mirror: None, statuses, saves: vec![], last: Effects::default() }
    }

    fn tick(&mut self) -> u64 {
        self.now += 10;
        self.now
    }

    /// Applies one event to the run and carries out its effects: commands reach the lanes
    /// (whose reports apply in turn), a record write succeeds.
    fn apply(&mut self, event: RunEvent) -> Effects {
        let fx = self.step(event);
        for command in &fx.commands {
            self.deliver(command);
        }
        if let Some(save) = fx.save {
            self.saves.push(save);
            let _ = self.step(RunEvent::RecordWritten { error: None });
        }
        self.last = fx.clone();
        fx
    }

    /// Applies one event, checks every invariant, and feeds the client's copy what the
    /// server would publish.
    fn step(&mut self, event: RunEvent) -> Effects {
        let fx = self.run.apply(event);
        self.check(&fx);
        fx
    }

    fn deliver(&mut self, command: &Command) {
        let at = self.now + 1;
        let lane = self.lanes.get_mut(command.platform()).expect("a lane of the run");
        if lane.gone {
            return;
        }
        let event = match command {
            Command::Rerun(node) => LaneEvent::RerunRequested { id: node.task.clone(), at },
            Command::Cancel(node) => LaneEvent::CancelRequested { id: node.task.clone(), at },
            Command::Shutdown { .. } => {
                lane.gone = true;
                return;
            }
        };
        // The lane may refuse (a cancel of a node that already finished): nothing changes then.
        if let Ok(effects) = lane.state.apply(event) {
            self.report(command.platform().to_string(), effects);
        }
    }

    /// Feeds what a lane published into the run, as its link would.
    fn report(&mut self, platform: String, effects: Vec<LaneEffect>) {
        for effect in effects {
            if let LaneEffect::Publish { changed } = effect {
                let lane = &self.lanes[&platform];
                let nodes = changed
                    .iter()
                    .map(|&at| NodeReport::from(lane.state.view_at(at).expect("published")))
                    .collect();
                let _ = self.apply(RunEvent::LaneReported { platform: platform.clone(), nodes });
            }
        }
    }

    fn lane_event(&mut self, platform: &str, event: LaneEvent) {
        let lane = self.lanes.get_mut(platform).expect("a lane");
        assert!(!lane.gone, "lane {platform} is gone");
        let effects = lane.state.apply(event).expect("the lane takes it");
        self.report(platform.to_string(), effects);
    }

    fn start(&mut self, platform: &str) {
        let at = self.tick();
        self.lane_event(platform, LaneEvent::Started { at });
    }

    fn start_all(&mut self) {
        let platforms: Vec<String> = self.lanes.keys().cloned().collect();
        for platform in platforms {
            self.start(&platform);
        }
    }

    fn exit(&mut self, node: &str, code: i32) {
        let node = id(node);
        let at = self.tick();
        let generation = self.lanes[&node.platform].state.view(&node.task).expect("a node").generation;
        let event = LaneEvent::NodeExited { id: node.task.clone(), generation, exit: Exit::Code(code), at };
        self.lane_event(&node.platform, event);
    }

    /// Asks the run, then delivers its commands to the lanes.
    fn request(&mut self, request: RunRequest) -> Result<(), Refusal> {
        let commands = self.run.request(request)?;
        for command in &commands {
            self.deliver(command);
        }
        Ok(())
    }

    fn die(&mut self, platform: &str) {
        let at = self.tick();
        self.lanes.get_mut(platform).expect("a lane").gone = true;
        let _ = self.apply(RunEvent::LaneDied {
            platform: platform.into(),
            reason: "ssh: broken pipe".into(),
            at,
        });
    }

    fn close(&mut self, platform: &str) {
        let at = self.tick();
        let lane = self.lanes.get_mut(platform).expect("a lane");
        lane.gone = true;
        lane.closed = true;
        let _ = self.apply(RunEvent::LaneClosed { platform: platform.into(), at });
    }

    fn close_all(&mut self) {
        let platforms: Vec<String> = self.lanes.keys().cloned().collect();
        for platform in platforms {
            self.close(&platform);
        }
    }

    fn interrupt(&mut self) -> Effects {
        let at = self.tick();
        self.apply(RunEvent::Interrupted { at })
    }

    fn status(&self, node: &str) -> NodeStatus {
        self.run.view(&id(node)).expect("a node").status
    }

    /// Builds a client's copy from what the server serves now.
    fn attach(&mut self) {
        let cell = self.run.nodes_cell();
        let mut mirror = Run::mirror(&self.run.header(), &cell.order, &cell.nodes);
        let fx = mirror.apply(RunEvent::Observed { views: cell.nodes.clone() });
        // The copy replays what it missed: one transition (or two) per node past pending.
        for (node, view) in self.run.nodes() {
            let seen: Vec<_> = fx.transitions.iter().filter(|t| t.node == *node).map(|t| t.to).collect();
            match view.status {
                NodeStatus::Pending => assert!(seen.is_empty(), "{node}: {seen:?}"),
                status => assert_eq!(seen.last(), Some(&status), "{node}"),
            }
        }
        self.mirror = Some(mirror);
        self.check_mirror();
    }

    /// The invariants every apply keeps.
    fn check(&mut self, fx: &Effects) {
        // The transitions lead from the statuses before to the statuses now, one step each.
        assert_eq!(fx.transitions, self.run.transitions());
        let mut statuses = self.statuses.clone();
        for t in &fx.transitions {
            let pos = self.run.order().iter().position(|n| *n == t.node).expect("a node of the run");
            assert_eq!(statuses[pos], t.from, "{} changed from what it was", t.node);
            assert_ne!(t.from, t.to, "{}: a transition changes the status", t.node);
            statuses[pos] = t.to;
        }
        let now: Vec<NodeStatus> = self.run.views().iter().map(|v| v.status).collect();
        assert_eq!(statuses, now, "the transitions account for every status change");
        self.statuses = now;
        // Every changed node is named once, in run order.
        let positions: Vec<usize> =
            fx.changed.iter().map(|n| self.run.order().iter().position(|o| o == n).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{:?}", fx.changed);
        for t in &fx.transitions {
            assert!(fx.changed.contains(&t.node), "{} changed status but is not in the delta", t.node);
        }
        self.check_nodes();
        self.check_projections();
        if let Some(mirror) = &mut self.mirror {
            let views = fx.changed.iter().map(|n| self.run.view(n).unwrap().clone()).collect();
            let _ = mirror.apply(RunEvent::Observed { views });
            if fx.header {
                let _ = mirror.apply(RunEvent::HeaderObserved(self.run.header()));
            }
            self.check_mirror();
        }
    }

    /// A node runs (or ran) only once its needs are ok; a node that never ran and is terminal
    /// was skipped, cancelled before it started, or its lane died. A dead lane's nodes are all
    /// terminal; a settled or interrupted run commands no lane any more.
    fn check_nodes(&self) {
        for lane in self.run.lanes() {
            if lane.status == LaneStatus::Died {
                let ended = self
                    .run
                    .nodes()
                    .filter(|(n, _)| n.platform == lane.platform)
                    .all(|(_, v)| v.status.is_terminal());
                assert!(ended, "lane {} died with nodes not terminal", lane.platform);
            }
            if self.run.settled() || self.run.stop().is_some() {
                assert!(
                    !lane.status.is_live(),
                    "lane {} is {:?} though the run stopped",
                    lane.platform,
                    lane.status
                );
            }
            if !self.run.settled() && self.run.stop().is_none() {
                assert_eq!(lane.status.is_live(), !self.lanes[&lane.platform].gone, "lane {}", lane.platform);
            }
        }
        if self.run.phase() == Phase::Ended || self.run.stop().is_some() {
            assert_eq!(self.run.count(NodeStatus::Pending), 0, "a stopped or ended run has a pending node");
        }
        for (node, view) in self.run.nodes() {
            let needs: Vec<NodeStatus> =
                view.needs.iter().map(|n| self.run.view(&id(n)).unwrap().status).collect();
            let needs_ok = needs.iter().all(|s| *s == NodeStatus::Ok);
            let lane_died = self.run.lane(&node.platform).unwrap().status == LaneStatus::Died;
            match view.status {
                NodeStatus::Running | NodeStatus::Ok | NodeStatus::Failed => {
                    assert!(needs_ok, "{node} is {} with needs {needs:?}", view.status)
                }
                NodeStatus::Errored => assert!(
                    needs_ok || (node.task == SETUP && lane_died),
                    "{node} errored with needs {needs:?}"
                ),
                NodeStatus::Skipped => assert!(
                    !needs_ok || lane_died || self.run.stop().is_some(),
                    "{node} skipped though its needs are ok"
                ),
                NodeStatus::Pending | NodeStatus::Cancelled => {}
            }
        }
    }

    /// The header, the nodes cell, the record and the verdict say the same thing.
    fn check_projections(&self) {
        let run = &self.run;
        let header = run.header();
        let cell = run.nodes_cell();
        let record = run.record();
        assert_eq!(cell.order, run.order());
        assert_eq!(cell.nodes.iter().map(|v| id(&v.id)).collect::<Vec<_>>(), cell.order);
        assert_eq!(
            record.nodes.iter().map(|n| &n.id).collect::<Vec<_>>(),
            cell.order.iter().collect::<Vec<_>>()
        );
        for (recorded, view) in record.nodes.iter().zip(&cell.nodes) {
            assert_eq!(recorded.status, view.status);
            assert_eq!(recorded.exit_code, view.exit_code);
            assert_eq!(recorded.duration_ms, view.duration_ms);
            assert_eq!(recorded.log, recorded.id.log_path("3f9a2c1"));
        }
        assert_eq!(header.outcome, record.outcome);
        assert_eq!(header.finished_at, record.finished_at);
        assert_eq!(header.lanes, record.lanes);
        assert_eq!(header.phase, run.phase());
        assert_eq!(header.phase == Phase::Settled, run.settled() && !matches!(header.phase, Phase::Ended));
        if header.phase != Phase::Running {
            assert!(run.settled() || run.stop().is_some() || header.phase == Phase::Ended);
        }
        let every_ok = cell.nodes.iter().all(|v| v.status == NodeStatus::Ok);
        assert_eq!(run.outcome() == Outcome::Passed, every_ok, "passed iff every node is ok");
        assert_eq!(header.outcome == RunOutcome::Passed, every_ok && run.settled());
        assert_eq!(header.interrupted, run.interrupted());
        match run.verdict() {
            None => assert_eq!(header.outcome, RunOutcome::Running),
            Some(verdict) => {
                assert_eq!(RunOutcome::from(verdict.outcome), header.outcome);
                let code = verdict.exit_code();
                assert_eq!(
                    code == EXIT_PASSED,
                    every_ok && run.record_error().is_none() && !verdict.interrupted
                );
                assert_eq!(code == EXIT_INTERRUPTED, header.interrupted);
            }
        }
    }

    /// A client's copy fed what the server publishes agrees with the server's run.
    fn check_mirror(&self) {
        let Some(mirror) = &self.mirror else { return };
        assert_eq!(mirror.views(), self.run.views());
        assert_eq!(mirror.outcome(), self.run.outcome());
        assert_eq!(mirror.reported_outcome(), self.run.reported_outcome());
        assert_eq!(mirror.verdict(), self.run.verdict());
        assert_eq!(mirror.header(), self.run.header());
    }
}

#[test]
fn a_failure_skips_its_dependents_and_never_its_siblings() {
    let tasks =
        vec![task("build", &[]), task("test", &["build"]), task("lint", &[]), task("docs", &["lint"])];
    let mut sim = Sim::new(&[("x86_64-linux", tasks.clone()), ("aarch64-linux", tasks)]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("_ci-setup@aarch64-linux", 0);
    sim.exit("build@x86_64-linux", 2);
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Failed);
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Skipped);
    assert_eq!(sim.status("lint@x86_64-linux"), NodeStatus::Running, "a sibling runs on");
    assert_eq!(sim.status("build@aarch64-linux"), NodeStatus::Running, "another lane runs on");
    assert_eq!(sim.run.reported_outcome(), RunOutcome::Running);
    assert_eq!(sim.run.verdict(), None);
    sim.exit("lint@x86_64-linux", 0);
    sim.exit("docs@x86_64-linux", 0);
    for node in ["build", "test", "lint", "docs"] {
        sim.exit(&format!("{node}@aarch64-linux"), 0);
    }
    assert_eq!(sim.status("docs@x86_64-linux"), NodeStatus::Ok);
    assert_eq!(sim.run.phase(), Phase::Settled);
    assert_eq!(sim.last.save, Some(Save::Now), "a settled run is saved at once");
    let shut: Vec<&str> = sim.last.commands.iter().map(Command::platform).collect();
    assert_eq!(shut, ["x86_64-linux", "aarch64-linux"], "a settled run stops its lanes");
    assert!(sim.last.header);
    assert_eq!(sim.run.header().outcome, RunOutcome::Failed);
    sim.close_all();
    assert_eq!(sim.run.phase(), Phase::Ended);
    assert_eq!(sim.saves.last(), Some(&Save::Final));
    let verdict = sim.run.verdict().unwrap();
    assert_eq!((verdict.outcome, verdict.exit_code()), (Outcome::Failed, EXIT_RED));
    let build = sim.run.record().nodes.into_iter().find(|n| n.id == id("build@x86_64-linux")).unwrap();
    assert_eq!(
        (build.status, build.exit_code, build.log.as_str()),
        (NodeStatus::Failed, Some(2), ".ci/3f9a2c1/x86_64-linux/build.log")
    );
}

#[test]
fn a_green_run_passes_with_exit_code_zero() {
    let mut sim = Sim::new(&[("x86_64-linux", vec![task("build", &[]), task("test", &["build"])])]);
    assert_eq!(sim.run.lanes()[0].status, LaneStatus::Provisioning);
    assert_eq!(&*sim.run.view(&id("_ci-setup@x86_64-linux")).unwrap().command, "(provision localhost)");
    assert_eq!(
        *sim.run.view(&id("test@x86_64-linux")).unwrap().needs,
        ["_ci-setup@x86_64-linux", "build@x86_64-linux"]
    );
    sim.start_all();
    assert_eq!(sim.run.lanes()[0].status, LaneStatus::Running);
    assert_eq!(&*sim.run.view(&id("_ci-setup@x86_64-linux")).unwrap().command, "(workspace)");
    assert_eq!(sim.last.save, Some(Save::Soon), "a change mid-run is saved on the next tick");
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("build@x86_64-linux", 0);
    sim.exit("test@x86_64-linux", 0);
    assert_eq!(sim.run.header().outcome, RunOutcome::Passed);
    assert_eq!(sim.run.header().phase, Phase::Settled);
    sim.close_all();
    assert_eq!(sim.run.lanes()[0].status, LaneStatus::Finished);
    let header = sim.run.header();
    assert_eq!(
        (header.phase, header.outcome, header.finished_at),
        (Phase::Ended, RunOutcome::Passed, Some(sim.now))
    );
    assert_eq!(sim.run.verdict().unwrap().exit_code(), EXIT_PASSED);
}

#[test]
fn cancel_stops_a_node_through_its_lane_and_leaves_the_run_incomplete() {
    let mut sim =
        Sim::new(&[("x86_64-linux", vec![task("build", &[]), task("test", &["build"]), task("lint", &[])])]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    let build = id("build@x86_64-linux");
    assert_eq!(sim.run.request(RunRequest::Cancel(build.clone())), Ok(vec![Command::Cancel(build.clone())]));
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Running, "a request changes nothing by itself");
    sim.request(RunRequest::Cancel(build)).unwrap();
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Cancelled);
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Skipped);
    assert_eq!(sim.status("lint@x86_64-linux"), NodeStatus::Running);
    assert_eq!(
        sim.run.request(RunRequest::Cancel(id("nope@x86_64-linux"))),
        Err(Refusal::UnknownNode(id("nope@x86_64-linux")))
    );
    assert_eq!(
        sim.run.request(RunRequest::Cancel(id("lint@aarch64-darwin"))),
        Err(Refusal::UnknownNode(id("lint@aarch64-darwin")))
    );
    sim.exit("lint@x86_64-linux", 0);
    assert_eq!(sim.run.phase(), Phase::Settled);
    let verdict = sim.run.verdict().unwrap();
    assert_eq!(
        (verdict.outcome, verdict.interrupted, verdict.exit_code()),
        (Outcome::Incomplete, false, EXIT_RED)
    );
    assert_eq!(
        sim.run.request(RunRequest::Cancel(id("lint@x86_64-linux"))),
        Err(Refusal::LaneFinished("x86_64-linux".into())),
        "a settled run's lanes are stopping"
    );
}

#[test]
fn cancel_of_a_lane_cancels_what_is_not_terminal_there() {
    let tasks = vec![task("build", &[]), task("test", &["build"]), task("lint", &[])];
    let mut sim = Sim::new(&[("x86_64-linux", tasks.clone()), ("aarch64-linux", tasks)]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("lint@x86_64-linux", 0);
    let commands = sim.run.request(RunRequest::CancelLane { platform: "x86_64-linux".into() }).unwrap();
    assert_eq!(
        commands,
        [Command::Cancel(id("build@x86_64-linux")), Command::Cancel(id("test@x86_64-linux"))],
        "lint passed: only what is not terminal"
    );
    sim.request(RunRequest::CancelLane { platform: "x86_64-linux".into() }).unwrap();
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Cancelled);
    assert!(sim.status("test@x86_64-linux").is_terminal());
    assert_eq!(sim.status("_ci-setup@aarch64-linux"), NodeStatus::Running, "the other lane runs on");
    assert_eq!(
        sim.run.request(RunRequest::CancelLane { platform: "riscv64-linux".into() }),
        Err(Refusal::UnknownLane {
            platform: "riscv64-linux".into(),
            lanes: vec!["x86_64-linux".into(), "aarch64-linux".into()]
        })
    );
}

#[test]
fn rerun_of_a_finished_node_runs_it_and_its_dependents_again() {
    let mut sim =
        Sim::new(&[("x86_64-linux", vec![task("build", &[]), task("test", &["build"]), task("slow", &[])])]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("build@x86_64-linux", 1);
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Skipped);
    sim.request(RunRequest::Rerun(id("build@x86_64-linux"))).unwrap();
    let build = sim.run.view(&id("build@x86_64-linux")).unwrap().clone();
    assert_eq!((build.status, build.generation, build.exit_code), (NodeStatus::Running, 1, None));
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Pending);
    assert!(sim.last.transitions.contains(&Transition {
        node: id("build@x86_64-linux"),
        from: NodeStatus::Failed,
        to: NodeStatus::Running
    }));
    sim.exit("build@x86_64-linux", 0);
    sim.exit("test@x86_64-linux", 0);
    sim.exit("slow@x86_64-linux", 0);
    assert_eq!(sim.run.header().outcome, RunOutcome::Passed, "the rerun made the run green");
}

#[test]
fn rerun_of_a_running_node_replaces_its_attempt() {
    let mut sim = Sim::new(&[("x86_64-linux", vec![task("build", &[]), task("test", &["build"])])]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.request(RunRequest::Rerun(id("build@x86_64-linux"))).unwrap();
    let build = sim.run.view(&id("build@x86_64-linux")).unwrap().clone();
    assert_eq!((build.status, build.generation), (NodeStatus::Running, 1));
    // The killed attempt's exit changes nothing: the lane ignores a stale generation.
    let at = sim.tick();
    let stale = LaneEvent::NodeExited { id: "build".into(), generation: 0, exit: Exit::Signal(15), at };
    sim.lane_event("x86_64-linux", stale);
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Running);
    sim.exit("build@x86_64-linux", 0);
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Running);
    assert_eq!(sim.run.record().nodes[1].status, NodeStatus::Ok);
}

#[test]
fn a_dead_lane_errors_what_ran_skips_what_waited_and_keeps_what_ended() {
    let tasks = vec![task("build", &[]), task("test", &["build"]), task("lint", &[])];
    let mut sim = Sim::new(&[("x86_64-linux", tasks.clone()), ("aarch64-darwin", tasks)]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("_ci-setup@aarch64-darwin", 0);
    sim.exit("lint@x86_64-linux", 0);
    let started = sim.run.view(&id("build@x86_64-linux")).unwrap().started_at.unwrap();
    sim.die("x86_64-linux");
    let lane = sim.run.lane("x86_64-linux").unwrap();
    assert_eq!((lane.status, lane.death.as_deref()), (LaneStatus::Died, Some("ssh: broken pipe")));
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Errored);
    assert_eq!(sim.run.view(&id("build@x86_64-linux")).unwrap().duration_ms, Some(sim.now - started));
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Skipped);
    assert_eq!(sim.status("lint@x86_64-linux"), NodeStatus::Ok, "terminal nodes are untouched");
    assert_eq!(sim.status("_ci-setup@x86_64-linux"), NodeStatus::Ok);
    assert_eq!(sim.status("build@aarch64-darwin"), NodeStatus::Running, "the other lane runs on");
    assert!(sim.last.commands.is_empty(), "the run has not settled: no lane is stopped");
    // A report still in flight from the dead lane changes nothing.
    let mut late = sim.lanes["x86_64-linux"].state.view("build").unwrap().clone();
    late.status = NodeStatus::Ok;
    let fx = sim.apply(RunEvent::LaneReported {
        platform: "x86_64-linux".into(),
        nodes: vec![NodeReport::from(&late)],
    });
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(
        sim.run.request(RunRequest::Rerun(id("build@x86_64-linux"))),
        Err(Refusal::LaneFinished("x86_64-linux".into()))
    );
    for node in ["build", "test", "lint"] {
        sim.exit(&format!("{node}@aarch64-darwin"), 0);
    }
    assert_eq!(sim.run.phase(), Phase::Settled);
    sim.close_all();
    assert_eq!(sim.run.lane("x86_64-linux").unwrap().status, LaneStatus::Died, "closing keeps the death");
    assert_eq!(sim.run.verdict().unwrap().outcome, Outcome::Failed);
}

#[test]
fn a_lane_that_dies_while_provisioning_errors_its_setup() {
    let mut sim =
        Sim::new(&[("x86_64-linux", vec![task("build", &[])]), ("aarch64-darwin", vec![task("build", &[])])]);
    sim.start("x86_64-linux");
    sim.die("aarch64-darwin");
    assert_eq!(sim.status("_ci-setup@aarch64-darwin"), NodeStatus::Errored);
    assert_eq!(sim.status("build@aarch64-darwin"), NodeStatus::Skipped);
    // A lane whose link closes without being asked to stop died too.
    sim.close("x86_64-linux");
    let lane = sim.run.lane("x86_64-linux").unwrap();
    assert_eq!(lane.status, LaneStatus::Died);
    assert_eq!(sim.status("_ci-setup@x86_64-linux"), NodeStatus::Errored);
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Skipped);
    sim.close("aarch64-darwin");
    assert_eq!(sim.run.phase(), Phase::Ended);
    assert_eq!(sim.run.verdict().unwrap().exit_code(), EXIT_RED);
}

#[test]
fn an_interrupt_cancels_what_runs_stops_every_lane_and_leaves_the_run_incomplete() {
    let tasks = vec![task("build", &[]), task("test", &["build"])];
    let mut sim = Sim::new(&[("x86_64-linux", tasks.clone()), ("aarch64-darwin", tasks)]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    let fx = sim.interrupt();
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Cancelled);
    assert_eq!(sim.status("_ci-setup@aarch64-darwin"), NodeStatus::Cancelled);
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Skipped, "what never ran is skipped");
    assert_eq!(sim.status("test@aarch64-darwin"), NodeStatus::Skipped);
    assert_eq!(sim.run.count(NodeStatus::Pending), 0, "an interrupted run has no pending node");
    assert_eq!(
        fx.commands,
        [
            Command::Shutdown { platform: "x86_64-linux".into() },
            Command::Shutdown { platform: "aarch64-darwin".into() }
        ]
    );
    assert_eq!(fx.save, Some(Save::Final));
    assert!(fx.header);
    let header = sim.run.header();
    assert_eq!(
        (header.phase, header.outcome, header.interrupted),
        (Phase::Settled, RunOutcome::Incomplete, true),
        "every node is decided at once; the lanes are closing"
    );
    assert_eq!(header.finished_at, Some(sim.now));
    assert_eq!(sim.run.verdict().unwrap().exit_code(), EXIT_INTERRUPTED);
    assert!(sim.interrupt().is_empty(), "a second interrupt changes nothing");
    // What a lane still had in flight does not undo the interrupt.
    let mut late = sim.lanes["x86_64-linux"].state.view("build").unwrap().clone();
    late.status = NodeStatus::Ok;
    assert!(
        sim.apply(RunEvent::LaneReported {
            platform: "x86_64-linux".into(),
            nodes: vec![NodeReport::from(&late)]
        })
        .is_empty()
    );
    sim.close_all();
    let header = sim.run.header();
    assert_eq!(
        (header.phase, header.outcome, header.interrupted),
        (Phase::Ended, RunOutcome::Incomplete, true)
    );
    assert_eq!(sim.run.record().outcome, RunOutcome::Incomplete);
    assert_eq!(sim.run.verdict().unwrap().exit_code(), EXIT_INTERRUPTED);
}

#[test]
fn an_interrupt_after_the_run_settled_leaves_its_outcome_alone() {
    let mut sim = Sim::new(&[("x86_64-linux", vec![task("build", &[])])]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("build@x86_64-linux", 0);
    assert!(sim.interrupt().is_empty());
    assert_eq!(sim.run.verdict().unwrap().exit_code(), EXIT_PASSED);
}

#[test]
fn an_unwritten_record_ends_the_run_red_and_the_ended_header_says_why() {
    let mut sim = Sim::new(&[("x86_64-linux", vec![task("build", &[])])]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("build@x86_64-linux", 0);
    let at = sim.tick();
    let fx = sim.run.apply(RunEvent::LaneClosed { platform: "x86_64-linux".into(), at });
    assert_eq!(fx.save, Some(Save::Final));
    assert_eq!(sim.run.phase(), Phase::Settled, "ended only once the final record was written");
    let error = "cannot write .ci/3f9a2c1/runs/1.json: No space left on device".to_string();
    let fx = sim.run.apply(RunEvent::RecordWritten { error: Some(error.clone()) });
    assert!(fx.header);
    let header = sim.run.header();
    assert_eq!((header.phase, header.outcome), (Phase::Ended, RunOutcome::Passed));
    assert_eq!(header.record_error, Some(error));
    let verdict = sim.run.verdict().unwrap();
    assert_eq!((verdict.recorded, verdict.exit_code()), (false, EXIT_RED));
}

#[test]
fn a_truncated_log_is_in_the_header_until_its_node_runs_again() {
    let mut sim = Sim::new(&[("x86_64-linux", vec![task("build", &[]), task("slow", &[])])]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    let build = id("build@x86_64-linux");
    let reason = "No space left on device (os error 28)".to_string();
    let fx = sim.apply(RunEvent::LogTruncated { node: build.clone(), reason: reason.clone() });
    assert!(fx.header && fx.changed.is_empty());
    assert_eq!(sim.run.header().truncated_logs, [TruncatedLog { node: build.clone(), reason }]);
    // The lane ends the node errored (its log does not show why it ended).
    let mut errored = sim.lanes["x86_64-linux"].state.view("build").unwrap().clone();
    errored.status = NodeStatus::Errored;
    let _ = sim.apply(RunEvent::LaneReported {
        platform: "x86_64-linux".into(),
        nodes: vec![NodeReport::from(&errored)],
    });
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Errored);
    // The lane reducer thinks build still runs; its rerun starts a new log.
    sim.request(RunRequest::Rerun(build)).unwrap();
    assert!(sim.run.header().truncated_logs.is_empty());
    assert!(sim.last.header);
}

#[test]
fn a_run_abandoned_by_its_server_is_closed_incomplete() {
    let mut sim = Sim::new(&[("x86_64-linux", vec![task("build", &[]), task("test", &["build"])])]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    let at = sim.tick();
    let fx = sim.apply(RunEvent::Abandoned { at });
    assert_eq!(fx.save, Some(Save::Final));
    assert_eq!(sim.status("build@x86_64-linux"), NodeStatus::Errored);
    assert_eq!(sim.status("test@x86_64-linux"), NodeStatus::Skipped);
    let header = sim.run.header();
    assert_eq!(
        (header.phase, header.outcome, header.interrupted),
        (Phase::Ended, RunOutcome::Incomplete, false)
    );
    assert_eq!(sim.run.verdict().unwrap().exit_code(), EXIT_RED);
}

#[test]
fn a_client_copy_replays_what_it_missed_and_then_follows() {
    let tasks = vec![task("build", &[]), task("test", &["build"])];
    let mut sim = Sim::new(&[("x86_64-linux", tasks.clone()), ("aarch64-darwin", tasks)]);
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("build@x86_64-linux", 0);
    sim.attach();
    let mirror = sim.mirror.as_ref().unwrap();
    assert_eq!(
        mirror.request(RunRequest::Cancel(id("test@x86_64-linux"))),
        Err(Refusal::NotOwner),
        "a copy commands nothing"
    );
    sim.exit("test@x86_64-linux", 3);
    sim.exit("_ci-setup@aarch64-darwin", 0);
    sim.exit("build@aarch64-darwin", 0);
    sim.exit("test@aarch64-darwin", 0);
    sim.close_all();
    let mirror = sim.mirror.as_ref().unwrap();
    assert_eq!(mirror.phase(), Phase::Ended);
    assert_eq!(mirror.verdict().unwrap().exit_code(), EXIT_RED);
    // A node first seen already finished shows its running step too.
    let cell = sim.run.nodes_cell();
    let mut late = Run::mirror(&sim.run.header(), &cell.order, &cell.nodes);
    let fx = late.apply(RunEvent::Observed { views: cell.nodes.clone() });
    let test: Vec<(NodeStatus, NodeStatus)> =
        fx.transitions.iter().filter(|t| t.node == id("test@x86_64-linux")).map(|t| (t.from, t.to)).collect();
    assert_eq!(test, [(NodeStatus::Pending, NodeStatus::Running), (NodeStatus::Running, NodeStatus::Failed)]);
    assert_eq!(late.verdict(), sim.run.verdict());
}

#[test]
fn the_header_has_the_wire_shape() {
    // The header item of docs/protocol.md.
    let golden = r#"{"run":"3f9a2c1+dirty#1","sha":"3f9a2c1d5e0b7a4c9e8f6d3b2a1c0e9f8d7c6b5a","label":"3f9a2c1+dirty","pipeline":"ci","lanes":[{"platform":"x86_64-linux","host":"localhost"}],"phase":"ended","outcome":"passed","interrupted":false,"started_at":1795459389323,"finished_at":1795459391870}"#;
    let header: Header = serde_json::from_str(golden).unwrap();
    assert_eq!(serde_json::to_string(&header).unwrap(), golden);
    let cut = TruncatedLog { node: id("ci::e2e@x86_64-linux"), reason: "full".into() };
    let header = Header { truncated_logs: vec![cut], record_error: Some("no".into()), ..header };
    let json = serde_json::to_string(&header).unwrap();
    assert!(
        json.ends_with(
            r#""truncated_logs":[{"node":"ci::e2e@x86_64-linux","reason":"full"}],"record_error":"no"}"#
        ),
        "{json}"
    );
}

/// splitmix64: a tiny deterministic generator, so every failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// A random DAG per lane: task `t<i>` needs a few of the tasks before it.
fn random_lane(rng: &mut Rng) -> Vec<TaskSpec> {
    let count = 1 + rng.below(6);
    (0..count)
        .map(|i| {
            let mut needs: Vec<String> =
                (0..i).filter(|_| rng.below(3) == 0).map(|j| format!("t{j}")).collect();
            needs.dedup();
            TaskSpec { id: format!("t{i}"), argv: vec!["just".into(), format!("t{i}")], needs }
        })
        .collect()
}

/// One random step; false once there is nothing left to do.
fn random_step(sim: &mut Sim, rng: &mut Rng) -> bool {
    let live: Vec<String> = sim.lanes.iter().filter(|(_, l)| !l.gone).map(|(p, _)| p.clone()).collect();
    let open: Vec<String> = sim.lanes.iter().filter(|(_, l)| !l.closed).map(|(p, _)| p.clone()).collect();
    if open.is_empty() {
        return false;
    }
    let running: Vec<NodeId> = live
        .iter()
        .flat_map(|p| sim.lanes[p].state.running().into_iter().map(|(task, _)| NodeId::new(task, p.as_str())))
        .collect();
    let nodes = sim.run.order().to_vec();
    match rng.below(100) {
        // Processes end far more often than anything else happens.
        0..=54 => {
            if let Some(node) = rng.pick(&running) {
                let code = if rng.below(4) == 0 { 1 + rng.below(3) as i32 } else { 0 };
                sim.exit(&node.to_string(), code);
            } else if let Some(platform) = rng.pick(&live).cloned()
                && sim.lanes[&platform].state.view(SETUP).unwrap().status == NodeStatus::Pending
            {
                sim.start(&platform);
            }
        }
        55..=64 => {
            if let Some(platform) = rng.pick(&live).cloned()
                && sim.lanes[&platform].state.view(SETUP).unwrap().status == NodeStatus::Pending
            {
                sim.start(&platform);
            }
        }
        65..=74 => {
            let node = rng.pick(&nodes).unwrap().clone();
            let _ = sim.request(RunRequest::Rerun(node));
        }
        75..=82 => {
            let node = rng.pick(&nodes).unwrap().clone();
            let _ = sim.request(RunRequest::Cancel(node));
        }
        83..=84 => {
            let platform = rng.pick(&open).unwrap().clone();
            let _ = sim.request(RunRequest::CancelLane { platform });
        }
        85..=88 => {
            if let Some(platform) = rng.pick(&live).cloned() {
                sim.die(&platform);
            }
        }
        89..=90 => {
            let _ = sim.interrupt();
        }
        91..=93 => {
            // A stopped or dead lane closes.
            let gone: Vec<String> =
                sim.lanes.iter().filter(|(_, l)| l.gone && !l.closed).map(|(p, _)| p.clone()).collect();
            if let Some(platform) = rng.pick(&gone).cloned() {
                sim.close(&platform);
            }
        }
        94 => {
            if let Some(platform) = rng.pick(&open).cloned() {
                sim.close(&platform);
            }
        }
        95 => {
            // A report still in flight from a lane that was stopped or died changes nothing.
            let gone: Vec<String> =
                sim.lanes.iter().filter(|(_, l)| l.gone).map(|(p, _)| p.clone()).collect();
            if let Some(platform) = rng.pick(&gone).cloned() {
                let mut views = sim.lanes[&platform].state.views();
                for view in &mut views {
                    view.status = NodeStatus::ALL[rng.below(NodeStatus::ALL.len())];
                }
                let nodes = views.iter().map(NodeReport::from).collect();
                let fx = sim.apply(RunEvent::LaneReported { platform, nodes });
                assert!(fx.is_empty(), "{fx:?}");
            }
        }
        96 => {
            if sim.mirror.is_none() {
                sim.attach();
            }
        }
        _ => {
            let node = rng.pick(&nodes).unwrap().clone();
            let reason = "No space left on device (os error 28)".to_string();
            let _ = sim.apply(RunEvent::LogTruncated { node, reason });
        }
    }
    true
}

#[test]
fn random_runs_keep_every_rule() {
    const PLATFORMS: [&str; 3] = ["x86_64-linux", "aarch64-linux", "aarch64-darwin"];
    let mut outcomes = BTreeMap::new();
    for seed in 0..400u64 {
        let mut rng = Rng(seed);
        let lanes = 1 + rng.below(PLATFORMS.len());
        let plans: Vec<(&str, Vec<TaskSpec>)> =
            PLATFORMS[..lanes].iter().map(|p| (*p, random_lane(&mut rng))).collect();
        let jobs = [None, Some(1), Some(2)][rng.below(3)];
        let mut sim = Sim::with_jobs(&plans, jobs);
        let mut steps = 0;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while random_step(&mut sim, &mut rng) {
                steps += 1;
                assert!(steps < 10_000, "the run never ended");
            }
            // Every lane closed: the run ended, and its verdict is known.
            assert_eq!(sim.run.phase(), Phase::Ended);
            assert_eq!(sim.saves.last(), Some(&Save::Final));
            let verdict = sim.run.verdict().expect("an ended run has a verdict");
            *outcomes.entry((verdict.outcome.as_str(), verdict.exit_code())).or_insert(0) += 1;
        }));
        if let Err(panic) = result {
            eprintln!("seed {seed} failed after {steps} steps");
            std::panic::resume_unwind(panic);
        }
    }
    // The generator reaches every kind of ending.
    for ending in [("passed", 0), ("failed", 1), ("incomplete", 1), ("incomplete", 130)] {
        assert!(outcomes.contains_key(&ending), "no run ended {ending:?}: {outcomes:?}");
    }
}

#[test]
fn a_node_first_seen_ended_is_heard_to_start_before_it_ends() {
    let mut sim = Sim::new(&[("x86_64-linux", vec![task("build", &[])])]);
    let cell = sim.run.nodes_cell();
    let mut mirror = Run::mirror(&sim.run.header(), &cell.order, &cell.nodes);
    let _ = mirror.apply(RunEvent::Observed { views: cell.nodes.clone() });
    sim.start_all();
    sim.exit("_ci-setup@x86_64-linux", 0);
    sim.exit("build@x86_64-linux", 0);
    // The client hears only each node's last state: its running view was folded away.
    let fx = mirror.apply(RunEvent::Observed { views: sim.run.nodes_cell().nodes.clone() });
    let heard: Vec<_> = fx
        .transitions
        .iter()
        .filter(|t| t.node == id("build@x86_64-linux"))
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(heard, [(NodeStatus::Pending, NodeStatus::Running), (NodeStatus::Running, NodeStatus::Ok)]);
}
