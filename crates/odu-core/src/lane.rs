//! The lane reducer: the scheduling state of one lane, changed only by [`LaneState::apply`].
//!
//! Every input (configure done, a process exit, an operator's rerun or cancel) is one
//! [`LaneEvent`]; the result is the list of [`LaneEffect`]s the runner must carry out, in order.
//! Invariants: a node only starts when every need is `ok`; a dependent of a blocked need is
//! `skipped`; effects from a stale attempt (an exit of a generation that was rerun) are ignored.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Walker};
use serde::{Deserialize, Serialize};

use crate::node_id::SETUP;
use crate::status::NodeStatus;

/// One task as a lane receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub needs: Vec<String>,
}

/// The public state of one node, as the `nodes` cell serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    /// What runs: `just --no-deps ci::e2e`, or a description for bookkeeping nodes.
    ///
    /// The command and the needs never change once the lane is planned, and a view is copied
    /// at every transition (into the published cell, the delta, the coordinator's mirror):
    /// shared, a copy costs a count where it cost four allocations and their frees.
    pub command: Arc<str>,
    pub needs: Arc<[String]>,
    pub status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Bumped on every rerun; a log snapshot carries the generation it belongs to.
    #[serde(default)]
    pub generation: u32,
}

impl NodeView {
    /// A node that has not run yet.
    pub fn pending(id: &str, command: impl Into<Arc<str>>, needs: impl Into<Arc<[String]>>) -> NodeView {
        NodeView {
            id: id.to_string(),
            command: command.into(),
            needs: needs.into(),
            status: NodeStatus::Pending,
            exit_code: None,
            started_at: None,
            duration_ms: None,
            generation: 0,
        }
    }
}

/// What a lane reports of one node at a transition: its state, without the command and the
/// needs, which never change once the lane is planned and which the run has from its plan.
/// Only the setup node's command comes with it: the runner makes that one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    pub id: String,
    pub status: NodeStatus,
    pub exit_code: Option<i32>,
    pub started_at: Option<u64>,
    pub duration_ms: Option<u64>,
    pub generation: u32,
    /// The setup node's command; `None` for every other node ([`NodeReport::carries_command`]).
    pub setup_command: Option<Arc<str>>,
}

impl NodeReport {
    /// Whether a report of node `id` carries its command: the setup node's, which its runner
    /// makes (`(workspace …)`), and no other node's, which the run has from its plan. Each
    /// maker of a report shares or copies the command its own way.
    pub fn carries_command(id: &str) -> bool {
        id == SETUP
    }

    /// Writes what this report says into `view` (the inverse of `NodeReport::from(&view)`):
    /// the node's state, and the command it carries, if any; the needs stay the plan's.
    pub fn apply_to(self, view: &mut NodeView) {
        view.status = self.status;
        view.exit_code = self.exit_code;
        view.started_at = self.started_at;
        view.duration_ms = self.duration_ms;
        view.generation = self.generation;
        if let Some(command) = self.setup_command {
            view.command = command;
        }
    }
}

impl From<&NodeView> for NodeReport {
    fn from(view: &NodeView) -> NodeReport {
        NodeReport {
            id: view.id.clone(),
            status: view.status,
            exit_code: view.exit_code,
            started_at: view.started_at,
            duration_ms: view.duration_ms,
            generation: view.generation,
            setup_command: NodeReport::carries_command(&view.id).then(|| view.command.clone()),
        }
    }
}

