//! The trail under `.ci/` as a hostile repository or a crash leaves it: records that point
//! outside the checkout, symlinks where folders and logs belong, records that lie about their
//! own ids, `running` records of a server long gone, a checkout read by another user, and a
//! log too big to hold in memory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{Value, json};

use crate::repo::*;
use crate::stranger::{Stranger, open_to_all};

const JUSTFILE: &str = "[metadata(\"ci\")]\nci: x\nx:\n    echo x\n";

/// A record as a hostile repository (or a dead server) leaves it.
fn record(label: &str, seq: u64, outcome: &str, pid: u32, nodes: Value) -> Value {
    json!({
        "version": 1,
        "sha": format!("{label}000000000000000000000000000000000"),
        "label": label,
        "seq": seq,
        "dirty": false,
        "pipeline": "ci",
        "outcome": outcome,
        "pid": pid,
        "started_at": 1_000,
        "finished_at": if outcome == "running" { Value::Null } else { json!(2_000) },
        "lanes": [{"platform": local_platform(), "host": "localhost"}],
        "nodes": nodes,
    })
}

fn node(task: &str, status: &str, log: &str) -> Value {
    json!({"id": format!("{task}@{}", local_platform()), "status": status, "exit_code": null,
           "duration_ms": null, "log": log})
}

/// A pid no process has.
fn dead_pid() -> u32 {
    let mut pid: i32 = 4_000_000;
    // SAFETY: signal 0 only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        pid -= 1;
    }
    pid as u32
}

fn plant(repo: &Repo, path: &str, value: &Value) {
    repo.write(path, &serde_json::to_string_pretty(value).unwrap());
}

/// Commits what is planted under `.ci/<label>` as the hostile repository would have.
fn commit_ci(repo: &Repo, label: &str) {
    repo.git(&["add", "-f", "--", &format!(".ci/{label}")]);
    repo.git(&["commit", "-q", "-m", "the trail, committed"]);
}

/// A file outside the checkout that nothing odu does may touch.
struct Victim {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const VICTIM_TEXT: &str = "the victim's own bytes\n";

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target.txt");
        std::fs::write(&path, VICTIM_TEXT).unwrap();
        Victim { _dir: dir, path }
    }

    /// The path as a record relative to `repo` would name it.
    fn relative_to(&self, repo: &Repo) -> String {
        let up = "../".repeat(repo.path().components().count() - 1);
        format!("{up}{}", self.path.strip_prefix("/").unwrap().display())
    }

    fn assert_untouched(&self, after: &str) {
        let text = std::fs::read_to_string(&self.path).unwrap();
        assert_eq!(text, VICTIM_TEXT, "{after} wrote to {}", self.path.display());
    }
}

