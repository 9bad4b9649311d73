//! The fan-in state: every lane's nodes under `<task>@<platform>` ids, in one order (per
//! platform, sorted: its `_ci-setup`, then its tasks in dependency order).

use std::collections::BTreeMap;

use odu_core::status::Outcome;
use odu_core::{NodeId, NodeStatus, NodeView, SETUP};

use crate::lane::LaneSpec;

#[derive(Clone, Debug)]
pub struct FanNode {
    pub id: String,
    pub task: String,
    pub platform: String,
    pub view: NodeView,
    /// `.ci/<label>/<platform>/<task>.log`, relative to the checkout.
    pub log: String,
}

#[derive(Clone, Debug)]
pub struct FanIn {
    pub name: String,
    pub label: String,
    pub lanes: Vec<(String, String)>,
    pub order: Vec<String>,
    pub nodes: BTreeMap<String, FanNode>,
    pub started_at: u64,
}

/// A node that changed status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub id: String,
    pub from: NodeStatus,
    pub to: NodeStatus,
}

impl FanIn {
    pub fn new(name: &str, label: &str, specs: &[LaneSpec], started_at: u64) -> FanIn {
        let mut fan = FanIn {
            name: name.into(),
            label: label.into(),
            lanes: specs.iter().map(|s| (s.platform.clone(), s.host.clone())).collect(),
            order: vec![],
            nodes: BTreeMap::new(),
            started_at,
        };
        for spec in specs {
            let setup_view = NodeView::pending(SETUP, format!("(provision {})", spec.host), vec![]);
            fan.insert(&spec.platform, setup_view);
            for task in &spec.tasks {
                let mut needs = task.needs.clone();
                needs.push(SETUP.into());
                let view = NodeView::pending(&task.id, odu_core::lane::shell_words(&task.argv), needs);
                fan.insert(&spec.platform, view);
            }
        }
        fan
    }

    /// A client's copy of a served run: the nodes of a `nodes` snapshot, in its order, every
    /// one still `pending` so that applying the snapshot shows what already happened.
    pub fn from_order(header: &odu_proto::Header, order: &[String], views: &[NodeView]) -> FanIn {
        let mut fan = FanIn {
            name: header.pipeline.clone(),
            label: header.label.clone(),
            lanes: header.lanes.iter().map(|l| (l.platform.clone(), l.host.clone())).collect(),
            order: order.to_vec(),
            nodes: BTreeMap::new(),
            started_at: header.started_at,
        };
        for view in views {
            let (task, platform) = view.id.rsplit_once('@').unwrap_or((&view.id, ""));
            let mut pending = NodeView::pending(&view.id, view.command.clone(), view.needs.clone());
            pending.generation = view.generation;
            fan.nodes.insert(
                view.id.clone(),
                FanNode {
                    id: view.id.clone(),
                    task: task.to_string(),
                    platform: platform.to_string(),
                    view: pending,
                    log: NodeId::new(task, platform).log_path(&header.label),
                },
            );
        }
        fan.order.retain(|id| fan.nodes.contains_key(id));
        fan
    }

    fn insert(&mut self, platform: &str, mut view: NodeView) {
        let id = NodeId::new(&view.id, platform);
        let fan_id = id.to_string();
        view.needs = view.needs.iter().map(|n| format!("{n}@{platform}")).collect();
        view.needs.sort();
        let log = id.log_path(&self.label);
        let task = std::mem::replace(&mut view.id, fan_id.clone());
        self.order.push(fan_id.clone());
        self.nodes.insert(fan_id.clone(), FanNode { id: fan_id, task, platform: platform.into(), view, log });
    }

    /// Mirrors a lane's node views; returns the status changes.
    pub fn apply_lane(&mut self, platform: &str, views: Vec<NodeView>) -> Vec<Transition> {
        let mut changes = Vec::new();
        for view in views {
            let fan_id = format!("{}@{platform}", view.id);
            let Some(node) = self.nodes.get_mut(&fan_id) else { continue };
            let from = node.view.status;
            node.view.status = view.status;
            node.view.exit_code = view.exit_code;
            node.view.started_at = view.started_at;
            node.view.duration_ms = view.duration_ms;
            node.view.generation = view.generation;
            if view.id == SETUP {
                node.view.command = view.command;
            }
            if from != view.status {
                changes.push(Transition { id: fan_id, from, to: view.status });
            }
        }
        changes
    }

    /// A lane's link died: its running nodes are `errored`, its pending ones `skipped`,
    /// terminal ones untouched. A lane that dies before its setup finished errors the setup
    /// node (its log says why), not just skips it.
    pub fn lane_died(&mut self, platform: &str, at: u64) -> Vec<Transition> {
        let setup = format!("{SETUP}@{platform}");
        let mut changes = Vec::new();
        if let Some(node) = self.nodes.get_mut(&setup)
            && node.view.status == NodeStatus::Pending
        {
            node.view.status = NodeStatus::Errored;
            changes.push(Transition { id: setup, from: NodeStatus::Pending, to: NodeStatus::Errored });
        }
        changes.extend(self.overlay(
            |n| n.platform == platform,
            at,
            NodeStatus::Errored,
            Some(NodeStatus::Skipped),
        ));
        changes
    }

    /// The run was interrupted: running nodes are `cancelled`; pending ones stay pending.
    pub fn interrupt(&mut self, at: u64) -> Vec<Transition> {
        self.overlay(|_| true, at, NodeStatus::Cancelled, None)
    }

    fn overlay(
        &mut self,
        filter: impl Fn(&FanNode) -> bool,
        at: u64,
        running_to: NodeStatus,
        pending_to: Option<NodeStatus>,
    ) -> Vec<Transition> {
        let mut changes = Vec::new();
        for node in self.nodes.values_mut().filter(|n| filter(n)) {
            let from = node.view.status;
            let to = match from {
                NodeStatus::Running => running_to,
                NodeStatus::Pending => match pending_to {
                    Some(to) => to,
                    None => continue,
                },
                _ => continue,
            };
            node.view.status = to;
            if from == NodeStatus::Running {
                node.view.duration_ms = node.view.started_at.map(|s| at.saturating_sub(s));
            }
            changes.push(Transition { id: node.id.clone(), from, to });
        }
        changes
    }

    pub fn settled(&self) -> bool {
        self.nodes.values().all(|n| n.view.status.is_terminal())
    }

    pub fn outcome(&self) -> Outcome {
        Outcome::of(self.nodes.values().map(|n| &n.view.status))
    }

    pub fn count(&self, status: NodeStatus) -> usize {
        self.nodes.values().filter(|n| n.view.status == status).count()
    }

    /// The nodes in order.
    pub fn ordered(&self) -> impl Iterator<Item = &FanNode> {
        self.order.iter().map(|id| &self.nodes[id])
    }
}
