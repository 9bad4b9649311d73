//! Ingest: `just --dump --dump-format json` → a [`Plan`], the root's dependency closure as a DAG.
//!
//! A task is a body-bearing recipe called with one literal argument list (`ci::fmt(a,b)`); a
//! recipe with an empty body is no task, it stands for its expanded priors. A `&&` subsequent
//! needs the recipe that lists it. Selectors and OS attributes then slice the plan per lane.
//!
//! Invariants: the same dump and flags give a byte-identical plan (ordered collections only); the
//! task order is topological, dependencies first, alphabetical within a rank.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::node_id::SETUP;
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
    #[error("recipe \"{0}\" has the name odu gives each lane's setup node: rename the recipe")]
    ReservedName(&'static str),
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
        let dump = match QuickReader::read(json) {
            Some(dump) => dump,
            None => serde_json::from_str(json).map_err(|e| {
                IngestError::BadDump(format!(
                    "{e}: pass the output of `just --dump --dump-format json` from just 1.57 or newer"
                ))
            })?,
        };
        let recipes = flatten_all(dump)?;
        let root = find_root(&recipes, root)?;
        let graph = Closure::of(&recipes, root)?;
        let tasks = graph.tasks()?;
        if tasks.iter().any(|t| t.recipe == SETUP) {
            return Err(IngestError::ReservedName(SETUP));
        }
        Ok(Plan { root: recipes[root].namepath.to_string(), tasks })
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
        // The plan is written by hand rather than through `serde_json::to_vec`, which spends more
        // time on its generic machinery than on the bytes; a test pins the two to the same output.
        let mut canonical = String::with_capacity(self.text_len() + 64 * self.tasks.len() + 32);
        self.write_compact(&mut canonical);
        let hash = Sha256::digest(canonical.as_bytes());
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
        // The layout is serde_json's pretty printer's (two-space indent, `[]` for an empty
        // array) with the keys in a fixed order, written by hand because the plan is only
        // strings and arrays of strings; a test pins it to serde_json's own output.
        let digest = self.digest();
        let mut out = String::with_capacity(2 * self.text_len() + 256 * self.tasks.len() + 128);
        out.push_str("{\n  \"root\": ");
        push_json_str(&mut out, &self.root);
        out.push_str(",\n  \"digest\": ");
        push_json_str(&mut out, &digest);
        out.push_str(",\n  \"tasks\": ");
        if self.tasks.is_empty() {
            out.push_str("[]");
        } else {
            out.push('[');
            for (i, task) in self.tasks.iter().enumerate() {
                out.push_str(if i == 0 { "\n    {\n      \"id\": " } else { ",\n    {\n      \"id\": " });
                push_json_str(&mut out, &task.id);
                out.push_str(",\n      \"recipe\": ");
                push_json_str(&mut out, &task.recipe);
                out.push_str(",\n      \"args\": ");
                push_pretty_strings(&mut out, task.args.iter().map(String::as_str));
                // The command is `Task::argv`, whose first two words need no escaping.
                out.push_str(",\n      \"command\": [\n        \"just\",\n        \"--no-deps\",\n        ");
                push_json_str(&mut out, &task.recipe);
                for arg in &task.args {
                    out.push_str(",\n        ");
                    push_json_str(&mut out, arg);
                }
                out.push_str("\n      ]");
                out.push_str(",\n      \"needs\": ");
                push_pretty_strings(&mut out, task.needs.iter().map(String::as_str));
                out.push_str(",\n      \"os\": ");
                push_pretty_strings(&mut out, task.os.iter().map(String::as_str));
                out.push_str("\n    }");
            }
            out.push_str("\n  ]");
        }
        out.push_str("\n}\n");
        out
    }

    /// The plan as compact JSON, byte for byte what `serde_json::to_vec` makes of it.
    fn write_compact(&self, out: &mut String) {
        out.push_str("{\"root\":");
        push_json_str(out, &self.root);
        out.push_str(",\"tasks\":[");
        for (i, task) in self.tasks.iter().enumerate() {
            out.push_str(if i == 0 { "{\"id\":" } else { ",{\"id\":" });
            push_json_str(out, &task.id);
            out.push_str(",\"recipe\":");
            push_json_str(out, &task.recipe);
            out.push_str(",\"args\":");
            push_compact_strings(out, &task.args);
            out.push_str(",\"needs\":");
            push_compact_strings(out, &task.needs);
            out.push_str(",\"os\":");
            push_compact_strings(out, &task.os);
            out.push('}');
        }
        out.push_str("]}");
    }

    /// The bytes of every string in the plan, to size output buffers up front.
    fn text_len(&self) -> usize {
        let strings = |items: &[String]| items.iter().map(String::len).sum::<usize>();
        self.root.len()
            + self
                .tasks
                .iter()
                .map(|t| t.id.len() + t.recipe.len() + strings(&t.args) + strings(&t.needs) + strings(&t.os))
                .sum::<usize>()
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

/// Appends `s` as a JSON string literal, exactly as serde_json writes it.
fn push_json_str(out: &mut String, s: &str) {
    // serde_json escapes only quotes, backslashes and control characters, so a string without
    // them, which is nearly every id and namepath, is copied as it is; anything else goes through
    // serde_json itself.
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::to_string(s).expect("a string always serializes to JSON"));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Appends a compact JSON array of strings.
fn push_compact_strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, item);
    }
    out.push(']');
}

/// Appends a pretty JSON array of strings as a task field: items on their own lines at the
/// fourth indent level, the closing bracket at the third.
fn push_pretty_strings<'s>(out: &mut String, items: impl IntoIterator<Item = &'s str>) {
    let mut items = items.into_iter();
    let Some(first) = items.next() else {
        out.push_str("[]");
        return;
    };
    out.push_str("[\n        ");
    push_json_str(out, first);
    for item in items {
        out.push_str(",\n        ");
        push_json_str(out, item);
    }
    out.push_str("\n      ]");
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
//
// Only what the plan needs is kept, and strings are borrowed from the input when they have no
// escapes: a large justfile's dump is mostly recipe bodies and settings odu never looks at. The
// fields odu reads are still parsed as fully as a `serde_json::Value` would parse them, so a dump
// is rejected, with the same message, exactly when it was before.

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct DumpModule<'a> {
    #[serde(borrow, deserialize_with = "null_as_default")]
    recipes: Entries<'a, DumpRecipe<'a>>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    modules: Entries<'a, DumpModule<'a>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct DumpRecipe<'a> {
    #[serde(borrow)]
    namepath: Option<Str<'a>>,
    #[serde(deserialize_with = "null_as_default")]
    attributes: Attributes,
    body: Body,
    #[serde(borrow, deserialize_with = "null_as_default")]
    dependencies: Vec<DumpDependency<'a>>,
    priors: Option<usize>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
struct DumpDependency<'a> {
    #[serde(borrow)]
    recipe: Str<'a>,
    #[serde(borrow, deserialize_with = "null_as_default")]
    arguments: Arguments<'a>,
    star: Star,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A JSON string, borrowed from the dump unless decoding its escapes needed a copy.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(PhantomData<&'a str>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            // The same words as `String`'s visitor, so a wrong type reads as it always did.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor(PhantomData))
    }
}

