//! odu does what `just` would do with the same justfile: which recipes a selection runs, which
//! roots it refuses up front, and how arguments show up in node ids, summaries and log names.

use crate::repo::*;

/// `merge` lists `sync` as a `&&` subsequent, as a real release flow does.
const SUBSEQUENTS: &str = r#"
[metadata("ci")]
ci: merge

_on_a_branch:
    echo on-a-branch

merge: _on_a_branch && sync
    echo merging

sync: && notify
    echo syncing

notify:
    echo notifying
"#;

/// The node ids a `--progress json` run ended with, without the platform, setup left out.
fn ran(out: &std::process::Output) -> Vec<String> {
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

fn dump_tasks(repo: &Repo, args: &[&str]) -> Vec<serde_json::Value> {
    let out = repo.run(&[&["dump"], args].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    plan["tasks"].as_array().unwrap().clone()
}

fn ids(tasks: &[serde_json::Value]) -> Vec<&str> {
    tasks.iter().map(|t| t["id"].as_str().unwrap()).collect()
}

#[test]
fn selecting_a_recipe_runs_its_subsequents_and_not_the_recipe_listing_it() {
    let repo = Repo::new(SUBSEQUENTS);
    // `just merge` runs _on_a_branch, merge, sync, notify.
    let merge = ran(&repo.run(&["run", "merge", "--progress", "json"]));
    assert_eq!(merge, ["_on_a_branch", "merge", "notify", "sync"]);
    assert!(repo.log("notify").contains("notifying"));
    // `just sync` runs sync and notify, never merge.
    let sync = ran(&repo.run(&["run", "sync", "--progress", "json"]));
    assert_eq!(sync, ["notify", "sync"]);
    // `just --no-deps merge` runs merge alone.
    let alone = ran(&repo.run(&["run", "merge", "--no-deps", "--progress", "json"]));
    assert_eq!(alone, ["merge"]);
    stop_server(&repo);
}

#[test]
fn dump_keeps_subsequents_apart_from_priors() {
    let repo = Repo::new(SUBSEQUENTS);
    let tasks = dump_tasks(&repo, &[]);
    assert_eq!(ids(&tasks), ["_on_a_branch", "merge", "sync", "notify"]);
    let field = |id: &str, key: &str| tasks.iter().find(|t| t["id"] == id).unwrap()[key].clone();
    assert_eq!(field("merge", "needs"), serde_json::json!(["_on_a_branch"]));
    assert_eq!(field("merge", "after"), serde_json::json!([]));
    assert_eq!(field("merge", "subsequents"), serde_json::json!(["sync"]));
    assert_eq!(field("sync", "needs"), serde_json::json!(["merge"]));
    assert_eq!(field("sync", "after"), serde_json::json!(["merge"]));
    assert_eq!(field("sync", "subsequents"), serde_json::json!(["notify"]));
    // `--root` of a subsequent brings what `just sync` runs, and no more.
    assert_eq!(ids(&dump_tasks(&repo, &["--root", "sync"])), ["sync", "notify"]);
    assert_eq!(ids(&dump_tasks(&repo, &["--root", "merge"])), ["_on_a_branch", "merge", "sync", "notify"]);
    let graph = stdout(&repo.run(&["graph"]));
    assert!(graph.contains("_on_a_branch --> merge") && graph.contains("merge -.-> sync"), "{graph}");
}

/// Exit 1 with one `odu:` line that contains every needle.
fn refused(out: &std::process::Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected a refusal; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("odu: ")).collect();
    assert!(
        lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
        "no `odu:` line with {needles:?} in: {err}"
    );
}

#[test]
fn a_root_that_needs_an_argument_is_refused_before_it_runs() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\ndeploy env: build\n    echo deploying {{env}}\nbuild:\n    echo building\n\
         many +targets:\n    echo {{targets}}\nsome *targets:\n    echo some {{targets}}\n",
    );
    let out = repo.run(&["run"]);
    refused(&out, &["root recipe \"deploy\" needs an argument for its parameter \"env\""]);
    assert!(!stderr(&out).contains("positional arguments"), "{}", stderr(&out));
    refused(&repo.run(&["dump"]), &["\"deploy\"", "\"env\""]);
    refused(&repo.run(&["run", "--root", "many"]), &["root recipe \"many\"", "\"+targets\""]);
    // Nothing ran: no node left a log.
    let sha = repo.sha7();
    let logs = repo.path().join(format!(".ci/{sha}/{}", local_platform()));
    assert!(!logs.join("build.log").exists() && !logs.join("deploy.log").exists());
    // A `*` parameter needs no argument.
    let some = ran(&repo.run(&["run", "--root", "some", "--progress", "json"]));
    assert_eq!(some, ["some"]);
    stop_server(&repo);
}

#[test]
fn an_at_sign_inside_arguments_is_no_platform_separator() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: (login \"user@host\" \"x\") other\nlogin who what:\n    echo login {{who}} {{what}}\n\
         other:\n    echo other\n",
    );
    assert_eq!(ids(&dump_tasks(&repo, &[])), ["login(user@host,x)", "other"]);
    let selected = ran(&repo.run(&["run", "login(user@host,x)", "--progress", "json"]));
    assert_eq!(selected, ["login(user@host,x)"]);
    assert!(repo.log("login(user@host,x)").contains("login user@host x"));
    // A platform after the last `@` still pins the lane.
    let pinned = format!("login(user@host,x)@{}", local_platform());
    assert_eq!(ran(&repo.run(&["run", &pinned, "--progress", "json"])), ["login(user@host,x)"]);
    stop_server(&repo);
}

