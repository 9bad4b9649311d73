//! Ingest: `just --dump --dump-format json` → a [`Plan`], the root's dependency closure as a DAG.
//!
//! A task is a body-bearing recipe called with one literal argument list (`ci::fmt(a,b)`); a
//! recipe with an empty body is no task, it stands for its expanded priors. A `&&` subsequent
//! needs the recipe that lists it. Selectors and OS attributes then slice the plan per lane.
//!
//! Invariants: the same dump and flags give a byte-identical plan (ordered collections only); the
//! task order is topological, dependencies first, alphabetical within a rank.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::platform::{OS_ATTRIBUTES, runs_on};

/// One runnable node of the plan, before fan-out to platforms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    /// `ci::e2e`, or `ci::fmt(a,b)` for a dependency with literal arguments.
    pub id: String,
    /// The recipe's namepath (`ci::fmt`).
    pub recipe: String,
    /// Literal arguments passed on the command line after the namepath.
    pub args: Vec<String>,
    /// Ids of the tasks this one needs, sorted.
    pub needs: Vec<String>,
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

/// Why a dump does not make a plan, or a selector names no task of it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("just's JSON dump could not be read: {0}")]
    BadDump(String),
    #[error("{}", root_count_message(.found))]
    RootCount { found: Vec<String> },
    #[error("no recipe named \"{root}\" in the justfile{}", root_candidates_message(.candidates))]
    UnknownRoot { root: String, candidates: Vec<String> },
    #[error(
        "recipe \"{recipe}\" depends on \"{dependency}\", which names no recipe in its module or a \
         child module: fix the dependency's path in the justfile"
    )]
    UnknownDependency { recipe: String, dependency: String },
    #[error(
        "recipe \"{recipe}\" passes a non-literal argument to \"{dependency}\": odu runs \
         dependencies with literal string arguments only; pass literals or move the expression \
         into the recipe body"
    )]
    NonLiteralArgument { recipe: String, dependency: String },
    #[error(
        "two different dependencies both become the task \"{id}\": keep commas and parentheses out \
         of literal dependency arguments"
    )]
    DuplicateTask { id: String },
    #[error("task \"{task}\" needs \"{need}\", which is not in the plan: add it or drop the need")]
    UnknownNeed { task: String, need: String },
    #[error("the dependencies form a cycle through \"{node}\": break the cycle in the justfile")]
    Cycle { node: String },
    #[error("selector \"{selector}\" is ambiguous: {} — use the full namepath", .candidates.join(", "))]
    AmbiguousSelector { selector: String, candidates: Vec<String> },
    #[error("selector \"{selector}\" matches no pipeline recipe ({})", selector_candidates_message(.candidates))]
    UnknownSelector { selector: String, candidates: Vec<String> },
}

/// How many namepaths an unknown `--root` lists at most.
const MAX_ROOT_CANDIDATES: usize = 10;
/// How many task ids an unmatched selector lists before it elides the rest.
const MAX_SELECTOR_CANDIDATES: usize = 20;

fn root_count_message(found: &[String]) -> String {
    if found.is_empty() {
        "expected exactly one [metadata(\"ci\")] recipe, found 0: mark the pipeline's root recipe \
         with [metadata(\"ci\")] or pass --root NAMEPATH"
            .to_string()
    } else {
        format!(
            "expected exactly one [metadata(\"ci\")] recipe, found {} ({}): keep the attribute on \
             one of them or pass --root NAMEPATH",
            found.len(),
            found.join(", ")
        )
    }
}

fn root_candidates_message(candidates: &[String]) -> String {
    if candidates.is_empty() {
        ", which has no recipes: add the pipeline's recipes to the justfile".to_string()
    } else {
        format!(": pass --root with a recipe's namepath, such as {}", candidates.join(", "))
    }
}

fn selector_candidates_message(candidates: &[String]) -> String {
    if candidates.is_empty() {
        return "the plan has no tasks".to_string();
    }
    let mut listed = candidates.iter().take(MAX_SELECTOR_CANDIDATES).cloned().collect::<Vec<_>>();
    if candidates.len() > MAX_SELECTOR_CANDIDATES {
        listed.push("…".to_string());
    }
    format!("recipes: {}", listed.join(", "))
}

impl Plan {
    /// Reads `just --dump --dump-format json` (just 1.57 or newer) and builds the dependency
    /// closure of the root: the single `[metadata("ci")]` recipe, or `root` when given.
    pub fn from_dump(json: &str, root: Option<&str>) -> Result<Plan, IngestError> {
        let dump: DumpModule = serde_json::from_str(json).map_err(|e| {
            IngestError::BadDump(format!(
                "{e}: pass the output of `just --dump --dump-format json` from just 1.57 or newer"
            ))
        })?;
        let mut recipes = BTreeMap::new();
        flatten(dump, "", &mut recipes)?;
        let root = find_root(&recipes, root)?;
        let graph = Closure::of(&recipes, &root)?;
        let tasks = graph.tasks()?;
        Ok(Plan { root, tasks: order(tasks)? })
    }

