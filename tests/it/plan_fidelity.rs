//! The plan as `just` would run it: the order a capped lane starts siblings in, `[confirm]`
//! recipes refused up front unless `--yes` answers for them, what a lane's OS leaves out said
//! before the run, and recipes named as just names them (aliases, recipes without a body).

use std::process::{Command, Output};

use crate::lab::{NetnsHost, SshdOptions};
use crate::repo::*;

/// The node ids a `--progress json` run ended with, without the platform, setup left out.
fn ran(out: &Output) -> Vec<String> {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    let suffix = format!("@{}", local_platform());
    final_statuses(&progress(out))
        .into_iter()
        .map(|(node, status)| {
            assert_eq!(status, "success", "{node}");
            node.strip_suffix(&suffix).unwrap_or_else(|| panic!("{node} is not on {suffix}")).to_string()
        })
        .filter(|task| task != "_ci-setup")
        .collect()
}

/// Exit 1 with one `odu:` line that contains every needle.
fn refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected a refusal; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("odu: ")).collect();
    assert!(
        lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
        "no `odu:` line with {needles:?} in: {err}"
    );
}

fn dump(repo: &Repo, args: &[&str]) -> serde_json::Value {
    let out = repo.run(&[&["dump"], args].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(plan: &serde_json::Value) -> Vec<&str> {
    plan["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect()
}

/// Each recipe appends its name to `$ORDER`, so the file says the order they ran in.
const SIBLINGS: &str = r#"
[metadata("ci")]
ci: clean build test

clean:
    echo clean >> "$ORDER"

build: gen
    echo build >> "$ORDER"

gen:
    echo gen >> "$ORDER"

test:
    echo test >> "$ORDER"
"#;

#[test]
fn jobs_one_runs_siblings_in_the_order_just_runs_them() {
    let repo = Repo::new(SIBLINGS);
    let scratch = tempfile::tempdir().unwrap();
    let (by_just, by_odu) = (scratch.path().join("just"), scratch.path().join("odu"));
    let just =
        Command::new("just").arg("ci").env("ORDER", &by_just).current_dir(repo.path()).output().unwrap();
    assert!(just.status.success(), "{}", stderr(&just));
    let out = repo.odu(&["run", "--jobs", "1", "--progress", "json"]).env("ORDER", &by_odu).output().unwrap();
    assert_eq!(ran(&out).len(), 4);
    let order = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    assert_eq!(order(&by_just), "clean\ngen\nbuild\ntest\n");
    assert_eq!(order(&by_odu), order(&by_just));
    stop_server(&repo);
}

const CONFIRM: &str = r#"
[metadata("ci")]
ci: build deploy shout

build:
    echo building

[confirm]
deploy:
    echo deploying

[confirm("Really shout?")]
shout:
    echo shouting
"#;

#[test]
fn confirm_recipes_are_refused_before_the_run_unless_yes_answers_for_them() {
    let repo = Repo::new(CONFIRM);
    let out = repo.run(&["run"]);
    refused(&out, &["\"deploy\"", "\"shout\"", "[confirm]", "--yes"]);
    // Nothing ran: no node left a log.
    let logs = repo.path().join(format!(".ci/{}/{}", repo.sha7(), local_platform()));
    assert!(!logs.join("build.log").exists() && !logs.join("deploy.log").exists());
    // Only what is selected asks.
    assert_eq!(ran(&repo.run(&["run", "build", "--progress", "json"])), ["build"]);
    refused(&repo.run(&["run", "shout"]), &["recipe \"shout\" asks", "--yes"]);
    let yes = repo.run(&["run", "--yes", "--progress", "json"]);
    assert_eq!(ran(&yes), ["build", "deploy", "shout"]);
    assert!(repo.log("deploy").contains("deploying") && repo.log("shout").contains("shouting"));
    stop_server(&repo);
}

const LINUX_ONLY: &str = r#"
[metadata("ci")]
ci: lin build

[linux]
lin:
    echo on-linux

build:
    echo building

[linux]
pkg: lin
    echo packaging
"#;

#[test]
fn a_lane_says_which_recipes_its_os_leaves_out_and_why() {
    let Some(host) = NetnsHost::or_skip(SshdOptions {
        env: vec![("PATH".into(), std::env::var("PATH").unwrap())],
        ..Default::default()
    }) else {
        return;
    };
    let repo = Repo::new(LINUX_ONLY);
    // A darwin lane, its key a label on a lab host that declares what it really is.
    let hosts = repo.home.path().join("hosts.json");
    let entry =
        serde_json::json!({ "aarch64-darwin": { "host": host.alias(), "platform": local_platform() } });
    std::fs::write(&hosts, entry.to_string()).unwrap();
    let out = repo
        .odu(&["run", "--progress", "json"])
        .env("ODU_HOSTS", &hosts)
        .env("ODU_SSH_CONFIG", host.config())
        .output()
        .unwrap();
    let err = stderr(&out);
    let setup_log = repo.path().join(format!(".ci/{}/aarch64-darwin/_ci-setup.log", repo.sha7()));
    let setup = std::fs::read_to_string(&setup_log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{err}\n{setup}");
    let finals = final_statuses(&progress(&out));
    assert_eq!(finals.keys().collect::<Vec<_>>(), ["_ci-setup@aarch64-darwin", "build@aarch64-darwin"]);
    let said = "lane aarch64-darwin leaves out 1 recipe its OS cannot run: lin (only [linux])";
    assert_eq!(err.matches(said).count(), 1, "{err}");
    assert_eq!(setup.matches(said).count(), 1, "{setup}");
    // A lane its OS leaves nothing out of says nothing.
    let linux = repo.run(&["run", "--progress", "json"]);
    assert_eq!(ran(&linux), ["build", "lin"]);
    assert!(!stderr(&linux).contains("leaves out"), "{}", stderr(&linux));
    stop_server(&repo);
}

#[test]
fn a_root_no_lane_can_run_is_its_own_refusal() {
    // The root depends on a [linux] recipe, and the only lane is a darwin one.
    let repo = Repo::new(LINUX_ONLY);
    let out = repo.run(&["run", "--host", "aarch64-darwin=odu@darwin.invalid", "--root", "pkg"]);
    refused(
        &out,
        &[
            "root recipe \"pkg\" runs on no lane: it is only [linux], and the lanes are aarch64-darwin",
            "--host",
        ],
    );
    let needs = Repo::new(&LINUX_ONLY.replace("[linux]\npkg: lin", "pkg: lin"));
    refused(
        &needs.run(&["run", "--host", "aarch64-darwin=odu@darwin.invalid", "--root", "pkg"]),
        &["root recipe \"pkg\" runs on no lane: it needs lin, which is only [linux]"],
    );
    // A [windows] root is left out of just's dump on Linux: odu says so instead of "found 0".
    let windows = Repo::new("[metadata(\"ci\")]\n[windows]\nci: build\n\nbuild:\n    echo building\n");
    let out = windows.run(&["run"]);
    refused(&out, &["root recipe \"ci\" is marked [metadata(\"ci\")] but is only [windows]", "linux"]);
    assert!(!stderr(&out).contains("found 0"), "{}", stderr(&out));
    stop_server(&repo);
    stop_server(&needs);
    stop_server(&windows);
}

const NAMES: &str = r#"
alias t := test
alias r := release

[metadata("ci")]
ci: build test

build:
    echo building

test: (watch 'ltest') && report

watch x:
    echo watching {{x}}

report:
    echo reporting

release:
    echo releasing
"#;

#[test]
fn a_recipe_without_a_body_and_an_alias_select_what_just_would_run() {
    let repo = Repo::new(NAMES);
    // `just test` runs `watch ltest`, then `report`.
    assert_eq!(ran(&repo.run(&["run", "test", "--progress", "json"])), ["report", "watch(ltest)"]);
    assert!(repo.log("watch(ltest)").contains("watching ltest"));
    assert_eq!(ran(&repo.run(&["run", "t", "--progress", "json"])), ["report", "watch(ltest)"]);
    assert_eq!(ran(&repo.run(&["run", "--root", "t", "--progress", "json"])), ["report", "watch(ltest)"]);
    assert_eq!(ran(&repo.run(&["run", "--root", "r", "--progress", "json"])), ["release"]);
    // A node is named by an alias of its recipe, as by the recipe's name.
    let logs = repo.run(&["logs", "r"]);
    assert!(stdout(&logs).contains("releasing"), "{}", stderr(&logs));
    let platform = format!("r@{}", local_platform());
    assert!(stdout(&repo.run(&["logs", &platform])).contains("releasing"));
    // An alias of a recipe outside the pipeline, and a near miss, name the alias's target.
    refused(&repo.run(&["run", "r"]), &["\"r\" is an alias of \"release\"", "--root release"]);
    refused(&repo.run(&["run", "tt"]), &["matches no pipeline recipe", "t (alias of test)"]);
    refused(&repo.run(&["run", "--root", "rr"]), &["no recipe named \"rr\"", "r (alias of release)"]);
    stop_server(&repo);
}

#[test]
fn dump_resolves_aliases_and_recipes_without_a_body() {
    let repo = Repo::new(NAMES);
    let whole = dump(&repo, &[]);
    assert_eq!(ids(&whole), ["build", "watch(ltest)", "report"]);
    let test = dump(&repo, &["--root", "test"]);
    assert_eq!((test["root"].as_str(), ids(&test)), (Some("test"), vec!["watch(ltest)", "report"]));
    // The report is a subsequent of what `test` stands for: it runs after, as an `after` need.
    let report = &test["tasks"][1];
    assert_eq!(report["needs"], serde_json::json!(["watch(ltest)"]));
    assert_eq!(report["after"], serde_json::json!(["watch(ltest)"]));
    // An alias is the recipe it names, with the same digest.
    let alias = dump(&repo, &["--root", "t"]);
    assert_eq!(alias, test);
    assert_eq!(ids(&dump(&repo, &["--root", "r"])), ["release"]);
}
