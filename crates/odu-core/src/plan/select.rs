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

    /// A selector's recipe part, an alias read as its target, matches an exact task id, else
    /// every task of that exact namepath, else what an empty-bodied recipe of that namepath
    /// stands for, else the tasks of the one namepath ending in `::<part>`.
    fn match_selector(&self, selector: &Selector) -> Result<Vec<String>, IngestError> {
        let typed = selector.recipe.as_str();
        let part = self.context.aliases.get(typed).map_or(typed, String::as_str);
        if self.tasks.iter().any(|t| t.id == part) {
            return Ok(vec![part.to_string()]);
        }
        let exact = self.ids_where(|t| t.recipe == part);
        if !exact.is_empty() {
            return Ok(exact);
        }
        if let Some(group) = self.context.groups.get(part) {
            return Ok(group.clone());
        }
        let suffix = format!("::{part}");
        let namepaths: BTreeSet<&str> = self
            .tasks
            .iter()
            .map(|t| t.recipe.as_str())
            .chain(self.context.groups.keys().map(String::as_str))
            .filter(|namepath| namepath.ends_with(&suffix))
            .collect();
        let ambiguous = |candidates: Vec<String>| IngestError::AmbiguousSelector {
            selector: selector.to_string(),
            candidates,
        };
        match namepaths.len() {
            0 => {}
            1 => {
                let namepath = namepaths.into_iter().next().unwrap_or_default();
                if let Some(group) = self.context.groups.get(namepath) {
                    return Ok(group.clone());
                }
                return Ok(self.ids_where(|t| t.recipe == namepath));
            }
            _ => return Err(ambiguous(namepaths.into_iter().map(str::to_string).collect())),
        }
        // A leaf with arguments (`fmt(a,b)`) names one task of a namepath like `ci::fmt`.
        let ids: BTreeSet<String> = self.ids_where(|t| t.id.ends_with(&suffix)).into_iter().collect();
        match ids.len() {
            0 => {}
            1 => return Ok(ids.into_iter().collect()),
            _ => return Err(ambiguous(ids.into_iter().collect())),
        }
        // An alias of a module (`t` for `ci::t`), when only one module has it.
        let aliases: Vec<&str> = self
            .context
            .aliases
            .keys()
            .map(String::as_str)
            .filter(|alias| alias.ends_with(&suffix))
            .collect();
        if let [alias] = aliases.as_slice()
            && part == typed
        {
            return self.match_selector(&Selector {
                recipe: alias.to_string(),
                platform: selector.platform.clone(),
            });
        }
        if part != typed {
            return Err(IngestError::AliasOutsidePipeline {
                selector: selector.to_string(),
                alias: typed.to_string(),
                target: part.to_string(),
            });
        }
        Err(IngestError::UnknownSelector { selector: selector.to_string(), candidates: self.candidates() })
    }

    /// What a selector can name, for a message: the task ids, the empty-bodied recipes but the
    /// root, and the aliases of either, written with their targets.
    fn candidates(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = self.tasks.iter().map(|t| t.id.clone()).collect();
        names.extend(self.context.groups.keys().filter(|namepath| **namepath != self.root).cloned());
        let in_plan = |target: &String| {
            self.tasks.iter().any(|t| t.recipe == *target) || self.context.groups.contains_key(target)
        };
        let aliases = self.context.aliases.iter().filter(|(_, target)| in_plan(target));
        let mut candidates: Vec<String> = names.into_iter().collect();
        candidates.extend(aliases.map(|(alias, target)| format!("{alias} (alias of {target})")));
        candidates
    }

    fn ids_where(&self, keep: impl Fn(&Task) -> bool) -> Vec<String> {
        self.tasks.iter().filter(|t| keep(t)).map(|t| t.id.clone()).collect()
    }

    /// The tasks a lane of `platform` runs, in plan order, each keeping only the needs that run
    /// on the lane too. A selected task brings what its priors stand for and its own `&&`
    /// subsequents, and theirs in turn, never a task it is the subsequent of: what `just
    /// <recipe>` runs. `no_deps` brings nothing.
    pub fn lane_tasks(&self, platform: &str, selectors: &[ResolvedSelector], no_deps: bool) -> Vec<Task> {
        self.lane(platform, selectors, no_deps).0
    }

    /// [`Plan::lane_tasks`], with the tasks the lane leaves out because of OS attributes, in plan
    /// order: those it would run if its OS could run everything.
    pub fn lane(
        &self,
        platform: &str,
        selectors: &[ResolvedSelector],
        no_deps: bool,
    ) -> (Vec<Task>, Vec<Dropped>) {
        let graph = self.graph();
        let everywhere = self.enabled_where(&graph, |_| true);
        let wanted = self.chosen(&everywhere, platform, selectors, no_deps);
        // The whole pipeline runs only where its root can: where the root's OS attributes rule
        // the platform out, just drops the root from its dump.
        let root_excluded = selectors.is_empty() && !runs_on(&self.context.root_os, platform);
        let enabled = if root_excluded {
            vec![false; self.tasks.len()]
        } else {
            self.enabled_where(&graph, |task| runs_on(&task.os, platform))
        };
        let chosen = self.chosen(&enabled, platform, selectors, no_deps);
        let index: BTreeMap<&str, usize> =
            self.tasks.iter().enumerate().map(|(at, t)| (t.id.as_str(), at)).collect();
        let dropped = self
            .tasks
            .iter()
            .enumerate()
            .filter(|&(at, _)| wanted[at] && !chosen[at])
            .map(|(_, task)| Dropped {
                task: task.id.clone(),
                why: if root_excluded {
                    Why::Root { root: self.root.clone(), os: self.context.root_os.clone() }
                } else if !runs_on(&task.os, platform) {
                    Why::Os(task.os.clone())
                } else {
                    let need = task
                        .needs
                        .iter()
                        .find(|need| index.get(need.as_str()).is_none_or(|&at| !enabled[at]));
                    Why::Needs(need.cloned().unwrap_or_default())
                },
            })
            .collect();
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
        let tasks = self
            .tasks
            .iter()
            .zip(&chosen)
            .filter(|(_, chosen)| **chosen)
            .map(|(t, _)| Task {
                needs: keep(&t.needs),
                after: keep(&t.after),
                subsequents: keep(&t.subsequents),
                ..t.clone()
            })
            .collect();
        (tasks, dropped)
    }

    /// Refuses a whole-pipeline run whose root no lane can run: the root's own task is on no
    /// lane, or an empty-bodied root's lanes all run nothing because of OS attributes. `lanes`
    /// are every lane's platform, tasks and drops, from [`Plan::lane`] without selectors.
    pub fn check_root_runs(&self, lanes: &[(String, Vec<Task>, Vec<Dropped>)]) -> Result<(), IngestError> {
        let root_task = self.tasks.iter().any(|t| t.id == self.root);
        let runs_nowhere = if root_task {
            !lanes.iter().any(|(_, tasks, _)| tasks.iter().any(|t| t.id == self.root))
        } else {
            lanes.iter().all(|(_, tasks, _)| tasks.is_empty())
                && lanes.iter().any(|(_, _, dropped)| !dropped.is_empty())
        };
        let Some((_, _, dropped)) = lanes.first().filter(|_| runs_nowhere) else {
            return Ok(());
        };
        let why_of = |id: &str| dropped.iter().find(|d| d.task == id).map(|d| &d.why);
        let why = match why_of(&self.root) {
            _ if !self.context.root_os.is_empty()
                && !lanes.iter().any(|(p, _, _)| runs_on(&self.context.root_os, p)) =>
            {
                format!("it is only {}", attributes(&self.context.root_os))
            }
            Some(Why::Os(os)) => format!("it is only {}", attributes(os)),
            Some(Why::Needs(need)) => {
                // Down the chain of needs to the task whose own OS attributes rule the lane out.
                let mut need = need.clone();
                let mut hops = 0;
                while let Some(Why::Needs(next)) = why_of(&need)
                    && hops < self.tasks.len()
                {
                    need = next.clone();
                    hops += 1;
                }
                match why_of(&need) {
                    Some(Why::Os(os)) => format!("it needs {need}, which is only {}", attributes(os)),
                    _ => format!("it needs {need}, which the lanes leave out"),
                }
            }
            _ => {
                let gated: Vec<String> = dropped
                    .iter()
                    .filter_map(|d| match &d.why {
                        Why::Os(os) => Some(format!("{} is only {}", d.task, attributes(os))),
                        _ => None,
                    })
                    .take(3)
                    .collect();
                format!("every recipe it runs is left out ({})", gated.join(", "))
            }
        };
        Err(IngestError::RootRunsNowhere {
            root: self.root.clone(),
            why,
            platforms: lanes.iter().map(|(p, _, _)| p.clone()).collect(),
        })
    }

    /// Which tasks, by position, a lane of `platform` runs among the `enabled` ones.
    fn chosen(
        &self,
        enabled: &[bool],
        platform: &str,
        selectors: &[ResolvedSelector],
        no_deps: bool,
    ) -> Vec<bool> {
        if selectors.is_empty() {
            return enabled.to_vec();
        }
        let relevant: BTreeSet<&str> = selectors
            .iter()
            .filter(|s| s.platform.as_deref().is_none_or(|p| p == platform))
            .flat_map(|s| s.tasks.iter().map(String::as_str))
            .collect();
        let picked = self
            .tasks
            .iter()
            .enumerate()
            .filter(|&(at, task)| enabled[at] && relevant.contains(task.id.as_str()))
            .map(|(at, _)| at);
        if no_deps {
            let mut chosen = vec![false; self.tasks.len()];
            picked.for_each(|at| chosen[at] = true);
            chosen
        } else {
            graph::closure(&self.brings(enabled), picked, Direction::Outgoing)
        }
    }

    /// `tasks` (a lane's, needs among them) in the order `just` runs them: each task after its
    /// needs, and among the tasks whose needs are met, the one just runs first. A lane with a
    /// jobs cap starts its ready nodes in this order.
    pub fn in_run_order(&self, tasks: Vec<Task>) -> Vec<Task> {
        let rank = |at: usize, task: &Task| {
            (self.context.run_order.get(&task.id).copied().unwrap_or(usize::MAX), at)
        };
        let index: BTreeMap<&str, usize> =
            tasks.iter().enumerate().map(|(at, t)| (t.id.as_str(), at)).collect();
        let mut waiting: Vec<usize> = tasks
            .iter()
            .map(|t| t.needs.iter().filter(|need| index.contains_key(need.as_str())).count())
            .collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
        for (at, task) in tasks.iter().enumerate() {
            for need in &task.needs {
                if let Some(&need) = index.get(need.as_str()) {
                    dependents[need].push(at);
                }
            }
        }
        let mut ready: BTreeSet<((usize, usize), usize)> =
            (0..tasks.len()).filter(|&at| waiting[at] == 0).map(|at| (rank(at, &tasks[at]), at)).collect();
        let mut order = Vec::with_capacity(tasks.len());
        while let Some((_, at)) = ready.pop_first() {
            order.push(at);
            for &dependent in &dependents[at] {
                waiting[dependent] -= 1;
                if waiting[dependent] == 0 {
                    ready.insert((rank(dependent, &tasks[dependent]), dependent));
                }
            }
        }
        drop(index);
        let mut slots: Vec<Option<Task>> = tasks.into_iter().map(Some).collect();
        order.into_iter().filter_map(|at| slots[at].take()).collect()
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

    /// Which tasks can run, by position, where `runs` says which can on their own: not those
    /// it rules out or that need a task outside the plan, nor anything that needs one of those,
    /// directly or not.
    fn enabled_where(
        &self,
        graph: &petgraph::graph::DiGraph<usize, ()>,
        runs: impl Fn(&Task) -> bool,
    ) -> Vec<bool> {
        let ids: BTreeSet<&str> = self.tasks.iter().map(|t| t.id.as_str()).collect();
        let disabled =
            self.tasks.iter().enumerate().filter(|(_, task)| {
                !runs(task) || !task.needs.iter().all(|need| ids.contains(need.as_str()))
            });
        let downstream = graph::closure(graph, disabled.map(|(at, _)| at), Direction::Outgoing);
        downstream.into_iter().map(|disabled| !disabled).collect()
    }
}

/// A task a lane leaves out because of OS attributes, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub task: String,
    pub why: Why,
}

/// Why a lane leaves a task out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// Its own OS attributes rule the platform out.
    Os(Vec<String>),
    /// It needs this task, which the lane leaves out.
    Needs(String),
    /// The root's OS attributes rule the platform out, and with it the whole pipeline.
    Root { root: String, os: Vec<String> },
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            Why::Os(os) => write!(f, "{} (only {})", self.task, attributes(os)),
            Why::Needs(need) => write!(f, "{} (needs {need})", self.task),
            Why::Root { root, os } => write!(f, "{} (root {root} is only {})", self.task, attributes(os)),
        }
    }
}

/// OS attributes as a justfile writes them: `[linux, macos]`.
pub(super) fn attributes(os: &[String]) -> String {
    format!("[{}]", os.join(", "))
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
