//! The corpus under `tests/corpus/`: small repositories modelled on real-world justfiles, each run
//! through odu and through `just` itself, recipe by recipe.
//!
//! Every corpus recipe with a body starts with a marker comment, `# node: <namepath> <args>` (the
//! arguments passed through just's `quote()`), which `just --dry-run` prints with its arguments
//! evaluated: the markers are just's own account of which recipe invocations a selection runs and
//! in which order. For every recipe odu can select in a tree, the test checks that
//!
//! - odu runs exactly the invocations `just --dry-run <recipe>` lists,
//! - every ordering just keeps (a recipe after its dependencies and their subsequents, a
//!   subsequent after the recipe listing it and what that recipe waited for) is a need in odu's
//!   plan and was not broken by the run, independent nodes being free to run concurrently,
//! - every node's log is byte for byte what `just --no-deps <recipe> <args>` prints for it in the
//!   same tree (stdout and stderr through one pipe), and it ends as just's run ends,
//! - with `--jobs 1`, the pipeline's nodes start in just's own order.
//!
//! Every mismatch is collected and the test fails with the whole list. A new tree needs a line
//! in `corpus_tests!`, and every recipe with a body needs its marker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::repo::*;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// One test per tree, so the trees run side by side; `every_corpus_tree_has_its_test` keeps this
/// list complete.
const TREES: &[&str] = &["monorepo", "release", "scripts", "settings"];

macro_rules! corpus_tests {
    ($($name:ident => $tree:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_tree($tree);
            }
        )*
    };
}

corpus_tests! {
    corpus_monorepo_runs_as_just_runs_it => "monorepo",
    corpus_release_runs_as_just_runs_it => "release",
    corpus_scripts_runs_as_just_runs_it => "scripts",
    corpus_settings_runs_as_just_runs_it => "settings",
}

#[test]
fn every_corpus_tree_has_its_test() {
    let mut found: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, TREES, "add a corpus_tests! line for every tree under tests/corpus/");
}

/// A recipe invocation: its namepath and its arguments, defaults filled in.
type Invocation = (String, Vec<String>);

