//! The lane runner over an in-memory link: the protocol and scheduling contract.

use std::time::Duration;

use odu_core::NodeStatus::*;
use odu_core::{NodeStatus, SETUP};
use odu_proto::NodesFrame;
use serde_json::json;

use crate::harness::*;

const CHAIN: &str = "build:\n    echo building\ntest:\n    echo testing\n";

/// Every frame, applied in order, never shows a node started before all its needs were ok.
fn assert_topological_in_every_frame(h: &LaneHarness) {
    let mut state = std::collections::BTreeMap::new();
    for frame in &h.frames {
        match frame {
            NodesFrame::Snapshot { nodes, .. } => {
                state = nodes.iter().map(|n| (n.id.clone(), n.clone())).collect();
            }
            NodesFrame::Delta { nodes, .. } => {
                for n in nodes {
                    state.insert(n.id.clone(), n.clone());
                }
            }
        }
        for node in state.values() {
            if matches!(node.status, Running | Ok) {
                for need in node.needs.iter() {
                    assert_eq!(
                        state[need].status, Ok,
                        "{} was {} before its need {need} was ok",
                        node.id, node.status
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn green_run_in_dependency_order_in_every_frame() {
    let ws = workspace(CHAIN);
    let mut h = LaneHarness::start().await;
    let ack = h.configure(ws.path(), &[task("build", &[]), task("test", &["build"])]).await;
    assert_eq!(ack.unwrap(), json!({"ok": true}));
    h.until(|h| h.settled(3)).await;
    assert_eq!(h.order, vec![SETUP, "build", "test"]);
    assert!(h.state.values().all(|n| n.status == Ok), "{:?}", h.statuses());
    assert_topological_in_every_frame(&h);
    h.stop().await;
}

#[tokio::test]
async fn configure_right_after_the_first_frame_loses_no_state_change() {
    let ws = workspace("a:\n    true\nb:\n    true\nc:\n    true\n");
    for _ in 0..5 {
        let mut h = LaneHarness::start().await;
        let tasks = [task("a", &[]), task("b", &["a"]), task("c", &["a"])];
        let id = h
            .client
            .send("run.configure", json!({"name":"t","workspace":ws.path(),"tasks":tasks}))
            .await
            .unwrap();
        h.until(|h| h.settled(4)).await;
        h.response(id).await.unwrap();
        assert!(h.state.values().all(|n| n.status == Ok));
        assert_topological_in_every_frame(&h);
        h.stop().await;
    }
}

#[tokio::test]
async fn failing_node_keeps_its_exit_code_skips_dependents_and_siblings_finish() {
    let ws = workspace("build:\n    exit 3\ntest:\n    true\nsibling:\n    sleep 0.3\n");
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("build", &[]), task("sibling", &[]), task("test", &["build"])])
        .await
        .unwrap();
    h.until(|h| h.settled(4)).await;
    assert_eq!(h.status("build"), Some(Failed));
    assert_eq!(h.state["build"].exit_code, Some(3));
    assert_eq!(h.status("test"), Some(Skipped));
    assert_eq!(h.status("sibling"), Some(Ok));
    h.stop().await;
}

#[tokio::test]
async fn setup_failure_skips_everything() {
    let mut h = LaneHarness::start().await;
    let ack = h
        .configure("/nonexistent/odu-workspace".as_ref(), &[task("build", &[]), task("test", &["build"])])
        .await;
    assert!(ack.is_ok(), "configure acks fast; setup failures surface as the setup node");
    h.until(|h| h.settled(3)).await;
    assert_eq!(h.status(SETUP), Some(Failed));
    assert_eq!(h.status("build"), Some(Skipped));
    assert_eq!(h.status("test"), Some(Skipped));
    let log = h.subscribe_log(SETUP).await;
    h.until(|h| h.log_kinds(log).contains(&"end")).await;
    assert!(h.log_text(log).contains("does not exist"), "{}", h.log_text(log));
    h.stop().await;
}

#[tokio::test]
async fn rerun_resets_a_node_and_its_transitive_dependents() {
    let ws = workspace("build:\n    true\ntest:\n    true\ndeploy:\n    true\nother:\n    true\n");
    let mut h = LaneHarness::start().await;
    let tasks = [task("build", &[]), task("other", &[]), task("test", &["build"]), task("deploy", &["test"])];
    h.configure(ws.path(), &tasks).await.unwrap();
    h.until(|h| h.settled(5)).await;
    let before = h.frames.len();
    h.request("node.rerun", json!({"id": "build"})).await.unwrap();
    h.until(|h| h.settled(5) && h.state["deploy"].generation == 1).await;
    let reset: Vec<String> = h.frames[before..]
        .iter()
        .flat_map(|f| match f {
            NodesFrame::Delta { nodes, .. } => {
                nodes.iter().filter(|n| n.status == Pending).map(|n| n.id.clone()).collect()
            }
            _ => vec![],
        })
        .collect();
    for id in ["test", "deploy"] {
        assert!(reset.contains(&id.to_string()), "{id} was not reset to pending: {reset:?}");
    }
    for id in ["build", "test", "deploy"] {
        assert_eq!(h.state[id].generation, 1, "{id} ran again");
        assert_eq!(h.status(id), Some(Ok));
    }
    assert_eq!(h.state["other"].generation, 0, "an unrelated node is untouched");
    h.stop().await;
}

#[tokio::test]
async fn cancel_of_a_running_node_skips_dependents() {
    let ws = workspace("slow:\n    sleep 30\nafter:\n    true\n");
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("slow", &[]), task("after", &["slow"])]).await.unwrap();
    h.until(|h| h.status("slow") == Some(Running)).await;
    h.request("node.cancel", json!({"id": "slow"})).await.unwrap();
    h.until(|h| h.settled(3)).await;
    assert_eq!(h.status("slow"), Some(Cancelled));
    assert_eq!(h.status("after"), Some(Skipped));
    let outcome = odu_core::status::Outcome::of(h.state.values().map(|n| &n.status));
    assert_ne!(outcome, odu_core::status::Outcome::Passed, "a cancelled run is not green");
    h.stop().await;
}

#[tokio::test]
async fn cancel_escalates_a_term_ignoring_recipe_tree_to_sigkill() {
    let ws = workspace(
        "stubborn:\n    #!/usr/bin/env bash\n    echo $$ > pid\n    trap '' TERM\n    while :; do sleep 0.1; done\n",
    );
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("stubborn", &[])]).await.unwrap();
    let pid = read_pid(ws.path().join("pid")).await;
    h.request("node.cancel", json!({"id": "stubborn"})).await.unwrap();
    assert!(wait_until_dead(pid, Duration::from_secs(15)).await, "the TERM-ignoring recipe survived");
    h.until(|h| h.settled(2)).await;
    h.stop().await;
}

