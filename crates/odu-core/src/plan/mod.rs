//! Ingest: `just --dump --dump-format json` → a [`Plan`], the root's dependency closure as a DAG.
//!
//! A task is a body-bearing recipe called with one literal argument list (`ci::fmt(a,b)`); a
//! recipe with an empty body is no task, it stands for its expanded priors. A `&&` subsequent
//! needs the recipe that lists it, as an `after` need: selecting the subsequent does not bring
//! that recipe, while selecting a body-bearing recipe brings its `subsequents`. Selectors and OS
//! attributes then slice the plan per lane. Selectors and `--root` take what `just` takes: an
//! alias stands for its target, and a recipe with an empty body for what `just <recipe>` runs.
//!
//! Invariants: the same dump and flags give a byte-identical plan (ordered collections only); the
//! task order is topological, dependencies first, alphabetical within a rank. A lane's tasks go to
//! its runner in `just`'s own order instead ([`Plan::in_run_order`]), still topological, so a
//! capped lane starts ready nodes as `just` would run them. What the plan knows besides its tasks
//! ([`Context`]: aliases, groups, `[confirm]` marks, just's order) is outside its JSON and digest.
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

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

pub use dump::{null_as_default, os_gated_roots};
pub use error::IngestError;
pub use select::{Dropped, ResolvedSelector, Selector, Why};

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Namepath of the root recipe.
    pub root: String,
    /// Topological order: dependencies first, alphabetical by id within a rank.
    pub tasks: Vec<Task>,
    /// What else the justfile says about the plan's names and order; it changes neither the
    /// plan's JSON nor its digest.
    #[serde(skip)]
    pub context: Context,
}

/// What the justfile says about a plan besides its tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Every alias of the justfile by its namepath (`ci::t`), to its target's (`ci::test`).
    pub aliases: BTreeMap<String, String>,
    /// Each empty-bodied recipe of the closure, the root too when it has no body, to the ids of
    /// the tasks `just <recipe>` runs for it, sorted: selecting it selects them.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The namepaths of the closure's recipes marked `[confirm]`.
    pub confirm: BTreeSet<String>,
    /// Each task's place in the order `just <root>` (and `just --dry-run`) runs them.
    pub run_order: BTreeMap<String, usize>,
    /// The root recipe's OS attributes, sorted.
    pub root_os: Vec<String>,
}

impl Plan {
    /// Reads `just --dump --dump-format json` (just 1.57 or newer) and builds the dependency
    /// closure of the root: the single `[metadata("ci")]` recipe, or `root` when given. odu runs
    /// the root without arguments, so a root with a parameter that needs one is refused.
    pub fn from_dump(json: &str, root: Option<&str>) -> Result<Plan, IngestError> {
        let (recipes, aliases) = recipe::flatten_all(dump::read(json)?)?;
        let root = recipe::find_root(&recipes, &aliases, root)?;
        if let Some(parameter) = &recipes[root].required_parameter {
            return Err(IngestError::RequiredParameter {
                recipe: recipes[root].namepath.clone(),
                parameter: parameter.clone(),
            });
        }
        let build::Built { tasks, groups, run_order } = build::tasks(&recipes, root)?;
        if tasks.iter().any(|t| t.recipe == SETUP) {
            return Err(IngestError::ReservedName(SETUP));
        }
        let in_plan: BTreeSet<&str> =
            tasks.iter().map(|t| t.recipe.as_str()).chain(groups.keys().map(String::as_str)).collect();
        let confirm = recipes
            .iter()
            .filter(|r| r.confirm && in_plan.contains(r.namepath.as_str()))
            .map(|r| r.namepath.clone())
            .collect();
        let context = Context {
            aliases,
            groups,
            confirm,
            run_order,
            root_os: recipes[root].os.iter().map(|os| os.to_string()).collect(),
        };
        Ok(Plan { root: recipes[root].namepath.clone(), tasks, context })
    }

    /// The command a runner executes for a task of this plan: `just --no-deps <namepath>
    /// [args…]`, with `--yes` before `--no-deps` for a `[confirm]` recipe when `yes` answers for
    /// it.
    pub fn argv(&self, task: &Task, yes: bool) -> Vec<String> {
        let mut argv = task.argv();
        if yes && self.context.confirm.contains(&task.recipe) {
            argv.insert(1, "--yes".to_string());
        }
        argv
    }

    /// The `[confirm]` recipes among `tasks`, in order, each once.
    pub fn asking(&self, tasks: &[Task]) -> Vec<String> {
        let mut seen = BTreeSet::new();
        tasks
            .iter()
            .filter(|t| self.context.confirm.contains(&t.recipe) && seen.insert(t.recipe.as_str()))
            .map(|t| t.recipe.clone())
            .collect()
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