fn show(inv: &Invocation) -> String {
    if inv.1.is_empty() {
        inv.0.clone()
    } else {
        format!("{}({})", inv.0, inv.1.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "))
    }
}

/// Copies `tests/corpus/<tree>` into a fresh git repository and commits it, executable bits kept.
fn checkout(tree: &str) -> Repo {
    let repo = Repo::with_files(&[]);
    copy_tree(&corpus_dir().join(tree), repo.path());
    repo.commit("corpus tree");
    repo
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What `just --dump` says about one recipe.
struct Recipe {
    body: bool,
    priors: usize,
    /// Dependencies as namepaths with literal arguments, defaults not yet filled in.
    dependencies: Vec<Invocation>,
    defaults: Vec<Option<String>>,
    confirm: bool,
    parallel: bool,
}

/// Every recipe of a justfile and its modules by namepath, and every alias by namepath.
struct JustDump {
    recipes: BTreeMap<String, Recipe>,
    aliases: BTreeMap<String, String>,
}

impl JustDump {
    fn load(dir: &Path) -> JustDump {
        let out = just(dir, &["--dump", "--dump-format", "json"]);
        assert!(out.status.success(), "just --dump: {}", stderr(&out));
        let dump: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut loaded = JustDump { recipes: BTreeMap::new(), aliases: BTreeMap::new() };
        loaded.module(&dump, "");
        loaded
    }

    fn module(&mut self, module: &Value, prefix: &str) {
        for (name, alias) in module["aliases"].as_object().unwrap() {
            self.aliases
                .insert(format!("{prefix}{name}"), format!("{prefix}{}", alias["target"].as_str().unwrap()));
        }
        for recipe in module["recipes"].as_object().unwrap().values() {
            let attributes = recipe["attributes"].as_array().unwrap();
            let has =
                |name: &str| attributes.iter().any(|a| a.as_str() == Some(name) || a.get(name).is_some());
            let dependencies = recipe["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let args = d["arguments"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| {
                            a.as_str().expect("corpus dependency arguments are literal strings").to_string()
                        })
                        .collect();
                    (format!("{prefix}{}", d["recipe"].as_str().unwrap()), args)
                })
                .collect();
            let defaults = recipe["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["default"].as_str().map(str::to_string))
                .collect();
            self.recipes.insert(
                recipe["namepath"].as_str().unwrap().to_string(),
                Recipe {
                    body: !recipe["body"].as_array().unwrap().is_empty(),
                    priors: recipe["priors"].as_u64().unwrap() as usize,
                    dependencies,
                    defaults,
                    confirm: has("confirm"),
                    parallel: has("parallel"),
                },
            );
        }
        for (name, sub) in module["modules"].as_object().unwrap() {
            self.module(sub, &format!("{prefix}{name}::"));
        }
    }

    fn recipe(&self, namepath: &str) -> &Recipe {
        self.recipes.get(namepath).unwrap_or_else(|| panic!("just's dump has no recipe {namepath}"))
    }

    /// The invocation with the recipe's defaults filled in, as its marker shows it.
    fn filled(&self, namepath: &str, args: &[String]) -> Invocation {
        let mut args = args.to_vec();
        for default in self.recipe(namepath).defaults.iter().skip(args.len()) {
            match default {
                Some(d) => args.push(d.clone()),
                None => break,
            }
        }
        (namepath.to_string(), args)
    }

    /// The nodes whose end means `inv` has completed under just: its body, what it waited for,
    /// and its subsequents (and theirs).
    fn complete(&self, inv: &Invocation, into: &mut BTreeSet<Invocation>) {
        let recipe = self.recipe(&inv.0);
        if recipe.body {
            into.insert(inv.clone());
        }
        for dep in &recipe.dependencies {
            self.complete(&self.filled(&dep.0, &dep.1), into);
        }
    }

    /// Every ordering just guarantees among `selected` when it runs `entry` (a recipe without a
    /// body, say) and `selected`, as (earlier, later) pairs: a recipe starts after its
    /// dependencies complete; a subsequent starts after the recipe listing it and what that
    /// recipe waited for.
    fn edges(
        &self,
        entry: Option<Invocation>,
        selected: &BTreeSet<Invocation>,
    ) -> BTreeSet<(Invocation, Invocation)> {
        let mut edges = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Invocation> = selected.iter().cloned().chain(entry).collect();
        while let Some(inv) = todo.pop() {
            if !seen.insert(inv.clone()) {
                continue;
            }
            let recipe = self.recipe(&inv.0);
            let mut before = BTreeSet::new();
            for dep in &recipe.dependencies[..recipe.priors] {
                self.complete(&self.filled(&dep.0, &dep.1), &mut before);
            }
            if recipe.body {
                for earlier in &before {
                    edges.insert((earlier.clone(), inv.clone()));
                }
                before.insert(inv.clone());
            }
            // A subsequent with a body starts once the recipe listing it has run; the corpus has
            // no subsequent without a body.
            for dep in &recipe.dependencies[recipe.priors..] {
                let subsequent = self.filled(&dep.0, &dep.1);
                if self.recipe(&subsequent.0).body {
                    for earlier in &before {
                        edges.insert((earlier.clone(), subsequent.clone()));
                    }
                }
                todo.push(subsequent);
            }
            for dep in &recipe.dependencies[..recipe.priors] {
                todo.push(self.filled(&dep.0, &dep.1));
            }
        }
        edges.retain(|(a, b)| selected.contains(a) && selected.contains(b));
        edges
    }
}

fn just(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("just").args(args).current_dir(dir).stdin(Stdio::null()).output().unwrap()
}

/// `just --dry-run`'s invocations, in just's order, read from the markers it prints.
fn dry_run(dir: &Path, recipe: &str, args: &[String]) -> Result<Vec<Invocation>, String> {
    let mut argv = vec!["--yes", "--dry-run", recipe];
    argv.extend(args.iter().map(String::as_str));
    let out = just(dir, &argv);
    if !out.status.success() {
        return Err(format!("just {}: {}", argv.join(" "), stderr(&out).trim()));
    }
    let mut seen = Vec::new();
    for line in stderr(&out).lines() {
        if let Some(marker) = line.strip_prefix("# node: ") {
            let inv = parse_marker(marker);
            if !seen.contains(&inv) {
                seen.push(inv);
            }
        }
    }
    Ok(seen)
}

/// `ns::name 'a b' 'it'\''s'` → (`ns::name`, [`a b`, `it's`]): the words just's `quote()` makes.
fn parse_marker(marker: &str) -> Invocation {
    let (name, rest) = marker.split_once(' ').unwrap_or((marker, ""));
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
            continue;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                ' ' => break,
                '\'' => {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                        word.push(c);
                    }
                }
                '\\' => word.extend(chars.next()),
                other => word.push(other),
            }
        }
        args.push(word);
    }
    (name.to_string(), args)
}