fn all(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// Starts a foreground server, waits until it has recovered the ledger, and stops it. A server
/// refuses a checkout whose `.ci` records git tracks, so the user is taken to have done what
/// that refusal says (untracked them) while keeping the files: they must still not be followed.
fn serve_once(repo: &Repo) -> String {
    if !repo.git(&["ls-files", "--", ".ci"]).is_empty() {
        repo.git(&["rm", "-r", "-q", "--cached", "--", ".ci"]);
        repo.git(&["commit", "-q", "-m", "untrack the trail"]);
    }
    let serve = Running::spawn(repo.odu(&["serve"]));
    wait_for_socket(repo.path());
    // An answer on the socket means the server is past its start (and handles SIGTERM).
    let _ = repo.run(&["runs"]);
    serve.signal(libc::SIGTERM);
    let (code, err) = serve.finish();
    assert_eq!(code, Some(0), "{err}");
    err
}

#[test]
fn a_record_pointing_its_log_outside_the_checkout_is_never_followed() {
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    let victim = Victim::new();
    let p = local_platform();
    for log in [victim.relative_to(&repo), victim.path.display().to_string()] {
        // A running record of a dead server: status, runs and a new server close it, appending a
        // truncation line to the running node's log.
        let running = record(&label, 1, "running", dead_pid(), json!([node("x", "running", &log)]));
        let finished = record(&label, 2, "passed", dead_pid(), json!([node("x", "ok", &log)]));
        plant(&repo, &format!(".ci/{label}/runs/1.json"), &running);
        plant(&repo, &format!(".ci/{label}/runs/2.json"), &finished);
        commit_ci(&repo, &label);
        for args in [&["status"][..], &["runs"], &["status", "--run", &format!("{label}#1")]] {
            plant(&repo, &format!(".ci/{label}/runs/1.json"), &running);
            let out = repo.run(args);
            victim.assert_untouched(&format!("odu {args:?} with log {log:?}"));
            assert!(!all(&out).contains(VICTIM_TEXT.trim()), "{}", all(&out));
        }
        for run in [format!("{label}#1"), format!("{label}#2")] {
            let out = repo.run(&["logs", "--run", &run, "x"]);
            assert!(!all(&out).contains(VICTIM_TEXT.trim()), "odu logs printed {log:?}: {}", all(&out));
            assert_ne!(out.status.code(), Some(0), "there is no trail file for x: {}", all(&out));
            assert!(stderr(&out).contains(&format!(".ci/{label}/{p}/x.log")), "{}", stderr(&out));
        }
        plant(&repo, &format!(".ci/{label}/runs/1.json"), &running);
        serve_once(&repo);
        victim.assert_untouched(&format!("a new server recovering a record with log {log:?}"));
        let closed: Value = serde_json::from_slice(
            &std::fs::read(repo.path().join(format!(".ci/{label}/runs/1.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(closed["outcome"], "incomplete", "{closed}");
    }
}

#[test]
fn the_log_a_record_names_is_not_the_log_odu_reads() {
    // The derived trail file is read, whatever the record says.
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    let p = local_platform();
    plant(
        &repo,
        &format!(".ci/{label}/runs/1.json"),
        &record(&label, 1, "passed", 1, json!([node("x", "ok", "/etc/passwd")])),
    );
    repo.write(&format!(".ci/{label}/{p}/x.log"), "the real log\n");
    let out = repo.run(&["logs", "x"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    assert_eq!(stdout(&out), "the real log\n");
}

#[test]
fn records_whose_ids_do_not_match_their_file_are_ignored_with_a_note() {
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    let victim = Victim::new();
    let escape = victim.relative_to(&repo);
    // A label that walks out of `.ci`: a recovery would write the record there.
    let mut bad_label = record(&label, 1, "running", dead_pid(), json!([node("x", "running", "x")]));
    bad_label["label"] = json!(format!("../../../../../../..{}", victim.path.parent().unwrap().display()));
    std::fs::create_dir(victim.path.parent().unwrap().join("runs")).unwrap();
    plant(&repo, &format!(".ci/{label}/runs/1.json"), &bad_label);
    // A seq that is not the file's.
    plant(&repo, &format!(".ci/{label}/runs/2.json"), &record(&label, 7, "passed", 1, json!([])));
    // A node whose platform is a path.
    let mut bad_node = record(&label, 3, "running", dead_pid(), json!([node("x", "running", "x")]));
    bad_node["nodes"][0]["id"] = json!(format!("x@../../{escape}"));
    plant(&repo, &format!(".ci/{label}/runs/3.json"), &bad_node);
    commit_ci(&repo, &label);
    let out = repo.run(&["runs", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs, json!([]), "no record that lies about its ids is listed");
    let notes = stderr(&out);
    for file in ["1.json", "2.json", "3.json"] {
        assert!(notes.contains(&format!(".ci/{label}/runs/{file}")), "a note names {file}: {notes}");
    }
    let out = repo.run(&["status"]);
    assert!(stderr(&out).contains("no run in this checkout yet"), "{}", all(&out));
    serve_once(&repo);
    victim.assert_untouched("recovering records with hostile ids");
    let outside: Vec<_> = std::fs::read_dir(victim.path.parent().unwrap().join("runs")).unwrap().collect();
    assert!(outside.is_empty(), "a record was written outside the checkout: {outside:?}");
    let kept: Value =
        serde_json::from_slice(&std::fs::read(repo.path().join(format!(".ci/{label}/runs/1.json"))).unwrap())
            .unwrap();
    assert_eq!(kept, bad_label, "a rejected record is left as it was");
}

#[test]
fn symlinks_in_the_trail_are_refused_and_nothing_goes_through_them() {
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    let p = local_platform();
    let outside = tempfile::tempdir().unwrap();
    // `.ci/<label>` is a symlink to a folder outside, holding a running record of a dead server
    // and the running node's log.
    let natural = format!(".ci/{label}/{p}/x.log");
    let running = record(&label, 1, "running", dead_pid(), json!([node("x", "running", &natural)]));
    let runs = outside.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(runs.join("1.json"), serde_json::to_vec_pretty(&running).unwrap()).unwrap();
    std::fs::create_dir_all(outside.path().join(&p)).unwrap();
    std::fs::write(outside.path().join(&p).join("x.log"), VICTIM_TEXT).unwrap();
    std::fs::create_dir_all(repo.path().join(".ci")).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path().join(".ci").join(&label)).unwrap();
    commit_ci(&repo, &label);
    let untouched = || {
        let record: Value = serde_json::from_slice(&std::fs::read(runs.join("1.json")).unwrap()).unwrap();
        assert_eq!(record, running, "the record behind the symlink was rewritten");
        let log = std::fs::read_to_string(outside.path().join(&p).join("x.log")).unwrap();
        assert_eq!(log, VICTIM_TEXT, "the log behind the symlink was written");
    };
    let out = repo.run(&["runs", "-o", "json"]);
    untouched();
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!([]), "{}", all(&out));
    assert!(stderr(&out).contains("symlink"), "a note says why: {}", stderr(&out));
    let out = repo.run(&["status"]);
    untouched();
    assert!(!all(&out).contains("running"), "{}", all(&out));
    let out = repo.run(&["logs", "--run", &format!("{label}#1"), "x"]);
    assert!(!stdout(&out).contains(VICTIM_TEXT.trim()), "{}", all(&out));
    serve_once(&repo);
    untouched();

    // A real label folder whose platform folder, or log file, is a symlink.
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    let natural = format!(".ci/{label}/{p}/x.log");
    plant(
        &repo,
        &format!(".ci/{label}/runs/1.json"),
        &record(&label, 1, "passed", 1, json!([node("x", "ok", &natural)])),
    );
    std::os::unix::fs::symlink(outside.path().join(&p), repo.path().join(format!(".ci/{label}/{p}")))
        .unwrap();
    let out = repo.run(&["logs", "x"]);
    assert!(!stdout(&out).contains(VICTIM_TEXT.trim()), "{}", all(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    std::fs::remove_file(repo.path().join(format!(".ci/{label}/{p}"))).unwrap();
    std::fs::create_dir(repo.path().join(format!(".ci/{label}/{p}"))).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join(&p).join("x.log"),
        repo.path().join(format!(".ci/{label}/{p}/x.log")),
    )
    .unwrap();
    let out = repo.run(&["logs", "x"]);
    assert!(!stdout(&out).contains(VICTIM_TEXT.trim()), "{}", all(&out));
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    untouched();
}

/// The outcome of the first record on disk.
fn outcome_on_disk(repo: &Repo, label: &str) -> String {
    let path = repo.path().join(format!(".ci/{label}/runs/1.json"));
    let value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    value["outcome"].as_str().unwrap().to_string()
}

#[test]
fn a_running_record_whose_pid_was_reused_reads_incomplete_with_no_server() {
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    // The pid of a live process that is no odu server: ours, and init's.
    for pid in [std::process::id(), 1] {
        let running = record(&label, 1, "running", pid, json!([node("x", "running", "x")]));
        plant(&repo, &format!(".ci/{label}/runs/1.json"), &running);
        let out = repo.run(&["runs", "-o", "json"]);
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(runs[0]["outcome"], "incomplete", "pid {pid}: {runs}");
        plant(&repo, &format!(".ci/{label}/runs/1.json"), &running);
        let out = repo.run(&["status", "-o", "json"]);
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["outcome"], "incomplete", "pid {pid}: {status}");
        assert_eq!(status["nodes"][0]["status"], "errored", "{status}");
        plant(&repo, &format!(".ci/{label}/runs/1.json"), &running);
        let err = serve_once(&repo);
        assert_eq!(outcome_on_disk(&repo, &label), "incomplete", "a new server closes it");
        assert!(err.contains("cut short by a server that died"), "{err}");
    }
}

#[test]
fn a_held_server_lock_keeps_a_running_record_running() {
    // Whoever holds the checkout's server lock is its live server: a client does not close its
    // running record, even when the record's pid is no process at all.
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    let running = record(&label, 1, "running", dead_pid(), json!([node("x", "running", "x")]));
    plant(&repo, &format!(".ci/{label}/runs/1.json"), &running);
    let lock = std::fs::File::create(repo.path().join(".ci/odu.serve.lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
    let out = repo.run(&["runs", "-o", "json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["outcome"], "running", "{runs}");
    assert_eq!(outcome_on_disk(&repo, &label), "running");
    drop(lock);
    let out = repo.run(&["runs", "-o", "json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["outcome"], "incomplete", "{runs}");
    assert_eq!(outcome_on_disk(&repo, &label), "incomplete");
}

#[test]
fn another_user_is_told_the_trail_is_not_theirs_to_read() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let repo = Repo::new(JUSTFILE);
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", all(&out));
    stop_server(&repo);
    open_to_all(repo.path());
    open_to_all(Path::new(odu_bin()));
    for args in [&["status"][..], &["runs"], &["logs", "x"]] {
        let out = stranger.command(odu_bin()).args(args).current_dir(repo.path()).output().unwrap();
        let text = all(&out);
        assert_eq!(out.status.code(), Some(1), "odu {args:?} as another user: {text}");
        assert!(!text.contains("no run"), "odu {args:?} as another user: {text}");
        assert!(text.contains("permission denied"), "odu {args:?}: {text}");
        assert!(text.contains(&repo.path().join(".ci").display().to_string()), "names the path: {text}");
        assert!(text.contains("another user"), "odu {args:?}: {text}");
    }
}

/// Peak resident memory (KiB) of a child once it exited, from `wait4`.
fn wait_peak_rss(pid: u32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(got, pid as i32, "wait4: {}", std::io::Error::last_os_error());
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

#[test]
fn logs_of_a_finished_run_stream_a_huge_log_in_bounded_memory() {
    const SIZE: usize = 200 << 20;
    let repo = Repo::new(JUSTFILE);
    let label = repo.sha7();
    let p = local_platform();
    // The record names the log where odu wrote it: streaming, not the path, is under test.
    let natural = format!(".ci/{label}/{p}/big.log");
    let big = record(&label, 1, "passed", 1, json!([node("big", "ok", &natural)]));
    plant(&repo, &format!(".ci/{label}/runs/1.json"), &big);
    let log = repo.path().join(&natural);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&log).unwrap());
        let mut written = 0;
        let mut line = 0u64;
        while written < SIZE {
            let text = format!("line {line} of a log too big to hold in memory\n");
            file.write_all(text.as_bytes()).unwrap();
            written += text.len();
            line += 1;
        }
    }
    // Reaped by `wait4` below, which also reports its peak memory.
    #[allow(clippy::zombie_processes)]
    let mut child = repo.odu(&["logs", "big"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut expected = std::io::BufReader::new(std::fs::File::open(&log).unwrap());
    let (mut got, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0u64;
    loop {
        let n = out.read(&mut got).unwrap();
        if n == 0 {
            break;
        }
        expected.read_exact(&mut want[..n]).unwrap_or_else(|e| panic!("odu printed more than the log: {e}"));
        assert!(got[..n] == want[..n], "odu logs differs from the log at byte {total}");
        total += n as u64;
    }
    assert_eq!(total, std::fs::metadata(&log).unwrap().len(), "odu logs printed the whole log");
    let (code, peak_kib) = wait_peak_rss(child.id());
    assert_eq!(code, 0);
    assert!(peak_kib < 32 * 1024, "odu logs peaked at {peak_kib} KiB for a {SIZE}-byte log");
}

#[test]
fn a_run_never_writes_its_ledger_or_trail_through_a_symlink() {
    let p = local_platform();
    // `.ci/<label>` a link: the ledger would go outside; the lane folder a link: the logs would.
    for link in ["", "/lane"] {
        let repo = Repo::new(JUSTFILE);
        let label = repo.sha7();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join(".ci")).unwrap();
        let at = if link.is_empty() {
            repo.path().join(format!(".ci/{label}"))
        } else {
            std::fs::create_dir_all(repo.path().join(format!(".ci/{label}"))).unwrap();
            repo.path().join(format!(".ci/{label}/{p}"))
        };
        std::os::unix::fs::symlink(outside.path(), &at).unwrap();
        let out = repo.run(&["run"]);
        assert_ne!(out.status.code(), Some(0), "a run through {} passed: {}", at.display(), all(&out));
        let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert!(written.is_empty(), "the run wrote through {}: {written:?}", at.display());
        stop_server(&repo);
    }
}
