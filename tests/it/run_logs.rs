//! Every run keeps its own logs: `odu logs --run`, `status --run` and `attach --run` of an
//! older run show that run's, never a later one's, with a server up or none, while the run is
//! live and after; `.ci/<sha7>/<platform>/<recipe>.log` names the latest run's log. Retention
//! keeps the last runs' logs (20 unless `ODU_KEEP_RUNS` says otherwise), `odu runs prune` prunes
//! now, and a pruned run's log says it was pruned.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::harness::{DEADLINE, until};
use crate::repo::*;

/// `say` prints which run it is in; with `ODU_TEST_GATE` set it then waits for that file, so a
/// test can read a run's logs while the run is live.
const JUSTFILE: &str = concat!(
    "[metadata(\"ci\")]\nci: say\n",
    "say:\n",
    "    @echo \"said by $ODU_RUN\"\n",
    "    @if [ -n \"${ODU_TEST_GATE:-}\" ]; then until [ -e \"$ODU_TEST_GATE\" ]; do sleep 0.02; done; fi\n",
    "    @echo \"done by $ODU_RUN\"\n",
);

fn all(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn said(run: &str) -> String {
    format!("said by {run}\ndone by {run}\n")
}

/// The path GitHub descriptions point to: the latest run's log of `say`.
fn latest(repo: &Repo) -> PathBuf {
    repo.path().join(format!(".ci/{}/{}/say.log", repo.sha7(), local_platform()))
}

/// Run `seq`'s own log of `say`.
fn own(repo: &Repo, seq: u64) -> PathBuf {
    repo.path().join(format!(".ci/{}/runs/{seq}/{}/say.log", repo.sha7(), local_platform()))
}

fn run_green(repo: &Repo, env: &[(&str, &str)]) {
    let mut cmd = repo.odu(&["run"]);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
}

fn logs(repo: &Repo, run: &str, follow: bool) -> Output {
    let mut args = vec!["logs", "--run", run, "say"];
    if follow {
        args.push("-f");
    }
    repo.run(&args)
}

fn assert_log(repo: &Repo, run: &str, want: &str) {
    for follow in [false, true] {
        let out = logs(repo, run, follow);
        assert_eq!(out.status.code(), Some(0), "odu logs --run {run} (-f: {follow}): {}", all(&out));
        assert_eq!(stdout(&out), want, "odu logs --run {run} (-f: {follow})");
    }
}

#[test]
fn an_older_runs_log_is_its_own_and_the_latest_path_names_the_newest() {
    let repo = Repo::new(JUSTFILE);
    let (first, second) = (format!("{}#1", repo.sha7()), format!("{}#2", repo.sha7()));
    run_green(&repo, &[]);
    run_green(&repo, &[]);
    for server in [true, false] {
        if !server {
            stop_server(&repo);
        }
        assert_log(&repo, &first, &said(&first));
        assert_log(&repo, &second, &said(&second));
        let out = repo.run(&["logs", "say"]);
        assert_eq!(stdout(&out), said(&second), "the latest run by default (server: {server})");
        for args in [&["status", "--run", &first][..], &["attach", "--run", &first]] {
            let out = repo.run(args);
            assert_eq!(out.status.code(), Some(0), "odu {args:?} (server: {server}): {}", all(&out));
            assert!(!all(&out).contains("pruned"), "{}", all(&out));
        }
    }
    assert_eq!(std::fs::read_to_string(latest(&repo)).unwrap(), said(&second));
    let (a, b) = (std::fs::metadata(latest(&repo)).unwrap(), std::fs::metadata(own(&repo, 2)).unwrap());
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "the latest path is the newest run's own file");
    assert_eq!(std::fs::read_to_string(own(&repo, 1)).unwrap(), said(&first));
    let mut names: Vec<String> = std::fs::read_dir(latest(&repo).parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["_ci-setup.log", "say.log"], "only the latest logs, no temporary name left");
}

