//! The server's life apart from any run: `odu serve`, the `runs` and `header` cells, history,
//! crash recovery, idle exit, and clients that misbehave or never read.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, gone, until, wait_for_pid};
use crate::repo::*;

fn socket(repo: &Repo) -> PathBuf {
    repo.path().join(".ci/odu.sock")
}

/// A number a `/proc/<pid>/status` file gives for `field` (`VmHWM:`, in kB, and the like).
fn status_number(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status_number(&status, "VmHWM:").unwrap()
}

fn statuses(value: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    value["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string()))
        .collect()
}

/// A node's status in the first run's record on disk, as the server last saved it.
fn recorded(repo: &Repo, node: &str) -> String {
    let path = repo.path().join(format!(".ci/{}/runs/1.json", repo.sha7()));
    let Ok(text) = std::fs::read(path) else { return String::new() };
    let Ok(record) = serde_json::from_slice::<serde_json::Value>(&text) else { return String::new() };
    record["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == node))
        .and_then(|n| n["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Connects raw and shakes hands; returns the line reader and the writer.
fn raw_client(repo: &Repo) -> (BufReader<UnixStream>, UnixStream) {
    let stream = UnixStream::connect(socket(repo)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let hello = serde_json::json!({"protocol": odu_proto::PROTOCOL_VERSION, "build": "test"});
    writer.write_all(&odu_proto::Message::request(0, "handshake", hello).to_frame()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    (reader, writer)
}

fn reply(reader: &mut BufReader<UnixStream>) -> odu_proto::Message {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    odu_proto::Message::parse(&odu_proto::decode_line(line.trim_end().as_bytes()).unwrap().unwrap()).unwrap()
}

#[test]
fn sigkill_of_the_server_mid_run_keeps_the_trail_and_the_next_server_closes_the_run() {
    let gate = tempfile::tempdir().unwrap();
    let pidfile = gate.path().join("node.pid");
    let justfile = format!(
        "[metadata(\"ci\")]\nci: slow\nslow:\n    @echo before-the-crash; echo $$ > {}; exec sleep 60\nfast:\n    true\n",
        pidfile.display()
    );
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"slow@{p}\""));
    let node = wait_for_pid(&pidfile);
    let log = repo.path().join(format!(".ci/{}/{p}/slow.log", repo.sha7()));
    until("the log on disk", DEADLINE, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("before-the-crash"))
    });
    until("the record to show the node running", DEADLINE, || {
        recorded(&repo, &format!("slow@{p}")) == "running"
    });
    // The running record names the snapshot's private folder, which the server's death leaves.
    let record = repo.path().join(format!(".ci/{}/runs/1.json", repo.sha7()));
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    let snapshot =
        std::path::PathBuf::from(record["snapshot"].as_str().expect("the record names its snapshot"));
    assert!(snapshot.join(repo.sha7()).join("justfile").is_file(), "{}", snapshot.display());
    let server = server_pid(repo.path()).expect("odu run started a server");
    // SAFETY: killing the server this test started.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let (code, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the server went away"), "{err}");
    until("the runner to kill the node's group", DEADLINE, || gone(node));
    assert!(snapshot.is_dir(), "nothing removed the dead server's snapshot yet");
    // With nothing serving, `runs` closes the record, and removes the snapshot git forgets.
    let runs = json_of(&repo.run(&["runs", "-o", "json"]));
    assert_eq!(runs[0]["outcome"], "incomplete", "{runs}");
    assert!(!snapshot.exists(), "{} is left", snapshot.display());
    let worktrees = repo.git(&["worktree", "list", "--porcelain"]);
    assert_eq!(worktrees.matches("worktree ").count(), 1, "{worktrees}");
    let status = json_of(&repo.run(&["status", "-o", "json"]));
    assert_eq!(status["nodes"][1]["status"], "errored", "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("before-the-crash"), "the trail kept what was written: {text}");
    assert!(text.contains("[odu] log truncated"), "{text}");
    // A new run starts a new server, and works.
    let again = repo.run(&["run", "--root", "fast"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let runs = json_of(&repo.run(&["runs", "-o", "json"]));
    assert_eq!(runs[0]["outcome"], "passed");
    assert_eq!(runs[1]["outcome"], "incomplete");
    // A run that ended names no snapshot: its server removes it.
    let ended =
        std::fs::read_to_string(repo.path().join(format!(".ci/{}/runs/2.json", repo.sha7()))).unwrap();
    assert!(!ended.contains("\"snapshot\""), "{ended}");
    stop_server(&repo);
}

/// A run whose one node, `recipe`, sleeps a minute, seen running in the run's record (so its
/// progress write is done): the checkout, the `odu run` following it, and the server's pid.
fn run_sleeping(recipe: &str) -> (Repo, Running, i32) {
    let repo = Repo::new(&format!("[metadata(\"ci\")]\nci: {recipe}\n{recipe}:\n    sleep 60\n"));
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"{recipe}@{p}\""));
    until("the record to show the node running", DEADLINE, || {
        recorded(&repo, &format!("{recipe}@{p}")) == "running"
    });
    let server = server_pid(repo.path()).expect("a server");
    (repo, run, server)
}

/// How often a process's threads have gone to sleep (each a wait that something ended). A
/// thread that exits takes its count along, so a later sum can be the smaller.
fn sleeps(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| status_number(&status, "voluntary_ctxt_switches:"))
        .sum()
}

/// While a run's only node sleeps, its server has only heartbeats and the idle check to wake
/// for: the record's progress write is due at a deadline set by the change it lacks, never
/// looked for on a polling tick (which woke every thread of it eight times a second). The
/// run's own client, printing NDJSON, has nothing to do at all until the run changes.
#[test]
fn a_run_waiting_on_a_sleeping_node_leaves_its_server_and_client_asleep() {
    // The node's start is in the record: the one progress write it called for is behind us.
    let (repo, run, server) = run_sleeping("nap");
    let client = run.child.id() as i32;
    let before = (sleeps(server), sleeps(client));
    let started = Instant::now();
    let window = Duration::from_secs(3);
    while started.elapsed() < window {
        std::thread::park_timeout(window - started.elapsed());
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_second = sleeps(server).saturating_sub(before.0) as f64 / seconds;
    assert!(per_second <= 8.0, "the server woke {per_second:.1} times a second while the node slept");
    let per_second = sleeps(client).saturating_sub(before.1) as f64 / seconds;
    assert!(per_second <= 1.0, "odu run woke {per_second:.1} times a second while the node slept");
    let _ = repo.run(&["cancel"]);
    let _ = run.finish();
    stop_server(&repo);
}

#[test]
fn a_new_server_closes_a_run_whose_server_died() {
    let (repo, run, server) = run_sleeping("slow");
    let p = local_platform();
    let record = repo.path().join(format!(".ci/{}/runs/1.json", repo.sha7()));
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    let snapshot =
        std::path::PathBuf::from(record["snapshot"].as_str().expect("the record names its snapshot"));
    // SAFETY: killing the server this test started.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let _ = run.finish();
    until("the old server to go", DEADLINE, || gone(server));
    assert!(snapshot.is_dir(), "the dead server left its snapshot");
    let serve = Running::spawn(repo.odu(&["serve"]));
    wait_for_socket(repo.path());
    let status = json_of(&repo.run(&["status", "-o", "json"]));
    assert_eq!(status["live"], false);
    assert_eq!(status["outcome"], "incomplete", "{status}");
    assert_eq!(statuses(&status)[&format!("slow@{p}")], "errored");
    // The new server closed the run before it answered a client, and removed the snapshot.
    assert!(!snapshot.exists(), "{} is left", snapshot.display());
    serve.signal(libc::SIGTERM);
    let (code, err) = serve.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("cut short by a server that died"), "{err}");
    assert!(!socket(&repo).exists(), "a server that stops removes its socket");
}

#[test]
fn two_followers_see_identical_bytes() {
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    let justfile = format!(
        "[metadata(\"ci\")]\nci: chatty\nchatty:\n    @echo go; for i in $(seq 300); do test -f {} && break; sleep 0.05; done; seq 1 200000\n",
        release.display()
    );
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"chatty@{p}\""));
    let follow = || {
        repo.odu(&["logs", "-f", "chatty"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (follow(), follow());
    std::fs::write(&release, "").unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let (code, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    let trail = std::fs::read(repo.path().join(format!(".ci/{}/{p}/chatty.log", repo.sha7()))).unwrap();
    assert!(a.stdout == b.stdout, "the two followers differ");
    assert!(
        a.stdout == trail,
        "a follower differs from the trail ({} vs {} bytes)",
        a.stdout.len(),
        trail.len()
    );
    assert!(String::from_utf8_lossy(&a.stdout).ends_with("199999\n200000\n"));
    stop_server(&repo);
}

#[test]
fn a_hundred_clients_that_never_read_slow_nothing_and_cost_bounded_memory() {
    let gate = tempfile::tempdir().unwrap();
    let release = gate.path().join("release");
    // 16 MiB of output once released: far more than 100 clients may hold.
    let justfile = format!(
        "[metadata(\"ci\")]\nci: loud\nloud:\n    @echo go; for i in $(seq 300); do test -f {} && break; sleep 0.05; done; yes 0123456789abcdef0123456789abcde | head -c 16777216\n",
        release.display()
    );
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"loud@{p}\""));
    let server = server_pid(repo.path()).expect("a server");
    let mut clients = Vec::new();
    for i in 0..100 {
        let (reader, mut writer) = raw_client(&repo);
        let nodes = odu_proto::Message::request(1, "nodes.get", serde_json::json!({}));
        let log = odu_proto::Message::request(2, "nodeLog.get", serde_json::json!({"id": "loud"}));
        let header = odu_proto::Message::request(3, "header.get", serde_json::json!({}));
        writer.write_all(&nodes.to_frame()).unwrap();
        if i % 2 == 0 {
            writer.write_all(&log.to_frame()).unwrap();
        }
        writer.write_all(&header.to_frame()).unwrap();
        // Never read again.
        clients.push((reader, writer));
    }
    let before = rss_kib(server);
    let started = Instant::now();
    std::fs::write(&release, "").unwrap();
    let (code, err) = run.finish();
    let wall = started.elapsed();
    assert_eq!(code, Some(0), "{err}");
    assert!(wall < Duration::from_secs(15), "the run took {wall:?} with 100 stuck clients");
    let after = rss_kib(server);
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "the server grew from {before} KiB to {after} KiB with 100 clients that never read"
    );
    let size =
        std::fs::metadata(repo.path().join(format!(".ci/{}/{p}/loud.log", repo.sha7()))).unwrap().len();
    assert_eq!(size, 3 + 16777216, "the trail is whole");
    // Everyone else is still served.
    let status = json_of(&repo.run(&["status", "-o", "json"]));
    assert_eq!(status["outcome"], "passed");
    drop(clients);
    stop_server(&repo);
}

#[test]
fn another_protocol_version_and_an_oversized_frame_are_refused_and_the_server_goes_on() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let serve = Running::spawn(repo.odu(&["serve"]));
    wait_for_socket(repo.path());
    // A client of another protocol version.
    let stream = UnixStream::connect(socket(&repo)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let hello = serde_json::json!({"protocol": 999, "build": "odu 9.9.9"});
    writer.write_all(&odu_proto::Message::request(0, "handshake", hello).to_frame()).unwrap();
    let mut reader = BufReader::new(stream);
    match reply(&mut reader) {
        odu_proto::Message::Response { result: Err(e), .. } => {
            assert_eq!(e.code, odu_proto::error_code::VERSION_MISMATCH);
            assert!(e.message.contains("odu 9.9.9") && e.message.contains("999"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).unwrap_or(0), 0, "the link closes after a refusal");
    // A request over the socket's cap (the runner link's 16 MiB is far more than clients need).
    let (mut reader, mut writer) = raw_client(&repo);
    let huge = vec![b'A'; odu::server::MAX_REQUEST / 3 * 4 + 1024];
    let _ = writer.write_all(&huge);
    let _ = writer.write_all(b"\n");
    match reply(&mut reader) {
        odu_proto::Message::Response { result: Err(e), .. } => {
            assert!(e.message.contains("exceeds the 1 MiB limit"), "{}", e.message)
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    // An unknown method, then every other client is still served.
    let (mut reader, mut writer) = raw_client(&repo);
    writer.write_all(&odu_proto::Message::request(5, "nodes.put", serde_json::json!({})).to_frame()).unwrap();
    match reply(&mut reader) {
        odu_proto::Message::Response { result: Err(e), .. } => {
            assert_eq!(e.code, odu_proto::error_code::METHOD_NOT_FOUND)
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish().0, Some(0));
}

#[test]
fn idle_attach_with_and_without_a_server() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a b\na:\n    true\nb:\n    true\n");
    let p = local_platform();
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let finals = |out: &std::process::Output| final_statuses(&progress(out));
    // An ended run is told from its record, and every node in it ran: each is heard start
    // (with no exit code yet), then end.
    let each_started = |out: &std::process::Output| {
        let mut heard: std::collections::BTreeMap<String, Vec<(String, Option<i64>)>> = Default::default();
        for line in progress(out) {
            let said = (line["status"].as_str().unwrap().to_string(), line["exit_code"].as_i64());
            heard.entry(line["node"].as_str().unwrap().to_string()).or_default().push(said);
        }
        for (node, said) in &heard {
            assert_eq!(said, &[("running".into(), None), ("success".into(), Some(0))], "{node}");
        }
        assert_eq!(heard.len(), 3, "{heard:?}");
    };
    // The auto-started server is still up: it serves the run as it ended.
    assert!(server_pid(repo.path()).is_some());
    let served = repo.run(&["attach", "-o", "json"]);
    assert_eq!(served.status.code(), Some(0), "{}", stderr(&served));
    let expected: std::collections::BTreeMap<String, String> = [
        (format!("_ci-setup@{p}"), "success".to_string()),
        (format!("a@{p}"), "success".to_string()),
        (format!("b@{p}"), "success".to_string()),
    ]
    .into();
    assert_eq!(finals(&served), expected);
    each_started(&served);
    stop_server(&repo);
    assert!(!socket(&repo).exists());
    let idle = repo.run(&["attach", "-o", "json"]);
    assert_eq!(idle.status.code(), Some(0), "{}", stderr(&idle));
    assert_eq!(finals(&idle), expected);
    each_started(&idle);
    let status = repo.run(&["status"]);
    assert_eq!(status.status.code(), Some(0));
    assert!(stdout(&status).contains("passed"), "{}", stdout(&status));
}

#[test]
fn a_server_exits_when_idle_and_when_its_socket_is_removed() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let serve = Running::spawn(repo.odu(&["serve", "--idle-timeout", "1s"]));
    wait_for_socket(repo.path());
    let (code, err) = serve.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("idle"), "{err}");
    assert!(!socket(&repo).exists());
    let serve = Running::spawn(repo.odu(&["serve"]));
    wait_for_socket(repo.path());
    std::fs::remove_file(socket(&repo)).unwrap();
    let (code, err) = serve.finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("socket was removed"), "{err}");
    // One server per checkout: a second one is refused while the first lives.
    let first = Running::spawn(repo.odu(&["serve"]));
    wait_for_socket(repo.path());
    let second = repo.run(&["serve"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(stderr(&second).contains("already serves this checkout"), "{}", stderr(&second));
    first.signal(libc::SIGTERM);
    assert_eq!(first.finish().0, Some(0));
}

#[test]
fn a_rerun_of_a_finished_run_starts_the_next_seq_and_history_stays() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a b\na:\n    true\nb:\n    true\n");
    let p = local_platform();
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = format!("{}#1", repo.sha7());
    let second = format!("{}#2", repo.sha7());
    let rerun = repo.run(&["rerun", &format!("a@{p}")]);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert!(stderr(&rerun).contains(&format!("started run {second}")), "{}", stderr(&rerun));
    let wait = repo.run(&["wait", "--settle", "--run", &second]);
    let verdict = json_of(&wait);
    assert_eq!(verdict["passed"], true, "{verdict}");
    let newer = json_of(&repo.run(&["status", "-o", "json", "--run", &second]));
    assert_eq!(
        statuses(&newer).keys().cloned().collect::<Vec<_>>(),
        vec![format!("_ci-setup@{p}"), format!("a@{p}")]
    );
    let older = json_of(&repo.run(&["status", "-o", "json", "--run", &first]));
    assert_eq!(statuses(&older).len(), 3, "the first run is unchanged: {older}");
    let unknown = repo.run(&["status", "--run", "0000000#9"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no run \"0000000#9\""), "{}", stderr(&unknown));
    let runs = json_of(&repo.run(&["runs", "-o", "json"]));
    assert_eq!(runs.as_array().unwrap().len(), 2);
    stop_server(&repo);
}

#[test]
fn the_runs_and_header_cells_follow_a_run() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let serve = Running::spawn(repo.odu(&["serve"]));
    wait_for_socket(repo.path());
    let (mut reader, mut writer) = raw_client(&repo);
    writer.write_all(&odu_proto::Message::request(1, "runs.get", serde_json::json!({})).to_frame()).unwrap();
    let item = |m: odu_proto::Message| match m {
        odu_proto::Message::Notification { params, .. } => params["value"].clone(),
        other => panic!("expected an item, got {other:?}"),
    };
    let first = item(reply(&mut reader));
    assert_eq!(first["kind"], "snapshot");
    assert_eq!(first["runs"], serde_json::json!([]));
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = format!("{}#1", repo.sha7());
    let started = item(reply(&mut reader));
    assert_eq!(
        (started["kind"].as_str(), started["runs"][0]["run"].as_str()),
        (Some("delta"), Some(run.as_str()))
    );
    assert_eq!(started["runs"][0]["outcome"], "running");
    let ended = item(reply(&mut reader));
    assert_eq!(ended["runs"][0]["outcome"], "passed", "{ended}");
    writer
        .write_all(&odu_proto::Message::request(2, "header.get", serde_json::json!({"run": run})).to_frame())
        .unwrap();
    let header = item(reply(&mut reader));
    assert_eq!(header["header"]["phase"], "ended");
    assert_eq!(header["header"]["outcome"], "passed");
    assert_eq!(header["header"]["lanes"][0]["platform"], local_platform());
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish().0, Some(0));
}

/// Waits (up to the deadline) for the read end of a pipe to have a byte or its end; what one
/// read then returns.
fn read_with_deadline(fd: &std::os::fd::OwnedFd) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll and read on a descriptor this test owns, into buffers it owns.
    unsafe {
        let ready = libc::poll(&mut poll, 1, DEADLINE.as_millis() as i32);
        assert_eq!(ready, 1, "nothing on the pipe within {DEADLINE:?}");
        let mut buf = [0u8; 16];
        let n = libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        assert!(n >= 0, "read failed");
        buf[..n as usize].to_vec()
    }
}

#[test]
fn a_server_says_on_its_ready_pipe_once_its_socket_takes_clients_and_hands_the_pipe_to_no_one() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    ls -l /proc/$$/fd/ /proc/$PPID/fd/\n");
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array; both descriptors are new and owned below.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pipe_inode = std::fs::File::from(read_end.try_clone().unwrap()).metadata().unwrap().ino();
    let mut cmd = repo.odu(&["serve", "--ready-fd", &write_end.as_raw_fd().to_string()]);
    let inherit = write_end.as_raw_fd();
    // SAFETY: fcntl is async-signal-safe; only the server keeps the write end through exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(inherit, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let serve = Running::spawn(cmd);
    drop(write_end);
    assert_eq!(read_with_deadline(&read_end), b"1", "the ready byte");
    // Ready means ready: the very first connection is taken.
    UnixStream::connect(socket(&repo)).expect("the socket takes a client once the server said so");
    // The server closed its end, and nothing it started kept one: the pipe has ended.
    assert_eq!(read_with_deadline(&read_end), b"", "the pipe ends with the server's copy");
    let run = repo.run(&["run", "--no-post"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let log = std::fs::read_to_string(repo.path().join(format!(".ci/{}/x86_64-linux/a.log", repo.sha7())))
        .unwrap_or_default();
    assert!(log.contains("/fd/"), "the node listed its descriptors: {log}");
    assert!(!log.contains(&format!("pipe:[{pipe_inode}]")), "a node inherited the ready pipe: {log}");
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish().0, Some(0));
    // A number that names no pipe is left alone, and the server serves.
    let serve = Running::spawn(repo.odu(&["serve", "--ready-fd", "1"]));
    wait_for_socket(repo.path());
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish().0, Some(0));
}