/// A JSON object's entries sorted by key, the last of duplicate keys winning: what a `BTreeMap`
/// would hold, without its per-insert search (just writes its maps sorted already).
#[derive(Debug, PartialEq)]
struct Entries<'a, T>(Vec<(Str<'a>, T)>);

impl<T> Default for Entries<'_, T> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for Entries<'a, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<'a, T>(PhantomData<(&'a str, T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for EntriesVisitor<'a, T> {
            type Value = Entries<'a, T>;
            // The same words as `BTreeMap`'s visitor, so a wrong type reads as it always did.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<Str<'a>, T>()? {
                    entries.push(entry);
                }
                Ok(Entries::from_unsorted(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

impl<'a, T> Entries<'a, T> {
    fn from_unsorted(mut entries: Vec<(Str<'a>, T)>) -> Self {
        // A stable sort keeps duplicate keys in input order; swapping each later value into the
        // kept slot makes the last one win, as `BTreeMap::insert` does.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        Entries(entries)
    }
}

/// A JSON value read with `deserialize_any`, the way `serde_json::Value` reads one, so the
/// same dumps fail with the same messages; each implementation keeps only what odu needs of the
/// value, and whatever it does not look at is checked and dropped without being built.
trait Summary<'de>: Sized {
    /// Numbers, and every kind of value the implementation does not look at.
    fn other() -> Self;

    fn null() -> Self {
        Self::other()
    }

    fn boolean(_: bool) -> Self {
        Self::other()
    }

    fn string(_: &str) -> Self {
        Self::other()
    }

    fn borrowed_string(s: &'de str) -> Self {
        Self::string(s)
    }

    fn array<A: SeqAccess<'de>>(mut items: A) -> Result<Self, A::Error> {
        while items.next_element::<Skip>()?.is_some() {}
        Ok(Self::other())
    }

    fn object<A: MapAccess<'de>>(mut entries: A) -> Result<Self, A::Error> {
        while entries.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Self::other())
    }
}

fn summarize<'de, D: Deserializer<'de>, S: Summary<'de>>(deserializer: D) -> Result<S, D::Error> {
    deserializer.deserialize_any(SummaryVisitor(PhantomData))
}

struct SummaryVisitor<S>(PhantomData<S>);

impl<'de, S: Summary<'de>> Visitor<'de> for SummaryVisitor<S> {
    type Value = S;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<S, E> {
        Ok(S::boolean(v))
    }

    fn visit_i64<E>(self, _: i64) -> Result<S, E> {
        Ok(S::other())
    }

    fn visit_u64<E>(self, _: u64) -> Result<S, E> {
        Ok(S::other())
    }

    fn visit_f64<E>(self, _: f64) -> Result<S, E> {
        Ok(S::other())
    }

    fn visit_str<E>(self, v: &str) -> Result<S, E> {
        Ok(S::string(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<S, E> {
        Ok(S::borrowed_string(v))
    }

    fn visit_unit<E>(self) -> Result<S, E> {
        Ok(S::null())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, items: A) -> Result<S, A::Error> {
        S::array(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, entries: A) -> Result<S, A::Error> {
        S::object(entries)
    }
}

/// Any JSON value, checked and dropped.
struct Skip;

impl<'de> Summary<'de> for Skip {
    fn other() -> Self {
        Skip
    }
}

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        summarize(deserializer)
    }
}

/// Whether a recipe has a body: a non-empty array of lines, or anything but null and an array.
#[derive(Debug, Default, PartialEq)]
struct Body(bool);

impl<'de> Summary<'de> for Body {
    fn other() -> Self {
        Body(true)
    }

    fn null() -> Self {
        Body(false)
    }

    fn array<A: SeqAccess<'de>>(mut lines: A) -> Result<Self, A::Error> {
        let mut any = false;
        while lines.next_element::<Skip>()?.is_some() {
            any = true;
        }
        Ok(Body(any))
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        summarize(deserializer)
    }
}

/// Whether a dependency splats its arguments: anything but null and `false`.
#[derive(Debug, Default, PartialEq)]
struct Star(bool);

impl<'de> Summary<'de> for Star {
    fn other() -> Self {
        Star(true)
    }

    fn null() -> Self {
        Star(false)
    }

    fn boolean(v: bool) -> Self {
        Star(v)
    }
}

impl<'de> Deserialize<'de> for Star {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        summarize(deserializer)
    }
}

/// A dependency's arguments; `None` when one of them is no literal string.
#[derive(Debug, PartialEq)]
struct Arguments<'a>(Option<Vec<Str<'a>>>);

impl Default for Arguments<'_> {
    fn default() -> Self {
        Arguments(Some(Vec::new()))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Arguments<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgumentsVisitor<'a>(PhantomData<&'a str>);
        impl<'de: 'a, 'a> Visitor<'de> for ArgumentsVisitor<'a> {
            type Value = Arguments<'a>;
            // The same words as `Vec`'s visitor, so a wrong type reads as it always did.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                let mut literals = Some(Vec::new());
                while let Some(Argument(argument)) = items.next_element()? {
                    match (argument, &mut literals) {
                        (Some(literal), Some(literals)) => literals.push(literal),
                        _ => literals = None,
                    }
                }
                Ok(Arguments(literals))
            }
        }
        deserializer.deserialize_seq(ArgumentsVisitor(PhantomData))
    }
}

/// One dependency argument: its text when it is a literal string.
struct Argument<'a>(Option<Str<'a>>);

impl<'de: 'a, 'a> Summary<'de> for Argument<'a> {
    fn other() -> Self {
        Argument(None)
    }

    fn string(s: &str) -> Self {
        Argument(Some(Str(Cow::Owned(s.to_string()))))
    }

    fn borrowed_string(s: &'de str) -> Self {
        Argument(Some(Str(Cow::Borrowed(s))))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Argument<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        summarize(deserializer)
    }
}

/// What a recipe's attributes say to odu: its OS attributes, sorted and deduplicated, and
/// whether one of them is `[metadata("ci")]`.
#[derive(Debug, Default, PartialEq)]
struct Attributes {
    os: Vec<&'static str>,
    ci: bool,
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;
        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;
            // The same words as `Vec`'s visitor, so a wrong type reads as it always did.
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                let mut os = BTreeSet::new();
                let mut ci = false;
                while let Some(attribute) = items.next_element()? {
                    match attribute {
                        Attribute::Os(name) => {
                            os.insert(name);
                        }
                        Attribute::Metadata { ci: has_ci } => ci |= has_ci,
                        Attribute::Other => {}
                    }
                }
                Ok(Attributes { os: os.into_iter().collect(), ci })
            }
        }
        deserializer.deserialize_seq(AttributesVisitor)
    }
}

/// One attribute: an OS name, an object whose `metadata` may hold `ci`, or anything else.
enum Attribute {
    Os(&'static str),
    Metadata { ci: bool },
    Other,
}

impl<'de> Summary<'de> for Attribute {
    fn other() -> Self {
        Attribute::Other
    }