#[tokio::test]
async fn a_stray_left_by_a_finished_node_is_reaped() {
    let ws = workspace("leaky:\n    sleep 30 </dev/null >/dev/null 2>&1 & echo $! > stray\n");
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("leaky", &[])]).await.unwrap();
    h.until(|h| h.settled(2)).await;
    assert_eq!(h.status("leaky"), Some(Ok));
    let stray = read_pid(ws.path().join("stray")).await;
    assert!(wait_until_dead(stray, Duration::from_secs(10)).await, "the stray survived its node");
    h.stop().await;
}

#[tokio::test]
async fn a_recipe_writing_to_dev_stderr_works() {
    let ws = workspace("reopen:\n    echo REOPENED > /dev/stderr\n");
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("reopen", &[])]).await.unwrap();
    h.until(|h| h.settled(2)).await;
    assert_eq!(h.status("reopen"), Some(Ok));
    let log = h.subscribe_log("reopen").await;
    h.until(|h| h.log_kinds(log).contains(&"end")).await;
    assert!(h.log_text(log).contains("REOPENED"));
    h.stop().await;
}

#[tokio::test]
async fn a_late_subscriber_gets_the_snapshot_and_the_log_replay_then_end() {
    let ws = workspace("mark:\n    echo MARK-ODU-LOG\n");
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("mark", &[])]).await.unwrap();
    h.until(|h| h.settled(2)).await;
    let late = h.client.send("nodes.get", json!({})).await.unwrap();
    let mut first = None;
    while first.is_none() {
        if let Some(odu::link::client::ClientEvent::Item { stream, value }) = h.client.next().await.unwrap()
            && stream == late
        {
            first = Some(serde_json::from_str::<NodesFrame>(value.get()).unwrap());
        }
    }
    match first.unwrap() {
        NodesFrame::Snapshot { nodes, .. } => assert!(nodes.iter().all(|n| n.status == Ok), "{nodes:?}"),
        other => panic!("first frame was not a snapshot: {other:?}"),
    }
    let log = h.subscribe_log("mark").await;
    h.until(|h| h.log_kinds(log).contains(&"end")).await;
    assert_eq!(h.log_kinds(log), vec!["snapshot", "end"]);
    assert!(h.log_text(log).contains("MARK-ODU-LOG"));
    h.stop().await;
}