    /// The plan as a petgraph DAG: one node per task (weight: its index in `tasks`), one edge
    /// from each need to the task that needs it.
    pub fn graph(&self) -> petgraph::graph::DiGraph<usize, ()> {
        let mut graph = petgraph::graph::DiGraph::new();
        let index: BTreeMap<&str, petgraph::graph::NodeIndex> =
            self.tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), graph.add_node(i))).collect();
        for task in &self.tasks {
            for need in &task.needs {
                graph.add_edge(index[need.as_str()], index[task.id.as_str()], ());
            }
        }
        graph
    }

    /// `sha256:<hex>` over the compact JSON of the plan: equal plans, equal digests.
    pub fn digest(&self) -> String {
        // A plan is strings and vectors of strings, which serde_json always serializes.
        let canonical = serde_json::to_vec(self).expect("a plan always serializes to JSON");
        let hash = Sha256::digest(&canonical);
        let mut out = String::with_capacity("sha256:".len() + hash.len() * 2);
        out.push_str("sha256:");
        for byte in hash {
            out.push(hex_digit(byte >> 4));
            out.push(hex_digit(byte & 0x0f));
        }
        out
    }

    /// The plan as pretty JSON with its digest and each task's command, newline-terminated.
    pub fn to_json_pretty(&self) -> String {
        let view = PlanView {
            root: &self.root,
            digest: self.digest(),
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskView {
                    id: &t.id,
                    recipe: &t.recipe,
                    args: &t.args,
                    command: t.argv(),
                    needs: &t.needs,
                    os: &t.os,
                })
                .collect(),
        };
        // Structs rather than `serde_json::Value` keep the key order fixed whatever features
        // serde_json is built with.
        let mut out = serde_json::to_string_pretty(&view).expect("a plan always serializes to JSON");
        out.push('\n');
        out
    }

    /// A Mermaid flowchart: one node per task, then one edge per need, dependency first.
    pub fn mermaid(&self) -> String {
        let names = mermaid_names(&self.tasks);
        let mut out = String::from("flowchart TD\n");
        for task in &self.tasks {
            out.push_str(&format!("    {}[\"{}\"]\n", names[&task.id], mermaid_label(&task.id)));
        }
        for task in &self.tasks {
            for need in &task.needs {
                // A need outside the plan has no node to draw an edge from.
                if let Some(from) = names.get(need) {
                    out.push_str(&format!("    {from} --> {}\n", names[&task.id]));
                }
            }
        }
        out
    }

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
    /// on the lane too.
    pub fn lane_tasks(&self, platform: &str, selectors: &[ResolvedSelector], no_deps: bool) -> Vec<Task> {
        let enabled = self.enabled_on(platform);
        let chosen: BTreeSet<&str> = if selectors.is_empty() {
            enabled.clone()
        } else {
            let relevant: Vec<&ResolvedSelector> =
                selectors.iter().filter(|s| s.platform.as_deref().is_none_or(|p| p == platform)).collect();
            let mut chosen: BTreeSet<&str> = relevant
                .iter()
                .flat_map(|s| s.tasks.iter())
                .map(String::as_str)
                .filter(|id| enabled.contains(id))
                .collect();
            if !no_deps {
                chosen = self.needs_closure(chosen);
            }
            chosen
        };
        self.tasks
            .iter()
            .filter(|t| chosen.contains(t.id.as_str()))
            .map(|t| Task {
                needs: t.needs.iter().filter(|n| chosen.contains(n.as_str())).cloned().collect(),
                ..t.clone()
            })
            .collect()
    }

    /// Tasks whose OS attributes allow `platform` and whose needs are all enabled, to a fixpoint
    /// so a disabled task disables everything downstream whatever order the tasks are in.
    fn enabled_on(&self, platform: &str) -> BTreeSet<&str> {
        let mut enabled: BTreeSet<&str> =
            self.tasks.iter().filter(|t| runs_on(&t.os, platform)).map(|t| t.id.as_str()).collect();
        loop {
            let before = enabled.len();
            for task in &self.tasks {
                if enabled.contains(task.id.as_str())
                    && !task.needs.iter().all(|n| enabled.contains(n.as_str()))
                {
                    enabled.remove(task.id.as_str());
                }
            }
            if enabled.len() == before {
                return enabled;
            }
        }
    }

    fn needs_closure<'a>(&'a self, start: BTreeSet<&'a str>) -> BTreeSet<&'a str> {
        let by_id: BTreeMap<&str, &Task> = self.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut closure = start.clone();
        let mut queue: VecDeque<&str> = start.into_iter().collect();
        while let Some(id) = queue.pop_front() {
            for need in by_id.get(id).map(|t| t.needs.as_slice()).unwrap_or_default() {
                if closure.insert(need.as_str()) {
                    queue.push_back(need.as_str());
                }
            }
        }
        closure
    }
}

