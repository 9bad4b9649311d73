//! odu's scratch directories and its runners' deaths, tried as an attacker would: another
//! local user planting the paths odu used to pick, and a runner killed outright mid-run.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::json;

use crate::harness::{DEADLINE, gone, read_pid, task, until, workspace};
use crate::repo::*;
use crate::stranger::{Stranger, shared_tmp};

fn runner_bin() -> &'static str {
    env!("CARGO_BIN_EXE_odu-runner")
}

fn in_tmp(mut cmd: std::process::Command, tmp: &Path) -> std::process::Command {
    cmd.env("TMPDIR", tmp);
    cmd
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Fields of `/proc/<pid>/stat` after the command name: state, ppid, pgrp, …
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn pgid_of(pid: i32) -> i32 {
    stat_fields(pid).and_then(|f| f[2].parse().ok()).unwrap_or_else(|| panic!("no process {pid}"))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live (not zombie) processes of a process group.
fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[2] == pgid.to_string()))
        .collect()
}

fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// The `odu-runner` child of process `parent`.
fn runner_child_of(parent: i32) -> Option<i32> {
    runner_children_of(parent).first().copied()
}

/// Every live `odu-runner` child of `parent`.
fn runner_children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| f[1] == parent.to_string())
                && cmdline(pid).split(' ').next().is_some_and(|argv0| argv0.ends_with("odu-runner"))
        })
        .collect()
}

