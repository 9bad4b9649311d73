//! From flattened recipes to the plan's tasks: the root's closure, the tasks its calls make, the
//! needs that priors and `&&` subsequents give them, and their order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use petgraph::Direction;

use super::call::{Call, TaskIndex, resolve_dependency};
use super::graph::{self, Reach, node};
use super::recipe::Recipe;
use super::{IngestError, Task};

/// The tasks of the root's closure and what else the plan knows of it.
pub(super) struct Built {
    /// In plan order.
    pub(super) tasks: Vec<Task>,
    /// Each empty-bodied recipe of the closure, by namepath, to the ids of the tasks `just
    /// <recipe>` runs for it (its priors' and subsequents', expanded), sorted.
    pub(super) groups: BTreeMap<String, Vec<String>>,
    /// Each task's place in the order `just <root>` runs them.
    pub(super) run_order: BTreeMap<String, usize>,
}

/// The tasks of the root's closure, in plan order, with its groups and just's order.
pub(super) fn tasks(recipes: &[Recipe<'_>], root: usize) -> Result<Built, IngestError> {
    Closure::of(recipes, root)?.tasks()
}

/// The recipes reachable from the root, with their dependencies resolved to calls.
struct Closure<'r, 'a> {
    recipes: &'r [Recipe<'a>],
    root: usize,
    /// The reached recipes' dependencies as calls, recipe after recipe in walk order, each
    /// recipe's in the dump's order.
    calls: Vec<Call<'r>>,
    /// Where each reached recipe's calls lie in `calls`; `None` for the recipes never reached.
    spans: Vec<Option<(usize, usize)>>,
    /// The reachable recipes in the order the walk first met them, the root first.
    walk: Vec<usize>,
}