#[tokio::test]
async fn rerun_reopens_an_ended_empty_log() {
    let ws = workspace("build:\n    exit 1\ntest:\n    true\n");
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("build", &[]), task("test", &["build"])]).await.unwrap();
    h.until(|h| h.settled(3)).await;
    let log = h.subscribe_log("test").await;
    h.until(|h| h.log_kinds(log) == ["snapshot", "end"]).await;
    h.request("node.rerun", json!({"id": "build"})).await.unwrap();
    h.until(|h| h.log_kinds(log).len() >= 3).await;
    assert_eq!(h.log_kinds(log)[2], "snapshot", "the skipped node's empty log reopened");
    h.until(|h| h.log_kinds(log).iter().filter(|k| **k == "end").count() == 2).await;
    h.stop().await;
}

#[tokio::test]
async fn a_second_configure_is_refused() {
    let ws = workspace(CHAIN);
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("build", &[])]).await.unwrap();
    let second = h.configure(ws.path(), &[task("build", &[])]).await.unwrap_err();
    assert!(second.message.contains("already configured"), "{second}");
    h.stop().await;
}

#[tokio::test]
async fn rerun_or_cancel_of_an_unknown_node_is_refused() {
    let ws = workspace(CHAIN);
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &[task("build", &[])]).await.unwrap();
    h.until(|h| h.settled(2)).await;
    for method in ["node.rerun", "node.cancel"] {
        let err = h.request(method, json!({"id": "nope"})).await.unwrap_err();
        assert!(err.message.contains("nope"), "{err}");
    }
    let err = h.request("node.cancel", json!({"id": "build"})).await.unwrap_err();
    assert!(err.message.contains("already finished"), "{err}");
    assert_eq!(h.status("build"), Some(NodeStatus::Ok));
    h.stop().await;
}

/// A lane that starts hundreds of nodes at once reports those that end while it is still
/// starting the others: each spawn waits for its child's exec, which on a machine busy with the
/// lane's own nodes is a round of the scheduler, and nodes spawned in one go were reaped and
/// reported only once the last had started. (The runner alone: a server that lags behind its
/// lane, as one creating a thousand log files on a slow disk does, is another matter.)
#[tokio::test]
async fn a_wide_lane_reports_its_first_nodes_end_before_it_has_started_its_last() {
    // A burst reports twice a second: starting 1,000 nodes takes several times that here.
    const WIDE: usize = 1000;
    let stamps = tempfile::tempdir().unwrap();
    let stamp = stamps.path().join("last-started");
    let names: Vec<String> = (0..WIDE).map(|i| format!("r{i:04}")).collect();
    let mut justfile = String::new();
    for name in &names[..WIDE - 1] {
        justfile.push_str(&format!("{name}:\n    @true\n"));
    }
    justfile.push_str(&format!("{}:\n    @date +%s%N > {}\n", names[WIDE - 1], stamp.display()));
    let ws = workspace(&justfile);
    let tasks: Vec<_> = names.iter().map(|name| task(name, &[])).collect();
    let mut h = LaneHarness::start().await;
    h.configure(ws.path(), &tasks).await.unwrap();
    // However slow the machine: starting a process costs several times more on some than on
    // others.
    let within = Duration::from_secs(180);
    h.until_within(within, |h| h.status("r0000") == Some(Ok)).await;
    let first_ok_seen = std::time::SystemTime::now();
    h.until_within(within, |h| h.settled(WIDE + 1)).await;
    assert!(h.state.values().all(|n| n.status == Ok), "{:?}", h.statuses());
    let last_started: u128 = std::fs::read_to_string(&stamp).unwrap().trim().parse().unwrap();
    let first_ok_seen = first_ok_seen.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    assert!(
        first_ok_seen < last_started,
        "r0000's end was reported {} ms after the last node started",
        (first_ok_seen - last_started) / 1_000_000
    );
    h.stop().await;
}

/// The runner binary on piped stdio, its command set up by `setup` first.
fn spawn_runner_binary(setup: impl FnOnce(&mut tokio::process::Command)) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_odu-runner"));
    setup(&mut command);
    command
        .arg("--stdio")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The runner binary on piped stdio (its command set up by `setup` first), and a client
/// connected to it.
async fn runner_binary(
    setup: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, odu::link::client::Client<tokio::process::ChildStdout>) {
    let mut child = spawn_runner_binary(setup);
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let client = odu::link::client::Client::connect(stdout, stdin, "test").await.unwrap();
    (child, client)
}