#[test]
fn markers_read_back_what_quote_wrote() {
    assert_eq!(
        parse_marker("greet 'a b' 'it'\\''s' ''"),
        ("greet".into(), vec!["a b".into(), "it's".into(), "".into()])
    );
    assert_eq!(parse_marker("ns::x"), ("ns::x".into(), vec![]));
}

/// odu's pipeline as `odu dump` gives it: each task's invocation and its needs, by task id.
struct OduPlan {
    tasks: BTreeMap<String, Invocation>,
    needs: BTreeMap<String, Vec<String>>,
}

/// What odu did with one selection: per node, its invocation, how it ended, and where its
/// transitions fell in the progress stream.
struct OduRun {
    nodes: BTreeMap<String, OduNode>,
    /// Node ids in the order they started.
    started: Vec<String>,
}

struct OduNode {
    task: String,
    status: String,
    log: String,
    started_at: Option<usize>,
    ended_at: Option<usize>,
}

fn odu_run(repo: &Repo, args: &[&str]) -> Result<OduRun, String> {
    let mut argv = vec!["run", "--no-post", "--progress", "json"];
    argv.extend(args);
    let out = repo.run(&argv);
    let mut nodes: BTreeMap<String, OduNode> = BTreeMap::new();
    let mut started = Vec::new();
    let suffix = format!("@{}", local_platform());
    for (index, line) in stdout(&out).lines().enumerate() {
        let Ok(line) = serde_json::from_str::<Value>(line) else {
            return Err(format!("odu {}: a progress line is not JSON: {line}", argv.join(" ")));
        };
        let id = line["node"].as_str().unwrap().to_string();
        let Some(task) = id.strip_suffix(&suffix) else {
            return Err(format!("odu {}: node {id} is not on {suffix}", argv.join(" ")));
        };
        if task == "_ci-setup" {
            continue;
        }
        let status = line["status"].as_str().unwrap().to_string();
        let node = nodes.entry(id.clone()).or_insert_with(|| OduNode {
            task: task.to_string(),
            status: String::new(),
            log: line["log"].as_str().unwrap_or_default().to_string(),
            started_at: None,
            ended_at: None,
        });
        // Every node that ran is heard start before it is heard end, even one that started
        // and ended between two frames the client read (its deltas folded into one).
        if status == "running" && node.started_at.is_none() {
            node.started_at = Some(index);
            started.push(id.clone());
        }
        if (status == "success" || status == "failed") && node.started_at.is_none() {
            return Err(format!("odu {}: {id} is said {status} before it is said running", argv.join(" ")));
        }
        if status != "running" && status != "pending" {
            node.ended_at = Some(index);
        }
        node.status = status;
    }
    if nodes.is_empty() && !out.status.success() {
        return Err(format!(
            "odu {} exited {:?}: {}",
            argv.join(" "),
            out.status.code(),
            stderr(&out)
                .lines()
                .find(|l| l.starts_with("odu: ") || l.starts_with("error: "))
                .unwrap_or_default()
        ));
    }
    Ok(OduRun { nodes, started })
}

/// Whether task `later` needs task `earlier` in odu's plan, directly or not.
fn waits_for(needs: &BTreeMap<String, Vec<String>>, later: &str, earlier: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![later];
    while let Some(task) = todo.pop() {
        for need in needs.get(task).into_iter().flatten() {
            if need == earlier {
                return true;
            }
            if seen.insert(need.as_str()) {
                todo.push(need);
            }
        }
    }
    false
}

/// Runs `just --yes --no-deps <recipe> <args>` with stdout and stderr on one pipe, as odu runs a
/// node; returns what it printed and whether it succeeded.
fn just_alone(dir: &Path, recipe: &str, args: &[String]) -> (String, bool) {
    let out = tempfile::tempfile().unwrap();
    let status = Command::new("just")
        .args(["--yes", "--no-deps", recipe])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out.try_clone().unwrap())
        .status()
        .unwrap();
    let mut out = out;
    use std::io::{Read, Seek};
    out.rewind().unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    (text, status.success())
}

/// Stops the checkout's server however the test ends, so none idles on after a failure.
struct StopsServer<'a>(&'a Repo);

impl Drop for StopsServer<'_> {
    fn drop(&mut self) {
        stop_server(self.0);
    }
}