    fn string(s: &str) -> Self {
        OS_ATTRIBUTES.iter().find(|os| **os == s).map_or(Attribute::Other, |os| Attribute::Os(os))
    }

    fn object<A: MapAccess<'de>>(mut entries: A) -> Result<Self, A::Error> {
        // As in a `serde_json` map, the last of repeated `metadata` keys is the one that counts.
        let mut ci = false;
        while let Some(key) = entries.next_key::<Str<'_>>()? {
            if key.0 == "metadata" {
                ci = entries.next_value::<MetadataHasCi>()?.0;
            } else {
                entries.next_value::<Skip>()?;
            }
        }
        Ok(Attribute::Metadata { ci })
    }
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        summarize(deserializer)
    }
}

/// Whether a `metadata` attribute's value is `"ci"` or an array holding `"ci"`.
struct MetadataHasCi(bool);

impl<'de> Summary<'de> for MetadataHasCi {
    fn other() -> Self {
        MetadataHasCi(false)
    }

    fn string(s: &str) -> Self {
        MetadataHasCi(s == "ci")
    }

    fn array<A: SeqAccess<'de>>(mut items: A) -> Result<Self, A::Error> {
        let mut any = false;
        while let Some(IsCi(is_ci)) = items.next_element()? {
            any |= is_ci;
        }
        Ok(MetadataHasCi(any))
    }
}

impl<'de> Deserialize<'de> for MetadataHasCi {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        summarize(deserializer)
    }
}

/// Whether a value is the string `"ci"`.
struct IsCi(bool);

impl<'de> Summary<'de> for IsCi {
    fn other() -> Self {
        IsCi(false)
    }

    fn string(s: &str) -> Self {
        IsCi(s == "ci")
    }
}

impl<'de> Deserialize<'de> for IsCi {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        summarize(deserializer)
    }
}

// ---------------------------------------------------------------------------------------------
// A quick reader for dumps as just writes them. serde spends most of an ingest on its generic
// machinery, several times what scanning the bytes costs, so well-formed dumps are read here and
// everything else goes to serde. The rule that keeps the two readers in step: this one gives up
// (`None`) on anything it does not handle exactly as serde would, and it only ever accepts input
// that serde accepts too; serde then reads what it gave up on and words every error. It gives up
// on escapes in the strings it looks into (skipped strings are checked as serde checks them), on
// numbers other than integers of up to 18 digits, on deep nesting, on repeated fields, and on
// any malformed JSON.

/// Where the first byte at or after `at` that needs attention inside a JSON string is: a quote,
/// a backslash or a control character; `bytes.len()` when there is none. Eight bytes are checked
/// at a time; in each of the three tests the lowest flagged byte is exact (a false flag can only
/// come from a borrow out of a lower, truly flagged byte), so the lowest flag of all is the
/// first byte that needs attention.
#[inline(always)]
fn plain_run(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("a chunk of eight bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let zero_quote = quote.wrapping_sub(ONES) & !quote;
        let zero_backslash = backslash.wrapping_sub(ONES) & !backslash;
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let flags = (zero_quote | zero_backslash | control) & HIGHS;
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while bytes.get(at).is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20) {
        at += 1;
    }
    at
}

/// How deep arrays and objects may nest before the quick reader leaves the dump to serde, well
/// inside serde_json's own limit of 128.
const QUICK_MAX_DEPTH: usize = 100;

/// The quick reader's result: `None` means "let serde read it", never "the dump is bad".
type Quick<T> = Option<T>;