#[tokio::test]
async fn the_runner_binary_kills_its_process_groups_when_its_stdin_closes() {
    let ws = workspace("slow:\n    sleep 60 & echo $! > pid; wait\n");
    let (mut child, mut client) = runner_binary(|_| {}).await;
    let tasks = [task("slow", &[])];
    client.call("run.configure", json!({"name": "t", "workspace": ws.path(), "tasks": tasks})).await.unwrap();
    let pid = read_pid(ws.path().join("pid")).await;
    drop(client);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("runner exits").unwrap();
    assert!(status.success(), "{status}");
    assert!(wait_until_dead(pid, Duration::from_secs(5)).await, "the node outlived its runner");
}

#[tokio::test]
async fn the_runner_binary_gives_its_nodes_the_runs_environment_and_none_of_its_own() {
    // The runner process takes the run's environment as its own when its lane is configured,
    // and spawns its nodes with it as it is: the run's variables with the lane's over them, and
    // nothing the runner alone was started with.
    let ws = workspace("probe:\n    @env > seen.tmp && mv seen.tmp seen.env\n");
    let path = std::env::var("PATH").unwrap();
    let (mut child, mut client) = runner_binary(|runner| {
        runner
            .env_clear()
            .env("PATH", &path)
            .env("ODU_TEST_RUNNER_ONLY", "1")
            .env("ODU_TEST_SHARED", "runner");
    })
    .await;
    let base =
        json!({"PATH": path, "ODU_TEST_SHARED": "run", "ODU_TEST_RUN_ONLY": "1", "ODU_TEST_LANE": "run"});
    let lane = json!({"ODU_TEST_LANE": "lane", "ODU_TEST_LANE_ONLY": "1"});
    let configure = json!({"name": "t", "workspace": ws.path(), "tasks": [task("probe", &[])], "base_env": base, "env": lane});
    client.call("run.configure", configure).await.unwrap();
    let seen_at = ws.path().join("seen.env");
    let seen = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Result::Ok(seen) = std::fs::read_to_string(&seen_at) {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the node wrote its environment");
    let mut ours: Vec<&str> = seen.lines().filter(|line| line.starts_with("ODU_TEST_")).collect();
    ours.sort_unstable();
    assert_eq!(
        ours,
        ["ODU_TEST_LANE=lane", "ODU_TEST_LANE_ONLY=1", "ODU_TEST_RUN_ONLY=1", "ODU_TEST_SHARED=run"],
        "{seen}"
    );
    drop(client);
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("runner exits").unwrap();
    assert!(status.success(), "{status}");
}

/// The frames of one write of the runner, as `(stream, value)` of each `$/item` in it.
fn items_of(write: &[u8]) -> Vec<(u64, serde_json::Value)> {
    write
        .split(|b| *b == b'\n')
        .filter_map(|line| odu_proto::decode_line(line).ok().flatten())
        .filter_map(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .filter(|m| m["method"] == "$/item")
        .map(|m| (m["params"]["id"].as_u64().unwrap(), m["params"]["value"].clone()))
        .collect()
}

#[tokio::test]
async fn a_nodes_log_end_and_its_new_status_leave_the_runner_in_one_write() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;
    // `gate` holds the chain until the logs of `b` and `c` are followed, so both end live. They
    // print nothing, as most nodes of a large graph: their log's end is all it carries.
    let ws = workspace("gate:\n    @while [ ! -e go ]; do sleep 0.01; done\nb:\n    @true\nc:\n    @true\n");
    // A pipe in packet mode: each write of the runner is read back whole and alone.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors, owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_DIRECT | libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_odu-runner"))
        .arg("--stdio")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::from(write_end))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let writes: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (mut feed, client_end) = tokio::io::duplex(1 << 20);
    // Read by a thread: a blocking read of a packet pipe returns one write (the reactor would
    // take a short read for an empty pipe and wait for a next write).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let recorded = writes.clone();
    std::thread::spawn(move || {
        let mut pipe = std::fs::File::from(read_end);
        let mut buf = vec![0u8; 1 << 16];
        while let Result::Ok(n @ 1..) = pipe.read(&mut buf) {
            recorded.lock().unwrap().push(buf[..n].to_vec());
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if feed.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let (cr, _) = tokio::io::split(client_end);
    let client = odu::link::client::Client::connect(cr, child.stdin.take().unwrap(), "test").await.unwrap();
    let mut h = LaneHarness::over(client).await;
    h.configure(ws.path(), &[task("gate", &[]), task("b", &["gate"]), task("c", &["b"])]).await.unwrap();
    let logs = [("b", h.subscribe_log("b").await), ("c", h.subscribe_log("c").await)];
    h.until(|h| logs.iter().all(|(_, stream)| !h.logs[stream].is_empty())).await;
    std::fs::write(ws.path().join("go"), "").unwrap();
    h.until(|h| h.settled(4)).await;
    assert!(h.state.values().all(|n| n.status == Ok), "{:?}", h.statuses());
    h.until(|h| logs.iter().all(|(_, stream)| h.log_kinds(*stream).last() == Some(&"end"))).await;
    let writes = writes.lock().unwrap().clone();
    let nodes_stream = writes
        .iter()
        .flat_map(|w| items_of(w))
        .find(|(_, v)| v["kind"] == "snapshot" && v.get("order").is_some())
        .map(|(stream, _)| stream)
        .expect("a nodes snapshot");
    for (node, stream) in logs {
        let is_end = |(s, v): &(u64, serde_json::Value)| *s == stream && v["kind"] == "end";
        let is_ok = |(s, v): &(u64, serde_json::Value)| {
            *s == nodes_stream
                && v["kind"] == "delta"
                && v["nodes"].as_array().unwrap().iter().any(|n| n["id"] == node && n["status"] == "ok")
        };
        let end_at = writes.iter().position(|w| items_of(w).iter().any(is_end));
        let ok_at = writes.iter().position(|w| items_of(w).iter().any(is_ok));
        let (Some(end_at), Some(ok_at)) = (end_at, ok_at) else {
            panic!("{node}: no end of its log ({end_at:?}) or no ok ({ok_at:?}) in what the runner wrote")
        };
        assert_eq!(end_at, ok_at, "{node}: its log's end and its ok left in writes {end_at} and {ok_at}");
        let items = items_of(&writes[end_at]);
        let (end, ok) = (items.iter().position(is_end), items.iter().position(is_ok));
        assert!(end < ok, "{node}: its log ends before it is ok, in that write");
    }
    drop(h);
    let _ = child.kill().await;
}

#[tokio::test]
async fn undecodable_lines_are_skipped_and_a_wrong_protocol_version_is_refused() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (client_end, server_end) = tokio::io::duplex(1 << 16);
    let (sr, sw) = tokio::io::split(server_end);
    let server = tokio::spawn(odu::runner::serve(sr, sw, std::future::pending(), odu::runner::Host::Shared));
    let (cr, mut cw) = tokio::io::split(client_end);
    cw.write_all(b"Welcome to the host! (a banner)\n\n").await.unwrap();
    let hello = odu_proto::Message::request(1, "handshake", json!({"protocol": 999, "build": "other"}));
    cw.write_all(&hello.to_frame()).await.unwrap();
    let mut lines = BufReader::new(cr).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line()).await.unwrap().unwrap().unwrap();
    let reply =
        odu_proto::Message::parse(&odu_proto::decode_line(line.as_bytes()).unwrap().unwrap()).unwrap();
    match reply {
        odu_proto::Message::Response { result: Err(e), .. } => {
            assert_eq!(e.code, odu_proto::error_code::VERSION_MISMATCH);
            assert!(e.message.contains("999") && e.message.contains("other"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    tokio::time::timeout(DEADLINE, server).await.expect("the runner closes the link").unwrap().unwrap();
}

/// The runner binary, its stdout fed to a [`LaneHarness`].
async fn runner_binary_harness() -> (tokio::process::Child, LaneHarness) {
    let mut child = spawn_runner_binary(|_| {});
    let (mut feed, client_end) = tokio::io::duplex(1 << 20);
    let mut stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut feed).await;
    });
    let (cr, _) = tokio::io::split(client_end);
    let client = odu::link::client::Client::connect(cr, child.stdin.take().unwrap(), "test").await.unwrap();
    (child, LaneHarness::over(client).await)
}

#[tokio::test]
async fn the_runner_binary_never_runs_a_program_from_the_worktree_that_path_lacks() {
    use std::os::unix::fs::PermissionsExt;
    // A hostile checkout plants an executable under the name a node runs: with no such program
    // on PATH the node fails to start, and the planted one never runs.
    let ws = workspace("ok:\n    @echo fine\n");
    let planted = ws.path().join("odu-test-planted");
    std::fs::write(&planted, "#!/bin/sh\ntouch ran\n").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut child, mut h) = runner_binary_harness().await;
    let tasks = [
        task("ok", &[]),
        odu_core::lane::TaskSpec {
            id: "planted".into(),
            argv: vec!["odu-test-planted".into()],
            needs: vec![],
        },
    ];
    h.configure(ws.path(), &tasks).await.unwrap();
    let (ok_log, planted_log) = (h.subscribe_log("ok").await, h.subscribe_log("planted").await);
    h.until(|h| h.settled(3)).await;
    h.until(|h| [ok_log, planted_log].iter().all(|s| h.log_kinds(*s).last() == Some(&"end"))).await;
    assert_eq!(h.status("ok"), Some(Ok));
    assert_eq!(h.log_text(ok_log), "fine\n");
    assert!(matches!(h.status("planted"), Some(Errored | Failed)), "{:?}", h.statuses());
    assert!(
        h.log_text(planted_log).contains("odu-test-planted is not on PATH"),
        "{}",
        h.log_text(planted_log)
    );
    assert!(!ws.path().join("ran").exists(), "the planted program ran");
    drop(h);
    let _ = child.kill().await;
}

#[tokio::test]
async fn a_node_whose_stray_holds_its_output_ends_when_its_process_does() {
    // The recipe's process exits at once and leaves a stray holding the node's output open for
    // 30 s: the runner, which watches a node's exit only once it has run a while, still hears
    // it, ends the stray with the group and the node with them, well within the 30 s.
    let ws = workspace("held:\n    sleep 30 & echo $! > stray; echo leader-done\n");
    let (mut child, mut h) = runner_binary_harness().await;
    h.configure(ws.path(), &[task("held", &[])]).await.unwrap();
    let log = h.subscribe_log("held").await;
    h.until_within(Duration::from_secs(15), |h| h.settled(2) && h.log_kinds(log).last() == Some(&"end"))
        .await;
    assert_eq!(h.status("held"), Some(Ok));
    assert!(h.log_text(log).contains("leader-done"), "{}", h.log_text(log));
    let stray = read_pid(ws.path().join("stray")).await;
    assert!(wait_until_dead(stray, Duration::from_secs(10)).await, "the stray outlived its node");
    drop(h);
    let _ = child.kill().await;
}

#[tokio::test]
async fn a_busy_lane_reports_its_transitions_in_batches_and_its_end_at_once() {
    use odu::runner::linger::{IMMEDIATE_TICKS, REPORT_WINDOW};
    // Forty 5 ms nodes two at a time: a node ends every few milliseconds, many to a window.
    // The bound below holds however slow the machine is: a window lets out its first few
    // moments at once (with what ends within a millisecond of each) and one batch at its end;
    // the lane's start, before it is busy, and its end go as they happen.
    let names: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
    let jobs = 2;
    let ws = workspace("");
    let mut h = LaneHarness::start().await;
    let tasks: Vec<_> = names
        .iter()
        .map(|n| odu_core::lane::TaskSpec {
            id: n.clone(),
            argv: ["sleep", "0.005"].map(String::from).to_vec(),
            needs: vec![],
        })
        .collect();
    let began = std::time::Instant::now();
    let configured =
        h.configure_raw(json!({"name": "test", "workspace": ws.path(), "tasks": tasks, "jobs": jobs})).await;
    assert!(configured.is_ok(), "{configured:?}");
    h.until(|h| h.settled(names.len() + 1)).await;
    let windows = began.elapsed().as_millis() / REPORT_WINDOW.as_millis() + 2;
    assert!(h.state.values().all(|n| n.status == Ok), "{:?}", h.statuses());
    assert_topological_in_every_frame(&h);
    // Each node goes pending, running, ok: 80 transitions, and a frame each without batching.
    let deltas = h.frames.iter().filter(|f| matches!(f, NodesFrame::Delta { .. })).count() as u128;
    let bound = 2 + windows * (u128::from(IMMEDIATE_TICKS) * (1 + jobs) + 1);
    assert!(deltas <= bound, "{deltas} delta frames in {windows} windows for {} nodes", names.len());
    // The last node's ok is in the last frame: nothing of the lane's end was held back.
    let Some(NodesFrame::Delta { nodes, .. }) = h.frames.last() else { panic!("no delta last") };
    let last_ok = h.state.values().filter(|n| n.id != SETUP).max_by_key(|n| n.started_at).unwrap();
    assert!(nodes.iter().any(|n| n.id == last_ok.id && n.status == Ok), "{nodes:?}");
}