#[test]
fn control_characters_in_arguments_are_escaped_in_ids_summaries_and_log_names() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: (say \"one\\ntwo\" \"a\\tb\")\n\n[positional-arguments]\nsay a b:\n    \
         printf '%s|%s\\n' \"$1\" \"$2\"\n",
    );
    let id = r"say(one\ntwo,a\tb)";
    assert_eq!(ids(&dump_tasks(&repo, &[])), [id]);
    assert_eq!(ran(&repo.run(&["run", "--progress", "json"])), [id]);
    // The command got the raw arguments; the log file is named by the escaped id.
    assert_eq!(repo.log(id).lines().filter(|l| l.starts_with("one") || l.starts_with("two|")).count(), 2);
    assert!(repo.log(id).contains("one\ntwo|a\tb\n"), "{}", repo.log(id));
    // The summary names the node on one line, escaped.
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains('\t') && !text.contains("one\ntwo"), "{text}");
    assert!(text.lines().any(|l| l.contains(&format!("{id}@{}", local_platform()))), "{text}");
    stop_server(&repo);
}

#[test]
fn the_summary_names_the_pipeline_that_ran() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a b\na:\n    true\nb:\n    true\n");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("── ci run summary @"), "{}", stderr(&out));
    let out = repo.run(&["run", "--root", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("── a run summary @"), "{}", stderr(&out));
    stop_server(&repo);
}

/// `odu wait` and `odu attach` of a run that ended report how long the run took, not how long
/// they themselves took or how long ago it started.
#[test]
fn wait_and_attach_report_the_runs_duration_not_their_own() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    sleep 0.3\n");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = |repo: &Repo| repo.ledger().into_iter().next().expect("a record");
    let took = |r: &serde_json::Value| r["finished_at"].as_u64().unwrap() - r["started_at"].as_u64().unwrap();
    let expected = took(&record(&repo));
    assert!(expected >= 300, "the run took {expected} ms");
    let out = repo.run(&["wait"]);
    let verdict: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON verdict");
    assert_eq!(verdict["duration_ms"].as_u64(), Some(expected), "{verdict}");
    stop_server(&repo);
    // The ledger says the run began an hour ago and took 400 ms.
    let path = repo.path().join(format!(".ci/{}/runs/1.json", repo.sha7()));
    let mut stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let started = stored["finished_at"].as_u64().unwrap() - 3_600_000;
    stored["started_at"] = started.into();
    stored["finished_at"] = (started + 400).into();
    std::fs::write(&path, serde_json::to_vec_pretty(&stored).unwrap()).unwrap();
    let out = repo.run(&["attach", "-o", "text"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("OK in 0s"), "{text}");
    assert!(!text.contains("1h"), "{text}");
}

/// Every command names a node the same way: exact id, then recipe name (one match used,
/// several listed), then unique suffix.
#[test]
fn a_recipe_name_finds_its_only_node_and_lists_several() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: (deploy \"prod\") (watch \"a\") (watch \"b\")\ndeploy env:\n    echo deploying {{env}}\nwatch what:\n    echo watching {{what}}\n",
    );
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = repo.run(&["logs", "deploy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("deploying prod"), "{}", stdout(&out));
    let out = repo.run(&["logs", "watch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let p = local_platform();
    for id in [format!("watch(a)@{p}"), format!("watch(b)@{p}")] {
        assert!(stderr(&out).contains(&id), "{}", stderr(&out));
    }
    stop_server(&repo);
}

/// A node odu ends does not just stop: its log (the path GitHub shows) ends with who ended it.
#[test]
fn a_node_odu_ends_says_so_at_the_end_of_its_log() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: slow other\nslow:\n    echo started; sleep 60\nother:\n    echo other; sleep 60\n",
    );
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    let p = local_platform();
    let log = |task: &str| {
        std::fs::read_to_string(repo.path().join(format!(".ci/{}/{p}/{task}.log", repo.sha7())))
            .unwrap_or_default()
    };
    crate::harness::until("both nodes to run", crate::harness::DEADLINE, || {
        log("slow").contains("started") && log("other").contains("other")
    });
    let out = repo.run(&["cancel", "slow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    run.wait_for_line("\"status\":\"cancelled\"");
    crate::harness::until("slow's log to end with why", crate::harness::DEADLINE, || {
        repo.log("slow").ends_with(&format!("[odu] cancelled by operator (lane {p})\n"))
    });
    run.signal(libc::SIGINT);
    let (code, err) = run.finish();
    assert_eq!(code, Some(130), "{err}");
    let other = repo.log("other");
    assert!(other.contains("\nother\n"), "{other}");
    assert!(other.ends_with(&format!("[odu] interrupted: the run was stopped (lane {p})\n")), "{other:?}");
    stop_server(&repo);
}