#[test]
fn a_live_runs_log_shows_through_the_latest_path_and_older_runs_keep_theirs() {
    let repo = Repo::new(JUSTFILE);
    let first = format!("{}#1", repo.sha7());
    let second = format!("{}#2", repo.sha7());
    run_green(&repo, &[]);
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let mut live = repo.odu(&["run"]);
    live.env("ODU_TEST_GATE", &gate);
    let live = Running::spawn(live);
    let half = format!("said by {second}\n");
    until("the live run's log at the latest path", DEADLINE, || {
        std::fs::read_to_string(latest(&repo)).is_ok_and(|text| text == half)
    });
    // Live, through the server and with none: each run's own.
    assert_log(&repo, &first, &said(&first));
    let out = logs(&repo, &second, false);
    assert_eq!(stdout(&out), half, "the live run's log so far: {}", all(&out));
    let out = repo.run(&["status", "--run", &first]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    std::fs::write(&gate, "").unwrap();
    let (code, err) = live.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(latest(&repo)).unwrap(), said(&second));
    assert_log(&repo, &first, &said(&first));
    assert_log(&repo, &second, &said(&second));
    stop_server(&repo);
}

#[test]
fn a_link_planted_at_the_latest_path_is_replaced_never_followed() {
    let repo = Repo::new(JUSTFILE);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "the victim's own bytes\n").unwrap();
    std::fs::create_dir_all(latest(&repo).parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, latest(&repo)).unwrap();
    run_green(&repo, &[]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "the victim's own bytes\n");
    let meta = std::fs::symlink_metadata(latest(&repo)).unwrap();
    assert!(meta.is_file(), "the latest path is a file again: {meta:?}");
    assert_eq!(std::fs::read_to_string(latest(&repo)).unwrap(), said(&format!("{}#1", repo.sha7())));
    stop_server(&repo);
}

/// `odu logs`, `status` and `attach` of a pruned run: the plain reason, exit 1, no other log.
fn assert_pruned(repo: &Repo, run: &str, keep: usize) {
    let message = format!("the logs of run {run} were pruned; odu keeps the last {keep} runs");
    for args in [
        &["logs", "--run", run, "say"][..],
        &["logs", "-f", "--run", run, "say"],
        &["status", "--run", run],
        &["attach", "--run", run],
    ] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(1), "odu {args:?}: {}", all(&out));
        assert!(stderr(&out).contains(&message), "odu {args:?}: {}", all(&out));
        assert!(!stdout(&out).contains("said by"), "odu {args:?} showed a log: {}", all(&out));
    }
}

#[test]
fn retention_keeps_the_last_runs_logs_and_says_when_a_log_was_pruned() {
    let repo = Repo::new(JUSTFILE);
    let run = |seq: u64| format!("{}#{seq}", repo.sha7());
    for _ in 0..4 {
        run_green(&repo, &[("ODU_KEEP_RUNS", "2")]);
    }
    // Pruned when a run starts or ends, off the run's way: wait for it.
    until("runs 1 and 2 pruned", DEADLINE, || !own(&repo, 1).exists() && !own(&repo, 2).exists());
    for seq in [3, 4] {
        assert_eq!(std::fs::read_to_string(own(&repo, seq)).unwrap(), said(&run(seq)));
    }
    for server in [true, false] {
        if !server {
            stop_server(&repo);
        }
        for seq in [1, 2] {
            assert_pruned(&repo, &run(seq), 2);
        }
        assert_log(&repo, &run(3), &said(&run(3)));
    }
    assert_eq!(std::fs::read_to_string(latest(&repo)).unwrap(), said(&run(4)));
    // The records stay, saying their logs were pruned.
    let out = repo.run(&["runs", "-o", "json"]);
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.len(), 4, "{runs:?}");
    let record: Value = serde_json::from_slice(
        &std::fs::read(repo.path().join(format!(".ci/{}/runs/1.json", repo.sha7()))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["logs_pruned"]["keep"], 2, "{record}");
}