/// The runner scratch directories under `tmp`.
fn runner_dirs(tmp: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("odu-runner-"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Runs `script` (sh, with `$1`.. as `args`) as the stranger; it must succeed.
fn as_stranger(stranger: &Stranger, script: &str, args: &[&str]) {
    let out = stranger.command("sh").arg("-c").arg(script).arg("sh").args(args).output().unwrap();
    assert!(out.status.success(), "the stranger's script failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The entries of a planted directory, with their owner: it must hold exactly what was planted.
fn assert_untouched(dir: &Path, stranger: &Stranger, files: &[&str]) {
    let meta = std::fs::symlink_metadata(dir).unwrap_or_else(|e| panic!("{} is gone: {e}", dir.display()));
    assert_eq!(meta.uid(), stranger.uid, "{} changed hands", dir.display());
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, files, "odu wrote into the planted {}", dir.display());
}

#[test]
fn the_snapshot_worktree_is_never_a_directory_another_user_planted() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let tmp = shared_tmp();
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci:\n    @echo \"ours ran in $(pwd -P)\"; stat -c 'parent %u %a' \"$(dirname \"$(pwd -P)\")\"\n",
    );
    let sha7 = repo.sha7();
    let serve = Running::spawn(in_tmp(repo.odu(&["serve"]), tmp.path()));
    wait_for_socket(repo.path());
    let server = server_pid(repo.path()).expect("the server's pid");
    // Every name the server could pick for its first snapshot, planted first, each holding a
    // recipe that would run as us.
    let pwned = tmp.path().join("pwned");
    let hostile = format!("[metadata(\"ci\")]\nci:\n    touch {}; echo hostile ran\n", pwned.display());
    let prefix = tmp.path().join(format!("odu-{sha7}-{server}-"));
    as_stranger(
        &stranger,
        r#"for i in $(seq 0 999); do mkdir -m 777 "$1$i" && printf '%s' "$2" > "$1$i/justfile" || exit 1; done"#,
        &[prefix.to_str().unwrap(), &hostile],
    );
    let out = in_tmp(repo.odu(&["run"]), tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let log = repo.log("ci");
    assert!(log.contains("ours ran in "), "our recipe did not run: {log}");
    assert!(!log.contains("hostile"), "{log}");
    assert!(!pwned.exists(), "the planted recipe ran as us");
    // The worktree sat in a directory only we could write, not in anything planted.
    let worktree = log.lines().find_map(|l| l.strip_prefix("ours ran in ")).unwrap().to_string();
    assert!(Path::new(&worktree).starts_with(tmp.path()), "{worktree}");
    assert!(!worktree.starts_with(prefix.to_str().unwrap()), "odu adopted a planted path: {worktree}");
    assert!(
        log.contains(&format!("parent {} 700", euid())),
        "the worktree's directory was not private: {log}"
    );
    // The server removes it once the run's lanes closed, without holding the run's end (and
    // the client's exit) back for it.
    until("the snapshot removed after the run", DEADLINE, || !Path::new(&worktree).exists());
    for i in 0..1000 {
        assert_untouched(Path::new(&format!("{}{i}", prefix.display())), &stranger, &["justfile"]);
    }
    serve.signal(libc::SIGTERM);
    let (code, err) = serve.finish();
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test]
async fn a_runner_never_takes_a_spool_directory_another_user_planted() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let tmp = shared_tmp();
    // The runner stops itself before it starts, so its pid is known before it picks a directory.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", r#"kill -STOP $$; exec "$0" --stdio"#, runner_bin()])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    until("the runner to stop", DEADLINE, || stat_fields(pid).is_some_and(|f| f[0] == "T"));
    let prefix = tmp.path().join(format!("odu-runner-{pid}-"));
    as_stranger(
        &stranger,
        r#"for i in $(seq 0 99); do mkdir -m 777 "$1$i" || exit 1; done"#,
        &[prefix.to_str().unwrap()],
    );
    let planted = runner_dirs(tmp.path());
    // SAFETY: resuming the process this test started.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut client =
        odu::link::client::Client::connect(stdout, stdin, "test").await.expect("the runner starts");
    let ws = workspace("hello:\n    echo ours > done\n");
    let tasks = [task("hello", &[])];
    client.call("run.configure", json!({"name": "t", "workspace": ws.path(), "tasks": tasks})).await.unwrap();
    until("the node to run", DEADLINE, || ws.path().join("done").exists());
    let ours: Vec<PathBuf> = runner_dirs(tmp.path()).into_iter().filter(|d| !planted.contains(d)).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    let meta = std::fs::symlink_metadata(&ours[0]).unwrap();
    assert!(meta.is_dir() && meta.uid() == euid() && mode(&ours[0]) == 0o700, "{}", ours[0].display());
    for dir in &planted {
        assert_untouched(dir, &stranger, &[]);
    }
    drop(client);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("the runner exits").unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(runner_dirs(tmp.path()), planted, "the runner left its scratch directory behind");
}

#[test]
fn killing_a_local_runner_kills_its_nodes_and_removes_its_scratch() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("sleep.pid");
    let justfile = format!(
        "[metadata(\"ci\")]\nci: slow\nslow:\n    sleep 3600 & echo $! > {}; wait\n",
        pid_file.display()
    );
    let repo = Repo::new(&justfile);
    let run = Running::spawn(in_tmp(repo.odu(&["run", "--progress", "json"]), tmp.path()));
    let sleeper = crate::harness::wait_for_pid(&pid_file);
    let group = pgid_of(sleeper);
    assert!(group_members(group).len() >= 2, "the node's group: just, sh, sleep");
    let server = server_pid(repo.path()).expect("a server");
    let runner = runner_child_of(server).expect("the server's odu-runner");
    assert_eq!(runner_dirs(tmp.path()).len(), 1, "the runner's scratch directory");
    // SAFETY: killing the runner this test's run started.
    unsafe { libc::kill(runner, libc::SIGKILL) };
    until("the node's processes to die with their runner", DEADLINE, || group_members(group).is_empty());
    until("the runner's scratch directory to go", DEADLINE, || runner_dirs(tmp.path()).is_empty());
    assert!(gone(sleeper));
    let (code, err) = run.finish();
    assert_ne!(code, Some(0), "a run whose runner was killed is not green: {err}");
    let status: serde_json::Value =
        serde_json::from_slice(&repo.run(&["status", "-o", "json"]).stdout).unwrap();
    let slow = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["recipe"] == "slow" || n["id"].as_str().unwrap().starts_with("slow@"));
    assert_eq!(slow.expect("the slow node")["status"], "errored", "{status}");
    stop_server(&repo);
}

#[tokio::test]
async fn a_new_runner_reaps_what_a_killed_runner_left() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace("slow:\n    sleep 3600 & echo $! > pid; wait\n");
    let start = || {
        tokio::process::Command::new(runner_bin())
            .arg("--stdio")
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let (stdin, stdout) = (first.stdin.take().unwrap(), first.stdout.take().unwrap());
    let mut client = odu::link::client::Client::connect(stdout, stdin, "test").await.unwrap();
    let tasks = [task("slow", &[])];
    client.call("run.configure", json!({"name": "t", "workspace": ws.path(), "tasks": tasks})).await.unwrap();
    let sleeper = read_pid(ws.path().join("pid")).await;
    let group = pgid_of(sleeper);
    let stale = runner_dirs(tmp.path());
    assert_eq!(stale.len(), 1, "{stale:?}");
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // Nobody is left to end the node: it lives on as an orphan, its runner's files with it.
    assert!(!group_members(group).is_empty(), "the node died with its runner");
    assert!(stale[0].exists());

    let mut second = start();
    let (stdin, stdout) = (second.stdin.take().unwrap(), second.stdout.take().unwrap());
    let next = odu::link::client::Client::connect(stdout, stdin, "test").await.expect("a second runner");
    until("the orphaned group to be reaped", DEADLINE, || group_members(group).is_empty());
    until("the stale scratch directory to go", DEADLINE, || !stale[0].exists());
    let live = runner_dirs(tmp.path());
    assert_eq!(live.len(), 1, "the second runner keeps its own directory: {live:?}");
    drop((client, next));
    let status = tokio::time::timeout(DEADLINE, second.wait()).await.expect("the runner exits").unwrap();
    assert!(status.success(), "{status}");
    assert!(runner_dirs(tmp.path()).is_empty());
}