struct QuickReader<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> QuickReader<'a> {
    /// The dump, read quickly, or `None` when serde must read it.
    fn read(text: &'a str) -> Quick<DumpModule<'a>> {
        let mut reader = QuickReader { text, at: 0, depth: 0 };
        let module = reader.module()?;
        reader.whitespace();
        (reader.at == text.len()).then_some(module)
    }

    #[inline(always)]
    fn peek(&self) -> Quick<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    #[inline(always)]
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    fn next(&mut self) -> Quick<u8> {
        let bytes = self.text.as_bytes();
        loop {
            let byte = *bytes.get(self.at)?;
            // Every whitespace byte is at most a space, so one comparison settles most bytes.
            if byte > b' ' || !matches!(byte, b' ' | b'\n' | b'\t' | b'\r') {
                return Some(byte);
            }
            self.at += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Quick<()> {
        (self.next()? == byte).then(|| self.at += 1)
    }

    #[inline(always)]
    fn literal(&mut self, word: &str) -> Quick<()> {
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// Reads `null` if it comes next.
    #[inline(always)]
    fn null(&mut self) -> Quick<bool> {
        if self.next()? == b'n' {
            self.literal("null")?;
            Some(true)
        } else {
            Some(false)
        }
    }

    /// Opens an array or object, or reads `null` as an empty one; `false` when it is already
    /// over (`null`, `[]`, `{}`).
    #[inline(always)]
    fn open(&mut self, open: u8, close: u8) -> Quick<bool> {
        if self.null()? {
            return Some(false);
        }
        self.expect(open)?;
        self.depth += 1;
        if self.depth > QUICK_MAX_DEPTH {
            return None;
        }
        if self.next()? == close {
            self.at += 1;
            self.depth -= 1;
            return Some(false);
        }
        Some(true)
    }

    /// After a member: `true` after a comma, `false` at the closing bracket.
    #[inline(always)]
    fn more(&mut self, close: u8) -> Quick<bool> {
        match self.next()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            byte if byte == close => {
                self.at += 1;
                self.depth -= 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// A string without escapes, borrowed from the dump.
    #[inline(always)]
    fn string(&mut self) -> Quick<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = plain_run(self.text.as_bytes(), start);
        if self.text.as_bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// An object key without escapes, and the colon after it.
    #[inline(always)]
    fn key(&mut self) -> Quick<&'a str> {
        let key = self.string()?;
        self.expect(b':')?;
        Some(key)
    }

    /// Skips a string, checking its escapes. Surrogate escapes are left to serde, which rejects
    /// the unpaired ones.
    fn skip_string(&mut self) -> Quick<()> {
        self.expect(b'"')?;
        let bytes = self.text.as_bytes();
        loop {
            self.at = plain_run(bytes, self.at);
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => match *bytes.get(self.at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                    b'u' => {
                        let hex = bytes.get(self.at + 2..self.at + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        let code = hex
                            .iter()
                            .fold(0, |code, &digit| code * 16 + char::from(digit).to_digit(16).unwrap_or(0));
                        if (0xd800..0xe000).contains(&code) {
                            return None;
                        }
                        self.at += 6;
                    }
                    _ => return None,
                },
                // A control character, which JSON strings must escape.
                _ => return None,
            }
        }
    }

    /// An integer of up to 18 digits, which every reader takes exactly; anything longer, or with
    /// a fraction or an exponent, is left to serde.
    fn integer(&mut self) -> Quick<(bool, u64)> {
        self.whitespace();
        let negative = self.peek()? == b'-';
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let bytes = self.text.as_bytes();
        while bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        let plain = !digits.is_empty() && digits.len() <= 18 && (digits == "0" || !digits.starts_with('0'));
        if !plain || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some((negative, digits.parse().ok()?))
    }

    /// Skips any value, checking it as serde would.
    fn skip(&mut self) -> Quick<()> {
        match self.next()? {
            b'"' => self.skip_string(),
            b'{' => {
                if self.open(b'{', b'}')? {
                    loop {
                        self.skip_string()?;
                        self.expect(b':')?;
                        self.skip()?;
                        if !self.more(b'}')? {
                            break;
                        }
                    }
                }
                Some(())
            }
            b'[' => {
                if self.open(b'[', b']')? {
                    loop {
                        self.skip()?;
                        if !self.more(b']')? {
                            break;
                        }
                    }
                }
                Some(())
            }
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.integer().map(drop),
            _ => None,
        }
    }

    /// Reads an object's members with `member`, which is handed each key; `null` reads as no
    /// members.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Quick<()>) -> Quick<()> {
        if self.open(b'{', b'}')? {
            loop {
                let key = self.key()?;
                member(self, key)?;
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Some(())
    }

    /// Reads an array's items with `item`; `null` reads as no items.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Quick<()>) -> Quick<()> {
        if self.open(b'[', b']')? {
            loop {
                item(self)?;
                if !self.more(b']')? {
                    break;
                }
            }
        }
        Some(())
    }

    /// Reads a field once; serde rejects a repeated field, so a repeat is left to it.
    fn once<T>(slot: &mut Option<T>, value: Quick<T>) -> Quick<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(value?);
        Some(())
    }

    fn entries<T>(&mut self, mut read: impl FnMut(&mut Self) -> Quick<T>) -> Quick<Entries<'a, T>> {
        let mut entries = Vec::new();
        self.object(|reader, key| {
            entries.push((Str(Cow::Borrowed(key)), read(reader)?));
            Some(())
        })?;
        Some(Entries::from_unsorted(entries))
    }

    fn module(&mut self) -> Quick<DumpModule<'a>> {
        if self.next()? != b'{' {
            return None;
        }
        let (mut recipes, mut modules) = (None, None);
        self.object(|reader, key| match key {
            "recipes" => Self::once(&mut recipes, reader.entries(Self::recipe)),
            "modules" => Self::once(&mut modules, reader.entries(Self::module)),
            _ => reader.skip(),
        })?;
        Some(DumpModule { recipes: recipes.unwrap_or_default(), modules: modules.unwrap_or_default() })
    }

    fn recipe(&mut self) -> Quick<DumpRecipe<'a>> {
        if self.next()? != b'{' {
            return None;
        }
        let (mut namepath, mut attributes, mut body, mut dependencies, mut priors) =
            (None, None, None, None, None);
        self.object(|reader, key| match key {
            "namepath" => {
                let value = if reader.null()? { None } else { Some(Str(Cow::Borrowed(reader.string()?))) };
                Self::once(&mut namepath, Some(value))
            }
            "attributes" => Self::once(&mut attributes, reader.attributes()),
            "body" => Self::once(&mut body, reader.body()),
            "dependencies" => {
                let mut list = Vec::new();
                let read = reader.array(|reader| {
                    list.push(reader.dependency()?);
                    Some(())
                });
                Self::once(&mut dependencies, read.map(|()| list))
            }
            "priors" => {
                let value = if reader.null()? {
                    None
                } else {
                    match reader.integer()? {
                        (false, count) => Some(usize::try_from(count).ok()?),
                        (true, _) => return None,
                    }
                };
                Self::once(&mut priors, Some(value))
            }
            _ => reader.skip(),
        })?;
        Some(DumpRecipe {
            namepath: namepath.flatten(),
            attributes: attributes.unwrap_or_default(),
            body: body.unwrap_or_default(),
            dependencies: dependencies.unwrap_or_default(),
            priors: priors.flatten(),
        })
    }

    fn body(&mut self) -> Quick<Body> {
        match self.next()? {
            b'n' => self.literal("null").map(|()| Body(false)),
            b'[' => {
                let after = &self.text.as_bytes()[self.at + 1..];
                let empty = after.iter().find(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r')) == Some(&b']');
                self.skip()?;
                Some(Body(!empty))
            }
            _ => self.skip().map(|()| Body(true)),
        }
    }

    fn dependency(&mut self) -> Quick<DumpDependency<'a>> {
        if self.next()? != b'{' {
            return None;
        }
        let (mut recipe, mut arguments, mut star) = (None, None, None);
        self.object(|reader, key| match key {
            "recipe" => Self::once(&mut recipe, reader.string().map(|s| Str(Cow::Borrowed(s)))),
            "arguments" => {
                let mut literals = Some(Vec::new());
                let read = reader.array(|reader| {
                    if reader.next()? == b'"' {
                        let literal = Str(Cow::Borrowed(reader.string()?));
                        if let Some(literals) = &mut literals {
                            literals.push(literal);
                        }
                    } else {
                        reader.skip()?;
                        literals = None;
                    }
                    Some(())
                });
                Self::once(&mut arguments, read.map(|()| Arguments(literals)))
            }
            "star" => {
                let splat = match reader.next()? {
                    b'n' => reader.literal("null").map(|()| false),
                    b'f' => reader.literal("false").map(|()| false),
                    _ => reader.skip().map(|()| true),
                };
                Self::once(&mut star, splat.map(Star))
            }
            _ => reader.skip(),
        })?;
        Some(DumpDependency {
            recipe: recipe.unwrap_or_default(),
            arguments: arguments.unwrap_or_default(),
            star: star.unwrap_or_default(),
        })
    }

    fn attributes(&mut self) -> Quick<Attributes> {
        let mut os = BTreeSet::new();
        let mut ci = false;
        self.array(|reader| {
            match reader.next()? {
                b'"' => {
                    let name = reader.string()?;
                    if let Some(known) = OS_ATTRIBUTES.iter().find(|known| **known == name) {
                        os.insert(*known);
                    }
                }
                b'{' => {
                    // As in serde, the last of repeated `metadata` keys is the one that counts.
                    let mut has_ci = false;
                    reader.object(|reader, key| {
                        if key == "metadata" {
                            has_ci = reader.metadata_has_ci()?;
                            Some(())
                        } else {
                            reader.skip()
                        }
                    })?;
                    ci |= has_ci;
                }
                _ => reader.skip()?,
            }
            Some(())
        })?;
        Some(Attributes { os: os.into_iter().collect(), ci })
    }

    fn metadata_has_ci(&mut self) -> Quick<bool> {
        match self.next()? {
            b'"' => Some(self.string()? == "ci"),
            b'[' => {
                let mut any = false;
                self.array(|reader| {
                    if reader.next()? == b'"' {
                        any |= reader.string()? == "ci";
                        Some(())
                    } else {
                        reader.skip()
                    }
                })?;
                Some(any)
            }
            _ => self.skip().map(|()| false),
        }
    }
}