#[test]
fn a_server_started_by_a_run_asks_no_tool_what_its_client_just_asked() {
    // The client's check asked git for the tree's state, and just for its version and the dump
    // (what git tracks under .ci it read from the index itself, and the origin from the config
    // files unless the machine's config sends it to git); the server it starts is handed those
    // answers and asks nothing again for its first run (the tree's state is taken only while a
    // moment old), then checks the snapshot out. (The checkout's untracked cache is set, one of
    // the settings under which only git checks the tree's state.)
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    repo.git(&["config", "core.untrackedCache", "false"]);
    let out = repo.odu(&["run", "--no-post"]).env("ODU_LOG", "odu::tool=debug").output().unwrap();
    let client = stderr(&out);
    assert!(out.status.success(), "{client}");
    let starts = |text: &str, what: &str| {
        text.lines().filter(|l| l.contains("starting a tool") && l.contains(what)).count()
    };
    for asked in ["status", "--version", "--dump"] {
        assert_eq!(starts(&client, asked), 1, "the client asked {asked} once: {client}");
    }
    assert_eq!(starts(&client, "ls-files"), 0, "the index was read in process: {client}");
    assert!(starts(&client, "get-url") <= 1, "the origin was asked at most once: {client}");
    let served = std::fs::read_to_string(repo.path().join(".ci/odu.serve.log")).unwrap();
    for asked in ["ls-files", "get-url", "status", "--version", "--dump"] {
        assert_eq!(starts(&served, asked), 0, "the server asked {asked} again: {served}");
    }
    // A justfile changed after the server started is dumped anew: what the client handed over
    // was made from other bytes. The tree's state is the server's own from its second run on.
    repo.write("justfile", "[metadata(\"ci\")]\nci: b\nb:\n    true\n");
    repo.commit("another recipe");
    let out = repo.run(&["run", "--no-post"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let served = std::fs::read_to_string(repo.path().join(".ci/odu.serve.log")).unwrap();
    assert_eq!(starts(&served, "--dump"), 1, "the new justfile was dumped: {served}");
    assert_eq!(starts(&served, "status"), 1, "the second run's tree was checked anew: {served}");
    stop_server(&repo);
}

#[test]
fn a_plain_clean_checkout_is_checked_without_git_status_and_a_dirty_one_by_git() {
    // The client's check and its server's later runs read a plain clean tree's state in
    // process; a tree found dirty is left to git, which names what changed.
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let out = repo.odu(&["run", "--no-post"]).env("ODU_LOG", "odu::tool=debug").output().unwrap();
    let client = stderr(&out);
    assert!(out.status.success(), "{client}");
    let statuses =
        |text: &str| text.lines().filter(|l| l.contains("starting a tool") && l.contains("status")).count();
    assert_eq!(statuses(&client), 0, "the client started git status: {client}");
    let out = repo.run(&["run", "--no-post"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let served = || std::fs::read_to_string(repo.path().join(".ci/odu.serve.log")).unwrap();
    assert_eq!(statuses(&served()), 0, "the server started git status: {}", served());
    repo.write("untracked.txt", "x");
    let out = repo.run(&["run", "--no-post"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("working tree is dirty (1 path changed: untracked.txt)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(statuses(&served()), 1, "git named the dirty path: {}", served());
    stop_server(&repo);
}

#[test]
fn a_server_stopped_as_its_run_ends_removes_the_worktree_before_it_exits() {
    // Clients hear that a run ended while its worktree may still be going (here, the node
    // leaves 12,000 files in it, which take longer to remove than a stopping server waits for
    // its blocking work); a server stopped right then finishes that before it exits.
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci:\n    mkdir junk && cd junk && seq 12000 | xargs touch && test -f 12000\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = repo.odu(&["run", "--no-post"]).env("TMPDIR", tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stop_server(&repo);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("odu-"))
        .collect();
    assert!(left.is_empty(), "the stopped server left {left:?} in its TMPDIR");
    let listed = repo.git(&["worktree", "list", "--porcelain"]).matches("worktree ").count();
    assert_eq!(listed, 1, "git knows of a worktree besides the checkout");
    let admin = repo.path().join(".git/worktrees");
    assert!(!admin.read_dir().is_ok_and(|mut d| d.next().is_some()), "{} is not empty", admin.display());
}
