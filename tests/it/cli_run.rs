//! `odu run` end to end: the real binary on real git repositories with real justfiles.

use std::time::Duration;

use crate::harness::wait_until_dead;
use crate::repo::*;

const PIPELINE: &str = r#"
[metadata("ci")]
ci: test lint

build:
    echo building

test: build
    echo testing

lint:
    echo linting
"#;

fn assert_refused(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    let first =
        err.lines().find(|l| l.starts_with("odu: ")).unwrap_or_else(|| panic!("no odu: line in {err}"));
    assert!(
        first.contains(needle) || err.lines().filter(|l| l.starts_with("odu: ")).any(|l| l.contains(needle))
    );
}

#[test]
fn green_run_exits_zero_and_keeps_the_trail() {
    let repo = Repo::new(PIPELINE);
    let out = repo.run(&["run", "--progress", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = progress(&out);
    let p = local_platform();
    let statuses = final_statuses(&lines);
    for node in ["_ci-setup", "build", "test", "lint"] {
        assert_eq!(statuses[&format!("{node}@{p}")], "success", "{lines:?}");
    }
    // Every line follows the documented schema.
    for line in &lines {
        for key in ["node", "recipe", "platform", "status", "log"] {
            assert!(line.get(key).is_some(), "{line} lacks {key}");
        }
    }
    let build_ok =
        lines.iter().position(|l| l["node"] == format!("build@{p}") && l["status"] == "success").unwrap();
    // A node that starts and ends between two frames the client reads is seen ended at once.
    let test_run = lines
        .iter()
        .position(|l| {
            l["node"] == format!("test@{p}") && (l["status"] == "running" || l["status"] == "success")
        })
        .unwrap();
    assert!(build_ok < test_run, "test started before build was ok");
    assert!(repo.log("test").contains("testing"));
    assert!(repo.log("_ci-setup").contains("[odu]"));
    let ledger = repo.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["outcome"], "passed");
    assert_eq!(ledger[0]["seq"], 1);
    let mode = std::fs::metadata(repo.path().join(".ci")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o700, ".ci is private");
    assert!(stderr(&out).contains("OK"), "verdict on stderr: {}", stderr(&out));
    // The snapshot worktree goes once the run's lanes closed, beside the verdict (which does
    // not wait for it): soon after the client exits, not necessarily before.
    crate::harness::until("the snapshot worktree to be removed", crate::harness::DEADLINE, || {
        !repo.git(&["worktree", "list"]).contains("odu-")
    });
}

#[test]
fn failing_node_keeps_its_code_skips_dependents_and_siblings_finish() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: test lint\nbuild:\n    exit 7\ntest: build\n    true\nlint:\n    sleep 0.2\n",
    );
    let out = repo.run(&["run", "--progress", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = progress(&out);
    let p = local_platform();
    let statuses = final_statuses(&lines);
    assert_eq!(statuses[&format!("build@{p}")], "failed");
    assert_eq!(statuses[&format!("test@{p}")], "skipped");
    assert_eq!(statuses[&format!("lint@{p}")], "success");
    let failed = lines.iter().find(|l| l["status"] == "failed").unwrap();
    assert_eq!(failed["exit_code"], 7);
    assert_eq!(repo.ledger()[0]["outcome"], "failed");
    assert!(stderr(&out).contains("FAILED"));
}

#[test]
fn piped_output_prints_one_line_per_transition() {
    let repo = Repo::new(PIPELINE);
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let p = local_platform();
    assert!(text.contains(&format!("✔ ok        test@{p}")), "{text}");
    assert!(!text.contains("\x1b["), "no escape codes when piped: {text:?}");
}

#[test]
fn a_new_run_of_the_same_sha_replaces_each_log_and_takes_the_next_seq() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: note\nnote:\n    @echo \"run at $(date +%s%N)\"\n");
    assert_eq!(repo.run(&["run"]).status.code(), Some(0));
    let first = repo.log("note");
    assert_eq!(repo.run(&["run"]).status.code(), Some(0));
    let second = repo.log("note");
    assert_ne!(first, second);
    assert_eq!(second.matches("run at").count(), 1, "the log holds one run: {second}");
    let seqs: Vec<u64> = repo.ledger().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 1]);
    let table = stdout(&repo.run(&["runs"]));
    assert!(table.contains(&format!("{}#2", repo.sha7())), "{table}");
}