impl<'r, 'a> Closure<'r, 'a> {
    /// Walks priors and subsequents breadth-first from the root, resolving each dependency
    /// relative to its declaring module.
    fn of(recipes: &'r [Recipe<'a>], root: usize) -> Result<Self, IngestError> {
        // Hashing a namepath once beats comparing it with a dozen others in a binary search. The
        // map only answers lookups; it never decides an order.
        let by_namepath: HashMap<&str, usize> =
            recipes.iter().enumerate().map(|(at, recipe)| (recipe.namepath.as_str(), at)).collect();
        let mut calls = Vec::new();
        let mut spans = vec![None; recipes.len()];
        let walk = graph::walk(recipes.len(), root, |at, targets| {
            let recipe = &recipes[at];
            let start = calls.len();
            for dependency in &recipe.dependencies {
                let call = resolve_dependency(&by_namepath, recipe, dependency)?;
                targets.push(call.recipe);
                calls.push(call);
            }
            spans[at] = Some((start, calls.len()));
            Ok(())
        })?;
        Ok(Closure { recipes, root, calls, spans, walk })
    }

    fn calls_of(&self, recipe: usize) -> &[Call<'r>] {
        self.spans[recipe].map_or(&[], |(start, end)| &self.calls[start..end])
    }

    fn priors_of(&self, recipe: usize) -> &[Call<'r>] {
        let calls = self.calls_of(recipe);
        &calls[..self.recipes[recipe].priors.min(calls.len())]
    }

    fn cycle(&self, recipe: usize) -> IngestError {
        IngestError::Cycle { node: self.recipes[recipe].namepath.clone() }
    }

    /// The tasks of the closure, in plan order.
    fn tasks(&self) -> Result<Built, IngestError> {
        let root_call = Call { recipe: self.root, args: Vec::new() };
        let root_task = self.recipes[self.root].has_body.then_some(&root_call);
        let index = TaskIndex::new(
            root_task.into_iter().chain(self.calls.iter().filter(|call| self.recipes[call.recipe].has_body)),
            self.recipes,
        );
        // Calls are grouped by recipe in namepath order, so the clash reported is the first in
        // that order.
        let mut taken = vec![false; index.count];
        for (at, &task) in index.number.iter().enumerate() {
            if std::mem::replace(&mut taken[task], true) {
                return Err(IngestError::DuplicateTask { id: index.ids[at].clone() });
            }
        }

        // The needs graph: one node per task number, an edge from each need to its task. Every
        // task needs what its recipe's priors stand for.
        let expanded = self.expand_priors(&index)?;
        let mut needs = graph::with_nodes(index.count);
        for (at, call) in index.calls.iter().enumerate() {
            for &need in expanded[call.recipe].iter() {
                needs.add_edge(node(need), node(index.number[at]), ());
            }
        }

        // A subsequent runs after the recipe that lists it, so the subsequent's tasks need that
        // recipe's tasks; an empty-bodied recipe on either side stands for its expanded priors.
        // Such a need is kept apart as `after`: selecting the subsequent must not bring the
        // recipe that lists it. A body-bearing recipe records its subsequents, which selecting it
        // brings; an empty-bodied one only orders them, as selecting what it stands for is not
        // selecting it. just runs every recipe once, so a subsequent that already ran before the
        // recipe (it is among the recipe's transitive needs) is skipped there and adds nothing;
        // the recipes are visited in walk order, which makes that choice deterministic.
        let mut reach = Reach::new(&needs);
        let mut after: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut subsequents: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); index.count];
        // Waits on what an empty-bodied recipe stands for, by its subsequents: like a prior's.
        let mut stood_for: BTreeSet<(usize, usize)> = BTreeSet::new();
        for &at in &self.walk {
            let recipe = &self.recipes[at];
            let listed = &self.calls_of(at)[recipe.priors..];
            if listed.is_empty() {
                continue;
            }
            let providers: Rc<[usize]> =
                if recipe.has_body { index.of_recipe(at).into() } else { Rc::clone(&expanded[at]) };
            for subsequent in listed {
                let dependents: Rc<[usize]> = if self.recipes[subsequent.recipe].has_body {
                    Rc::from([index.of_call(subsequent)])
                } else {
                    Rc::clone(&expanded[subsequent.recipe])
                };
                for &dependent in dependents.iter() {
                    for &provider in providers.iter() {
                        // Whether the provider already needs the dependent, directly or not.
                        if reach.connects(&needs, dependent, provider) {
                            continue;
                        }
                        if recipe.has_body {
                            subsequents[provider].insert(dependent);
                        }
                        if needs.find_edge(node(provider), node(dependent)).is_none() {
                            needs.add_edge(node(provider), node(dependent), ());
                            after.insert((provider, dependent));
                        }
                        if !recipe.has_body {
                            stood_for.insert((provider, dependent));
                        }
                    }
                }
            }
        }

        // just runs a recipe's `&&` subsequents, and theirs, before the recipe counts as done: a
        // task starts only after the subsequents of each prior it needs, and a subsequent of an
        // empty-bodied recipe after those of each task that recipe stands for. Those waits are
        // `after` needs, as what brings the task brings them already, through the prior.
        let prior_needs: BTreeSet<(usize, usize)> = needs
            .edge_indices()
            .filter_map(|edge| needs.edge_endpoints(edge))
            .map(|(need, task)| (need.index(), task.index()))
            .filter(|pair| !after.contains(pair) || stood_for.contains(pair))
            .collect();
        for (prior, task) in prior_needs {
            let mut waits: BTreeSet<usize> = BTreeSet::new();
            let mut todo: Vec<usize> = subsequents[prior].iter().copied().collect();
            while let Some(subsequent) = todo.pop() {
                if waits.insert(subsequent) {
                    todo.extend(subsequents[subsequent].iter().copied());
                }
            }
            for subsequent in waits {
                // A subsequent that needs the task itself, directly or not, cannot wait for it.
                if reach.connects(&needs, task, subsequent) {
                    continue;
                }
                if needs.find_edge(node(subsequent), node(task)).is_none() {
                    needs.add_edge(node(subsequent), node(task), ());
                    after.insert((subsequent, task));
                }
            }
        }

        let run_order = self.run_order(&root_call, &index);
        let groups = self.groups(&index)?;

        // Each task number now belongs to exactly one call.
        let TaskIndex { calls, ids: call_ids, number, count, .. } = index;
        let mut ids = vec![String::new(); count];
        let mut task_calls = vec![&root_call; count];
        for (at, id) in call_ids.into_iter().enumerate() {
            ids[number[at]] = id;
            task_calls[number[at]] = calls[at];
        }
        let ordered = graph::ranked(&needs).map_err(|task| IngestError::Cycle { node: ids[task].clone() })?;
        let mut tasks: Vec<Task> = ordered
            .iter()
            .map(|&task| {
                let call = task_calls[task];
                let recipe = &self.recipes[call.recipe];
                // Task numbers follow ids, so sorted numbers are sorted ids.
                let mut task_needs: Vec<usize> = needs
                    .neighbors_directed(node(task), Direction::Incoming)
                    .map(|need| need.index())
                    .collect();
                task_needs.sort_unstable();
                let task_after = task_needs.iter().filter(|&&need| after.contains(&(need, task)));
                Task {
                    // Filled in below, once every task has copied the ids of its needs.
                    id: String::new(),
                    recipe: recipe.namepath.clone(),
                    args: call.args.iter().map(|arg| arg.to_string()).collect(),
                    after: task_after.map(|&need| ids[need].clone()).collect(),
                    needs: task_needs.iter().map(|&need| ids[need].clone()).collect(),
                    subsequents: subsequents[task].iter().map(|&then| ids[then].clone()).collect(),
                    os: recipe.os.iter().map(|os| os.to_string()).collect(),
                }
            })
            .collect();
        let run_order = run_order.iter().enumerate().map(|(at, &task)| (ids[task].clone(), at)).collect();
        let groups = groups
            .into_iter()
            .map(|(recipe, tasks)| {
                let mut tasks: Vec<String> = tasks.iter().map(|&task| ids[task].clone()).collect();
                tasks.sort_unstable();
                (self.recipes[recipe].namepath.clone(), tasks)
            })
            .collect();
        for (task, &number) in tasks.iter_mut().zip(&ordered) {
            task.id = std::mem::take(&mut ids[number]);
        }
        Ok(Built { tasks, groups, run_order })
    }

    /// Task numbers in the order `just <root>` runs them: a recipe's priors depth first in the
    /// order it lists them, then its body, then its subsequents the same way; each call once.
    fn run_order(&self, root: &Call<'r>, index: &TaskIndex<'_, 'r>) -> Vec<usize> {
        enum Step<'c, 'r> {
            Visit(&'c Call<'r>),
            Body(usize),
        }
        let mut order = Vec::with_capacity(index.count);
        let mut ran_task = vec![false; index.count];
        let mut ran_group = vec![false; self.recipes.len()];
        let mut steps = vec![Step::Visit(root)];
        while let Some(step) = steps.pop() {
            let call = match step {
                Step::Body(task) => {
                    order.push(task);
                    continue;
                }
                Step::Visit(call) => call,
            };
            let recipe = &self.recipes[call.recipe];
            let task = recipe.has_body.then(|| index.of_call(call));
            let ran = match task {
                Some(task) => &mut ran_task[task],
                None => &mut ran_group[call.recipe],
            };
            if std::mem::replace(ran, true) {
                continue;
            }
            // Pushed backwards: the stack pops priors first, then the body, then subsequents.
            let calls = self.calls_of(call.recipe);
            let (priors, subsequents) = calls.split_at(recipe.priors.min(calls.len()));
            steps.extend(subsequents.iter().rev().map(Step::Visit));
            steps.extend(task.map(Step::Body));
            steps.extend(priors.iter().rev().map(Step::Visit));
        }
        order
    }

    /// Each reached empty-bodied recipe with the task numbers `just <recipe>` runs for it: what
    /// its priors and its subsequents stand for, an empty-bodied one expanded in turn.
    fn groups(&self, index: &TaskIndex<'_, 'r>) -> Result<Vec<(usize, Vec<usize>)>, IngestError> {
        // An edge from each empty-bodied dependency to the empty-bodied recipe that lists it.
        let mut stands_for = graph::with_nodes(self.recipes.len());
        for &at in self.walk.iter().filter(|&&at| !self.recipes[at].has_body) {
            for call in self.calls_of(at) {
                if !self.recipes[call.recipe].has_body {
                    stands_for.add_edge(node(call.recipe), node(at), ());
                }
            }
        }
        let order = graph::topological(&stands_for).map_err(|recipe| self.cycle(recipe))?;
        let mut expanded: Vec<Option<Vec<usize>>> = vec![None; self.recipes.len()];
        for at in order {
            if self.recipes[at].has_body || self.spans[at].is_none() {
                continue;
            }
            let mut found = Vec::new();
            for call in self.calls_of(at) {
                if self.recipes[call.recipe].has_body {
                    found.push(index.of_call(call));
                } else {
                    found.extend(expanded[call.recipe].iter().flatten());
                }
            }
            found.sort_unstable();
            found.dedup();
            expanded[at] = Some(found);
        }
        Ok(expanded.into_iter().enumerate().filter_map(|(at, tasks)| Some((at, tasks?))).collect())
    }

    /// The task numbers each reached recipe's priors stand for, sorted: a body-bearing prior is
    /// its own task, an empty-bodied one stands for what its own priors stand for. Fails on a
    /// cycle of empty-bodied priors, which would stand for nothing.
    fn expand_priors(&self, index: &TaskIndex<'_, 'r>) -> Result<Vec<Rc<[usize]>>, IngestError> {
        // An edge from each empty-bodied prior to the recipe that lists it: expanded first.
        let mut stands_for = graph::with_nodes(self.recipes.len());
        for &at in &self.walk {
            for call in self.priors_of(at) {
                if !self.recipes[call.recipe].has_body {
                    stands_for.add_edge(node(call.recipe), node(at), ());
                }
            }
        }
        let order = graph::topological(&stands_for).map_err(|recipe| self.cycle(recipe))?;
        let empty: Rc<[usize]> = Rc::from([]);
        let mut expanded = vec![Rc::clone(&empty); self.recipes.len()];
        let mut found = Vec::new();
        for at in order {
            found.clear();
            for call in self.priors_of(at) {
                if self.recipes[call.recipe].has_body {
                    found.push(index.of_call(call));
                } else {
                    found.extend_from_slice(&expanded[call.recipe]);
                }
            }
            if !found.is_empty() {
                found.sort_unstable();
                found.dedup();
                expanded[at] = Rc::from(found.as_slice());
            }
        }
        Ok(expanded)
    }
}
