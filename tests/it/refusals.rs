//! A refused run starts nothing and leaves nothing behind, and says what is wrong in just's
//! own words; a run that was stopped ends with no `pending` node and no log for a node that
//! never ran.

use std::path::Path;
use std::process::Command;

use crate::harness::{DEADLINE, until};
use crate::repo::*;

const OK: &str = "[metadata(\"ci\")]\nci: a\na:\n    true\n";

/// `odu run` exits 1 with an `odu:` line containing `needle`, no server of the checkout is
/// left, and `.ci` was not created. Returns the run's stderr.
fn refused_leaving_nothing(repo: &Repo, args: &[&str], needle: &str) -> String {
    let out = repo.run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1 for {needle:?}; stderr: {err}");
    assert!(
        err.lines().any(|l| l.starts_with("odu: ") && l.contains(needle)),
        "no `odu:` line containing {needle:?} in: {err}"
    );
    until("no odu serve left in the checkout", DEADLINE, || server_pid(repo.path()).is_none());
    assert!(!repo.path().join(".ci").exists(), "a refused run created .ci");
    err
}

/// What `just --dump` prints on stderr in `dir`, each line indented as odu shows it.
fn justs_lines_indented(dir: &Path) -> Vec<String> {
    let out =
        Command::new("just").args(["--dump", "--dump-format", "json"]).current_dir(dir).output().unwrap();
    assert!(!out.status.success(), "just accepted the justfile");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<String> = text.trim_end().lines().map(|l| format!("  {}", l.trim_end())).collect();
    assert!(lines.len() > 2, "just printed one line only: {text}");
    lines
}

/// The lines under the `odu: just rejected the justfile` line.
fn shown_under_odus_line(err: &str) -> Vec<String> {
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("odu: just rejected the justfile"))
        .unwrap_or_else(|| panic!("no `odu: just rejected the justfile` line in: {err}"));
    lines[at + 1..].iter().take_while(|l| l.starts_with("  ")).map(|l| l.to_string()).collect()
}

#[test]
fn a_syntax_error_is_shown_as_just_prints_it_and_starts_nothing() {
    let repo = Repo::new("[metadata(\"ci\")]\nci:\n    true\nfoo bar\n");
    let err = refused_leaving_nothing(&repo, &["run"], "just rejected the justfile");
    let want = justs_lines_indented(repo.path());
    assert_eq!(shown_under_odus_line(&err), want, "stderr: {err}");
    assert!(want.iter().any(|l| l.trim_start().starts_with("error: ")), "{want:?}");
    assert!(!err.contains(" | "), "just's lines were squashed into one: {err}");
}