/// How a node's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by a signal without an exit code.
    Signal(i32),
    /// The process could not be spawned (or setup could not run).
    SpawnFailed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaneEvent {
    /// Configuration is done: start scheduling.
    Started {
        at: u64,
    },
    NodeExited {
        id: String,
        generation: u32,
        exit: Exit,
        at: u64,
    },
    /// The node's process was started after the moment the lane started the node (a runner
    /// spawns the nodes one event started one at a time): its duration counts from here. It
    /// changes nothing else and publishes nothing; the node's next change carries it.
    NodeSpawned {
        id: String,
        generation: u32,
        at: u64,
    },
    RerunRequested {
        id: String,
        at: u64,
    },
    CancelRequested {
        id: String,
        at: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaneEffect {
    /// Kill the process group of that attempt (TERM, then KILL after the grace period).
    Kill { id: String, generation: u32 },
    /// Start a fresh, empty log for the new generation (a rerun reopens the log).
    ResetLog { id: String, generation: u32 },
    /// Start the node's process (`argv` empty for the bookkeeping setup node).
    Spawn { id: String, generation: u32, argv: Arc<[String]> },
    /// The node will write nothing more to this generation's log.
    EndLog { id: String, generation: u32, note: Option<String> },
    /// The nodes at these positions in scheduling order ([`LaneState::view_at`]) changed:
    /// publish them.
    Publish { changed: Vec<usize> },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no node {0:?} in this lane")]
    UnknownNode(String),
    #[error("node {0:?} already finished: rerun it instead")]
    AlreadyFinished(String),
    #[error("the lane is not configured yet")]
    NotStarted,
}

#[derive(Clone, Debug)]
struct NodeState {
    view: NodeView,
    argv: Arc<[String]>,
    /// Indices of the needs, so scheduling never looks ids up.
    needs: Vec<usize>,
}

/// The scheduling state of one lane. Nodes live in scheduling order; ids map to positions.
#[derive(Clone, Debug)]
pub struct LaneState {
    order: Vec<String>,
    nodes: Vec<NodeState>,
    /// One node per position, an edge from each need to the node that needs it.
    graph: DiGraph<(), ()>,
    /// Looked up at every event of a node: hashed, since a tree of thousands of ids costs
    /// a dozen comparisons of strings scattered over the heap, each a likely cache miss
    /// after the node's own process ran.
    index: HashMap<String, usize>,
    jobs: Option<usize>,
    started: bool,
    /// How many nodes are running, kept by [`LaneState::set_status`].
    running: usize,
    /// How many nodes are terminal, kept likewise: [`LaneState::settled`] is asked after
    /// every event, and a scan of the nodes would make a lane's run quadratic in its size.
    terminal: usize,
    /// Ready nodes the jobs cap holds back, for the next pass to start first.
    held: BTreeSet<usize>,
    /// Tests compare each pass with one over every node, as the scheduler once made.
    #[cfg(test)]
    every_node: bool,
    /// How many times a pass looked at a node, for tests to hold the scheduler linear.
    #[cfg(test)]
    looked: usize,
}

impl LaneState {
    /// Seeds the setup node and the tasks, each of which needs setup. `tasks` must be in a
    /// topological order (dependencies first) and reference only ids among them.
    pub fn new(tasks: &[TaskSpec], setup_command: &str, jobs: Option<usize>) -> Result<Self, String> {
        let mut order = vec![SETUP.to_string()];
        let mut index = HashMap::from([(SETUP.to_string(), 0)]);
        let mut nodes = vec![NodeState {
            view: NodeView::pending(SETUP, setup_command.to_string(), vec![]),
            argv: Arc::from([]),
            needs: vec![],
        }];
        let mut graph = DiGraph::new();
        graph.add_node(());
        for task in tasks {
            if task.id.is_empty() || task.argv.is_empty() {
                return Err(format!("task {:?} has an empty id or command", task.id));
            }
            if index.contains_key(&task.id) {
                return Err(format!("duplicate task id {:?}", task.id));
            }
            let mut needs: Vec<String> = task.needs.clone();
            for need in &needs {
                if !index.contains_key(need) {
                    return Err(format!(
                        "task {:?} needs {:?}, which is unknown or comes later (tasks must be in dependency order)",
                        task.id, need
                    ));
                }
            }
            needs.push(SETUP.to_string());
            needs.sort();
            needs.dedup();
            let at = nodes.len();
            let need_positions: Vec<usize> = needs.iter().map(|n| index[n]).collect();
            let node = graph.add_node(());
            for &need in &need_positions {
                graph.add_edge(NodeIndex::new(need), node, ());
            }
            let command = shell_words(&task.argv);
            nodes.push(NodeState {
                view: NodeView::pending(&task.id, command, needs),
                argv: task.argv.as_slice().into(),
                needs: need_positions,
            });
            index.insert(task.id.clone(), at);
            order.push(task.id.clone());
        }
        Ok(LaneState {
            order,
            nodes,
            graph,
            index,
            jobs: jobs.filter(|&j| j > 0),
            started: false,
            running: 0,
            terminal: 0,
            held: BTreeSet::new(),
            #[cfg(test)]
            every_node: false,
            #[cfg(test)]
            looked: 0,
        })
    }

    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The node's position in scheduling order.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn view(&self, id: &str) -> Option<&NodeView> {
        self.index.get(id).map(|&at| &self.nodes[at].view)
    }

    /// The node at a position in scheduling order (as [`LaneEffect::Publish`] names them).
    pub fn view_at(&self, at: usize) -> Option<&NodeView> {
        self.nodes.get(at).map(|node| &node.view)
    }

    /// Every node in scheduling order.
    pub fn views(&self) -> Vec<NodeView> {
        self.nodes.iter().map(|n| n.view.clone()).collect()
    }

    /// Every node is terminal.
    pub fn settled(&self) -> bool {
        self.terminal == self.nodes.len()
    }

    /// Node ids that are running, with their generation.
    pub fn running(&self) -> Vec<(String, u32)> {
        self.nodes
            .iter()
            .filter(|n| n.view.status == NodeStatus::Running)
            .map(|n| (n.view.id.clone(), n.view.generation))
            .collect()
    }

    #[must_use = "effects must be carried out"]
    pub fn apply(&mut self, event: LaneEvent) -> Result<Vec<LaneEffect>, Refusal> {
        let mut fx = Effects::default();
        match event {
            LaneEvent::Started { at } => {
                self.started = true;
                self.tick(at, &mut fx, (0..self.nodes.len()).collect());
            }
            LaneEvent::NodeExited { id, generation, exit, at } => {
                let Some(&pos) = self.index.get(&id) else {
                    return Err(Refusal::UnknownNode(id));
                };
                let node = &mut self.nodes[pos];
                if node.view.generation == generation && node.view.status == NodeStatus::Running {
                    let (status, code) = match exit {
                        Exit::Code(0) => (NodeStatus::Ok, Some(0)),
                        Exit::Code(code) => (NodeStatus::Failed, Some(code)),
                        Exit::Signal(sig) => (NodeStatus::Failed, Some(128 + sig)),
                        Exit::SpawnFailed => (NodeStatus::Failed, None),
                    };
                    node.view.exit_code = code;
                    node.view.duration_ms = node.view.started_at.map(|s| at.saturating_sub(s));
                    self.set_status(pos, status);
                    fx.changed(pos);
                    self.tick_changed(at, &mut fx);
                }
            }
            LaneEvent::NodeSpawned { id, generation, at } => {
                let Some(&pos) = self.index.get(&id) else {
                    return Err(Refusal::UnknownNode(id));
                };
                let node = &mut self.nodes[pos].view;
                if node.generation == generation && node.status == NodeStatus::Running {
                    node.started_at = Some(at);
                }
            }
            LaneEvent::RerunRequested { id, at } => {
                let Some(&pos) = self.index.get(&id) else {
                    return Err(Refusal::UnknownNode(id));
                };
                if !self.started {
                    return Err(Refusal::NotStarted);
                }
                for target in self.closure_of_dependents(pos) {
                    let node = &self.nodes[target].view;
                    if node.status == NodeStatus::Running {
                        fx.push(LaneEffect::Kill { id: node.id.clone(), generation: node.generation });
                    }
                    self.set_status(target, NodeStatus::Pending);
                    let node = &mut self.nodes[target];
                    let id = node.view.id.clone();
                    node.view.generation += 1;
                    node.view.exit_code = None;
                    node.view.started_at = None;
                    node.view.duration_ms = None;
                    fx.push(LaneEffect::ResetLog { id, generation: node.view.generation });
                    fx.changed(target);
                }
                self.tick_changed(at, &mut fx);
            }
            LaneEvent::CancelRequested { id, at } => {
                let Some(&pos) = self.index.get(&id) else {
                    return Err(Refusal::UnknownNode(id));
                };
                let node = &mut self.nodes[pos];
                match node.view.status {
                    NodeStatus::Cancelled => {}
                    NodeStatus::Running => {
                        node.view.duration_ms = node.view.started_at.map(|s| at.saturating_sub(s));
                        fx.push(LaneEffect::Kill { id, generation: node.view.generation });
                        self.set_status(pos, NodeStatus::Cancelled);
                        fx.changed(pos);
                        self.tick_changed(at, &mut fx);
                    }
                    NodeStatus::Pending => {
                        fx.push(LaneEffect::EndLog {
                            id,
                            generation: node.view.generation,
                            note: Some("[odu] cancelled by operator before it started\n".into()),
                        });
                        self.set_status(pos, NodeStatus::Cancelled);
                        fx.changed(pos);
                        self.tick_changed(at, &mut fx);
                    }
                    _ => return Err(Refusal::AlreadyFinished(id)),
                }
            }
        }
        Ok(fx.finish())
    }

    /// The node and everything that transitively needs it, in scheduling order.
    fn closure_of_dependents(&self, pos: usize) -> Vec<usize> {
        let mut closure: Vec<usize> =
            Dfs::new(&self.graph, NodeIndex::new(pos)).iter(&self.graph).map(NodeIndex::index).collect();
        // Positions are scheduling order.
        closure.sort_unstable();
        closure
    }

    /// Sets a node's status, keeping the running count.
    fn set_status(&mut self, pos: usize, status: NodeStatus) {
        let was = std::mem::replace(&mut self.nodes[pos].view.status, status);
        self.running = self.running + usize::from(status == NodeStatus::Running)
            - usize::from(was == NodeStatus::Running);
        self.terminal = self.terminal + usize::from(status.is_terminal()) - usize::from(was.is_terminal());
    }

    /// The nodes that need the node at `pos` directly.
    fn dependents(&self, pos: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph.neighbors(NodeIndex::new(pos)).map(NodeIndex::index)
    }

    /// [`LaneState::tick`] over what this event can have made ready or blocked: the nodes it
    /// changed and those that need them directly.
    fn tick_changed(&mut self, at: u64, fx: &mut Effects) {
        let mut look = BTreeSet::new();
        for &pos in &fx.changed {
            look.insert(pos);
            look.extend(self.dependents(pos));
        }
        #[cfg(test)]
        if self.every_node {
            look.extend(0..self.nodes.len());
        }
        self.tick(at, fx, look);
    }

    /// One pass in topological order over `look` (and the nodes the jobs cap held back), each
    /// node skipped adding the nodes that need it: blocked nodes skip (cascading within the
    /// pass), ready nodes start while the jobs cap allows. A pending node outside them cannot
    /// have changed: nothing it needs did. Held nodes are looked at only while the cap has
    /// room (one that got blocked is in `look` through its need). So an event costs what it
    /// touches, not the lane's size (a chain of N nodes, or N nodes under `--jobs`, made N²
    /// checks).
    fn tick(&mut self, at: u64, fx: &mut Effects, mut look: BTreeSet<usize>) {
        if !self.started {
            return;
        }
        loop {
            let room = self.jobs.is_none_or(|cap| self.running < cap);
            let held_first = self.held.first().copied().filter(|_| room);
            let pos = match (look.first().copied(), held_first) {
                (Some(a), Some(b)) if b < a => self.held.pop_first(),
                (Some(_), _) => look.pop_first(),
                (None, Some(_)) => self.held.pop_first(),
                (None, None) => None,
            };
            let Some(pos) = pos else { break };
            #[cfg(test)]
            {
                self.looked += 1;
            }
            if self.nodes[pos].view.status != NodeStatus::Pending {
                continue;
            }
            let needs = &self.nodes[pos].needs;
            let blocked = needs.iter().any(|&n| self.nodes[n].view.status.blocks_dependents());
            let ready = needs.iter().all(|&n| self.nodes[n].view.status == NodeStatus::Ok);
            if blocked {
                self.set_status(pos, NodeStatus::Skipped);
                let node = &self.nodes[pos].view;
                fx.push(LaneEffect::EndLog { id: node.id.clone(), generation: node.generation, note: None });
                fx.changed(pos);
                look.extend(self.dependents(pos));
            } else if ready && room {
                self.set_status(pos, NodeStatus::Running);
                let node = &mut self.nodes[pos];
                node.view.started_at = Some(at);
                fx.push(LaneEffect::Spawn {
                    id: node.view.id.clone(),
                    generation: node.view.generation,
                    argv: node.argv.clone(),
                });
                fx.changed(pos);
            } else if ready {
                self.held.insert(pos);
            }
        }
    }
}

/// Renders argv for display, quoting words a shell would split. Written into one string: every
/// node's command is rendered once a lane (in the runner) and once a run (in the server).
pub fn shell_words(argv: &[String]) -> String {
    let mut out = String::with_capacity(argv.iter().map(|w| w.len() + 3).sum());
    for (at, w) in argv.iter().enumerate() {
        if at > 0 {
            out.push(' ');
        }
        if !w.is_empty() && w.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.:/@=+,()".contains(&c)) {
            out.push_str(w);
        } else {
            out.push('\'');
            out.push_str(&w.replace('\'', r"'\''"));
            out.push('\'');
        }
    }
    out
}