impl Selector {
    /// Splits `recipe@platform` at the last `@`; a token without one, or with nothing on either
    /// side of it, is all recipe.
    pub fn parse(token: &str) -> Selector {
        match token.rfind('@') {
            Some(at) if at > 0 && at + 1 < token.len() => {
                Selector { recipe: token[..at].to_string(), platform: Some(token[at + 1..].to_string()) }
            }
            _ => Selector { recipe: token.to_string(), platform: None },
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

#[derive(Serialize)]
struct PlanView<'a> {
    root: &'a str,
    digest: String,
    tasks: Vec<TaskView<'a>>,
}

#[derive(Serialize)]
struct TaskView<'a> {
    id: &'a str,
    recipe: &'a str,
    args: &'a [String],
    command: Vec<String>,
    needs: &'a [String],
    os: &'a [String],
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

/// Mermaid node names: the id with everything outside `[A-Za-z0-9_]` turned into `_`, suffixed
/// `_2`, `_3`, … in plan order when two ids collapse to the same name.
fn mermaid_names(tasks: &[Task]) -> BTreeMap<String, String> {
    let mut used = BTreeSet::new();
    let mut names = BTreeMap::new();
    for task in tasks {
        let mut base: String =
            task.id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        // Mermaid reads a bare `end` as the end of a subgraph, so it cannot name a node.
        if base == "end" {
            base.push('_');
        }
        let mut name = base.clone();
        let mut n = 2;
        while used.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        used.insert(name.clone());
        names.insert(task.id.clone(), name);
    }
    names
}

/// Escapes a label for a quoted Mermaid node: quotes, entity starts and HTML brackets become
/// entity codes so arguments show up as typed.
fn mermaid_label(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The dump, read leniently: every field defaults and unknown fields are ignored, so newer just
// versions that add fields keep working.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DumpModule {
    #[serde(deserialize_with = "null_as_default")]
    recipes: BTreeMap<String, DumpRecipe>,
    #[serde(deserialize_with = "null_as_default")]
    modules: BTreeMap<String, DumpModule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DumpRecipe {
    namepath: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    attributes: Vec<Value>,
    body: Value,
    #[serde(deserialize_with = "null_as_default")]
    dependencies: Vec<DumpDependency>,
    priors: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct DumpDependency {
    recipe: String,
    #[serde(deserialize_with = "null_as_default")]
    arguments: Vec<Value>,
    star: Value,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// One recipe of the justfile, flattened out of its module.
#[derive(Debug)]
struct Recipe {
    namepath: String,
    /// The declaring module's namepath (`ci::sub`), empty at the top level; dependencies are
    /// written relative to it.
    module: String,
    has_body: bool,
    os: Vec<String>,
    ci: bool,
    dependencies: Vec<DumpDependency>,
    /// How many of `dependencies` run before the recipe; the rest are `&&` subsequents.
    priors: usize,
}

fn flatten(module: DumpModule, path: &str, out: &mut BTreeMap<String, Recipe>) -> Result<(), IngestError> {
    for (name, recipe) in module.recipes {
        let namepath = match recipe.namepath {
            Some(namepath) if !namepath.is_empty() => namepath,
            _ => join(path, &name),
        };
        let mut os = BTreeSet::new();
        let mut ci = false;
        for attribute in &recipe.attributes {
            match attribute {
                Value::String(s) if OS_ATTRIBUTES.contains(&s.as_str()) => {
                    os.insert(s.clone());
                }
                Value::Object(map) => ci |= map.get("metadata").is_some_and(metadata_has_ci),
                _ => {}
            }
        }
        let has_body = match &recipe.body {
            Value::Null => false,
            Value::Array(lines) => !lines.is_empty(),
            _ => true,
        };
        let priors = recipe.priors.unwrap_or(recipe.dependencies.len()).min(recipe.dependencies.len());
        let flat = Recipe {
            namepath: namepath.clone(),
            module: path.to_string(),
            has_body,
            os: os.into_iter().collect(),
            ci,
            dependencies: recipe.dependencies,
            priors,
        };
        if out.insert(namepath.clone(), flat).is_some() {
            return Err(IngestError::BadDump(format!(
                "two recipes share the namepath \"{namepath}\": pass an unedited dump"
            )));
        }
    }
    for (name, child) in module.modules {
        flatten(child, &join(path, &name), out)?;
    }
    Ok(())
}

fn join(module: &str, name: &str) -> String {
    if module.is_empty() { name.to_string() } else { format!("{module}::{name}") }
}

fn metadata_has_ci(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| item == "ci"),
        Value::String(s) => s == "ci",
        _ => false,
    }
}

fn find_root(recipes: &BTreeMap<String, Recipe>, root: Option<&str>) -> Result<String, IngestError> {
    if let Some(root) = root {
        return if recipes.contains_key(root) {
            Ok(root.to_string())
        } else {
            Err(IngestError::UnknownRoot {
                root: root.to_string(),
                candidates: close_namepaths(root, recipes.keys()),
            })
        };
    }
    let found: Vec<String> = recipes.values().filter(|r| r.ci).map(|r| r.namepath.clone()).collect();
    match found.as_slice() {
        [root] => Ok(root.clone()),
        _ => Err(IngestError::RootCount { found }),
    }
}

/// Namepaths that look like `wanted` (same leaf, containing it, or a few edits away), closest
/// first; when nothing looks alike, the first namepaths alphabetically.
fn close_namepaths<'a>(wanted: &str, all: impl Iterator<Item = &'a String> + Clone) -> Vec<String> {
    let leaf = leaf_of(wanted);
    let tolerance = (wanted.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, &String)> = all
        .clone()
        .filter_map(|name| {
            if leaf_of(name) == leaf {
                Some((0, name))
            } else if name.contains(wanted) {
                Some((1, name))
            } else {
                let distance = edit_distance(wanted, name).min(edit_distance(leaf, leaf_of(name)));
                (distance <= tolerance).then_some((1 + distance, name))
            }
        })
        .collect();
    scored.sort();
    if scored.is_empty() {
        return all.take(MAX_ROOT_CANDIDATES).cloned().collect();
    }
    scored.into_iter().take(MAX_ROOT_CANDIDATES).map(|(_, name)| name.clone()).collect()
}

fn leaf_of(namepath: &str) -> &str {
    namepath.rsplit("::").next().unwrap_or(namepath)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A dependency as a call: the target namepath and its literal arguments.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    recipe: String,
    args: Vec<String>,
}

impl Call {
    fn id(&self) -> String {
        if self.args.is_empty() {
            self.recipe.clone()
        } else {
            format!("{}({})", self.recipe, self.args.join(","))
        }
    }
}

/// The recipes reachable from the root, with their dependencies resolved to calls.
struct Closure<'a> {
    recipes: &'a BTreeMap<String, Recipe>,
    root: &'a str,
    calls: BTreeMap<&'a str, Vec<Call>>,
    /// The reachable recipes in the order the walk first met them, the root first.
    walk: Vec<&'a str>,
}

impl<'a> Closure<'a> {
    /// Walks priors and subsequents breadth-first from the root, resolving each dependency
    /// relative to its declaring module.
    fn of(recipes: &'a BTreeMap<String, Recipe>, root: &'a str) -> Result<Self, IngestError> {
        let mut calls = BTreeMap::new();
        let mut walk = Vec::new();
        let mut queue = VecDeque::from([root]);
        while let Some(namepath) = queue.pop_front() {
            if calls.contains_key(namepath) {
                continue;
            }
            let recipe = &recipes[namepath];
            let mut resolved = Vec::with_capacity(recipe.dependencies.len());
            for dependency in &recipe.dependencies {
                let (target, call) = resolve_dependency(recipes, recipe, dependency)?;
                resolved.push(call);
                if !calls.contains_key(target) {
                    queue.push_back(target);
                }
            }
            calls.insert(namepath, resolved);
            walk.push(namepath);
        }
        Ok(Closure { recipes, root, calls, walk })
    }

    fn recipe(&self, namepath: &str) -> &'a Recipe {
        &self.recipes[namepath]
    }