#[test]
fn an_unknown_dependency_is_shown_as_just_prints_it_by_a_client_and_by_a_server() {
    let repo = Repo::new(OK);
    let bad = "[metadata(\"ci\")]\nci: nosuch\n    true\n";
    repo.write("justfile", bad);
    repo.commit("depend on a recipe that does not exist");
    let err = refused_leaving_nothing(&repo, &["run"], "just rejected the justfile");
    let want = justs_lines_indented(repo.path());
    assert!(want[0].contains("unknown dependency `nosuch`"), "{want:?}");
    assert_eq!(shown_under_odus_line(&err), want, "stderr: {err}");
    // A server that is already up refuses the same way, its refusal's lines intact over the
    // socket.
    repo.write("justfile", OK);
    repo.commit("fix it");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let server = server_pid(repo.path()).expect("the run left its server up");
    repo.write("justfile", bad);
    repo.commit("break it again");
    let out = repo.run(&["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(shown_under_odus_line(&err), want, "stderr: {err}");
    assert_eq!(server_pid(repo.path()), Some(server), "the refusal came from the running server");
    stop_server(&repo);
}

#[test]
fn zero_or_two_roots_start_nothing() {
    refused_leaving_nothing(
        &Repo::new("a:\n    true\n"),
        &["run"],
        "expected exactly one [metadata(\"ci\")] recipe, found 0",
    );
    refused_leaving_nothing(
        &Repo::new("[metadata(\"ci\")]\nx: a\n[metadata(\"ci\")]\ny: a\na:\n    true\n"),
        &["run"],
        "found 2 (x, y)",
    );
}

#[test]
fn no_justfile_starts_nothing() {
    let repo = Repo::with_files(&[("README", "x")]);
    let err = refused_leaving_nothing(&repo, &["run"], "no justfile in");
    let shown = repo.path().canonicalize().unwrap();
    assert!(err.contains(&shown.display().to_string()), "the refusal names the checkout: {err}");
}

#[test]
fn a_dirty_tree_under_strict_starts_nothing() {
    let repo = Repo::new(OK);
    repo.write("justfile", &format!("{OK}b:\n    true\n"));
    refused_leaving_nothing(&repo, &["run"], "working tree is dirty (1 path changed: justfile)");
}

#[test]
fn a_dirty_tree_refused_by_a_running_server_leaves_no_worktree() {
    // A server checks a strict run's worktree out beside git's status check: a dirty tree
    // refuses the run, and the worktree made meanwhile goes with it.
    let repo = Repo::new(OK);
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let server = server_pid(repo.path()).expect("the run left its server up");
    repo.write("justfile", &format!("{OK}b:\n    true\n"));
    let out = repo.run(&["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("working tree is dirty (1 path changed: justfile)"), "{err}");
    assert_eq!(server_pid(repo.path()), Some(server), "the refusal came from the running server");
    let worktrees = Command::new("git")
        .args(["worktree", "list", "--porcelain"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&worktrees.stdout).matches("worktree ").count();
    assert_eq!(listed, 1, "git knows of a worktree besides the checkout");
    let admin = repo.path().join(".git/worktrees");
    assert!(!admin.read_dir().is_ok_and(|mut d| d.next().is_some()), "{} is not empty", admin.display());
    stop_server(&repo);
}

#[test]
fn a_refusal_leaves_an_existing_ci_as_it_was() {
    use std::os::unix::fs::DirBuilderExt;
    let repo = Repo::new("a:\n    true\n");
    let ci = repo.path().join(".ci");
    std::fs::DirBuilder::new().mode(0o700).create(&ci).unwrap();
    std::fs::write(ci.join("notes"), "mine\n").unwrap();
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(&ci);
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    until("no odu serve left in the checkout", DEADLINE, || server_pid(repo.path()).is_none());
    assert_eq!(listing(&ci), before, "a refused run changed .ci");
}

/// A run whose `slow` node runs until stopped, with `after` waiting on it.
fn slow_run(repo: &Repo) -> Running {
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    let line = run.wait_for_line("\"slow@");
    assert!(line.contains("running"), "{line}");
    run
}

const SLOW: &str = "[metadata(\"ci\")]\nci: after\nafter: slow\n    true\nslow:\n    sleep 60\n";

/// The stopped run's record has no pending node, `after` is skipped, and it has no log.
fn nothing_pending_and_no_log_for_what_never_ran(repo: &Repo) {
    let out = repo.run(&["status", "-o", "json"]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = local_platform();
    let of = |id: &str| {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {status}"))["status"]
            .clone()
    };
    assert!(
        status["nodes"].as_array().unwrap().iter().all(|n| n["status"] != "pending"),
        "an ended run has a pending node: {status}"
    );
    assert_eq!(of(&format!("after@{p}")), "skipped", "{status}");
    assert_eq!(of(&format!("slow@{p}")), "cancelled", "{status}");
    let lane = repo.path().join(".ci").join(repo.sha7()).join(&p);
    assert!(lane.join("slow.log").exists(), "the node that ran keeps its log");
    assert!(!lane.join("after.log").exists(), "a node that never ran has a log file");
    let out = repo.run(&["logs", "after"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("never ran (skipped): it has no log"), "{}", stderr(&out));
}

#[test]
fn ctrl_c_mid_run_skips_what_never_started() {
    let repo = Repo::new(SLOW);
    let run = slow_run(&repo);
    run.signal(libc::SIGINT);
    let (code, err) = run.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("1 skipped"), "{err}");
    nothing_pending_and_no_log_for_what_never_ran(&repo);
    stop_server(&repo);
}

#[test]
fn odu_cancel_mid_run_skips_what_never_started() {
    let repo = Repo::new(SLOW);
    let run = slow_run(&repo);
    let out = repo.run(&["cancel"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, err) = run.finish();
    assert_eq!(code, Some(130), "{err}");
    nothing_pending_and_no_log_for_what_never_ran(&repo);
    stop_server(&repo);
}

#[test]
fn a_run_that_could_not_post_starts_nothing() {
    let repo = Repo::new(OK);
    repo.git(&["remote", "add", "origin", "https://github.com/acme/app.git"]);
    refused_leaving_nothing(&repo, &["run"], "needs a GitHub token");
    repo.git(&["remote", "set-url", "origin", "https://gitlab.com/acme/app.git"]);
    refused_leaving_nothing(&repo, &["run"], "needs a GitHub origin");
}

/// The `odu-runner` processes whose working directory is `repo` (a local runner inherits its
/// server's).
fn runners_in(repo: &Path) -> Vec<i32> {
    let want = repo.canonicalize().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !first.ends_with(b"odu-runner") {
            continue;
        }
        if std::fs::read_link(entry.path().join("cwd")).ok().as_deref() == Some(want.as_path()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_run_refused_after_its_runner_was_started_leaves_no_runner_behind() {
    // The server starts a run's local runner while it plans the run; a run refused after that
    // (a selector matching nothing is found only once just has dumped the snapshot) must end it.
    let repo = Repo::new(OK);
    let tmp = tempfile::tempdir().unwrap();
    let first = repo.odu(&["run", "--no-post"]).env("TMPDIR", tmp.path()).output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(server_pid(repo.path()).is_some(), "the server outlives its run");
    for _ in 0..3 {
        let out = repo.odu(&["run", "--no-post", "nosuchrecipe"]).env("TMPDIR", tmp.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("matches no pipeline recipe"), "{}", stderr(&out));
    }
    until("no runner of the checkout left", DEADLINE, || runners_in(repo.path()).is_empty());
    let scratch = || {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("odu-runner-"))
            .count()
    };
    until("no runner scratch directory left", DEADLINE, || scratch() == 0);
    // The next run takes its runner as usual.
    let again = repo.odu(&["run", "--no-post"]).env("TMPDIR", tmp.path()).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    stop_server(&repo);
}