/// One recipe of the justfile, flattened out of its module.
#[derive(Debug)]
struct Recipe<'a> {
    namepath: Cow<'a, str>,
    /// The declaring module's namepath (`ci::sub`), empty at the top level; dependencies are
    /// written relative to it.
    module: Rc<str>,
    has_body: bool,
    /// OS attributes, sorted.
    os: Vec<&'static str>,
    ci: bool,
    dependencies: Vec<DumpDependency<'a>>,
    /// How many of `dependencies` run before the recipe; the rest are `&&` subsequents.
    priors: usize,
    /// The recipe's place in the dump, module by module, to report namepath clashes in order.
    position: usize,
}

/// Every recipe of the dump, sorted by namepath so that a namepath is found by binary search
/// and recipe indices order recipes as their namepaths do.
fn flatten_all(dump: DumpModule<'_>) -> Result<Vec<Recipe<'_>>, IngestError> {
    let mut recipes = Vec::new();
    flatten(dump, &Rc::from(""), &mut recipes);
    recipes.sort_by(|a, b| a.namepath.cmp(&b.namepath));
    // The stable sort leaves recipes that share a namepath adjacent and in dump order. The clash
    // reported is the one whose second recipe comes first in the dump, where adding the recipes
    // one by one would have stopped.
    let clash = recipes
        .windows(2)
        .filter(|pair| pair[0].namepath == pair[1].namepath)
        .map(|pair| &pair[1])
        .min_by_key(|recipe| recipe.position);
    if let Some(recipe) = clash {
        return Err(IngestError::BadDump(format!(
            "two recipes share the namepath \"{}\": pass an unedited dump",
            recipe.namepath
        )));
    }
    Ok(recipes)
}

fn flatten<'a>(module: DumpModule<'a>, path: &Rc<str>, out: &mut Vec<Recipe<'a>>) {
    for (name, recipe) in module.recipes.0 {
        let namepath = match recipe.namepath {
            Some(Str(namepath)) if !namepath.is_empty() => namepath,
            _ => Cow::Owned(join(path, &name.0)),
        };
        let priors = recipe.priors.unwrap_or(recipe.dependencies.len()).min(recipe.dependencies.len());
        out.push(Recipe {
            namepath,
            module: Rc::clone(path),
            has_body: recipe.body.0,
            os: recipe.attributes.os,
            ci: recipe.attributes.ci,
            dependencies: recipe.dependencies,
            priors,
            position: out.len(),
        });
    }
    for (name, child) in module.modules.0 {
        flatten(child, &Rc::from(join(path, &name.0)), out);
    }
}

fn join(module: &str, name: &str) -> String {
    if module.is_empty() { name.to_string() } else { format!("{module}::{name}") }
}

