//! The server's memory and its one start slot against clients that misbehave: many
//! connections trickling requests that never end, a checkout full of clients, and a
//! `run.start` whose client goes away while the run is being prepared.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, until};
use crate::repo::*;

const MIB: u64 = 1024;

fn socket(repo: &Repo) -> PathBuf {
    repo.path().join(".ci/odu.sock")
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Lets this process open `want` descriptors (the soft limit up to the hard one).
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit on a struct owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        assert!(limit.rlim_max >= want, "the hard limit on open files ({}) is below {want}", limit.rlim_max);
        if limit.rlim_cur < want {
            limit.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// The messages of the error frames a closed connection left to read.
fn last_words(stream: &mut UnixStream) -> Vec<String> {
    let mut bytes = Vec::new();
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.read_to_end(&mut bytes);
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| odu_proto::decode_line(line).ok().flatten())
        .filter_map(|frame| odu_proto::Message::parse(&frame).ok())
        .filter_map(|m| match m {
            odu_proto::Message::Response { result: Err(e), .. } => Some(e.message),
            _ => None,
        })
        .collect()
}

/// One attacker: a connection that sends the start of a line and never its end.
struct Trickler {
    stream: Option<UnixStream>,
}

impl Trickler {
    fn connect(path: &Path) -> Trickler {
        let stream = UnixStream::connect(path).expect("connect to the server");
        stream.set_nonblocking(true).unwrap();
        Trickler { stream: Some(stream) }
    }

    /// Sends a chunk of the endless line: the bytes sent, or the server's last words when it
    /// closed us.
    fn send(&mut self, chunk: &[u8]) -> Result<usize, Vec<String>> {
        let Some(stream) = self.stream.as_mut() else { return Ok(0) };
        match stream.write(chunk) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
            Err(_) => {
                let mut stream = self.stream.take().unwrap();
                Err(last_words(&mut stream))
            }
        }
    }
}

#[test]
fn a_thousand_endless_requests_keep_the_server_small_and_serving() {
    const CONNECTIONS: usize = 1000;
    raise_fd_limit(4 * CONNECTIONS as u64);
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let server = server_pid(repo.path()).expect("odu run started a server");
    let path = socket(&repo);
    let idle_rss = status_kib(server, "VmRSS");

    // Base64 characters and never a newline: each connection is one line that never ends.
    // Base64 characters and never a newline: each connection is one line that never ends, sent
    // a little at a time while they hold on, then as fast as the server takes it.
    let trickle = vec![b'A'; 512];
    let gush = vec![b'A'; 64 * 1024];
    let mut attackers: Vec<Trickler> = Vec::new();
    let mut closed = 0usize;
    let mut words: std::collections::BTreeMap<String, usize> = Default::default();
    let mut note = |said: Vec<String>, closed: &mut usize| {
        *closed += 1;
        for message in said {
            let kind = ["MiB limit", "buffers for unfinished requests", "to make room", "connection limit"]
                .into_iter()
                .find(|k| message.contains(k))
                .unwrap_or(message.as_str())
                .to_string();
            *words.entry(kind).or_default() += 1;
        }
    };
    let mut sent = 0u64;
    for _ in 0..CONNECTIONS {
        let mut attacker = Trickler::connect(&path);
        match attacker.send(&trickle) {
            Ok(n) => sent += n as u64,
            Err(said) => note(said, &mut closed),
        }
        attackers.push(attacker);
    }

    // While they hold on, someone asks for the status.
    let status = {
        let mut cmd = repo.odu(&["status"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let asked = Instant::now();
        let child = cmd.spawn().unwrap();
        std::thread::spawn(move || (child.wait_with_output().unwrap(), asked.elapsed()))
    };
    let started = Instant::now();
    let mut peak_rss = 0;
    let mut holding_on_at_answer = None;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the flood did not settle: {closed} closed, status answered: {}",
            status.is_finished()
        );
        let answered = status.is_finished();
        let chunk = if answered { &gush } else { &trickle };
        let mut open = 0;
        for attacker in &mut attackers {
            match attacker.send(chunk) {
                Ok(n) => sent += n as u64,
                Err(said) => note(said, &mut closed),
            }
            open += usize::from(attacker.stream.is_some());
        }
        if answered {
            holding_on_at_answer.get_or_insert(open);
        }
        peak_rss = peak_rss.max(status_kib(server, "VmRSS"));
        if open == 0 {
            break;
        }
    }
    let flood = started.elapsed();
    let holding_on = holding_on_at_answer.unwrap_or_default();
    let (answer, answered_in) = status.join().unwrap();
    let peak = status_kib(server, "VmHWM");
    drop(attackers);

    let settled = Instant::now();

    let mut rss = status_kib(server, "VmRSS");
    until("the server to give its memory back", DEADLINE, || {
        rss = status_kib(server, "VmRSS");
        rss <= 32 * MIB
    });
    eprintln!(
        "server RSS: idle {idle_rss} KiB, peak {peak} KiB (sampled {peak_rss} KiB) over a {flood:?} flood of {} MiB \
         from {CONNECTIONS} connections ({closed} closed by the server: {words:?}); \
         odu status answered in {answered_in:?} with {holding_on} still holding on; \
         {rss} KiB {:?} after they closed",
        sent >> 20,
        settled.elapsed()
    );
    assert_eq!(answer.status.code(), Some(0), "{}", stderr(&answer));
    assert!(stdout(&answer).contains("passed"), "{}", stdout(&answer));
    assert!(answered_in < DEADLINE, "odu status took {answered_in:?} during the flood");
    assert!(holding_on > 0, "the status was answered while the others held on");
    assert!(peak <= 128 * MIB, "the server reached {peak} KiB with {CONNECTIONS} endless requests");
    assert!(
        words.keys().any(|k| k == "MiB limit" || k == "buffers for unfinished requests"),
        "a connection over its share is told why it is closed: {words:?}"
    );
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stop_server(&repo);
}