    /// The tasks of the closure, unordered: one per body-bearing recipe and argument list.
    fn tasks(&self) -> Result<Vec<Task>, IngestError> {
        let mut instances: BTreeMap<&str, BTreeSet<Call>> = BTreeMap::new();
        if self.recipe(self.root).has_body {
            instances
                .entry(self.root)
                .or_default()
                .insert(Call { recipe: self.root.to_string(), args: Vec::new() });
        }
        for call in self.calls.values().flatten() {
            let recipe = self.recipe(&call.recipe);
            if recipe.has_body {
                instances.entry(&recipe.namepath).or_default().insert(call.clone());
            }
        }

        let mut expanded = BTreeMap::new();
        let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut tasks: BTreeMap<String, (&Call, &Recipe)> = BTreeMap::new();
        for (namepath, calls) in &instances {
            let own = self.prior_needs(namepath, &mut expanded, &mut Vec::new())?;
            for call in calls {
                let id = call.id();
                if tasks.insert(id.clone(), (call, self.recipe(namepath))).is_some() {
                    return Err(IngestError::DuplicateTask { id });
                }
                needs.insert(id, own.clone());
            }
        }

        // A subsequent runs after the recipe that lists it, so the subsequent's tasks need that
        // recipe's tasks; an empty-bodied recipe on either side stands for its expanded priors.
        // just runs every recipe once, so a subsequent that already ran before the recipe (it is
        // among the recipe's transitive needs) is skipped there and adds no edge; the recipes
        // are visited in walk order, which makes that choice deterministic.
        for namepath in &self.walk {
            let recipe = self.recipe(namepath);
            let providers = self.stand_ins(namepath, &instances, &mut expanded)?;
            for subsequent in &self.calls[namepath][recipe.priors..] {
                let dependents = if self.recipe(&subsequent.recipe).has_body {
                    BTreeSet::from([subsequent.id()])
                } else {
                    self.prior_needs(&subsequent.recipe, &mut expanded, &mut Vec::new())?
                };
                for dependent in &dependents {
                    for provider in &providers {
                        if !needs_transitively(&needs, provider, dependent) {
                            needs.entry(dependent.clone()).or_default().insert(provider.clone());
                        }
                    }
                }
            }
        }

        Ok(tasks
            .into_iter()
            .map(|(id, (call, recipe))| Task {
                needs: needs.remove(&id).unwrap_or_default().into_iter().collect(),
                id,
                recipe: call.recipe.clone(),
                args: call.args.clone(),
                os: recipe.os.clone(),
            })
            .collect())
    }

    /// The task ids that stand in for a recipe: its own tasks when it has a body, else its
    /// expanded priors.
    fn stand_ins(
        &self,
        namepath: &str,
        instances: &BTreeMap<&str, BTreeSet<Call>>,
        expanded: &mut BTreeMap<String, BTreeSet<String>>,
    ) -> Result<BTreeSet<String>, IngestError> {
        if self.recipe(namepath).has_body {
            Ok(instances.get(namepath).into_iter().flatten().map(Call::id).collect())
        } else {
            self.prior_needs(namepath, expanded, &mut Vec::new())
        }
    }

    /// The task ids a recipe's priors stand for: a body-bearing prior is its own task, an
    /// empty-bodied one is replaced by its own prior needs, recursively.
    fn prior_needs(
        &self,
        namepath: &str,
        expanded: &mut BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
    ) -> Result<BTreeSet<String>, IngestError> {
        if let Some(done) = expanded.get(namepath) {
            return Ok(done.clone());
        }
        if stack.iter().any(|s| s == namepath) {
            return Err(IngestError::Cycle { node: namepath.to_string() });
        }
        stack.push(namepath.to_string());
        let mut out = BTreeSet::new();
        let priors = self.calls.get(namepath).map(Vec::as_slice).unwrap_or_default();
        for call in &priors[..self.recipe(namepath).priors.min(priors.len())] {
            if self.recipe(&call.recipe).has_body {
                out.insert(call.id());
            } else {
                out.extend(self.prior_needs(&call.recipe, expanded, stack)?);
            }
        }
        stack.pop();
        expanded.insert(namepath.to_string(), out.clone());
        Ok(out)
    }
}

/// Whether `from` is `to` or needs it through a chain of needs.
fn needs_transitively(needs: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::from([from]);
    let mut stack = vec![from];
    while let Some(id) = stack.pop() {
        if id == to {
            return true;
        }
        for need in needs.get(id).into_iter().flatten() {
            if seen.insert(need.as_str()) {
                stack.push(need.as_str());
            }
        }
    }
    false
}