/// The index of the recipe with this namepath.
fn lookup(recipes: &[Recipe<'_>], namepath: &str) -> Option<usize> {
    recipes.binary_search_by(|recipe| recipe.namepath.as_ref().cmp(namepath)).ok()
}

fn find_root(recipes: &[Recipe<'_>], root: Option<&str>) -> Result<usize, IngestError> {
    if let Some(root) = root {
        return lookup(recipes, root).ok_or_else(|| IngestError::UnknownRoot {
            root: root.to_string(),
            candidates: close_namepaths(root, recipes.iter().map(|r| r.namepath.as_ref())),
        });
    }
    let found: Vec<usize> = (0..recipes.len()).filter(|&i| recipes[i].ci).collect();
    match found.as_slice() {
        [root] => Ok(*root),
        _ => Err(IngestError::RootCount {
            found: found.iter().map(|&i| recipes[i].namepath.to_string()).collect(),
        }),
    }
}

/// Namepaths that look like `wanted` (same leaf, containing it, or a few edits away), closest
/// first; when nothing looks alike, the first namepaths alphabetically.
fn close_namepaths<'a>(wanted: &str, all: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    let leaf = leaf_of(wanted);
    let tolerance = (wanted.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, &str)> = all
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
        return all.take(MAX_ROOT_CANDIDATES).map(str::to_string).collect();
    }
    scored.into_iter().take(MAX_ROOT_CANDIDATES).map(|(_, name)| name.to_string()).collect()
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

/// A dependency as a call: the target recipe's index and its literal arguments. Recipes are
/// sorted by namepath, so calls order as (namepath, arguments) would.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Call<'r> {
    recipe: usize,
    args: Vec<&'r str>,
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

/// The tasks of a closure: one per distinct call of a body-bearing recipe.
struct TaskIndex<'c, 'r> {
    /// The distinct calls, grouped by recipe in namepath order and sorted by arguments within a
    /// recipe.
    calls: Vec<&'c Call<'r>>,
    /// Where each recipe's calls start: recipe `r`'s are `calls[first[r]..first[r + 1]]`.
    first: Vec<usize>,
    /// Each call's id.
    ids: Vec<String>,
    /// Each call's task number. Tasks are numbered in id order, so sorting numbers sorts ids;
    /// calls that make the same id share a number, which the caller reports as a duplicate.
    number: Vec<usize>,
    /// How many task numbers there are.
    count: usize,
}

impl<'c, 'r> TaskIndex<'c, 'r> {
    fn new(calls: impl Iterator<Item = &'c Call<'r>> + Clone, recipes: &[Recipe<'_>]) -> Self {
        // A counting sort by recipe, then a sort of each recipe's (few) calls by arguments: far
        // cheaper than comparing whole calls, and the same order.
        let mut first = vec![0; recipes.len() + 1];
        for call in calls.clone() {
            first[call.recipe + 1] += 1;
        }
        for at in 0..recipes.len() {
            first[at + 1] += first[at];
        }
        let mut next = first.clone();
        let mut grouped: Vec<Option<&'c Call<'r>>> = vec![None; first[recipes.len()]];
        for call in calls {
            grouped[next[call.recipe]] = Some(call);
            next[call.recipe] += 1;
        }
        let mut distinct: Vec<&'c Call<'r>> = Vec::with_capacity(grouped.len());
        let mut start = 0;
        for recipe in 0..recipes.len() {
            let group = &mut grouped[first[recipe]..first[recipe + 1]];
            group.sort_unstable_by(|a, b| a.map(|c| &c.args).cmp(&b.map(|c| &c.args)));
            first[recipe] = start;
            for call in group.iter().flatten() {
                if distinct.len() == start || distinct.last().is_none_or(|last| last.args != call.args) {
                    distinct.push(call);
                }
            }
            start = distinct.len();
        }
        first[recipes.len()] = start;

        let ids: Vec<String> =
            distinct.iter().map(|call| call_id(&recipes[call.recipe].namepath, &call.args)).collect();
        // Ids usually come out sorted already (they start with the namepath), so the sort is
        // mostly skipped.
        let mut by_id: Vec<usize> = (0..distinct.len()).collect();
        if !ids.is_sorted() {
            by_id.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
        }
        let mut number = vec![0; distinct.len()];
        let mut count = 0;
        for (at, &call) in by_id.iter().enumerate() {
            if at > 0 && ids[call] != ids[by_id[at - 1]] {
                count += 1;
            }
            number[call] = count;
        }
        let count = if distinct.is_empty() { 0 } else { count + 1 };
        TaskIndex { calls: distinct, first, ids, number, count }
    }

    /// The task number of a call to a body-bearing recipe of the closure.
    fn of_call(&self, call: &Call<'r>) -> usize {
        let start = self.first[call.recipe];
        let group = &self.calls[start..self.first[call.recipe + 1]];
        let at = group
            .binary_search_by(|c| c.args.cmp(&call.args))
            .expect("every call of a body-bearing recipe is a task");
        self.number[start + at]
    }

    /// The task numbers of a recipe's calls, sorted.
    fn of_recipe(&self, recipe: usize) -> Vec<usize> {
        let mut numbers = self.number[self.first[recipe]..self.first[recipe + 1]].to_vec();
        numbers.sort_unstable();
        numbers.dedup();
        numbers
    }
}

fn call_id(namepath: &str, args: &[&str]) -> String {
    if args.is_empty() { namepath.to_string() } else { format!("{namepath}({})", args.join(",")) }
}

/// The task numbers each recipe's priors stand for, filled in as they are first needed.
struct Expansion {
    expanded: Vec<Option<Rc<[usize]>>>,
    /// The recipes being expanded, innermost last, to catch a cycle.
    stack: Vec<usize>,
    /// Where expansions collect their task numbers: each one works above the ones it is nested
    /// in and gives the space back when done, so no expansion allocates its own buffer.
    scratch: Vec<usize>,
    /// Shared by every recipe whose priors stand for no task.
    empty: Rc<[usize]>,
}

impl<'r, 'a> Closure<'r, 'a> {
    /// Walks priors and subsequents breadth-first from the root, resolving each dependency
    /// relative to its declaring module.
    fn of(recipes: &'r [Recipe<'a>], root: usize) -> Result<Self, IngestError> {
        // Hashing a namepath once beats comparing it with a dozen others in a binary search. The
        // map only answers lookups; it never decides an order.
        let by_namepath: HashMap<&str, usize> =
            recipes.iter().enumerate().map(|(at, recipe)| (recipe.namepath.as_ref(), at)).collect();
        let mut calls = Vec::new();
        let mut spans = vec![None; recipes.len()];
        let mut walk = Vec::new();
        let mut queue = VecDeque::from([root]);
        while let Some(at) = queue.pop_front() {
            if spans[at].is_some() {
                continue;
            }
            let recipe = &recipes[at];
            let start = calls.len();
            for dependency in &recipe.dependencies {
                let call = resolve_dependency(&by_namepath, recipe, dependency)?;
                if spans[call.recipe].is_none() {
                    queue.push_back(call.recipe);
                }
                calls.push(call);
            }
            spans[at] = Some((start, calls.len()));
            walk.push(at);
        }
        Ok(Closure { recipes, root, calls, spans, walk })
    }

    fn calls_of(&self, recipe: usize) -> &[Call<'r>] {
        self.spans[recipe].map_or(&[], |(start, end)| &self.calls[start..end])
    }

    /// The tasks of the closure, in plan order.
    fn tasks(&self) -> Result<Vec<Task>, IngestError> {
        let root_call = Call { recipe: self.root, args: Vec::new() };
        let root_task = self.recipes[self.root].has_body.then_some(&root_call);
        let index = TaskIndex::new(
            root_task.into_iter().chain(self.calls.iter().filter(|call| self.recipes[call.recipe].has_body)),
            self.recipes,
        );

        // Every task needs what its recipe's priors stand for. Recipes go in namepath order, and
        // each one's priors are expanded before its calls are checked for clashing ids, so the
        // first error found is the one reported whichever kind it is.
        let empty: Rc<[usize]> = Rc::from([]);
        let mut expansion = Expansion {
            expanded: vec![None; self.recipes.len()],
            stack: Vec::new(),
            scratch: Vec::new(),
            empty: Rc::clone(&empty),
        };
        let mut needs: Vec<Rc<[usize]>> = vec![empty; index.count];
        let mut taken = vec![false; index.count];
        for recipe in 0..self.recipes.len() {
            let (start, end) = (index.first[recipe], index.first[recipe + 1]);
            if start == end {
                continue;
            }
            let own = self.prior_needs(recipe, &index, &mut expansion)?;
            for at in start..end {
                let task = index.number[at];
                if std::mem::replace(&mut taken[task], true) {
                    return Err(IngestError::DuplicateTask { id: index.ids[at].clone() });
                }
                needs[task] = Rc::clone(&own);
            }
        }

        // A subsequent runs after the recipe that lists it, so the subsequent's tasks need that
        // recipe's tasks; an empty-bodied recipe on either side stands for its expanded priors.
        // just runs every recipe once, so a subsequent that already ran before the recipe (it is
        // among the recipe's transitive needs) is skipped there and adds no edge; the recipes
        // are visited in walk order, which makes that choice deterministic.
        let mut reach = Reach::new(index.count);
        for &at in &self.walk {
            let recipe = &self.recipes[at];
            // An empty-bodied recipe's priors are expanded even when no subsequent follows it:
            // that is where a cycle among empty-bodied recipes shows.
            let expanded_priors =
                if recipe.has_body { None } else { Some(self.prior_needs(at, &index, &mut expansion)?) };
            let subsequents = &self.calls_of(at)[recipe.priors..];
            if subsequents.is_empty() {
                continue;
            }
            let providers: Rc<[usize]> = match expanded_priors {
                Some(priors) => priors,
                None => index.of_recipe(at).into(),
            };
            for subsequent in subsequents {
                let dependents: Rc<[usize]> = if self.recipes[subsequent.recipe].has_body {
                    Rc::from([index.of_call(subsequent)])
                } else {
                    self.prior_needs(subsequent.recipe, &index, &mut expansion)?
                };
                for &dependent in dependents.iter() {
                    for &provider in providers.iter() {
                        if !reach.needs_transitively(&needs, provider, dependent)
                            && let Err(slot) = needs[dependent].binary_search(&provider)
                        {
                            let mut grown = needs[dependent].to_vec();
                            grown.insert(slot, provider);
                            needs[dependent] = grown.into();
                        }
                    }
                }
            }
        }

        // Each task number now belongs to exactly one call.
        let TaskIndex { calls, ids: call_ids, number, count, .. } = index;
        let mut ids = vec![String::new(); count];
        let mut task_calls = vec![&root_call; count];
        for (at, id) in call_ids.into_iter().enumerate() {
            ids[number[at]] = id;
            task_calls[number[at]] = calls[at];
        }
        let ordered = order(&needs, &ids)?;
        let mut tasks: Vec<Task> = ordered
            .iter()
            .map(|&task| {
                let call = task_calls[task];
                let recipe = &self.recipes[call.recipe];
                Task {
                    // Filled in below, once every task has copied the ids of its needs.
                    id: String::new(),
                    recipe: recipe.namepath.to_string(),
                    args: call.args.iter().map(|arg| arg.to_string()).collect(),
                    needs: needs[task].iter().map(|&need| ids[need].clone()).collect(),
                    os: recipe.os.iter().map(|os| os.to_string()).collect(),
                }
            })
            .collect();
        for (task, &number) in tasks.iter_mut().zip(&ordered) {
            task.id = std::mem::take(&mut ids[number]);
        }
        Ok(tasks)
    }

    /// The task numbers a recipe's priors stand for, sorted: a body-bearing prior is its own
    /// task, an empty-bodied one is replaced by its own prior needs, recursively.
    fn prior_needs(
        &self,
        recipe: usize,
        index: &TaskIndex<'_, 'r>,
        expansion: &mut Expansion,
    ) -> Result<Rc<[usize]>, IngestError> {
        if let Some(done) = &expansion.expanded[recipe] {
            return Ok(Rc::clone(done));
        }
        if expansion.stack.contains(&recipe) {
            return Err(IngestError::Cycle { node: self.recipes[recipe].namepath.to_string() });
        }
        expansion.stack.push(recipe);
        let start = expansion.scratch.len();
        let calls = self.calls_of(recipe);
        for call in &calls[..self.recipes[recipe].priors.min(calls.len())] {
            if self.recipes[call.recipe].has_body {
                expansion.scratch.push(index.of_call(call));
            } else {
                let nested = self.prior_needs(call.recipe, index, expansion)?;
                expansion.scratch.extend_from_slice(&nested);
            }
        }
        expansion.stack.pop();
        let found = &mut expansion.scratch[start..];
        found.sort_unstable();
        let mut kept = 0;
        for at in 0..found.len() {
            if kept == 0 || found[at] != found[kept - 1] {
                found[kept] = found[at];
                kept += 1;
            }
        }
        let out = if kept == 0 { Rc::clone(&expansion.empty) } else { Rc::from(&found[..kept]) };
        expansion.scratch.truncate(start);
        expansion.expanded[recipe] = Some(Rc::clone(&out));
        Ok(out)
    }
}

/// Depth-first reachability over the needs, reusing its buffers across queries.
struct Reach {
    /// The query that last saw each task; a fresh query needs no clearing.
    seen: Vec<usize>,
    query: usize,
    stack: Vec<usize>,
}

impl Reach {
    fn new(tasks: usize) -> Self {
        Reach { seen: vec![0; tasks], query: 0, stack: Vec::new() }
    }

    /// Whether `from` is `to` or needs it through a chain of needs.
    fn needs_transitively(&mut self, needs: &[Rc<[usize]>], from: usize, to: usize) -> bool {
        self.query += 1;
        self.stack.clear();
        self.seen[from] = self.query;
        self.stack.push(from);
        while let Some(task) = self.stack.pop() {
            if task == to {
                return true;
            }
            for &need in needs[task].iter() {
                if self.seen[need] != self.query {
                    self.seen[need] = self.query;
                    self.stack.push(need);
                }
            }
        }
        false
    }
}

/// Resolves a dependency written inside `recipe`'s module to a call with literal arguments.
fn resolve_dependency<'r>(
    by_namepath: &HashMap<&str, usize>,
    recipe: &Recipe<'_>,
    dependency: &'r DumpDependency<'_>,
) -> Result<Call<'r>, IngestError> {
    let name = dependency.recipe.0.as_ref();
    // A top-level recipe's dependencies are namepaths already; only a module's need joining.
    let target = if recipe.module.is_empty() {
        by_namepath.get(name)
    } else {
        by_namepath.get(join(&recipe.module, name).as_str())
    };
    let target = target.copied();
    let Some(target) = target else {
        return Err(IngestError::UnknownDependency {
            recipe: recipe.namepath.to_string(),
            dependency: name.to_string(),
        });
    };
    let non_literal = || IngestError::NonLiteralArgument {
        recipe: recipe.namepath.to_string(),
        dependency: name.to_string(),
    };
    // A splatted argument list is computed at run time, so it is no literal either.
    if dependency.star.0 {
        return Err(non_literal());
    }
    let Some(args) = &dependency.arguments.0 else {
        return Err(non_literal());
    };
    Ok(Call { recipe: target, args: args.iter().map(|arg| arg.0.as_ref()).collect() })
}

