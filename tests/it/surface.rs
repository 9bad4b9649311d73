//! The live surface on `.ci/odu.sock`, driven by the real `odu` clients while a real run goes on.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use crate::harness::DEADLINE;
use crate::repo::*;

/// A recipe that waits until the test drops a file, so the run stays live while it looks.
fn waiting(name: &str, release: &str) -> String {
    format!(
        "{name}:\n    @echo started-{name}; for i in $(seq 600); do test -f {release} && exit 0; sleep 0.05; done; exit 9\n"
    )
}

fn status_json(repo: &Repo) -> serde_json::Value {
    let out = repo.run(&["status", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

fn node_status(status: &serde_json::Value, id: &str) -> String {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .map(|n| n["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn status_and_logs_follow_a_live_run_then_answer_from_the_ledger() {
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let release = release.to_str().unwrap();
    let _ = std::fs::remove_file(release);
    let repo = Repo::new(&format!("[metadata(\"ci\")]\nci: hold\n{}", waiting("hold", release)));
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"hold@{p}\""));
    wait_for_socket(repo.path());
    let mode = std::fs::metadata(repo.path().join(".ci/odu.sock")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600, "the socket is private");
    let live = status_json(&repo);
    assert_eq!(live["live"], true);
    assert_eq!(node_status(&live, &format!("hold@{p}")), "running");
    let follower = std::process::Command::new(odu_bin())
        .args(["logs", "-f", &format!("hold@{p}")])
        .current_dir(repo.path())
        .env("HOME", repo.home.path())
        .env_remove("ODU_RUN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(release, "").unwrap();
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("started-hold"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (code, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_file(release);
    // Nothing serves the checkout now: status and logs answer from the trail.
    let idle = status_json(&repo);
    assert_eq!(idle["live"], false);
    assert_eq!(idle["outcome"], "passed");
    let logs = repo.run(&["logs", "hold"]);
    assert!(stdout(&logs).contains("started-hold"));
}

#[test]
fn cancel_and_rerun_through_the_socket() {
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let release = release.to_str().unwrap();
    let marker = gate.path().join("flaky-marker");
    let marker = marker.to_str().unwrap();
    let _ = std::fs::remove_file(release);
    let _ = std::fs::remove_file(marker);
    let justfile = format!(
        "[metadata(\"ci\")]\nci: hold flaky doomed\n{}flaky:\n    @test -f {marker} || (touch {marker}; exit 4)\ndoomed:\n    sleep 60\n",
        waiting("hold", release)
    );
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!(
        "\"node\":\"flaky@{p}\",\"recipe\":\"flaky\",\"platform\":\"{p}\",\"status\":\"failed\""
    ));
    wait_for_socket(repo.path());
    let rerun = repo.run(&["rerun", "flaky"]);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    run.wait_for_line(&format!(
        "\"node\":\"flaky@{p}\",\"recipe\":\"flaky\",\"platform\":\"{p}\",\"status\":\"success\""
    ));
    let cancel = repo.run(&["cancel", &format!("doomed@{p}")]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    run.wait_for_line(&format!(
        "\"node\":\"doomed@{p}\",\"recipe\":\"doomed\",\"platform\":\"{p}\",\"status\":\"cancelled\""
    ));
    let unknown = repo.run(&["rerun", "nosuch"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no node matches"), "{}", stderr(&unknown));
    std::fs::write(release, "").unwrap();
    let (code, err) = run.finish();
    assert_eq!(code, Some(1), "a cancelled node leaves the run incomplete: {err}");
    assert_eq!(repo.ledger()[0]["outcome"], "incomplete");
    let _ = std::fs::remove_file(release);
    let _ = std::fs::remove_file(marker);
}

#[test]
fn cancelling_the_whole_run_from_another_client_ends_it_as_interrupted() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: slow\nslow:\n    sleep 60\n");
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"slow@{p}\""));
    wait_for_socket(repo.path());
    assert_eq!(repo.run(&["cancel"]).status.code(), Some(0));
    let (code, _) = run.finish();
    assert_eq!(code, Some(130));
    // The server outlives the run and serves it as it ended.
    let ended = status_json(&repo);
    assert_eq!(ended["live"], false);
    assert_eq!(ended["outcome"], "incomplete");
    assert_eq!(node_status(&ended, &format!("slow@{p}")), "cancelled");
    // One exit-code rule for every command that reports the run: interrupted is 130.
    for args in [&["status"][..], &["wait"], &["attach", "-o", "json"]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(130), "{args:?}: {}", stderr(&out));
    }
    let again = repo.run(&["cancel"]);
    assert_eq!(again.status.code(), Some(1), "an ended run cannot be cancelled");
    assert!(stderr(&again).contains("has ended"), "{}", stderr(&again));
    // With nothing serving, the ledger's record says the same.
    stop_server(&repo);
    for args in [&["status"][..], &["attach", "-o", "json"]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(130), "{args:?} from the ledger: {}", stderr(&out));
    }
}

#[test]
fn garbage_on_the_socket_gets_an_error_frame_and_the_server_keeps_serving() {
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let release = release.to_str().unwrap();
    let _ = std::fs::remove_file(release);
    let repo = Repo::new(&format!("[metadata(\"ci\")]\nci: hold\n{}", waiting("hold", release)));
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line("\"status\":\"running\"");
    wait_for_socket(repo.path());
    let mut raw = UnixStream::connect(repo.path().join(".ci/odu.sock")).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    // A valid base64 line that is not JSON-RPC, then a request before any handshake.
    writeln!(raw, "bm90IGpzb24=").unwrap();
    let early = odu_proto::Message::request(1, "nodes.get", serde_json::json!({}));
    raw.write_all(&early.to_frame()).unwrap();
    let mut lines = BufReader::new(raw.try_clone().unwrap()).lines();
    for expected in [odu_proto::error_code::PARSE_ERROR, odu_proto::error_code::NO_HANDSHAKE] {
        let line = lines.next().unwrap().unwrap();
        let reply =
            odu_proto::Message::parse(&odu_proto::decode_line(line.as_bytes()).unwrap().unwrap()).unwrap();
        match reply {
            odu_proto::Message::Response { result: Err(e), .. } => assert_eq!(e.code, expected, "{e}"),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }
    // Every other client is still served.
    assert_eq!(status_json(&repo)["live"], true);
    std::fs::write(release, "").unwrap();
    let (code, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_file(release);
}

#[test]
fn a_stale_socket_is_reclaimed() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    std::fs::create_dir_all(repo.path().join(".ci")).unwrap();
    let stale = std::os::unix::net::UnixListener::bind(repo.path().join(".ci/odu.sock")).unwrap();
    drop(stale);
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not serving"), "{}", stderr(&out));
}

#[test]
fn clients_with_no_run_say_so() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let status = repo.run(&["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(stderr(&status).contains("no run in this checkout yet"), "{}", stderr(&status));
    let rerun = repo.run(&["rerun", "a"]);
    assert_eq!(rerun.status.code(), Some(1));
    assert!(stderr(&rerun).contains("no run in this checkout yet"), "{}", stderr(&rerun));
    let cancel = repo.run(&["cancel"]);
    assert_eq!(cancel.status.code(), Some(0));
}

#[test]
fn attach_streams_transitions_and_wait_returns_a_verdict() {
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let release = release.to_str().unwrap();
    let justfile =
        format!("[metadata(\"ci\")]\nci: hold broken\n{}broken:\n    exit 3\n", waiting("hold", release));
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"hold@{p}\""));
    wait_for_socket(repo.path());
    let mut attach = Running::spawn(repo.odu(&["attach", "-o", "json"]));
    // A watcher of a live run steps aside for it: SCHED_IDLE, unless told otherwise.
    attach.wait_for_line(&format!("\"node\":\"hold@{p}\""));
    assert_eq!(sched_policy(attach.child.id()), SCHED_IDLE, "attach watches at SCHED_IDLE");
    let mut normal = repo.odu(&["attach", "-o", "json"]);
    normal.env("ODU_OBSERVER_PRIORITY", "normal");
    let mut normal = Running::spawn(normal);
    normal.wait_for_line(&format!("\"node\":\"hold@{p}\""));
    assert_eq!(sched_policy(normal.child.id()), 0, "ODU_OBSERVER_PRIORITY=normal keeps SCHED_OTHER");
    normal.signal(libc::SIGTERM);
    normal.finish();
    // Fail-fast: `broken` is red while `hold` still runs.
    let wait = repo.run(&["wait"]);
    assert_eq!(wait.status.code(), Some(1), "{}", stderr(&wait));
    let verdict: serde_json::Value = serde_json::from_slice(&wait.stdout).unwrap();
    assert_eq!(verdict["settled"], false);
    assert_eq!(verdict["fail_fast_tripped"], true);
    assert_eq!(verdict["failed"], serde_json::json!([format!("broken@{p}")]));
    let timed = repo.run(&["wait", "--settle", "--timeout", "200ms"]);
    let timed: serde_json::Value = serde_json::from_slice(&timed.stdout).unwrap();
    assert_eq!(timed["timed_out"], true);
    std::fs::write(release, "").unwrap();
    let (code, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    let (attach_code, _) = {
        let line = attach.wait_for_line(&format!(
            "\"node\":\"hold@{p}\",\"recipe\":\"hold\",\"platform\":\"{p}\",\"status\":\"success\""
        ));
        assert!(line.contains(".log"), "attach lines name the log: {line}");
        attach.finish()
    };
    assert_eq!(attach_code, Some(1), "attach exits with the verdict");
    // With nothing running, attach shows the latest run as it ended.
    let idle = repo.run(&["attach", "-o", "json"]);
    assert_eq!(idle.status.code(), Some(1));
    assert!(stdout(&idle).contains(&format!("\"node\":\"broken@{p}\"")), "{}", stdout(&idle));
}

const SCHED_IDLE: u32 = 5;

/// A process's scheduling policy: field 41 of /proc/<pid>/stat.
fn sched_policy(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(38).unwrap().parse().unwrap()
}