#[test]
fn strict_mode_refuses_a_dirty_tree_and_no_strict_runs_it() {
    let repo = Repo::new(PIPELINE);
    repo.write("untracked.txt", "x");
    assert_refused(&repo.run(&["run"]), "working tree is dirty");
    let out = repo.run(&["run", "--no-strict", "--progress", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let label = format!("{}+dirty", repo.sha7());
    assert!(progress(&out).iter().all(|l| l["log"].as_str().unwrap().contains(&label)));
    assert_eq!(repo.ledger()[0]["dirty"], true);
}

#[test]
fn a_run_leaves_the_checkouts_index_alone_and_reads_a_branch_far_from_its_upstream() {
    let repo = Repo::new("[metadata(\"ci\")]\nci:\n    @true\n");
    // A branch many commits ahead of its upstream: odu reads HEAD, not how far apart they are.
    repo.git(&["branch", "base"]);
    for i in 0..30 {
        repo.git(&["commit", "-q", "--allow-empty", "-m", &format!("ahead {i}")]);
    }
    repo.git(&["branch", "--set-upstream-to", "base"]);
    // Touched, not changed: a `git status` that may refresh the index rewrites it (a new file
    // renamed over the old one), racing the user's own git commands for its lock.
    let justfile = std::fs::File::options().append(true).open(repo.path().join("justfile")).unwrap();
    justfile.set_modified(std::time::SystemTime::now() + Duration::from_secs(5)).unwrap();
    let index = || {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(repo.path().join(".git/index")).unwrap();
        (meta.ino(), meta.mtime(), meta.mtime_nsec())
    };
    let before = index();
    let out = repo.run(&["run", "--no-post"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(repo.ledger()[0]["sha"].as_str().unwrap().get(..7), Some(repo.sha7().as_str()));
    assert_eq!(index(), before, "the run rewrote the checkout's index");
    stop_server(&repo);
}

#[test]
fn strict_mode_runs_the_committed_tree_not_the_live_one() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: show\nshow:\n    cat marker.txt\n");
    repo.write("marker.txt", "committed\n");
    repo.commit("marker");
    repo.write(".git/info/exclude", "marker.txt\n");
    std::fs::write(repo.path().join("marker.txt"), "live edit\n").unwrap();
    // The edit is to a tracked file, so strict refuses; --no-strict sees it.
    assert_refused(&repo.run(&["run"]), "working tree is dirty");
    repo.git(&["checkout", "marker.txt"]);
    assert_eq!(repo.run(&["run"]).status.code(), Some(0));
    assert!(repo.log("show").contains("committed"));
}

#[test]
fn selectors_no_deps_and_jobs_shape_the_run() {
    let repo = Repo::new(PIPELINE);
    let out = repo.run(&["run", "test", "--progress", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let nodes: Vec<String> = final_statuses(&progress(&out)).into_keys().collect();
    let p = local_platform();
    assert_eq!(nodes, vec![format!("_ci-setup@{p}"), format!("build@{p}"), format!("test@{p}")]);
    let out = repo.run(&["run", &format!("test@{p}"), "--no-deps", "--jobs", "1", "--progress", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let nodes: Vec<String> = final_statuses(&progress(&out)).into_keys().collect();
    assert_eq!(nodes, vec![format!("_ci-setup@{p}"), format!("test@{p}")]);
}

#[test]
fn interrupt_kills_every_process_group_and_records_incomplete() {
    let repo =
        Repo::new("[metadata(\"ci\")]\nci: slow\nslow:\n    sleep 60 & echo $! > \"$PIDFILE\"; wait\n");
    let pidfile = repo.home.path().join("sleep.pid");
    let mut run = Running::spawn({
        let mut c = repo.odu(&["run", "--progress", "json"]);
        c.env("PIDFILE", &pidfile);
        c
    });
    let line = run.wait_for_line("slow@");
    assert!(line.contains("running"), "{line}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pid = runtime.block_on(crate::harness::read_pid(pidfile));
    run.signal(libc::SIGINT);
    let (code, err) = run.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("INTERRUPTED"), "{err}");
    let ledger = repo.ledger();
    assert_eq!(ledger[0]["outcome"], "incomplete");
    assert!(runtime.block_on(wait_until_dead(pid, Duration::from_secs(5))), "the node's process survived");
}

#[test]
fn a_second_run_in_the_same_checkout_is_refused_while_one_is_live() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: slow\nslow:\n    sleep 30\nfast:\n    true\n");
    let mut first = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    first.wait_for_line("slow@");
    assert_refused(&repo.run(&["run"]), "is in progress in this checkout");
    // --supersede cancels the live run, waits for its record, and runs.
    let second = repo.run(&["run", "--supersede", "--root", "fast"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let (code, _) = first.finish();
    assert_eq!(code, Some(130), "the superseded run ends interrupted");
    let outcomes: Vec<String> =
        repo.ledger().iter().map(|r| r["outcome"].as_str().unwrap().to_string()).collect();
    assert_eq!(outcomes, vec!["passed", "incomplete"]);
}

#[test]
fn a_recipe_calling_odu_run_without_explicit_hosts_is_refused() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: nested\nnested:\n    true\n");
    let out = repo.odu(&["run"]).env("ODU_RUN", "abc1234#1").output().unwrap();
    assert_refused(&out, "refusing to start a run from inside a node");
    let p = local_platform();
    let out =
        repo.odu(&["run", "--host", &format!("{p}=localhost")]).env("ODU_RUN", "abc1234#1").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn dump_is_byte_identical_across_processes_and_graph_is_mermaid() {
    let repo = Repo::with_files(&[
        ("justfile", "mod ci\n"),
        (
            "ci/mod.just",
            "[metadata(\"ci\")]\nall: b a (fmt \"x\" \"y\")\na:\n    true\nb: a\n    true\nfmt p q:\n    echo {{p}} {{q}}\n",
        ),
    ]);
    let one = repo.run(&["dump"]);
    let two = repo.run(&["dump"]);
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    assert_eq!(one.stdout, two.stdout);
    let plan: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert!(plan["digest"].as_str().unwrap().starts_with("sha256:"));
    let ids: Vec<&str> =
        plan["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["ci::a", "ci::fmt(x,y)", "ci::b"]);
    let graph = stdout(&repo.run(&["graph"]));
    assert!(graph.starts_with("flowchart TD"), "{graph}");
    assert!(graph.contains("ci__a --> ci__b"), "{graph}");
}

/// A warm server remembers git's answers about the origin and what git tracks under `.ci`
/// only while the files they come from are unchanged: a changed origin is recorded, and a
/// file planted in the index under `.ci` is refused, on the very next run.
#[test]
fn a_warm_server_plans_each_commit_from_its_own_justfile_and_what_it_imports() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\n\na:\n    @echo first\n");
    let run = |node: &str, says: &str| {
        let out = repo.run(&["run", "--no-post"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(repo.log(node).contains(says), "{node}: {}", repo.log(node));
    };
    run("a", "first");
    repo.write("justfile", "[metadata(\"ci\")]\nci: b\n\nb:\n    @echo second\n");
    repo.commit("another justfile");
    run("b", "second");
    // A justfile that imports another is dumped on every run: the import changes alone.
    repo.write("justfile", "import 'more.just'\n\n[metadata(\"ci\")]\nci: c\n");
    repo.write("more.just", "c:\n    @echo third\n");
    repo.commit("an import");
    run("c", "third");
    repo.write("more.just", "c:\n    @echo fourth\n");
    repo.commit("the imported file changes");
    run("c", "fourth");
    stop_server(&repo);
}

#[test]
fn a_warm_server_sees_the_origin_and_the_index_change_between_runs() {
    let repo = Repo::new("[metadata(\"ci\")]\nci:\n    true\n");
    let server = || std::fs::read_to_string(repo.path().join(".ci/odu.run.lock")).unwrap();
    repo.git(&["remote", "add", "origin", "https://github.com/one/first.git"]);
    let out = repo.run(&["run", "--no-post"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = server();
    repo.git(&["remote", "set-url", "origin", "https://github.com/two/second.git"]);
    let out = repo.run(&["run", "--no-post"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(server(), first, "the second run had another server");
    let recorded = |seq: u64| {
        let path = repo.path().join(format!(".ci/{}/runs/{seq}.json", repo.sha7()));
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        record["repo"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(recorded(1), "one/first");
    assert_eq!(recorded(2), "two/second");
    repo.write(".ci/odu.planted", "from the repository");
    repo.git(&["add", "-f", ".ci/odu.planted"]);
    let out = repo.run(&["run", "--no-post"]);
    assert_refused(&out, "tracked by git where odu keeps its own");
    assert_eq!(server(), first, "the refused run had another server");
}

/// A node cancelled while its lane is still starting the others (so, in a lane this wide, most
/// likely before its own process was spawned) ends cancelled with its log closed, and the run
/// ends with it. A gate node keeps the run open until the cancel is answered.
#[test]
fn a_node_cancelled_while_its_wide_lane_starts_ends_cancelled_and_the_run_ends() {
    const WIDE: usize = 400;
    let gate = tempfile::tempdir().unwrap();
    let open = gate.path().join("open");
    let names: Vec<String> = (0..WIDE).map(|i| format!("r{i:03}")).collect();
    let mut justfile = format!("[metadata(\"ci\")]\nci: gate {}\n", names.join(" "));
    // The gate polls for its file and gives up after three minutes, so a failed test ends.
    justfile.push_str(&format!(
        "gate:\n    @for i in $(seq 1800); do [ -e {} ] && exit 0; sleep 0.1; done; exit 1\n",
        open.display()
    ));
    for name in &names {
        justfile.push_str(&format!("{name}:\n    @true\n"));
    }
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    let last = format!("{}@{p}", names[WIDE - 1]);
    run.wait_for_line(&format!("\"node\":\"{last}\""));
    let cancel = repo.run(&["cancel", &last]);
    std::fs::write(&open, "").unwrap();
    // However slow the machine: starting a process costs several times more on some than on
    // others.
    let (code, err) = run.finish_within(Duration::from_secs(180));
    let status = json_of(&repo.run(&["status", "-o", "json"]));
    let nodes = status["nodes"].as_array().unwrap();
    let last_status = &nodes.iter().find(|n| n["id"] == last.as_str()).expect("the last node")["status"];
    let ok = nodes.iter().filter(|n| n["status"] == "ok").count();
    if cancel.status.success() {
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(last_status, "cancelled");
        assert_eq!(status["outcome"], "incomplete");
        assert_eq!(ok, WIDE + 1, "the setup node, the gate and every other node ended ok");
    } else {
        // The node had ended before the cancel reached it.
        assert!(stderr(&cancel).contains("already finished"), "{}", stderr(&cancel));
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(ok, WIDE + 2);
    }
    // Whether its process had started (`true` prints nothing) or not, the log says so.
    let log =
        std::fs::read_to_string(repo.path().join(format!(".ci/{}/{p}/{}.log", repo.sha7(), names[WIDE - 1])))
            .unwrap();
    if cancel.status.success() {
        let stopped = "[odu] stopped before its process was started\n";
        let cancelled = format!("\n[odu] cancelled by operator (lane {p})\n");
        assert!(log == cancelled || log == format!("{stopped}{cancelled}"), "{log:?}");
    }
    stop_server(&repo);
}