/// One tree: every selectable recipe through odu and just, every mismatch collected.
fn check_tree(tree: &str) {
    let repo = checkout(tree);
    let _server = StopsServer(&repo);
    let dir = repo.path();
    let dump = JustDump::load(dir);
    let mut problems: Vec<String> = Vec::new();

    // odu's pipeline: its tasks, each with the recipe and arguments odu runs.
    let plan = repo.run(&["dump"]);
    assert!(plan.status.success(), "{tree}: odu dump: {}", stderr(&plan));
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let root = plan["root"].as_str().unwrap().to_string();
    let mut tasks: BTreeMap<String, Invocation> = BTreeMap::new();
    let mut needs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in plan["tasks"].as_array().unwrap() {
        let strings = |key: &str| -> Vec<String> {
            task[key].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
        };
        let id = task["id"].as_str().unwrap().to_string();
        needs.insert(id.clone(), strings("needs"));
        tasks.insert(id, (task["recipe"].as_str().unwrap().to_string(), strings("args")));
    }
    let odu = OduPlan { tasks, needs };
    let pipeline = dry_run(dir, &root, &[]).unwrap_or_else(|e| panic!("{tree}: {e}"));
    assert!(!pipeline.is_empty(), "{tree}: just --dry-run {root} printed no `# node:` marker");

    // Selections: the pipeline, every recipe of a node, every node called with arguments, and
    // every recipe without a body or alias whose run stays inside the pipeline.
    let mut selections: Vec<(String, Vec<Invocation>)> = vec![(String::new(), pipeline.clone())];
    let mut recipes: Vec<String> = Vec::new();
    for (recipe, _) in odu.tasks.values() {
        if !recipes.contains(recipe) {
            recipes.push(recipe.clone());
        }
    }
    for recipe in &recipes {
        let mut expected = Vec::new();
        // A recipe name that is also a node's id (the call without arguments) names that node,
        // as `just <recipe>` runs that call; otherwise it names every call of the recipe.
        let instances: Vec<&Invocation> = match odu.tasks.get(recipe) {
            Some(call) => pipeline.iter().filter(|inv| **inv == dump.filled(&call.0, &call.1)).collect(),
            None => pipeline.iter().filter(|inv| &inv.0 == recipe).collect(),
        };
        for inv in &instances {
            match dry_run(dir, recipe, &inv.1) {
                Ok(invs) => {
                    expected.extend(invs.into_iter().filter(|i| !expected.contains(i)).collect::<Vec<_>>())
                }
                Err(e) => problems.push(format!("{recipe}: {e}")),
            }
        }
        if instances.is_empty() {
            problems.push(format!("odu's pipeline runs {recipe}, `just --dry-run {root}` never does"));
            continue;
        }
        selections.push((recipe.clone(), expected));
    }
    for (id, (recipe, args)) in &odu.tasks {
        if args.is_empty() {
            continue;
        }
        match dry_run(dir, recipe, args) {
            Ok(expected) => selections.push((id.clone(), expected)),
            Err(e) => problems.push(format!("{id}: {e}")),
        }
    }
    let groupings =
        dump.recipes.iter().filter(|(_, r)| !r.body && r.defaults.is_empty()).map(|(n, _)| n.clone());
    for name in groupings.chain(dump.aliases.keys().cloned()) {
        if let Ok(expected) = dry_run(dir, &name, &[])
            && !expected.is_empty()
            && expected.iter().all(|inv| pipeline.contains(inv))
        {
            selections.push((name, expected));
        }
    }

    for (selector, expected) in &selections {
        let label = if selector.is_empty() {
            format!("odu run (the pipeline, {root})")
        } else {
            format!("odu run {selector}")
        };
        let confirm = expected.iter().any(|inv| dump.recipe(&inv.0).confirm);
        let mut args: Vec<&str> = vec![];
        if !selector.is_empty() {
            args.push(selector);
        }
        if confirm {
            args.push("--yes");
        }
        let run = match odu_run(&repo, &args) {
            Ok(run) => run,
            Err(e) => {
                problems.push(format!("{label}: {e}"));
                continue;
            }
        };
        // What just was asked to run when that is no node of its own: the pipeline's root, a
        // recipe without a body, an alias's target.
        let entry = match selector.as_str() {
            "" => Some(root.clone()),
            name => {
                dump.aliases.get(name).cloned().or_else(|| dump.recipes.get(name).map(|_| name.to_string()))
            }
        };
        let entry = entry.filter(|name| !dump.recipe(name).body).map(|name| (name, Vec::new()));
        compare(&mut problems, &label, &repo, &dump, &odu, (entry, expected), &run);
    }

    // With one job at a time, the pipeline starts in just's own order (none to keep when just
    // itself runs some dependencies in parallel).
    if !pipeline.iter().any(|inv| dump.recipe(&inv.0).parallel) {
        let confirm = pipeline.iter().any(|inv| dump.recipe(&inv.0).confirm);
        let args: Vec<&str> = if confirm { vec!["--jobs", "1", "--yes"] } else { vec!["--jobs", "1"] };
        match odu_run(&repo, &args) {
            Ok(run) => {
                let order: Vec<String> = run
                    .started
                    .iter()
                    .map(|id| run.nodes[id].task.clone())
                    .map(|task| {
                        odu.tasks.get(&task).map(|inv| show(&dump.filled(&inv.0, &inv.1))).unwrap_or(task)
                    })
                    .collect();
                let just_order: Vec<String> = pipeline.iter().map(show).collect();
                if order != just_order {
                    problems.push(format!(
                        "odu run --jobs 1: nodes started in the order [{}], just runs [{}]",
                        order.join(", "),
                        just_order.join(", ")
                    ));
                }
            }
            Err(e) => problems.push(format!("odu run --jobs 1: {e}")),
        }
    }
    stop_server(&repo);
    assert!(
        problems.is_empty(),
        "corpus tree {tree}: {} mismatch(es) with just:\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Compares one odu run with just: the invocations, the order along every edge, every log.
fn compare(
    problems: &mut Vec<String>,
    label: &str,
    repo: &Repo,
    dump: &JustDump,
    odu: &OduPlan,
    (entry, expected): (Option<Invocation>, &[Invocation]),
    run: &OduRun,
) {
    let mut ran: BTreeMap<Invocation, &OduNode> = BTreeMap::new();
    for node in run.nodes.values() {
        let Some((recipe, args)) = odu.tasks.get(&node.task) else {
            problems.push(format!("{label}: ran {}, which odu dump does not list", node.task));
            continue;
        };
        ran.insert(dump.filled(recipe, args), node);
    }
    let want: BTreeSet<Invocation> = expected.iter().cloned().collect();
    let got: BTreeSet<Invocation> = ran.keys().cloned().collect();
    let missing: Vec<String> = want.difference(&got).map(show).collect();
    let extra: Vec<String> = got.difference(&want).map(show).collect();
    if !missing.is_empty() || !extra.is_empty() {
        problems.push(format!(
            "{label}: selection differs from just --dry-run: missing [{}], extra [{}]",
            missing.join(", "),
            extra.join(", ")
        ));
    }
    // The order, along every edge just keeps: odu's plan makes the later node wait for the
    // earlier one, and the run did not end the later one before the earlier one started. (The
    // progress stream is no finer witness: transitions arrive in batches, and a node's end is
    // published once its log is on disk, which may be after its dependent started.)
    for (earlier, later) in dump.edges(entry, &want) {
        let (Some(a), Some(b)) = (ran.get(&earlier), ran.get(&later)) else { continue };
        if !waits_for(&odu.needs, &b.task, &a.task) {
            problems.push(format!(
                "{label}: odu's plan lets {} start before {} ends; just runs it after",
                show(&later),
                show(&earlier)
            ));
        }
        if let (Some(first), Some(then)) = (a.started_at, b.ended_at)
            && then < first
        {
            problems.push(format!(
                "{label}: {} ended before {} started; just runs it after",
                show(&later),
                show(&earlier)
            ));
        }
    }
    for (inv, node) in &ran {
        let (recipe, args) = &odu.tasks[&node.task];
        let (want_log, ok) = just_alone(repo.path(), recipe, args);
        let status_ok = node.status == "success";
        if status_ok != ok {
            problems.push(format!(
                "{label}: {} ended {} under odu; `just --no-deps` {}",
                show(inv),
                node.status,
                if ok { "succeeds" } else { "fails" }
            ));
        }
        if node.status == "running" || node.status == "pending" || node.status == "skipped" {
            continue;
        }
        let got_log =
            std::fs::read_to_string(repo.path().join(&node.log)).unwrap_or_else(|e| format!("<{e}>"));
        if got_log != want_log {
            problems.push(format!(
                "{label}: {}'s log differs from `just --no-deps`:\n      odu:  {got_log:?}\n      just: {want_log:?}",
                show(inv)
            ));
        }
    }
}