/// Orders the tasks (by number) by rank, the longest path from a task without needs, then by
/// id; fails naming a task on a cycle when some tasks wait on each other.
fn order(needs: &[Rc<[usize]>], ids: &[String]) -> Result<Vec<usize>, IngestError> {
    let count = needs.len();
    // Each task's dependents, laid out back to back: task t's are `dependents[starts[t]..starts[t + 1]]`.
    let mut starts = vec![0; count + 1];
    for &need in needs.iter().flat_map(|task_needs| task_needs.iter()) {
        starts[need + 1] += 1;
    }
    for at in 0..count {
        starts[at + 1] += starts[at];
    }
    let mut fill = starts.clone();
    let mut dependents = vec![0; starts[count]];
    for (task, task_needs) in needs.iter().enumerate() {
        for &need in task_needs.iter() {
            dependents[fill[need]] = task;
            fill[need] += 1;
        }
    }

    let mut waiting: Vec<usize> = needs.iter().map(|task_needs| task_needs.len()).collect();
    let mut rank = vec![0; count];
    let mut ready: VecDeque<usize> = (0..count).filter(|&task| waiting[task] == 0).collect();
    while let Some(task) = ready.pop_front() {
        let next = rank[task] + 1;
        for &dependent in &dependents[starts[task]..starts[task + 1]] {
            rank[dependent] = rank[dependent].max(next);
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                ready.push_back(dependent);
            }
        }
    }
    if let Some(node) = cycle_node(needs, &waiting) {
        return Err(IngestError::Cycle { node: ids[node].clone() });
    }

    let mut ordered: Vec<usize> = (0..count).collect();
    ordered.sort_by_key(|&task| (rank[task], task));
    Ok(ordered)
}