/// Resolves a dependency written inside `recipe`'s module to the target's namepath and a call
/// with literal arguments.
fn resolve_dependency<'a>(
    recipes: &'a BTreeMap<String, Recipe>,
    recipe: &Recipe,
    dependency: &DumpDependency,
) -> Result<(&'a str, Call), IngestError> {
    let path = join(&recipe.module, &dependency.recipe);
    let Some((target, _)) = recipes.get_key_value(&path) else {
        return Err(IngestError::UnknownDependency {
            recipe: recipe.namepath.clone(),
            dependency: dependency.recipe.clone(),
        });
    };
    let non_literal = || IngestError::NonLiteralArgument {
        recipe: recipe.namepath.clone(),
        dependency: dependency.recipe.clone(),
    };
    // A splatted argument list is computed at run time, so it is no literal either.
    if !matches!(dependency.star, Value::Null | Value::Bool(false)) {
        return Err(non_literal());
    }
    let args = dependency
        .arguments
        .iter()
        .map(|argument| argument.as_str().map(str::to_string).ok_or_else(non_literal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((target.as_str(), Call { recipe: target.clone(), args }))
}

/// Validates the tasks (unique ids, known needs, no cycle) and orders them by rank, the longest
/// path from a task without needs, then by id.
fn order(tasks: Vec<Task>) -> Result<Vec<Task>, IngestError> {
    let mut by_id: BTreeMap<String, Task> = BTreeMap::new();
    for mut task in tasks {
        let needs: BTreeSet<String> = task.needs.into_iter().collect();
        task.needs = needs.into_iter().collect();
        if by_id.contains_key(&task.id) {
            return Err(IngestError::DuplicateTask { id: task.id });
        }
        by_id.insert(task.id.clone(), task);
    }
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    for task in by_id.values() {
        for need in &task.needs {
            if !by_id.contains_key(need) {
                return Err(IngestError::UnknownNeed { task: task.id.clone(), need: need.clone() });
            }
            dependents.entry(need.as_str()).or_default().push(task.id.as_str());
        }
        waiting.insert(task.id.as_str(), task.needs.len());
    }

    let mut rank: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ready: VecDeque<&str> = waiting.iter().filter(|(_, n)| **n == 0).map(|(id, _)| *id).collect();
    while let Some(id) = ready.pop_front() {
        let next = rank.get(id).copied().unwrap_or(0) + 1;
        rank.entry(id).or_insert(0);
        for dependent in dependents.get(id).map(Vec::as_slice).unwrap_or_default() {
            let r = rank.entry(dependent).or_insert(0);
            *r = (*r).max(next);
            let w = waiting.get_mut(dependent).expect("every task has a waiting count");
            *w -= 1;
            if *w == 0 {
                ready.push_back(dependent);
            }
        }
    }
    if let Some(node) = cycle_node(&by_id, &waiting) {
        return Err(IngestError::Cycle { node });
    }

    let rank: BTreeMap<String, usize> = rank.into_iter().map(|(id, r)| (id.to_string(), r)).collect();
    let mut ordered: Vec<(usize, Task)> =
        by_id.into_values().map(|t| (rank.get(&t.id).copied().unwrap_or(0), t)).collect();
    ordered.sort_by(|(ra, a), (rb, b)| (ra, &a.id).cmp(&(rb, &b.id)));
    Ok(ordered.into_iter().map(|(_, t)| t).collect())
}

/// After a topological sort, the tasks still waiting all wait on each other; following the
/// smallest waiting need from the smallest waiting task must come back round, and the first task
/// seen twice lies on a cycle.
fn cycle_node(by_id: &BTreeMap<String, Task>, waiting: &BTreeMap<&str, usize>) -> Option<String> {
    let stuck: BTreeSet<&str> = waiting.iter().filter(|(_, n)| **n > 0).map(|(id, _)| *id).collect();
    let mut current = *stuck.first()?;
    let mut seen = BTreeSet::new();
    while seen.insert(current) {
        current = by_id[current].needs.iter().map(String::as_str).find(|n| stuck.contains(n))?;
    }
    Some(current.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    type Dep<'a> = (&'a str, &'a [&'a str]);

    /// A recipe as just dumps it, with the fields odu ignores too. `deps` are written relative to
    /// the recipe's module; the first `priors` of them run before it, the rest after (`&&`).
    fn recipe(namepath: &str, body: bool, deps: &[Dep], priors: usize) -> Value {
        let dependencies: Vec<Value> = deps
            .iter()
            .map(|(path, args)| json!({ "recipe": path, "arguments": args, "star": null }))
            .collect();
        json!({
            "name": leaf_of(namepath),
            "namepath": namepath,
            "attributes": [],
            "body": if body { json!([["echo ", namepath]]) } else { json!([]) },
            "dependencies": dependencies,
            "priors": priors,
            "doc": null,
            "parameters": [],
            "private": false,
            "quiet": false,
            "shebang": false,
        })
    }

    fn with_attributes(mut recipe: Value, attributes: Value) -> Value {
        recipe["attributes"] = attributes;
        recipe
    }

    /// Marks a recipe `[group("ci")] [metadata("ci")]`, the tag among other attributes.
    fn tagged(recipe: Value) -> Value {
        with_attributes(recipe, json!([{ "group": "ci" }, { "metadata": ["ci"] }, "parallel"]))
    }

    /// Nests recipes into a dump's module tree by their namepaths.
    fn dump(recipes: Vec<Value>) -> String {
        let mut top = json!({
            "recipes": {},
            "modules": {},
            "aliases": {},
            "settings": { "shell": null, "lazy": false },
            "source": "/repo/justfile",
        });
        for recipe in recipes {
            let namepath = recipe["namepath"].as_str().unwrap().to_string();
            let mut parts: Vec<&str> = namepath.split("::").collect();
            let name = parts.pop().unwrap();
            let mut module = &mut top;
            for part in parts {
                module = module["modules"]
                    .as_object_mut()
                    .unwrap()
                    .entry(part)
                    .or_insert_with(|| json!({ "recipes": {}, "modules": {} }));
            }
            module["recipes"][name] = recipe;
        }
        top.to_string()
    }

    /// `ci::default` (empty, tagged): lint build e2e && post, with a module two levels deep and
    /// recipes the root never reaches.
    fn pipeline() -> String {
        dump(vec![
            recipe("release", true, &[], 0),
            tagged(recipe(
                "ci::default",
                false,
                &[("lint", &[]), ("build", &[]), ("e2e", &[]), ("post", &[])],
                3,
            )),
            recipe("ci::lint", true, &[("sub::x", &[])], 1),
            recipe("ci::build", true, &[], 0),
            with_attributes(recipe("ci::e2e", true, &[("build", &[])], 1), json!(["linux"])),
            recipe("ci::post", true, &[], 0),
            recipe("ci::unused", true, &[], 0),
            recipe("ci::sub::x", true, &[("deeper::z", &[])], 1),
            recipe("ci::sub::deeper::z", true, &[], 0),
        ])
    }

    fn plan() -> Plan {
        Plan::from_dump(&pipeline(), None).unwrap()
    }

    fn ids(tasks: &[Task]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.as_str()).collect()
    }

    fn task<'a>(plan: &'a Plan, id: &str) -> &'a Task {
        plan.tasks.iter().find(|t| t.id == id).unwrap()
    }

    fn selectors(plan: &Plan, tokens: &[&str]) -> Vec<ResolvedSelector> {
        let parsed: Vec<Selector> = tokens.iter().map(|t| Selector::parse(t)).collect();
        plan.resolve(&parsed).unwrap()
    }

    fn lane(plan: &Plan, platform: &str, tokens: &[&str], no_deps: bool) -> Vec<(String, Vec<String>)> {
        plan.lane_tasks(platform, &selectors(plan, tokens), no_deps)
            .into_iter()
            .map(|t| (t.id, t.needs))
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ci_tagged_root_expands_only_its_reachable_subgraph() {
        let plan = plan();
        assert_eq!(plan.root, "ci::default");
        let ids = ids(&plan.tasks);
        assert!(!ids.contains(&"ci::unused") && !ids.contains(&"release"), "{ids:?}");
        assert_eq!(ids.len(), 6, "{ids:?}");
    }

    #[test]
    fn empty_bodied_root_is_no_task_and_leaves_run_without_their_deps() {
        let plan = plan();
        assert!(plan.tasks.iter().all(|t| t.id != "ci::default"));
        assert_eq!(task(&plan, "ci::lint").argv(), strings(&["just", "--no-deps", "ci::lint"]));
    }

    #[test]
    fn dependencies_come_before_dependents_alphabetical_within_a_rank() {
        let plan = plan();
        assert_eq!(
            ids(&plan.tasks),
            ["ci::build", "ci::sub::deeper::z", "ci::e2e", "ci::sub::x", "ci::lint", "ci::post"]
        );
        for (at, task) in plan.tasks.iter().enumerate() {
            for need in &task.needs {
                assert!(plan.tasks[..at].iter().any(|t| &t.id == need), "{need} after {}", task.id);
            }
        }
    }

    #[test]
    fn root_override_runs_the_named_recipe_and_its_own_body() {
        let plan = Plan::from_dump(&pipeline(), Some("ci::lint")).unwrap();
        assert_eq!(plan.root, "ci::lint");
        assert_eq!(ids(&plan.tasks), ["ci::sub::deeper::z", "ci::sub::x", "ci::lint"]);
    }

    #[test]
    fn unknown_root_names_close_candidates() {
        let err = Plan::from_dump(&pipeline(), Some("ci::lnt")).unwrap_err();
        let IngestError::UnknownRoot { root, candidates } = &err else { panic!("{err:?}") };
        assert_eq!(root, "ci::lnt");
        assert_eq!(candidates.first().map(String::as_str), Some("ci::lint"));
        assert!(
            err.to_string().starts_with("no recipe named \"ci::lnt\" in the justfile: pass --root"),
            "{err}"
        );
    }

    #[test]
    fn unknown_root_without_close_names_lists_available_namepaths() {
        let err = Plan::from_dump(&pipeline(), Some("zzzzzzzz")).unwrap_err();
        let IngestError::UnknownRoot { candidates, .. } = err else { panic!("{err:?}") };
        assert_eq!(candidates.len(), 9);
        assert_eq!(candidates[0], "ci::build");
    }

    #[test]
    fn missing_ci_tag_asks_to_mark_a_root() {
        let err = Plan::from_dump(&dump(vec![recipe("ci::lint", true, &[], 0)]), None).unwrap_err();
        assert_eq!(err, IngestError::RootCount { found: vec![] });
        assert_eq!(
            err.to_string(),
            "expected exactly one [metadata(\"ci\")] recipe, found 0: mark the pipeline's root \
             recipe with [metadata(\"ci\")] or pass --root NAMEPATH"
        );
    }

    #[test]
    fn duplicate_ci_tags_name_every_candidate() {
        let json = dump(vec![
            tagged(recipe("ci::a", true, &[], 0)),
            with_attributes(recipe("ci::b", true, &[], 0), json!([{ "metadata": ["x", "ci"] }])),
            with_attributes(recipe("ci::c", true, &[], 0), json!([{ "metadata": ["cix"] }])),
        ]);
        let err = Plan::from_dump(&json, None).unwrap_err();
        assert_eq!(err, IngestError::RootCount { found: strings(&["ci::a", "ci::b"]) });
        assert_eq!(
            err.to_string(),
            "expected exactly one [metadata(\"ci\")] recipe, found 2 (ci::a, ci::b): keep the \
             attribute on one of them or pass --root NAMEPATH"
        );
        // `--root` settles the choice.
        assert_eq!(Plan::from_dump(&json, Some("ci::b")).unwrap().root, "ci::b");
    }

    #[test]
    fn child_module_dependencies_resolve_relative_to_the_declaring_module() {
        let plan = plan();
        assert_eq!(task(&plan, "ci::lint").needs, ["ci::sub::x"]);
        assert_eq!(task(&plan, "ci::sub::x").needs, ["ci::sub::deeper::z"]);
    }

    #[test]
    fn dependency_outside_the_module_tree_is_unknown() {
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("x", &[])], 1)),
            recipe("ci::sub::x", true, &[], 0),
            recipe("x", true, &[], 0),
        ]);
        let err = Plan::from_dump(&json, None).unwrap_err();
        assert_eq!(
            err,
            IngestError::UnknownDependency { recipe: "ci::default".into(), dependency: "x".into() }
        );
        assert!(err.to_string().contains("names no recipe in its module or a child module"));
    }

    #[test]
    fn subsequents_need_the_recipe_that_lists_them() {
        // The empty root's subsequent needs the root's expanded priors.
        let plan = plan();
        assert_eq!(task(&plan, "ci::post").needs, ["ci::build", "ci::e2e", "ci::lint"]);

        // A body-bearing recipe's subsequent needs the recipe itself.
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("deploy", &[])], 1)),
            recipe("ci::deploy", true, &[("build", &[]), ("notify", &["done"])], 1),
            recipe("ci::build", true, &[], 0),
            recipe("ci::notify", true, &[], 0),
        ]);
        let plan = Plan::from_dump(&json, None).unwrap();
        assert_eq!(ids(&plan.tasks), ["ci::build", "ci::deploy", "ci::notify(done)"]);
        assert_eq!(task(&plan, "ci::notify(done)").needs, ["ci::deploy"]);
    }

    #[test]
    fn subsequent_that_already_ran_adds_no_edge() {
        // just runs `b` before `a` and then skips the root's `&& b`, so `b` must not need `a`.
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("a", &[]), ("b", &[])], 1)),
            recipe("ci::a", true, &[("b", &[])], 1),
            recipe("ci::b", true, &[], 0),
        ]);
        let plan = Plan::from_dump(&json, None).unwrap();
        assert_eq!(ids(&plan.tasks), ["ci::b", "ci::a"]);
        assert!(task(&plan, "ci::b").needs.is_empty());
    }

    #[test]
    fn empty_bodied_recipe_fans_out_to_its_priors() {
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("ship", &[])], 1)),
            recipe("ci::ship", true, &[("checks", &[])], 1),
            recipe("ci::checks", false, &[("lint", &[]), ("test", &[]), ("report", &[])], 2),
            recipe("ci::lint", true, &[], 0),
            recipe("ci::test", true, &[], 0),
            recipe("ci::report", true, &[], 0),
        ]);
        let plan = Plan::from_dump(&json, None).unwrap();
        assert!(plan.tasks.iter().all(|t| t.id != "ci::checks"));
        assert_eq!(task(&plan, "ci::ship").needs, ["ci::lint", "ci::test"]);
        // The empty recipe's subsequent needs what the empty recipe stands for.
        assert_eq!(task(&plan, "ci::report").needs, ["ci::lint", "ci::test"]);
    }

    #[test]
    fn literal_argument_dependencies_become_their_own_tasks() {
        let json = dump(vec![
            tagged(recipe(
                "ci::default",
                false,
                &[("fmt", &["a", "b"]), ("fmt", &["c", "d"]), ("fmt", &[]), ("fmt", &["a", "b"])],
                4,
            )),
            recipe("ci::fmt", true, &[], 0),
        ]);
        let plan = Plan::from_dump(&json, None).unwrap();
        assert_eq!(ids(&plan.tasks), ["ci::fmt", "ci::fmt(a,b)", "ci::fmt(c,d)"]);
        let fmt = task(&plan, "ci::fmt(a,b)");
        assert_eq!((fmt.recipe.as_str(), fmt.args.clone()), ("ci::fmt", strings(&["a", "b"])));
        assert_eq!(fmt.argv(), strings(&["just", "--no-deps", "ci::fmt", "a", "b"]));
    }

    #[test]
    fn non_literal_arguments_are_rejected() {
        let mut root = tagged(recipe("ci::default", false, &[("fmtx", &[])], 1));
        root["dependencies"][0]["arguments"] =
            json!([["variable", "v"], ["concatenate", "b", ["variable", "v"]]]);
        let json = dump(vec![root, recipe("ci::fmtx", true, &[], 0)]);
        let err = Plan::from_dump(&json, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipe \"ci::default\" passes a non-literal argument to \"fmtx\": odu runs \
             dependencies with literal string arguments only; pass literals or move the \
             expression into the recipe body"
        );
    }

    #[test]
    fn os_attributes_filter_lanes_and_cascade_to_dependents() {
        let plan = plan();
        assert_eq!(task(&plan, "ci::e2e").os, ["linux"]);
        let linux = lane(&plan, "x86_64-linux", &[], false);
        assert_eq!(linux.len(), 6);
        // e2e is linux-only, and post needs it, so neither runs on darwin.
        let darwin = lane(&plan, "aarch64-darwin", &[], false);
        let darwin_ids: Vec<&str> = darwin.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(darwin_ids, ["ci::build", "ci::sub::deeper::z", "ci::sub::x", "ci::lint"]);
    }

    #[test]
    fn os_attributes_are_sorted_and_unknown_attributes_ignored() {
        let json = dump(vec![with_attributes(
            recipe("ci::a", true, &[], 0),
            json!(["unix", "linux", "unix", "parallel", { "metadata": ["ci"] }, { "confirm": "?" }, 7]),
        )]);
        let plan = Plan::from_dump(&json, None).unwrap();
        assert_eq!(plan.tasks[0].os, ["linux", "unix"]);
    }

    #[test]
    fn selectors_split_at_the_last_at() {
        let s = Selector::parse("ci::e2e@x86_64-linux");
        assert_eq!(s, Selector { recipe: "ci::e2e".into(), platform: Some("x86_64-linux".into()) });
        assert_eq!(Selector::parse("e2e").platform, None);
        assert_eq!(Selector::parse("fmt(a@b)@x86_64-linux").recipe, "fmt(a@b)");
        assert_eq!(Selector::parse("@x86_64-linux").recipe, "@x86_64-linux");
        assert_eq!(Selector::parse("e2e@").recipe, "e2e@");
        assert_eq!(s.to_string(), "ci::e2e@x86_64-linux");
    }

    #[test]
    fn selectors_match_ids_then_namepaths_then_leaves() {
        let plan = plan();
        let resolved = selectors(&plan, &["e2e@x86_64-linux", "ci::sub::x", "deeper::z"]);
        assert_eq!(
            resolved,
            [
                ResolvedSelector { tasks: strings(&["ci::e2e"]), platform: Some("x86_64-linux".into()) },
                ResolvedSelector { tasks: strings(&["ci::sub::x"]), platform: None },
                ResolvedSelector { tasks: strings(&["ci::sub::deeper::z"]), platform: None },
            ]
        );

        // A namepath names every argument list of the recipe; an id names one.
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("fmt", &["a"]), ("fmt", &["b"])], 2)),
            recipe("ci::fmt", true, &[], 0),
        ]);
        let plan = Plan::from_dump(&json, None).unwrap();
        assert_eq!(selectors(&plan, &["fmt"])[0].tasks, ["ci::fmt(a)", "ci::fmt(b)"]);
        assert_eq!(selectors(&plan, &["ci::fmt(b)"])[0].tasks, ["ci::fmt(b)"]);
        assert_eq!(selectors(&plan, &["fmt(b)"])[0].tasks, ["ci::fmt(b)"]);
    }

    #[test]
    fn leaf_shared_by_two_namepaths_is_ambiguous() {
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("x", &[]), ("other::x", &[])], 2)),
            recipe("ci::x", true, &[], 0),
            recipe("ci::other::x", true, &[], 0),
        ]);
        let plan = Plan::from_dump(&json, None).unwrap();
        let err = plan.resolve(&[Selector::parse("x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "selector \"x\" is ambiguous: ci::other::x, ci::x — use the full namepath"
        );
        // The full namepath is never ambiguous.
        assert_eq!(selectors(&plan, &["ci::x"])[0].tasks, ["ci::x"]);
    }

    #[test]
    fn unmatched_selector_lists_the_pipeline() {
        let plan = plan();
        let err = plan.resolve(&[Selector::parse("nope@x86_64-linux")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "selector \"nope@x86_64-linux\" matches no pipeline recipe (recipes: ci::build, \
             ci::e2e, ci::lint, ci::post, ci::sub::deeper::z, ci::sub::x)"
        );

        let big = Plan {
            root: "r".into(),
            tasks: (0..25)
                .map(|i| Task {
                    id: format!("t{i:02}"),
                    recipe: format!("t{i:02}"),
                    args: vec![],
                    needs: vec![],
                    os: vec![],
                })
                .collect(),
        };
        let message = big.resolve(&[Selector::parse("nope")]).unwrap_err().to_string();
        assert!(message.ends_with("t18, t19, …)"), "{message}");
    }

    #[test]
    fn no_deps_prunes_needs_outside_the_selection() {
        let plan = plan();
        assert_eq!(lane(&plan, "x86_64-linux", &["lint"], true), [("ci::lint".into(), vec![])]);
        let with_deps = lane(&plan, "x86_64-linux", &["lint"], false);
        assert_eq!(
            with_deps,
            [
                ("ci::sub::deeper::z".into(), vec![]),
                ("ci::sub::x".into(), strings(&["ci::sub::deeper::z"])),
                ("ci::lint".into(), strings(&["ci::sub::x"])),
            ]
        );
        // Needs among selected tasks survive --no-deps.
        let both = lane(&plan, "x86_64-linux", &["lint", "sub::x"], true);
        assert_eq!(both, [("ci::sub::x".into(), vec![]), ("ci::lint".into(), strings(&["ci::sub::x"]))]);
    }

    #[test]
    fn platform_pinned_selectors_slice_other_lanes_to_nothing() {
        let plan = plan();
        assert!(lane(&plan, "x86_64-linux", &["lint@aarch64-darwin"], false).is_empty());
        assert_eq!(lane(&plan, "aarch64-darwin", &["lint@aarch64-darwin"], false).len(), 3);
        // An unpinned selector of a task the lane cannot run selects nothing there.
        assert!(lane(&plan, "aarch64-darwin", &["e2e"], false).is_empty());
        // A pin on another lane does not stop an unpinned selector here.
        let mixed = lane(&plan, "x86_64-linux", &["lint@aarch64-darwin", "build"], false);
        assert_eq!(mixed, [("ci::build".into(), vec![])]);
    }

    #[test]
    fn digest_and_pretty_json_are_stable_and_track_the_plan() {
        let (a, b) = (plan(), plan());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.to_json_pretty(), b.to_json_pretty());
        let digest = a.digest();
        assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64, "{digest}");
        assert!(digest[7..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

        let other = Plan::from_dump(&pipeline(), Some("ci::lint")).unwrap();
        assert_ne!(other.digest(), digest);
        assert_ne!(other.to_json_pretty(), a.to_json_pretty());

        let pretty = a.to_json_pretty();
        assert!(pretty.starts_with("{\n  \"root\": \"ci::default\",\n  \"digest\": \"sha256:"));
        assert!(pretty.ends_with("}\n"));
        let parsed: Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(parsed["digest"], digest);
        assert_eq!(parsed["tasks"][4]["id"], "ci::lint");
        assert_eq!(parsed["tasks"][4]["command"], json!(["just", "--no-deps", "ci::lint"]));
        assert_eq!(parsed["tasks"][4]["needs"], json!(["ci::sub::x"]));
    }

    #[test]
    fn mermaid_draws_nodes_then_edges_with_safe_names() {
        let plan = Plan::from_dump(&pipeline(), Some("ci::lint")).unwrap();
        assert_eq!(
            plan.mermaid(),
            "flowchart TD\n\
             \x20   ci__sub__deeper__z[\"ci::sub::deeper::z\"]\n\
             \x20   ci__sub__x[\"ci::sub::x\"]\n\
             \x20   ci__lint[\"ci::lint\"]\n\
             \x20   ci__sub__deeper__z --> ci__sub__x\n\
             \x20   ci__sub__x --> ci__lint\n"
        );

        let task = |id: &str, needs: &[&str]| Task {
            id: id.into(),
            recipe: id.into(),
            args: vec![],
            needs: strings(needs),
            os: vec![],
        };
        let collide = Plan {
            root: "r".into(),
            tasks: vec![task("a-b", &[]), task("a_b", &[]), task("say(\"hi\")", &["a-b", "a_b"])],
        };
        assert_eq!(
            collide.mermaid(),
            "flowchart TD\n\
             \x20   a_b[\"a-b\"]\n\
             \x20   a_b_2[\"a_b\"]\n\
             \x20   say__hi__[\"say(#quot;hi#quot;)\"]\n\
             \x20   a_b --> say__hi__\n\
             \x20   a_b_2 --> say__hi__\n"
        );
    }

    #[test]
    fn unreadable_json_is_a_bad_dump() {
        let err = Plan::from_dump("{", None).unwrap_err();
        assert!(matches!(err, IngestError::BadDump(_)), "{err:?}");
        assert!(err.to_string().starts_with("just's JSON dump could not be read: "));
        // Missing and null collections read as empty rather than failing.
        let sparse = r#"{"recipes": {"a": {"namepath": "a", "attributes": [{"metadata": ["ci"]}],
            "body": [["x"]], "dependencies": null}}, "modules": null}"#;
        assert_eq!(ids(&Plan::from_dump(sparse, None).unwrap().tasks), ["a"]);
    }

    #[test]
    fn the_plan_is_a_petgraph_dag_in_topological_order() {
        let plan = Plan::from_dump(&kolu_like_dump_for_graph(), None).unwrap();
        let graph = plan.graph();
        let order = petgraph::algo::toposort(&graph, None).expect("acyclic");
        assert_eq!(graph.node_count(), plan.tasks.len());
        assert_eq!(graph.edge_count(), plan.tasks.iter().map(|t| t.needs.len()).sum::<usize>());
        // The plan's own order is a valid topological order too.
        for edge in graph.raw_edges() {
            assert!(graph[edge.source()] < graph[edge.target()]);
        }
        assert_eq!(order.len(), plan.tasks.len());
    }

    fn kolu_like_dump_for_graph() -> String {
        serde_json::json!({
            "recipes": {
                "ci": {"namepath": "ci", "attributes": [{"metadata": ["ci"]}], "body": [],
                       "dependencies": [{"recipe": "test", "arguments": []}, {"recipe": "lint", "arguments": []}], "priors": 2},
                "build": {"namepath": "build", "body": [["true"]], "dependencies": []},
                "test": {"namepath": "test", "body": [["true"]], "dependencies": [{"recipe": "build", "arguments": []}], "priors": 1},
                "lint": {"namepath": "lint", "body": [["true"]], "dependencies": []}
            },
            "modules": {}
        })
        .to_string()
    }

    #[test]
    fn dependency_cycles_are_rejected_naming_a_node_on_them() {
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("a", &[])], 1)),
            recipe("ci::a", true, &[("b", &[])], 1),
            recipe("ci::b", true, &[("a", &[])], 1),
        ]);
        let err = Plan::from_dump(&json, None).unwrap_err();
        assert_eq!(err, IngestError::Cycle { node: "ci::a".into() });

        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("e", &[])], 1)),
            recipe("ci::e", false, &[("f", &[])], 1),
            recipe("ci::f", false, &[("e", &[])], 1),
        ]);
        let err = Plan::from_dump(&json, None).unwrap_err();
        assert!(matches!(&err, IngestError::Cycle { node } if node == "ci::e" || node == "ci::f"));
    }
}