#[derive(Default)]
struct Effects {
    effects: Vec<LaneEffect>,
    /// Positions of changed nodes.
    changed: BTreeSet<usize>,
}

impl Effects {
    fn push(&mut self, effect: LaneEffect) {
        self.effects.push(effect);
    }
    fn changed(&mut self, pos: usize) {
        self.changed.insert(pos);
    }
    /// The effects, then one `Publish` naming the changed nodes in scheduling order.
    fn finish(mut self) -> Vec<LaneEffect> {
        if !self.changed.is_empty() {
            let changed = self.changed.into_iter().collect();
            self.effects.push(LaneEffect::Publish { changed });
        }
        self.effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_carries_the_setup_nodes_command_and_no_other() {
        let setup = NodeView::pending(SETUP, "(workspace /w)", vec![]);
        let task = NodeView::pending("build", "just --no-deps build", vec![SETUP.to_string()]);
        assert_eq!(NodeReport::from(&setup).setup_command.as_deref(), Some("(workspace /w)"));
        assert_eq!(NodeReport::from(&task).setup_command, None);
    }

    #[test]
    fn a_report_applied_to_a_pending_view_gives_back_the_view_it_was_made_from() {
        let setup = NodeView {
            status: NodeStatus::Ok,
            exit_code: Some(0),
            started_at: Some(3),
            duration_ms: Some(2),
            ..NodeView::pending(SETUP, "(workspace /w)", vec![])
        };
        let task = NodeView {
            status: NodeStatus::Failed,
            exit_code: Some(4),
            started_at: Some(5),
            duration_ms: Some(6),
            generation: 2,
            ..NodeView::pending("build", "just --no-deps build", vec![SETUP.to_string()])
        };
        // The run's view of the setup node before its runner says what it is.
        let mut planned_setup = NodeView::pending(SETUP, "(provision localhost)", vec![]);
        NodeReport::from(&setup).apply_to(&mut planned_setup);
        assert_eq!(planned_setup, setup);
        let mut planned_task = NodeView::pending("build", "just --no-deps build", vec![SETUP.to_string()]);
        NodeReport::from(&task).apply_to(&mut planned_task);
        assert_eq!(planned_task, task);
    }

    #[test]
    fn shell_words_quotes_only_what_a_shell_would_split() {
        let words = |w: &[&str]| shell_words(&w.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        assert_eq!(words(&["just", "--no-deps", "ci::e2e", "a=1"]), "just --no-deps ci::e2e a=1");
        assert_eq!(words(&["echo", "two words", ""]), "echo 'two words' ''");
        assert_eq!(words(&["echo", "it's"]), r"echo 'it'\''s'");
        assert_eq!(words(&["echo", "caf\u{e9}", "$HOME"]), "echo 'caf\u{e9}' '$HOME'");
        assert_eq!(words(&[]), "");
    }

    fn task(id: &str, needs: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            argv: vec!["just".into(), "--no-deps".into(), id.into()],
            needs: needs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn chain() -> LaneState {
        LaneState::new(&[task("build", &[]), task("test", &["build"])], "(workspace)", None).unwrap()
    }

    fn spawned(fx: &[LaneEffect]) -> Vec<&str> {
        fx.iter()
            .filter_map(|e| match e {
                LaneEffect::Spawn { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }

    fn exit(lane: &mut LaneState, id: &str, code: i32) -> Vec<LaneEffect> {
        let generation = lane.view(id).unwrap().generation;
        lane.apply(LaneEvent::NodeExited { id: id.into(), generation, exit: Exit::Code(code), at: 10 })
            .unwrap()
    }

    fn status(lane: &LaneState, id: &str) -> NodeStatus {
        lane.view(id).unwrap().status
    }

    #[test]
    fn setup_runs_first_then_nodes_in_dependency_order() {
        let mut lane = chain();
        let fx = lane.apply(LaneEvent::Started { at: 0 }).unwrap();
        assert_eq!(spawned(&fx), vec![SETUP]);
        assert_eq!(spawned(&exit(&mut lane, SETUP, 0)), vec!["build"]);
        assert_eq!(spawned(&exit(&mut lane, "build", 0)), vec!["test"]);
        assert!(spawned(&exit(&mut lane, "test", 0)).is_empty());
        assert!(lane.settled());
    }

    #[test]
    fn failed_node_keeps_its_exit_code_and_skips_dependents() {
        let mut lane = chain();
        let _ = lane.apply(LaneEvent::Started { at: 0 }).unwrap();
        let _ = exit(&mut lane, SETUP, 0);
        let fx = exit(&mut lane, "build", 3);
        assert_eq!(lane.view("build").unwrap().exit_code, Some(3));
        assert_eq!(status(&lane, "test"), NodeStatus::Skipped);
        assert!(fx.iter().any(|e| matches!(e, LaneEffect::EndLog { id, .. } if id == "test")));
    }

    #[test]
    fn a_node_spawned_late_counts_its_duration_from_its_spawn() {
        let mut lane = chain();
        let _ = lane.apply(LaneEvent::Started { at: 0 }).unwrap();
        let _ = exit(&mut lane, SETUP, 0);
        let spawned = LaneEvent::NodeSpawned { id: "build".into(), generation: 0, at: 40 };
        assert_eq!(lane.apply(spawned), Ok(vec![]));
        // A stale attempt's spawn changes nothing.
        let stale = LaneEvent::NodeSpawned { id: "build".into(), generation: 7, at: 45 };
        assert_eq!(lane.apply(stale), Ok(vec![]));
        assert_eq!(lane.view("build").unwrap().started_at, Some(40));
        let _ = lane.apply(LaneEvent::NodeExited {
            id: "build".into(),
            generation: 0,
            exit: Exit::Code(0),
            at: 50,
        });
        assert_eq!(lane.view("build").unwrap().duration_ms, Some(10));
    }

    #[test]
    fn setup_failure_skips_everything() {
        let mut lane = chain();
        let _ = lane.apply(LaneEvent::Started { at: 0 }).unwrap();
        let _ = exit(&mut lane, SETUP, 1);
        assert_eq!(status(&lane, "build"), NodeStatus::Skipped);
        assert_eq!(status(&lane, "test"), NodeStatus::Skipped);
    }

    #[test]
    fn rerun_resets_the_node_and_its_dependents_and_ignores_stale_exits() {
        let mut lane = chain();
        let _ = lane.apply(LaneEvent::Started { at: 0 }).unwrap();
        let _ = exit(&mut lane, SETUP, 0);
        let _ = exit(&mut lane, "build", 1);
        let fx = lane.apply(LaneEvent::RerunRequested { id: "build".into(), at: 20 }).unwrap();
        assert_eq!(spawned(&fx), vec!["build"]);
        assert_eq!(status(&lane, "test"), NodeStatus::Pending);
        assert_eq!(lane.view("build").unwrap().generation, 1);
        // A rerun of a running node kills the old attempt; its late exit changes nothing.
        let fx = lane.apply(LaneEvent::RerunRequested { id: "build".into(), at: 30 }).unwrap();
        assert!(fx.contains(&LaneEffect::Kill { id: "build".into(), generation: 1 }));
        let stale = lane
            .apply(LaneEvent::NodeExited { id: "build".into(), generation: 1, exit: Exit::Code(0), at: 31 })
            .unwrap();
        assert!(stale.is_empty());
        assert_eq!(status(&lane, "build"), NodeStatus::Running);
    }

    #[test]
    fn cancel_stops_a_running_node_and_skips_dependents() {
        let mut lane = chain();
        let _ = lane.apply(LaneEvent::Started { at: 0 }).unwrap();
        let _ = exit(&mut lane, SETUP, 0);
        let fx = lane.apply(LaneEvent::CancelRequested { id: "build".into(), at: 5 }).unwrap();
        assert!(fx.contains(&LaneEffect::Kill { id: "build".into(), generation: 0 }));
        assert_eq!(status(&lane, "build"), NodeStatus::Cancelled);
        assert_eq!(status(&lane, "test"), NodeStatus::Skipped);
        assert_eq!(lane.apply(LaneEvent::CancelRequested { id: "build".into(), at: 6 }), Ok(vec![]));
        assert_eq!(
            lane.apply(LaneEvent::CancelRequested { id: "nope".into(), at: 6 }),
            Err(Refusal::UnknownNode("nope".into()))
        );
        assert_eq!(
            lane.apply(LaneEvent::CancelRequested { id: SETUP.into(), at: 6 }),
            Err(Refusal::AlreadyFinished(SETUP.into()))
        );
    }

    #[test]
    fn each_pass_looks_at_what_the_event_touched_and_decides_as_a_pass_over_every_node() {
        let mut seed = 0x0d0_u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % n as u64) as usize
        };
        for round in 0..400 {
            let count = 1 + next(14);
            let tasks: Vec<TaskSpec> = (0..count)
                .map(|i| {
                    let needs: Vec<String> =
                        (0..i).filter(|_| next(4) == 0).map(|j| format!("t{j}")).collect();
                    let needs: Vec<&str> = needs.iter().map(String::as_str).collect();
                    task(&format!("t{i}"), &needs)
                })
                .collect();
            let jobs = [None, Some(1), Some(2), Some(3)][next(4)];
            let mut lane = LaneState::new(&tasks, "(workspace)", jobs).unwrap();
            let mut every = lane.clone();
            every.every_node = true;
            let both = |event: LaneEvent, lane: &mut LaneState, every: &mut LaneState| {
                let (fx, expected) = (lane.apply(event.clone()), every.apply(event.clone()));
                assert_eq!(fx, expected, "round {round}, {event:?}");
                assert_eq!(lane.views(), every.views(), "round {round}, {event:?}");
                let all_terminal = lane.views().iter().all(|v| v.status.is_terminal());
                assert_eq!(lane.settled(), all_terminal, "round {round}, {event:?}");
            };
            both(LaneEvent::Started { at: 0 }, &mut lane, &mut every);
            for at in 1..80 {
                let order = lane.order().to_vec();
                let running = lane.running();
                let id = order[next(order.len())].clone();
                let event = match next(10) {
                    0..=5 if !running.is_empty() => {
                        let (id, generation) = running[next(running.len())].clone();
                        let exit = if next(4) == 0 { Exit::Code(1) } else { Exit::Code(0) };
                        LaneEvent::NodeExited { id, generation, exit, at }
                    }
                    6 => LaneEvent::RerunRequested { id, at },
                    7 => LaneEvent::CancelRequested { id, at },
                    8 => LaneEvent::NodeExited { id, generation: 99, exit: Exit::Code(0), at },
                    _ if lane.settled() => LaneEvent::RerunRequested { id, at },
                    _ => continue,
                };
                both(event, &mut lane, &mut every);
            }
        }
    }

    #[test]
    fn a_lane_of_n_nodes_is_scheduled_with_work_linear_in_n() {
        let n = 2000;
        let wide: Vec<TaskSpec> = (0..n).map(|i| task(&format!("t{i}"), &[])).collect();
        let chain: Vec<TaskSpec> = (0..n)
            .map(|i| TaskSpec {
                needs: if i == 0 { vec![] } else { vec![format!("t{}", i - 1)] },
                ..task(&format!("t{i}"), &[])
            })
            .collect();
        for (shape, tasks, jobs) in [("wide", &wide, Some(2)), ("wide", &wide, None), ("chain", &chain, None)]
        {
            let mut lane = LaneState::new(tasks, "(workspace)", jobs).unwrap();
            let mut running = spawned(&lane.apply(LaneEvent::Started { at: 0 }).unwrap())
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            while let Some(id) = running.pop() {
                running.extend(spawned(&exit(&mut lane, &id, 0)).into_iter().map(String::from));
            }
            assert!(lane.settled(), "{shape} {jobs:?}");
            assert!(lane.looked <= 4 * (n + 1), "{shape} {jobs:?}: {} looks for {n} nodes", lane.looked);
        }
    }

    #[test]
    fn jobs_cap_limits_concurrent_nodes() {
        let tasks: Vec<TaskSpec> = (0..5).map(|i| task(&format!("t{i}"), &[])).collect();
        let mut lane = LaneState::new(&tasks, "(workspace)", Some(2)).unwrap();
        let _ = lane.apply(LaneEvent::Started { at: 0 }).unwrap();
        assert_eq!(spawned(&exit(&mut lane, SETUP, 0)), vec!["t0", "t1"]);
        assert_eq!(spawned(&exit(&mut lane, "t0", 0)), vec!["t2"]);
    }
}