#[test]
fn a_server_at_its_connection_limit_says_so_to_the_next_client() {
    raise_fd_limit(4 * odu::server::MAX_CLIENTS as u64);
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Followers that hold nothing unfinished: none can be asked to make room.
    let mut followers = Vec::new();
    for _ in 0..odu::server::MAX_CLIENTS {
        let mut stream = UnixStream::connect(socket(&repo)).unwrap();
        let hello = serde_json::json!({"protocol": odu_proto::PROTOCOL_VERSION, "build": "test"});
        stream.write_all(&odu_proto::Message::request(0, "handshake", hello).to_frame()).unwrap();
        followers.push(stream);
    }
    // Every follower is answered: the server has read each one's whole handshake, so none is
    // a silent client it may close to make room. (Counting the server's descriptors is not
    // enough: a follower taken in but not yet read is closed for the next client, and from then
    // on there is always room for one more.)
    for stream in &mut followers {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\n") {
            let n = stream.read(&mut byte).expect("the server answers every follower's handshake in time");
            assert_eq!(n, 1, "the server closed a follower: {}", String::from_utf8_lossy(&answer));
            answer.push(byte[0]);
        }
    }
    let refused = repo.run(&["status"]);
    // Every client turned away hears why (after trying for a while), whether or not its
    // handshake was sent in time.
    for refused in [refused, repo.run(&["status"])] {
        let err = stderr(&refused);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(err.contains("at its connection limit"), "{err}");
        assert!(!err.contains("could not start"), "no second server is tried: {err}");
    }
    drop(followers);
    until("the server to serve again", DEADLINE, || repo.run(&["status"]).status.success());
    stop_server(&repo);
}

/// A `just` that blocks in `--dump` until its gate (a FIFO) is written, after saying so.
struct SlowDump {
    dir: tempfile::TempDir,
    path: String,
}