/// After a topological sort, the tasks still waiting all wait on each other; following the
/// smallest waiting need from the smallest waiting task must come back round, and the first task
/// seen twice lies on a cycle.
fn cycle_node(needs: &[Rc<[usize]>], waiting: &[usize]) -> Option<usize> {
    let stuck = |task: usize| waiting[task] > 0;
    let mut current = (0..needs.len()).find(|&task| stuck(task))?;
    let mut seen = vec![false; needs.len()];
    while !std::mem::replace(&mut seen[current], true) {
        current = needs[current].iter().copied().find(|&need| stuck(need))?;
    }
    Some(current)
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

    #[test]
    fn dependencies_that_make_the_same_id_are_rejected() {
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("fmt", &["a,b"]), ("fmt", &["a", "b"])], 2)),
            recipe("ci::fmt", true, &[], 0),
        ]);
        let err = Plan::from_dump(&json, None).unwrap_err();
        assert_eq!(err, IngestError::DuplicateTask { id: "ci::fmt(a,b)".into() });
    }

    #[test]
    fn a_recipe_named_like_the_setup_node_is_refused() {
        let json = dump(vec![
            tagged(recipe("default", false, &[("_ci-setup", &[]), ("x", &[])], 2)),
            recipe("_ci-setup", true, &[], 0),
            recipe("x", true, &[], 0),
        ]);
        assert_eq!(Plan::from_dump(&json, None).unwrap_err(), IngestError::ReservedName(SETUP));
        // In a module it is another id, and runs.
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("_ci-setup", &[])], 1)),
            recipe("ci::_ci-setup", true, &[], 0),
        ]);
        assert!(Plan::from_dump(&json, None).is_ok());
    }

    #[test]
    fn recipes_sharing_a_namepath_are_a_bad_dump() {
        let json = dump(vec![
            tagged(recipe("ci::default", true, &[], 0)),
            recipe("x", true, &[], 0),
            recipe("ci::x", true, &[], 0),
        ]);
        let mut value: Value = serde_json::from_str(&json).unwrap();
        value["recipes"]["x"]["namepath"] = json!("ci::x");
        let err = Plan::from_dump(&value.to_string(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "just's JSON dump could not be read: two recipes share the namepath \"ci::x\": pass an \
             unedited dump"
        );
    }

    #[test]
    fn arguments_with_escapes_are_read_and_written_back_escaped() {
        // The quick reader leaves escaped strings it looks into to serde; the plan is the same.
        let json = dump(vec![
            tagged(recipe("ci::default", false, &[("say", &["q\"uote", "back\\slash", "é"])], 1)),
            recipe("ci::say", true, &[], 0),
        ]);
        assert!(QuickReader::read(&json).is_none());
        let plan = Plan::from_dump(&json, None).unwrap();
        assert_eq!(ids(&plan.tasks), ["ci::say(q\"uote,back\\slash,é)"]);
        assert_eq!(plan.to_json_pretty(), reference_pretty(&plan));
        assert!(plan.to_json_pretty().contains(r#""q\"uote","#));
    }

    /// The plan's pretty JSON as serde_json writes it, the reference for the hand-written writer.
    fn reference_pretty(plan: &Plan) -> String {
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
        let view = PlanView {
            root: &plan.root,
            digest: reference_digest(plan),
            tasks: plan
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
        serde_json::to_string_pretty(&view).unwrap() + "\n"
    }

    /// The digest over `serde_json::to_vec` of the plan, the reference for the hand-written one.
    fn reference_digest(plan: &Plan) -> String {
        let hash = Sha256::digest(serde_json::to_vec(plan).unwrap());
        "sha256:".to_string() + &hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    }

    #[test]
    fn hand_written_json_matches_serde_json_byte_for_byte() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let task = |id: &str, args: &[&str], needs: &[&str], os: &[&str]| Task {
            id: id.into(),
            recipe: format!("{id}::recipe"),
            args: strings(args),
            needs: strings(needs),
            os: strings(os),
        };
        let tricky = Plan {
            root: "r\"o\\ot\u{1}\u{7f}".into(),
            tasks: vec![
                task(&every_ascii, &[&every_ascii, "", "é ü 漢 🦀"], &[], &["linux", "unix"]),
                task("a\n(b,\"c\")", &[], &[&every_ascii], &[]),
                task("plain", &["x\ty"], &["a\n(b,\"c\")", "plain"], &["macos"]),
            ],
        };
        let empty = Plan { root: String::new(), tasks: vec![] };
        for plan in [plan(), Plan::from_dump(&pipeline(), Some("ci::lint")).unwrap(), tricky, empty] {
            assert_eq!(plan.digest(), reference_digest(&plan));
            assert_eq!(plan.to_json_pretty(), reference_pretty(&plan));
        }
    }

    #[test]
    fn quick_reader_reads_plain_dumps_and_leaves_the_rest_to_serde() {
        let deep = |depth: usize| format!("{{\"x\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        let big = "9".repeat(19);
        let quick = [
            pipeline(),
            kolu_like_dump_for_graph(),
            "{}".to_string(),
            " \t\r\n{ \"recipes\" : null , \"modules\" : null } \n".to_string(),
            r#"{"recipes":{"a":{"body":[["echo \"hi\" \\ \u00e9 \/ \b\f\n\r\t"]],"priors":0}}}"#.to_string(),
            r#"{"recipes":{"a":{"body":[["x"]]},"a":{"body":[]}},"x":[-1,0,-0,123456789012345678]}"#.to_string(),
            r#"{"recipes":{"a":{"attributes":[{"metadata":["ci"],"metadata":"x"},"linux","unix","linux",7,null,["ci"],{"metadata":[["ci"],"ci"]}]}}}"#.to_string(),
            r#"{"recipes":{"a":{"dependencies":[{"recipe":"b","arguments":["x",["variable","v"]],"star":null},{"recipe":"b","arguments":null,"star":false},{"star":"*"},{"star":true},{"star":0}]}}}"#.to_string(),
            r#"{"recipes":{"a":{"body":null},"b":{"body":[[]]},"c":{"body":"x"},"d":{"body":{}},"e":{"body":[ ]},"f":{}}}"#.to_string(),
            r#"{"recipes":{"a":{"namepath":null,"priors":null,"attributes":null,"dependencies":null}}}"#.to_string(),
            deep(QUICK_MAX_DEPTH - 1),
        ];
        let left_to_serde = [
            r#"{"recipes":{"a\u0062":{}}}"#.to_string(),
            r#"{"x":"\ud800"}"#.to_string(),
            r#"{"x":"\ud83e\udd80"}"#.to_string(),
            r#"{"x":1.5}"#.to_string(),
            r#"{"x":1e400}"#.to_string(),
            format!(r#"{{"x":{big}}}"#),
            format!(r#"{{"recipes":{{"a":{{"priors":{big}}}}}}}"#),
            r#"{"x":01}"#.to_string(),
            r#"{"x":[1,]}"#.to_string(),
            r#"{"x":{"a":1,}}"#.to_string(),
            r#"{"recipes":{},"recipes":{}}"#.to_string(),
            r#"{"recipes":{"a":{"body":[],"body":[]}}}"#.to_string(),
            r#"{"recipes":[]}"#.to_string(),
            r#"{"recipes":{"a":null}}"#.to_string(),
            r#"{"recipes":{"a":{"priors":-1}}}"#.to_string(),
            r#"{"recipes":{"a":{"priors":"1"}}}"#.to_string(),
            r#"{"recipes":{"a":{"dependencies":[{"recipe":null}]}}}"#.to_string(),
            r#"{"recipes":{"a":{"attributes":["lin\u0075x"]}}}"#.to_string(),
            "{\"x\":\"a\u{1}b\"}".to_string(),
            "{} x".to_string(),
            "[{}, {}]".to_string(),
            "\u{feff}{}".to_string(),
            "{\"x\":nul}".to_string(),
            String::new(),
            deep(200),
        ];
        for json in &quick {
            let read = QuickReader::read(json).unwrap_or_else(|| panic!("left to serde: {json}"));
            let serde: DumpModule = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
            assert_eq!(read, serde, "{json}");
        }
        for json in &left_to_serde {
            assert!(QuickReader::read(json).is_none(), "read quickly: {json}");
        }
    }
}