#[test]
fn runs_prune_removes_older_logs_now_and_says_what_it_removed() {
    let repo = Repo::new(JUSTFILE);
    let run = |seq: u64| format!("{}#{seq}", repo.sha7());
    for _ in 0..3 {
        run_green(&repo, &[]);
    }
    assert!(own(&repo, 1).exists(), "the default keeps the last 20 runs");
    let sizes: u64 = [1, 2]
        .iter()
        .map(|&seq| {
            let dir = own(&repo, seq).parent().unwrap().to_path_buf();
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum::<u64>()
        })
        .sum();
    let out = repo.run(&["runs", "prune", "--keep", "1", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let pruned: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> =
        pruned["runs"].as_array().unwrap().iter().map(|r| r["run"].as_str().unwrap()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec![run(1), run(2)], "{pruned}");
    assert_eq!(pruned["bytes"], sizes, "{pruned}");
    assert_eq!(pruned["keep"], 1);
    assert!(!own(&repo, 1).exists() && !own(&repo, 2).exists() && own(&repo, 3).exists());
    assert_pruned(&repo, &run(1), 1);
    let out = repo.run(&["runs", "prune", "--keep", "1"]);
    assert_eq!(stdout(&out), "nothing to prune: odu keeps the logs of the last 1 runs\n", "{}", all(&out));
    let out = repo.run(&["runs", "prune", "--keep", "0"]);
    assert_eq!(out.status.code(), Some(2), "keeping no run is a usage error: {}", all(&out));
    // With no server, in text.
    stop_server(&repo);
    run_green(&repo, &[]);
    stop_server(&repo);
    let out = repo.run(&["runs", "prune", "--keep", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert!(stdout(&out).starts_with("pruned the logs of 1 run ("), "{}", all(&out));
    assert!(
        stdout(&out).trim_end().ends_with(&format!("keeping the last 1 runs: {}", run(3))),
        "{}",
        all(&out)
    );
}

#[test]
fn a_live_run_is_never_pruned() {
    let repo = Repo::new(JUSTFILE);
    let run = |seq: u64| format!("{}#{seq}", repo.sha7());
    run_green(&repo, &[]);
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let mut live = repo.odu(&["run"]);
    live.env("ODU_TEST_GATE", &gate).env("ODU_KEEP_RUNS", "1");
    let live = Running::spawn(live);
    until("the live run's log", DEADLINE, || own(&repo, 2).exists());
    let out = repo.run(&["runs", "prune", "--keep", "1", "-o", "json"]);
    let pruned: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", all(&out)));
    let names: Vec<&str> =
        pruned["runs"].as_array().unwrap().iter().map(|r| r["run"].as_str().unwrap()).collect();
    assert_eq!(names, vec![run(1)], "only the finished run: {pruned}");
    assert!(own(&repo, 2).exists(), "the live run's logs stay");
    std::fs::write(&gate, "").unwrap();
    let (code, err) = live.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_log(&repo, &run(2), &said(&run(2)));
    stop_server(&repo);
}

#[test]
fn a_node_first_seen_already_ended_still_names_its_latest_log() {
    // Forty trivial nodes on a lane with no cap: many end before the lane ever reports them
    // running, and each must still be named at the latest path.
    let mut justfile = String::from("[metadata(\"ci\")]\nci:");
    for i in 0..40 {
        justfile.push_str(&format!(" n{i}"));
    }
    justfile.push('\n');
    for i in 0..40 {
        justfile.push_str(&format!("n{i}:\n    @echo quick {i}\n"));
    }
    let repo = Repo::new(&justfile);
    run_green(&repo, &[]);
    for i in 0..40 {
        let path = repo.path().join(format!(".ci/{}/{}/n{i}.log", repo.sha7(), local_platform()));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text, format!("quick {i}\n"), "{}", path.display());
    }
}
