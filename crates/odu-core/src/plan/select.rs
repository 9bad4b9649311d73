//! Selecting what a lane runs: `recipe[@platform]` selectors resolved to tasks, OS attributes
//! deciding which tasks a platform can run, and the needs a selection brings along.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use petgraph::Direction;

use super::graph;
use super::{IngestError, Plan, Task};
use crate::platform::{runs_on, split_platform};

/// A `recipe[@platform]` selector as typed on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub recipe: String,
    pub platform: Option<String>,
}

/// A selector resolved against a plan: the task ids it names and its platform pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSelector {
    pub tasks: Vec<String>,
    pub platform: Option<String>,
}

impl Plan {
    /// Resolves command-line selectors to task ids, in the order given.
    pub fn resolve(&self, selectors: &[Selector]) -> Result<Vec<ResolvedSelector>, IngestError> {
        selectors
            .iter()
            .map(|selector| {
                Ok(ResolvedSelector {
                    tasks: self.match_selector(selector)?,
                    platform: selector.platform.clone(),
                })
            })
            .collect()
    }

    /// A selector's recipe part matches an exact task id, else every task of that exact
    /// namepath, else the tasks of the one namepath ending in `::<part>`.
    fn match_selector(&self, selector: &Selector) -> Result<Vec<String>, IngestError> {
        let part = selector.recipe.as_str();
        if self.tasks.iter().any(|t| t.id == part) {
            return Ok(vec![part.to_string()]);
        }
        let exact = self.ids_where(|t| t.recipe == part);
        if !exact.is_empty() {
            return Ok(exact);
        }
        let suffix = format!("::{part}");
        let namepaths: BTreeSet<&str> =
            self.tasks.iter().filter(|t| t.recipe.ends_with(&suffix)).map(|t| t.recipe.as_str()).collect();
        let ambiguous = |candidates: Vec<String>| IngestError::AmbiguousSelector {
            selector: selector.to_string(),
            candidates,
        };
        match namepaths.len() {
            0 => {}
            1 => {
                let namepath = namepaths.into_iter().next().unwrap_or_default();
                return Ok(self.ids_where(|t| t.recipe == namepath));
            }
            _ => return Err(ambiguous(namepaths.into_iter().map(str::to_string).collect())),
        }
        // A leaf with arguments (`fmt(a,b)`) names one task of a namepath like `ci::fmt`.
        let ids: BTreeSet<String> = self.ids_where(|t| t.id.ends_with(&suffix)).into_iter().collect();
        match ids.len() {
            0 => {
                let candidates: BTreeSet<String> = self.tasks.iter().map(|t| t.id.clone()).collect();
                Err(IngestError::UnknownSelector {
                    selector: selector.to_string(),
                    candidates: candidates.into_iter().collect(),
                })
            }
            1 => Ok(ids.into_iter().collect()),
            _ => Err(ambiguous(ids.into_iter().collect())),
        }
    }

    fn ids_where(&self, keep: impl Fn(&Task) -> bool) -> Vec<String> {
        self.tasks.iter().filter(|t| keep(t)).map(|t| t.id.clone()).collect()
    }

    /// The tasks a lane of `platform` runs, in plan order, each keeping only the needs that run
    /// on the lane too. A selected task brings what its priors stand for and its own `&&`
    /// subsequents, and theirs in turn, never a task it is the subsequent of: what `just
    /// <recipe>` runs. `no_deps` brings nothing.
    pub fn lane_tasks(&self, platform: &str, selectors: &[ResolvedSelector], no_deps: bool) -> Vec<Task> {
        let enabled = self.enabled_on(&self.graph(), platform);
        let chosen: Vec<bool> = if selectors.is_empty() {
            enabled
        } else {
            let relevant: BTreeSet<&str> = selectors
                .iter()
                .filter(|s| s.platform.as_deref().is_none_or(|p| p == platform))
                .flat_map(|s| s.tasks.iter().map(String::as_str))
                .collect();
            let picked = self
                .tasks
                .iter()
                .enumerate()
                .filter(|&(at, task)| enabled[at] && relevant.contains(task.id.as_str()));
            let picked = picked.map(|(at, _)| at);
            if no_deps {
                let mut chosen = vec![false; self.tasks.len()];
                picked.for_each(|at| chosen[at] = true);
                chosen
            } else {
                graph::closure(&self.brings(&enabled), picked, Direction::Outgoing)
            }
        };
        let chosen_ids: BTreeSet<&str> = self
            .tasks
            .iter()
            .zip(&chosen)
            .filter(|(_, chosen)| **chosen)
            .map(|(t, _)| t.id.as_str())
            .collect();
        let keep = |ids: &[String]| -> Vec<String> {
            ids.iter().filter(|id| chosen_ids.contains(id.as_str())).cloned().collect()
        };
        self.tasks
            .iter()
            .zip(&chosen)
            .filter(|(_, chosen)| **chosen)
            .map(|(t, _)| Task {
                needs: keep(&t.needs),
                after: keep(&t.after),
                subsequents: keep(&t.subsequents),
                ..t.clone()
            })
            .collect()
    }

    /// What selecting a task brings, as a graph over task positions among the `enabled` ones: an
    /// edge from each task to the tasks its priors stand for (its needs but the `after` ones) and
    /// to its own subsequents.
    fn brings(&self, enabled: &[bool]) -> petgraph::graph::DiGraph<(), ()> {
        let index: BTreeMap<&str, usize> =
            self.tasks.iter().enumerate().map(|(at, t)| (t.id.as_str(), at)).collect();
        let mut brings = graph::with_nodes(self.tasks.len());
        for (at, task) in self.tasks.iter().enumerate().filter(|&(at, _)| enabled[at]) {
            let priors = task.needs.iter().filter(|need| !task.after.contains(need));
            for id in priors.chain(&task.subsequents) {
                if let Some(&to) = index.get(id.as_str())
                    && enabled[to]
                {
                    brings.add_edge(graph::node(at), graph::node(to), ());
                }
            }
        }
        brings
    }

    /// Which tasks a lane of `platform` can run, by position: not those whose OS attributes rule
    /// the platform out or that need a task outside the plan, nor anything that needs one of
    /// those, directly or not.
    fn enabled_on(&self, graph: &petgraph::graph::DiGraph<usize, ()>, platform: &str) -> Vec<bool> {
        let ids: BTreeSet<&str> = self.tasks.iter().map(|t| t.id.as_str()).collect();
        let disabled = self.tasks.iter().enumerate().filter(|(_, task)| {
            !runs_on(&task.os, platform) || !task.needs.iter().all(|need| ids.contains(need.as_str()))
        });
        let downstream = graph::closure(graph, disabled.map(|(at, _)| at), Direction::Outgoing);
        downstream.into_iter().map(|disabled| !disabled).collect()
    }
}

impl Selector {
    /// Splits `recipe@platform` at the last `@` when what follows it is a platform (a system
    /// tuple): an `@` inside arguments (`deploy(user@host)`) stays part of the recipe. A token
    /// with nothing before its `@` is all recipe too.
    pub fn parse(token: &str) -> Selector {
        match split_platform(token) {
            Some((recipe, platform)) => {
                Selector { recipe: recipe.to_string(), platform: Some(platform.to_string()) }
            }
            None => Selector { recipe: token.to_string(), platform: None },
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.platform {
            Some(platform) => write!(f, "{}@{platform}", self.recipe),
            None => f.write_str(&self.recipe),
        }
    }
}
