//! The plan end to end: dumps in, plans, lanes, digests and drawings out.

use serde_json::{Value, json};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::recipe::leaf_of;
use super::*;

type Dep<'a> = (&'a str, &'a [&'a str]);

/// A recipe as just dumps it, with the fields odu ignores too. `deps` are written relative to
/// the recipe's module; the first `priors` of them run before it, the rest after (`&&`).
fn recipe(namepath: &str, body: bool, deps: &[Dep], priors: usize) -> Value {
    let dependencies: Vec<Value> =
        deps.iter().map(|(path, args)| json!({ "recipe": path, "arguments": args, "star": null })).collect();
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

fn strs(items: &[&str]) -> Vec<String> {
    strings(items)
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
fn a_root_that_needs_an_argument_is_refused_naming_the_parameter() {
    let with_parameters = |namepath: &str, parameters: Value| {
        let mut recipe = recipe(namepath, true, &[], 0);
        recipe["parameters"] = parameters;
        recipe
    };
    let param = |name: &str, kind: &str, default: Value| {
        json!({ "name": name, "kind": kind, "default": default, "export": false, "flag": false,
                "long": null, "short": null })
    };
    let json = dump(vec![
        tagged(recipe("ci", false, &[("deploy", &["prod"])], 1)),
        with_parameters("deploy", json!([param("env", "singular", Value::Null)])),
        with_parameters(
            "build",
            json!([param("mode", "singular", json!("debug")), param("targets", "plus", Value::Null)]),
        ),
        with_parameters(
            "lint",
            json!([param("mode", "singular", json!("x")), param("files", "star", Value::Null)]),
        ),
    ]);
    // A dependency passes the argument: the pipeline runs.
    assert_eq!(ids(&Plan::from_dump(&json, None).unwrap().tasks), ["deploy(prod)"]);
    let err = Plan::from_dump(&json, Some("deploy")).unwrap_err();
    assert_eq!(err, IngestError::RequiredParameter { recipe: "deploy".into(), parameter: "env".into() });
    assert_eq!(
        err.to_string(),
        "root recipe \"deploy\" needs an argument for its parameter \"env\" and odu runs the root \
         without arguments: give \"env\" a default, or make the root a recipe that depends on \
         (deploy \"value\")"
    );
    let err = Plan::from_dump(&json, Some("build")).unwrap_err();
    assert_eq!(err, IngestError::RequiredParameter { recipe: "build".into(), parameter: "+targets".into() });
    // Defaults and `*` need nothing.
    assert_eq!(ids(&Plan::from_dump(&json, Some("lint")).unwrap().tasks), ["lint"]);
}

#[test]
fn unknown_root_names_close_candidates() {
    let err = Plan::from_dump(&pipeline(), Some("ci::lnt")).unwrap_err();
    let IngestError::UnknownRoot { root, candidates } = &err else { panic!("{err:?}") };
    assert_eq!(root, "ci::lnt");
    assert_eq!(candidates.first().map(String::as_str), Some("ci::lint"));
    assert!(err.to_string().starts_with("no recipe named \"ci::lnt\" in the justfile: pass --root"), "{err}");
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
    assert_eq!(err, IngestError::UnknownDependency { recipe: "ci::default".into(), dependency: "x".into() });
    assert!(err.to_string().contains("names no recipe in its module or a child module"));
}

#[test]
fn subsequents_need_the_recipe_that_lists_them() {
    // The empty root's subsequent needs the root's expanded priors.
    let plan = plan();
    assert_eq!(task(&plan, "ci::post").needs, ["ci::build", "ci::e2e", "ci::lint"]);
    assert_eq!(task(&plan, "ci::post").after, ["ci::build", "ci::e2e", "ci::lint"]);
    // An empty recipe's subsequents are no task's own: nothing brings them but the root.
    assert!(plan.tasks.iter().all(|t| t.subsequents.is_empty()));

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
    assert_eq!(task(&plan, "ci::notify(done)").after, ["ci::deploy"]);
    assert_eq!(task(&plan, "ci::deploy").subsequents, ["ci::notify(done)"]);
    assert!(task(&plan, "ci::deploy").after.is_empty());
}

/// `merge: _on_a_branch && sync`, `sync: && notify`, `notify: fmt`, plus a linux-only subsequent
/// and an empty-bodied one, under a root that only calls `merge`.
fn merge_pipeline() -> String {
    dump(vec![
        tagged(recipe("ci", false, &[("merge", &[])], 1)),
        recipe("_on_a_branch", true, &[], 0),
        recipe("merge", true, &[("_on_a_branch", &[]), ("sync", &[]), ("tidy", &[]), ("wrap", &[])], 1),
        recipe("sync", true, &[("notify", &[])], 0),
        recipe("notify", true, &[("fmt", &[])], 1),
        recipe("fmt", true, &[], 0),
        with_attributes(recipe("tidy", true, &[], 0), json!(["linux"])),
        recipe("wrap", false, &[("fold", &[])], 1),
        recipe("fold", true, &[], 0),
    ])
}

fn lane_ids(plan: &Plan, platform: &str, tokens: &[&str], no_deps: bool) -> Vec<String> {
    lane(plan, platform, tokens, no_deps).into_iter().map(|(id, _)| id).collect()
}

#[test]
fn selecting_a_recipe_brings_its_subsequents_and_never_the_recipe_listing_it() {
    let plan = Plan::from_dump(&merge_pipeline(), None).unwrap();
    let merge = task(&plan, "merge");
    assert_eq!(merge.needs, ["_on_a_branch"]);
    assert!(merge.after.is_empty());
    // An empty-bodied subsequent stands for its priors.
    assert_eq!(merge.subsequents, ["fold", "sync", "tidy"]);
    assert_eq!(
        (task(&plan, "sync").needs.clone(), task(&plan, "sync").after.clone()),
        (strs(&["merge"]), strs(&["merge"]))
    );
    assert_eq!(task(&plan, "notify").needs, ["fmt", "sync"]);
    assert_eq!(task(&plan, "notify").after, ["sync"]);

    let linux = "x86_64-linux";
    // `just merge`: its prior, itself, its subsequents, theirs, and their priors.
    assert_eq!(
        lane_ids(&plan, linux, &["merge"], false),
        ["_on_a_branch", "fmt", "merge", "fold", "sync", "tidy", "notify"]
    );
    // `just sync`: never `merge` nor `_on_a_branch`, which list it as a subsequent.
    assert_eq!(lane_ids(&plan, linux, &["sync"], false), ["fmt", "sync", "notify"]);
    let sync_lane = lane(&plan, linux, &["sync"], false);
    assert_eq!(sync_lane[1], ("sync".into(), vec![]));
    assert_eq!(lane_ids(&plan, linux, &["notify"], false), ["fmt", "notify"]);
    assert_eq!(lane_ids(&plan, linux, &["_on_a_branch"], false), ["_on_a_branch"]);
    // `just --no-deps merge` runs no subsequent either.
    assert_eq!(lane_ids(&plan, linux, &["merge"], true), ["merge"]);
    // A subsequent the lane cannot run is not brought; the rest still is.
    assert_eq!(
        lane_ids(&plan, "aarch64-darwin", &["merge"], false),
        ["_on_a_branch", "fmt", "merge", "fold", "sync", "notify"]
    );
    // Selected together, the subsequent still runs after the recipe listing it.
    let both = lane(&plan, linux, &["sync", "merge"], false);
    assert_eq!(both.iter().find(|(id, _)| id == "sync").unwrap().1, ["merge"]);
    // The root brings everything, as before.
    assert_eq!(lane_ids(&plan, linux, &[], false).len(), plan.tasks.len());
}

#[test]
fn a_task_waits_for_the_subsequents_of_the_priors_it_needs() {
    // `test: build`, `build: && bundle`, `bundle: && (checksum "app.js")`: `just test` runs
    // build, bundle and checksum, then test.
    let json = dump(vec![
        tagged(recipe("ci", false, &[("test", &[])], 1)),
        recipe("test", true, &[("build", &[])], 1),
        recipe("build", true, &[("bundle", &[])], 0),
        recipe("bundle", true, &[("checksum", &["app.js"])], 0),
        recipe("checksum", true, &[], 0),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    assert_eq!(task(&plan, "test").needs, ["build", "bundle", "checksum(app.js)"]);
    assert_eq!(task(&plan, "test").after, ["bundle", "checksum(app.js)"]);
    assert_eq!(ids(&plan.tasks), ["build", "bundle", "checksum(app.js)", "test"]);
    // Selecting brings what `just <recipe>` runs, no more: never the task listing a prior.
    let linux = "x86_64-linux";
    assert_eq!(lane_ids(&plan, linux, &["test"], false), ["build", "bundle", "checksum(app.js)", "test"]);
    assert_eq!(lane_ids(&plan, linux, &["bundle"], false), ["bundle", "checksum(app.js)"]);
    assert_eq!(lane_ids(&plan, linux, &["test"], true), ["test"]);
}

#[test]
fn a_subsequent_of_an_empty_recipe_waits_for_the_subsequents_of_what_it_stands_for() {
    // `release: test merge && publish`, `merge: && sync`, `sync: && notify`: `just release`
    // publishes after notify.
    let json = dump(vec![
        tagged(recipe("release", false, &[("test", &[]), ("merge", &[]), ("publish", &[])], 2)),
        recipe("test", true, &[], 0),
        recipe("merge", true, &[("sync", &[])], 0),
        recipe("sync", true, &[("notify", &[])], 0),
        recipe("notify", true, &[], 0),
        recipe("publish", true, &[], 0),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    assert_eq!(task(&plan, "publish").needs, ["merge", "notify", "sync", "test"]);
    assert_eq!(task(&plan, "publish").after, ["merge", "notify", "sync", "test"]);
    // Subsequents listed together stay siblings.
    assert_eq!(task(&plan, "notify").needs, ["sync"]);
    assert_eq!(lane_ids(&plan, "x86_64-linux", &["publish"], false), ["publish"]);
}

#[test]
fn a_subsequent_that_is_also_a_prior_elsewhere_keeps_its_prior_need() {
    // `sync: merge` and `merge: && sync`: `just merge` runs merge then sync; `just sync` runs
    // merge first, as its prior.
    let json = dump(vec![
        tagged(recipe("ci", false, &[("sync", &[])], 1)),
        recipe("merge", true, &[("sync", &[])], 0),
        recipe("sync", true, &[("merge", &[])], 1),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    assert!(task(&plan, "sync").after.is_empty());
    assert_eq!(task(&plan, "merge").subsequents, ["sync"]);
    assert_eq!(lane_ids(&plan, "x86_64-linux", &["merge"], false), ["merge", "sync"]);
    assert_eq!(lane_ids(&plan, "x86_64-linux", &["sync"], false), ["merge", "sync"]);
}

#[test]
fn root_override_brings_subsequents_like_a_selector() {
    let plan = Plan::from_dump(&merge_pipeline(), Some("sync")).unwrap();
    assert_eq!(ids(&plan.tasks), ["fmt", "sync", "notify"]);
    let plan = Plan::from_dump(&merge_pipeline(), Some("merge")).unwrap();
    assert_eq!(ids(&plan.tasks), ["_on_a_branch", "fmt", "merge", "fold", "sync", "tidy", "notify"]);
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
    // An `@` not followed by a platform is part of the recipe's arguments.
    assert_eq!(
        Selector::parse("dep(user@host,x)"),
        Selector { recipe: "dep(user@host,x)".into(), platform: None }
    );
    assert_eq!(Selector::parse("e2e@linux").platform, None);
    assert_eq!(Selector::parse("dep(user@host,x)@x86_64-linux").recipe, "dep(user@host,x)");
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
    assert_eq!(err.to_string(), "selector \"x\" is ambiguous: ci::other::x, ci::x — use the full namepath");
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
                after: vec![],
                subsequents: vec![],
                os: vec![],
            })
            .collect(),
        ..Plan::default()
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
        after: vec![],
        subsequents: vec![],
        os: vec![],
    };
    let collide = Plan {
        root: "r".into(),
        tasks: vec![task("a-b", &[]), task("a_b", &[]), task("say(\"hi\")", &["a-b", "a_b"])],
        ..Plan::default()
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
    let json = dump(vec![
        tagged(recipe("ci::default", false, &[("say", &["q\"uote", "back\\slash", "é"])], 1)),
        recipe("ci::say", true, &[], 0),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    assert_eq!(ids(&plan.tasks), ["ci::say(q\"uote,back\\slash,é)"]);
    assert_eq!(plan.to_json_pretty(), reference_pretty(&plan));
    assert!(plan.to_json_pretty().contains(r#""q\"uote","#));
}

#[test]
fn control_characters_are_escaped_in_ids_and_kept_raw_in_the_command() {
    let json = dump(vec![
        tagged(recipe("ci::default", false, &[("say", &["one\ntwo", "a\tb"]), ("say", &["\u{1b}[0m"])], 2)),
        recipe("ci::say", true, &[], 0),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    assert_eq!(ids(&plan.tasks), [r"ci::say(\u{1b}[0m)", r"ci::say(one\ntwo,a\tb)"]);
    let say = task(&plan, r"ci::say(one\ntwo,a\tb)");
    assert_eq!(say.args, ["one\ntwo", "a\tb"]);
    assert_eq!(say.argv(), ["just", "--no-deps", "ci::say", "one\ntwo", "a\tb"]);
    assert_eq!(selectors(&plan, &[r"say(one\ntwo,a\tb)"])[0].tasks, [r"ci::say(one\ntwo,a\tb)"]);
    assert_eq!(plan.to_json_pretty(), reference_pretty(&plan));
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
        after: &'a [String],
        subsequents: &'a [String],
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
                after: &t.after,
                subsequents: &t.subsequents,
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
        // Any strings exercise the writer: reuse the ones at hand.
        after: needs.iter().filter(|n| n.starts_with('a')).map(|n| n.to_string()).collect(),
        subsequents: strings(args),
        os: strings(os),
    };
    let tricky = Plan {
        root: "r\"o\\ot\u{1}\u{7f}".into(),
        tasks: vec![
            task(&every_ascii, &[&every_ascii, "", "é ü 漢 🦀"], &[], &["linux", "unix"]),
            task("a\n(b,\"c\")", &[], &[&every_ascii], &[]),
            task("plain", &["x\ty"], &["a\n(b,\"c\")", "plain"], &["macos"]),
        ],
        ..Plan::default()
    };
    let empty = Plan { root: String::new(), tasks: vec![], ..Plan::default() };
    for plan in [plan(), Plan::from_dump(&pipeline(), Some("ci::lint")).unwrap(), tricky, empty] {
        assert_eq!(plan.digest(), reference_digest(&plan));
        assert_eq!(plan.to_json_pretty(), reference_pretty(&plan));
    }
}

#[test]
fn a_need_outside_the_plan_disables_its_task_and_what_needs_it() {
    let task = |id: &str, needs: &[&str]| Task {
        id: id.into(),
        recipe: id.into(),
        args: vec![],
        needs: strings(needs),
        after: vec![],
        subsequents: vec![],
        os: vec![],
    };
    let plan = Plan {
        root: "r".into(),
        tasks: vec![task("a", &[]), task("b", &["gone"]), task("c", &["a", "b"]), task("d", &["a"])],
        ..Plan::default()
    };
    assert_eq!(plan.graph().edge_count(), 3);
    let linux = lane(&plan, "x86_64-linux", &[], false);
    assert_eq!(linux, [("a".into(), vec![]), ("d".into(), strings(&["a"]))]);
    assert!(lane(&plan, "x86_64-linux", &["c"], false).is_empty());
}

#[test]
fn a_cycle_is_named_by_its_first_task_whatever_leads_into_it() {
    // `ci::a` needs the cycle without being on it.
    let json = dump(vec![
        tagged(recipe("ci::default", false, &[("a", &[])], 1)),
        recipe("ci::a", true, &[("d", &[])], 1),
        recipe("ci::d", true, &[("c", &[])], 1),
        recipe("ci::c", true, &[("e", &[])], 1),
        recipe("ci::e", true, &[("d", &[])], 1),
    ]);
    assert_eq!(Plan::from_dump(&json, None).unwrap_err(), IngestError::Cycle { node: "ci::c".into() });
}

/// Adds `alias name := target` to the module `module` (empty for the top level) of a dump, the
/// target written as just dumps it: a bare name.
fn with_alias(dump: &str, module: &str, name: &str, target: &str) -> String {
    let mut top: Value = serde_json::from_str(dump).unwrap();
    let mut at = &mut top;
    for part in module.split("::").filter(|p| !p.is_empty()) {
        at = &mut at["modules"][part];
    }
    at["aliases"][name] = json!({ "attributes": [], "name": name, "target": target });
    top.to_string()
}

/// `ci: clean build test`, `test: (watch 'ltest') && report`, each name out of alphabetical order.
fn siblings() -> String {
    dump(vec![
        tagged(recipe("ci", false, &[("clean", &[]), ("build", &[]), ("test", &[])], 3)),
        recipe("clean", true, &[], 0),
        recipe("build", true, &[("gen", &[])], 1),
        recipe("gen", true, &[], 0),
        recipe("test", false, &[("watch", &["ltest"]), ("report", &[])], 1),
        recipe("watch", true, &[], 0),
        recipe("report", true, &[], 0),
        recipe("release", true, &[], 0),
    ])
}

#[test]
fn lanes_start_siblings_in_the_order_just_runs_them() {
    let plan = Plan::from_dump(&siblings(), None).unwrap();
    // The plan itself stays in rank order, alphabetical within a rank.
    assert_eq!(ids(&plan.tasks), ["clean", "gen", "watch(ltest)", "build", "report"]);
    // `just ci` runs clean, gen, build, watch ltest, report: priors depth first, in order.
    let lane = plan.in_run_order(plan.lane_tasks("x86_64-linux", &[], false));
    assert_eq!(ids(&lane), ["clean", "gen", "build", "watch(ltest)", "report"]);
    let order: Vec<(&str, usize)> =
        plan.context.run_order.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    assert_eq!(order, [("build", 2), ("clean", 0), ("gen", 1), ("report", 4), ("watch(ltest)", 3)]);
    // Needs still come first when just's order is missing or disagrees.
    let mut unranked = plan.clone();
    unranked.context.run_order = [("gen".to_string(), 0), ("report".to_string(), 1)].into_iter().collect();
    let lane = unranked.in_run_order(plan.lane_tasks("x86_64-linux", &[], false));
    assert_eq!(ids(&lane), ["gen", "clean", "watch(ltest)", "report", "build"]);
}

#[test]
fn a_recipe_without_a_body_selects_what_it_stands_for() {
    let plan = Plan::from_dump(&siblings(), None).unwrap();
    assert_eq!(plan.context.groups["test"], ["report", "watch(ltest)"]);
    assert_eq!(plan.context.groups["ci"], ["build", "clean", "report", "watch(ltest)"]);
    let lane = lane(&plan, "x86_64-linux", &["test"], false);
    let lane: Vec<&str> = lane.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(lane, ["watch(ltest)", "report"]);
    // A bodyless recipe is a candidate in the message for a selector that matches nothing.
    let err = plan.resolve(&[Selector::parse("tst")]).unwrap_err();
    assert!(err.to_string().contains("test"), "{err}");
}

#[test]
fn aliases_resolve_in_selectors_and_root() {
    let json = with_alias(&with_alias(&siblings(), "", "b", "build"), "", "r", "release");
    let json = with_alias(&json, "", "t", "test");
    let plan = Plan::from_dump(&json, None).unwrap();
    assert_eq!(selectors(&plan, &["b"])[0].tasks, ["build"]);
    assert_eq!(selectors(&plan, &["t@x86_64-linux"])[0].tasks, ["report", "watch(ltest)"]);
    // An alias of a recipe outside the pipeline says so, and how to run it.
    let err = plan.resolve(&[Selector::parse("r")]).unwrap_err();
    assert_eq!(
        err,
        IngestError::AliasOutsidePipeline {
            selector: "r".into(),
            alias: "r".into(),
            target: "release".into()
        }
    );
    assert!(err.to_string().contains("--root release"), "{err}");
    // A near miss lists the aliases with their targets.
    let err = plan.resolve(&[Selector::parse("nothing")]).unwrap_err();
    assert!(err.to_string().contains("b (alias of build)"), "{err}");
    assert!(!err.to_string().contains("r (alias of release)"), "{err}");
    // `--root` takes an alias; an unknown root names the close alias and its target.
    let root = Plan::from_dump(&json, Some("r")).unwrap();
    assert_eq!((root.root.as_str(), ids(&root.tasks)), ("release", vec!["release"]));
    let err = Plan::from_dump(&json, Some("rr")).unwrap_err();
    let IngestError::UnknownRoot { candidates, .. } = &err else { panic!("{err:?}") };
    assert!(candidates.contains(&"r (alias of release)".to_string()), "{candidates:?}");
}

#[test]
fn a_module_alias_targets_its_own_module() {
    let json = dump(vec![
        tagged(recipe("ci::default", false, &[("lint", &[])], 1)),
        recipe("ci::lint", true, &[], 0),
        recipe("lint", true, &[], 0),
    ]);
    let json = with_alias(&json, "ci", "l", "lint");
    let plan = Plan::from_dump(&json, None).unwrap();
    assert_eq!(plan.context.aliases["ci::l"], "ci::lint");
    assert_eq!(selectors(&plan, &["ci::l"])[0].tasks, ["ci::lint"]);
    // Only one module has `l`: the bare alias finds it.
    assert_eq!(selectors(&plan, &["l"])[0].tasks, ["ci::lint"]);
    // An alias whose target is not in its module is dropped, not guessed at.
    let stray = with_alias(&json, "ci", "x", "missing");
    assert!(!Plan::from_dump(&stray, None).unwrap().context.aliases.contains_key("ci::x"));
}

#[test]
fn confirm_recipes_are_named_and_answered_with_yes() {
    let json = dump(vec![
        tagged(recipe("ci", false, &[("deploy", &["prod"]), ("build", &[])], 2)),
        with_attributes(recipe("deploy", true, &[], 0), json!([{ "confirm": "sure?" }])),
        recipe("build", true, &[], 0),
        with_attributes(recipe("unused", true, &[], 0), json!([{ "confirm": null }])),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    assert_eq!(plan.context.confirm.iter().collect::<Vec<_>>(), ["deploy"]);
    assert_eq!(plan.asking(&plan.tasks), ["deploy"]);
    let deploy = task(&plan, "deploy(prod)");
    assert_eq!(plan.argv(deploy, false), ["just", "--no-deps", "deploy", "prod"]);
    assert_eq!(plan.argv(deploy, true), ["just", "--yes", "--no-deps", "deploy", "prod"]);
    assert_eq!(plan.argv(task(&plan, "build"), true), ["just", "--no-deps", "build"]);
}

#[test]
fn lanes_say_what_their_os_drops_and_a_root_no_lane_runs_is_refused() {
    let json = dump(vec![
        tagged(recipe("ci", true, &[("lin", &[]), ("build", &[])], 2)),
        with_attributes(recipe("lin", true, &[], 0), json!(["linux"])),
        recipe("build", true, &[], 0),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    let (tasks, dropped) = plan.lane("aarch64-darwin", &[], false);
    assert_eq!(ids(&tasks), ["build"]);
    let said: Vec<String> = dropped.iter().map(ToString::to_string).collect();
    assert_eq!(said, ["lin (only [linux])", "ci (needs lin)"]);
    assert!(plan.lane("x86_64-linux", &[], false).1.is_empty());
    let lanes = |platforms: &[&str]| -> Vec<(String, Vec<Task>, Vec<Dropped>)> {
        platforms
            .iter()
            .map(|p| {
                let (tasks, dropped) = plan.lane(p, &[], false);
                (p.to_string(), tasks, dropped)
            })
            .collect()
    };
    let err = plan.check_root_runs(&lanes(&["aarch64-darwin"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "root recipe \"ci\" runs on no lane: it needs lin, which is only [linux], and the lanes are \
         aarch64-darwin: add a host for a platform it runs on (--host PLATFORM=ADDR), or change its OS \
         attributes"
    );
    assert_eq!(plan.check_root_runs(&lanes(&["aarch64-darwin", "x86_64-linux"])), Ok(()));

    // An empty-bodied root whose own OS attributes rule a lane out takes the whole lane.
    let json = dump(vec![
        with_attributes(
            recipe("ci", false, &[("build", &[])], 1),
            json!(["windows", { "metadata": ["ci"] }]),
        ),
        recipe("build", true, &[], 0),
    ]);
    let plan = Plan::from_dump(&json, None).unwrap();
    let (tasks, dropped) = plan.lane("x86_64-linux", &[], false);
    assert!(tasks.is_empty());
    assert_eq!(dropped[0].to_string(), "build (root ci is only [windows])");
    let (tasks, _) = plan.lane("x86_64-linux", &selectors(&plan, &["build"]), false);
    assert_eq!(ids(&tasks), ["build"], "a selection does not go through the root");
    let (tasks, dropped) = plan.lane("x86_64-linux", &[], false);
    let err = plan.check_root_runs(&[("x86_64-linux".into(), tasks, dropped)]).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"ci\" runs on no lane: it is only [windows], and the lanes are x86_64-linux")
    );
}
