//! Ingest: `just --dump --dump-format json` → a [`Plan`], the root's dependency closure as a DAG.
//!
//! A task is a body-bearing recipe called with one literal argument list (`ci::fmt(a,b)`); a
//! recipe with an empty body is no task, it stands for its expanded priors. A `&&` subsequent
//! needs the recipe that lists it, as an `after` need: selecting the subsequent does not bring
//! that recipe, while selecting a body-bearing recipe brings its `subsequents`. Selectors and OS
//! attributes then slice the plan per lane.
//!
//! Invariants: the same dump and flags give a byte-identical plan (ordered collections only); the
//! task order is topological, dependencies first, alphabetical within a rank.
//!
//! The concerns, one module each: reading the dump ([`dump`]), the recipes flattened out of
//! their modules and the root ([`recipe`]), calls with literal arguments as tasks ([`call`]), the
//! closure and its needs ([`build`]), the graph algorithms, petgraph's ([`graph`]), selectors and
//! OS filtering per lane ([`select`]), the digest, JSON and Mermaid ([`render`]), and the errors
//! ([`error`]).

mod build;
mod call;
mod dump;
mod error;
mod graph;
mod recipe;
mod render;
mod select;

use std::collections::BTreeMap;

use serde::Serialize;

pub use error::IngestError;
pub use select::{ResolvedSelector, Selector};

use crate::node_id::SETUP;

/// One runnable node of the plan, before fan-out to platforms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    /// `ci::e2e`, or `ci::fmt(a,b)` for a dependency with literal arguments.
    pub id: String,
    /// The recipe's namepath (`ci::fmt`).
    pub recipe: String,
    /// Literal arguments passed on the command line after the namepath.
    pub args: Vec<String>,
    /// Ids of the tasks this one waits for, sorted: what its priors stand for, and the tasks it
    /// is a `&&` subsequent of.
    pub needs: Vec<String>,
    /// The part of `needs` this task waits for only as a `&&` subsequent, or only as the `&&`
    /// subsequents of a prior, sorted: it runs after them when they run, but selecting it does
    /// not bring them (a prior brings its own).
    pub after: Vec<String>,
    /// Ids of the tasks this one's own `&&` subsequents stand for, sorted: selecting this task
    /// brings them, as `just <recipe>` runs them.
    pub subsequents: Vec<String>,
    /// OS attributes (`linux`, `macos`, `unix`, …), sorted; empty means every platform.
    pub os: Vec<String>,
}

impl Task {
    /// The command a runner executes: `just --no-deps <namepath> [args…]`.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec!["just".to_string(), "--no-deps".to_string(), self.recipe.clone()];
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// The root's dependency closure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Namepath of the root recipe.
    pub root: String,
    /// Topological order: dependencies first, alphabetical by id within a rank.
    pub tasks: Vec<Task>,
}

impl Plan {
    /// Reads `just --dump --dump-format json` (just 1.57 or newer) and builds the dependency
    /// closure of the root: the single `[metadata("ci")]` recipe, or `root` when given. odu runs
    /// the root without arguments, so a root with a parameter that needs one is refused.
    pub fn from_dump(json: &str, root: Option<&str>) -> Result<Plan, IngestError> {
        let recipes = recipe::flatten_all(dump::read(json)?)?;
        let root = recipe::find_root(&recipes, root)?;
        if let Some(parameter) = &recipes[root].required_parameter {
            return Err(IngestError::RequiredParameter {
                recipe: recipes[root].namepath.clone(),
                parameter: parameter.clone(),
            });
        }
        let tasks = build::tasks(&recipes, root)?;
        if tasks.iter().any(|t| t.recipe == SETUP) {
            return Err(IngestError::ReservedName(SETUP));
        }
        Ok(Plan { root: recipes[root].namepath.clone(), tasks })
    }

    /// The plan as a petgraph DAG: one node per task (weight: its index in `tasks`), one edge
    /// from each need to the task that needs it. A need outside the plan has no node, so no edge.
    pub fn graph(&self) -> petgraph::graph::DiGraph<usize, ()> {
        let mut graph = petgraph::graph::DiGraph::with_capacity(self.tasks.len(), self.tasks.len());
        let index: BTreeMap<&str, petgraph::graph::NodeIndex> =
            self.tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), graph.add_node(i))).collect();
        for task in &self.tasks {
            for need in &task.needs {
                if let Some(&need) = index.get(need.as_str()) {
                    graph.add_edge(need, index[task.id.as_str()], ());
                }
            }
        }
        graph
    }
}

#[cfg(test)]
mod tests;