#[tokio::test]
async fn a_runner_answers_lane_close_once_its_groups_scratch_and_stderr_are_done() {
    use tokio::io::AsyncReadExt;
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace("slow:\n    sleep 3600 & echo $! > pid; wait\n");
    let mut child = tokio::process::Command::new(runner_bin())
        .arg("--stdio")
        .env("TMPDIR", tmp.path())
        .env("ODU_REPORT_PEAK_RSS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let mut client = odu::link::client::Client::connect(stdout, stdin, "test").await.expect("handshake");
    let tasks = [task("slow", &[])];
    client.call("run.configure", json!({"name": "t", "workspace": ws.path(), "tasks": tasks})).await.unwrap();
    let sleeper = read_pid(ws.path().join("pid")).await;
    let group = pgid_of(sleeper);
    assert_eq!(runner_dirs(tmp.path()).len(), 1, "the runner's scratch directory");
    tokio::time::timeout(DEADLINE, client.call("lane.close", json!({})))
        .await
        .expect("the runner answers lane.close")
        .expect("lane.close is accepted");
    // By its answer, the node's group is ended and the scratch directory gone...
    assert!(group_members(group).is_empty(), "the node outlived lane.close: {:?}", group_members(group));
    assert!(runner_dirs(tmp.path()).is_empty(), "the scratch outlived lane.close");
    // ...and its stderr said its last (its peak RSS, asked for): the pipe is at its end while
    // the process still waits for its link to close.
    let mut said = String::new();
    tokio::time::timeout(DEADLINE, stderr.read_to_string(&mut said))
        .await
        .expect("the runner's stderr ends with its answer")
        .unwrap();
    assert!(said.contains("odu-runner: peak rss"), "{said}");
    assert!(child.try_wait().unwrap().is_none(), "the runner exits only once its link closes");
    drop(client);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("the runner exits").unwrap();
    assert!(status.success(), "{status}");
}

/// The latest setup log of the checkout's local lane.
fn setup_log(repo: &Repo) -> String {
    let path = repo.path().join(format!(".ci/{}/{}/_ci-setup.log", repo.sha7(), local_platform()));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The server's idle spare runner, once a run whose runners used `tmp` has ended. The run's
/// own runner removed its scratch folder before the run ended but may still be exiting, and
/// the spare may not have started yet: the spare is the one runner left once a scratch folder
/// is back (the spare makes its own as it starts).
fn spare_of(repo: &Repo, tmp: &Path) -> i32 {
    let server = server_pid(repo.path()).expect("the server outlives its run");
    until("the spare's scratch folder", DEADLINE, || runner_dirs(tmp).len() == 1);
    let mut spare = None;
    until("the server's one runner child, its spare", DEADLINE, || {
        let children = runner_children_of(server);
        spare = (children.len() == 1).then(|| children[0]);
        spare.is_some()
    });
    spare.unwrap()
}

#[test]
fn a_spare_runner_serves_the_next_run_alike_and_goes_with_its_server() {
    // After a run, the server keeps a runner started with that run's environment for the next
    // run. The next run's nodes see that run's environment, whatever the spare was started
    // with; a run whose PATH differs (where the runner finds the programs it starts) does not
    // get it.
    let repo = Repo::new("[metadata(\"ci\")]\nci:\n    @echo \"probe=${SPARE_PROBE:-unset}\"\n");
    let tmp = tempfile::tempdir().unwrap();
    let run = |probe: Option<&str>, path: Option<&str>| {
        let mut cmd = in_tmp(repo.odu(&["run", "--no-post"]), tmp.path());
        if let Some(probe) = probe {
            cmd.env("SPARE_PROBE", probe);
        }
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let took = |pid: i32| {
        let log = setup_log(&repo);
        assert!(
            log.contains(&format!("taking the spare runner started after the last run (pid {pid})")),
            "{log}"
        );
    };
    run(None, None);
    let first = spare_of(&repo, tmp.path());
    // The spare makes its scratch folder as it starts; the run's runner removed its own.
    until("the spare's scratch folder, and only it", DEADLINE, || runner_dirs(tmp.path()).len() == 1);
    // The same environment: the run takes the spare, and a new one is kept after it.
    run(None, None);
    took(first);
    assert!(repo.log("ci").contains("probe=unset"), "{}", repo.log("ci"));
    until("the taken spare to exit with its lane", DEADLINE, || gone(first));
    let second = spare_of(&repo, tmp.path());
    assert_ne!(second, first);
    // A variable the spare was not started with: its node sees it all the same.
    run(Some("changed"), None);
    took(second);
    assert!(repo.log("ci").contains("probe=changed"), "{}", repo.log("ci"));
    until("the taken spare to exit with its lane", DEADLINE, || gone(second));
    let third = spare_of(&repo, tmp.path());
    // The spare was started with SPARE_PROBE=changed: a run without it does not see it.
    run(None, None);
    took(third);
    assert!(repo.log("ci").contains("probe=unset"), "{}", repo.log("ci"));
    until("the taken spare to exit with its lane", DEADLINE, || gone(third));
    let fourth = spare_of(&repo, tmp.path());
    // Another PATH: the spare goes, unused, and the run starts a runner of its own.
    let path = format!("{}:{}", tmp.path().display(), std::env::var("PATH").unwrap());
    run(Some("path"), Some(&path));
    let log = setup_log(&repo);
    assert!(!log.contains("spare") && log.contains("starting"), "{log}");
    assert!(repo.log("ci").contains("probe=path"), "{}", repo.log("ci"));
    until("the unused spare to exit", DEADLINE, || gone(fourth));
    let fifth = spare_of(&repo, tmp.path());
    until("one scratch folder: the newest spare's", DEADLINE, || runner_dirs(tmp.path()).len() == 1);
    // A stopping server ends its spare, which leaves no scratch folder behind.
    stop_server(&repo);
    assert!(gone(fifth), "the spare outlived its server");
    assert_eq!(runner_dirs(tmp.path()), Vec::<PathBuf>::new(), "the spare left its scratch folder");
}

#[test]
fn a_spare_runner_whose_file_changed_is_not_used() {
    // A runner rebuilt (or replaced) at the same path after the spare started is another
    // program: the next run starts the new file.
    let repo = Repo::new("[metadata(\"ci\")]\nci:\n    @true\n");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let runner = bin.path().join("odu-runner");
    let install = || {
        let staged = bin.path().join("odu-runner.new");
        std::fs::copy(runner_bin(), &staged).unwrap();
        std::fs::rename(&staged, &runner).unwrap();
    };
    install();
    let run = || {
        let out =
            in_tmp(repo.odu(&["run", "--no-post"]), tmp.path()).env("ODU_RUNNER", &runner).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    run();
    let spare = spare_of(&repo, tmp.path());
    install();
    run();
    let log = setup_log(&repo);
    assert!(!log.contains("spare") && log.contains("starting"), "{log}");
    until("the stale spare to exit", DEADLINE, || gone(spare));
    stop_server(&repo);
    assert_eq!(runner_dirs(tmp.path()), Vec::<PathBuf>::new(), "a runner left its scratch folder");
}

#[test]
fn a_spare_runner_killed_while_idle_is_replaced_and_its_scratch_reaped() {
    let repo = Repo::new("[metadata(\"ci\")]\nci:\n    @true\n");
    let tmp = tempfile::tempdir().unwrap();
    let run = || {
        let out = in_tmp(repo.odu(&["run", "--no-post"]), tmp.path()).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    run();
    let spare = spare_of(&repo, tmp.path());
    // Killed once it is ready: a runner killed before it holds its lock is one still starting,
    // whose folder no other runner may judge.
    until("the spare's scratch folder and lock", DEADLINE, || {
        runner_dirs(tmp.path()).iter().any(|dir| dir.join("lock").exists())
    });
    let killed = runner_dirs(tmp.path());
    // SAFETY: killing the spare runner this test's server started.
    unsafe { libc::kill(spare, libc::SIGKILL) };
    until("the spare to die", DEADLINE, || gone(spare));
    run();
    let log = setup_log(&repo);
    assert!(!log.contains("spare") && log.contains("starting"), "{log}");
    until("the killed spare's scratch folder to be reaped", DEADLINE, || {
        runner_dirs(tmp.path()).iter().all(|dir| !killed.contains(dir))
    });
    stop_server(&repo);
    assert_eq!(runner_dirs(tmp.path()), Vec::<PathBuf>::new(), "a runner left its scratch folder");
}