impl SlowDump {
    fn new() -> SlowDump {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("gate");
        let c = std::ffi::CString::new(gate.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path in a directory this test owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let just = std::process::Command::new("sh").args(["-c", "command -v just"]).output().unwrap();
        let just = String::from_utf8_lossy(&just.stdout).trim().to_string();
        let script = format!(
            "#!/bin/sh\ncase \" $* \" in *\" --dump \"*) : > {dumping}; read _ < {gate};; esac\nexec {just} \"$@\"\n",
            dumping = dir.path().join("dumping").display(),
            gate = gate.display(),
        );
        let fakes = path_with(&[], &[("just", script.as_str())]);
        let path = format!("{}:{}", fakes.display(), std::env::var("PATH").unwrap());
        SlowDump { dir, path }
    }

    fn dumping(&self) -> bool {
        self.dir.path().join("dumping").exists()
    }

    /// Lets a blocked dump go on (and does nothing if none is blocked).
    fn release(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(mut gate) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.dir.path().join("gate"))
        {
            let _ = gate.write_all(b"go\n");
        }
    }
}

impl Drop for SlowDump {
    fn drop(&mut self) {
        self.release();
    }
}

/// Starts the checkout's server as `odu run` would (its output in `.ci/odu.serve.log`), so that
/// a run is prepared by the server: without one, `odu run` first checks the run itself.
fn start_server(repo: &Repo) -> std::process::Child {
    use std::os::unix::fs::DirBuilderExt;
    let ci = repo.path().join(".ci");
    std::fs::DirBuilder::new().mode(0o700).create(&ci).unwrap();
    let log = std::fs::File::create(ci.join("odu.serve.log")).unwrap();
    let server = repo.odu(&["serve"]).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    wait_for_socket(repo.path());
    server
}

fn serve_log(repo: &Repo) -> String {
    std::fs::read_to_string(repo.path().join(".ci/odu.serve.log")).unwrap_or_default()
}

#[test]
fn a_run_start_whose_client_went_away_during_preparation_never_starts() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let slow = SlowDump::new();
    let mut server = start_server(&repo);
    let mut first = repo
        .odu(&["run"])
        .env("PATH", &slow.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until("the first run's preparation to block in just --dump", DEADLINE, || slow.dumping());
    first.kill().unwrap();
    first.wait().unwrap();
    until("the server to abandon the first run.start", DEADLINE, || {
        serve_log(&repo).contains("a run.start was abandoned: its client went away")
    });
    let second = repo.run(&["run"]);
    assert_eq!(second.status.code(), Some(0), "the checkout is free: {}", stderr(&second));
    // The blocked preparation ends now, long after its client: it starts nothing.
    slow.release();
    until("the abandoned preparation to end", DEADLINE, || {
        serve_log(&repo).contains("finished preparing: nothing started")
    });
    let runs = repo.ledger();
    assert_eq!(runs.len(), 1, "only the second run was recorded: {runs:?}");
    assert_eq!(runs[0]["outcome"], "passed", "{runs:?}");
    assert!(server_pid(repo.path()).is_some());
    let again = repo.run(&["run"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(repo.ledger().len(), 2);
    stop_server(&repo);
    server.wait().unwrap();
}

#[test]
fn a_slow_preparation_refuses_other_runs_clearly_and_yields_to_supersede() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let slow = SlowDump::new();
    let mut server = start_server(&repo);
    let mut first = repo.odu(&["run"]);
    first.env("PATH", &slow.path);
    let first = Running::spawn(first);
    until("the first run's preparation to block in just --dump", DEADLINE, || slow.dumping());
    let plain = repo.run(&["run"]);
    assert_eq!(plain.status.code(), Some(1), "{}", stderr(&plain));
    let err = stderr(&plain);
    assert!(err.contains("another run is being started") && err.contains("--supersede"), "{err}");
    let replacing = repo.run(&["run", "--supersede"]);
    assert_eq!(replacing.status.code(), Some(0), "{}", stderr(&replacing));
    let (code, err) = first.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("replaced it before it began"), "{err}");
    slow.release();
    until("the abandoned preparation to end", DEADLINE, || {
        serve_log(&repo).contains("finished preparing: nothing started")
    });
    let runs = repo.ledger();
    assert_eq!(runs.len(), 1, "only the superseding run was recorded: {runs:?}");
    assert_eq!(runs[0]["outcome"], "passed", "{runs:?}");
    stop_server(&repo);
    server.wait().unwrap();
}
