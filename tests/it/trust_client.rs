//! A client trusts only the `.ci` it made and the server its own user runs: a `.ci` planted by
//! another user, committed by a repository (as a directory or a symlink) or left open to
//! everyone is refused before anything is sent or created. Also: a reader that goes away ends
//! a command quietly, and a checkout path too long for a unix socket address still works.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::harness::{DEADLINE, require_tool, until};
use crate::repo::{Repo, Running, local_platform, server_pid, stderr, stdout, stop_server};
use crate::stranger::{Stranger, open_to_all};

const TOKEN: &str = "ghp_odu_test_secret_never_sent_4f1c2a";

/// A server that is not odu: it records every byte a client sends (up to a line, or 5 s of
/// silence) and hangs up.
const FAKE_SERVER: &str = r#"
import os, socket, sys
path, record, ready = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
os.chmod(path, 0o777)
s.listen(8)
open(ready, "w").close()
while True:
    c, _ = s.accept()
    c.settimeout(5)
    data = b""
    try:
        while b"\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    with open(record, "ab") as f:
        f.write(data)
    c.close()
"#;

/// The stranger's fake server on `socket`, and the file holding what it received.
struct Fake {
    child: Child,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn start(stranger: &Stranger, socket: &Path) -> Fake {
        require_tool("python3");
        let dir = tempfile::tempdir().unwrap();
        open_to_all(dir.path());
        stranger.own(dir.path());
        let record = dir.path().join("received");
        let ready = dir.path().join("ready");
        let child = stranger
            .command("python3")
            .args(["-c", FAKE_SERVER])
            .arg(socket)
            .arg(&record)
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        until("the fake server to listen", DEADLINE, || ready.exists());
        Fake { child, record, _dir: dir }
    }

    fn received(&self) -> Vec<u8> {
        std::fs::read(&self.record).unwrap_or_default()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn red_repo() -> Repo {
    Repo::new("[metadata(\"ci\")]\nci: broken\nbroken:\n    exit 3\n")
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn assert_nothing_reached(fake: &Fake) {
    let received = fake.received();
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains(TOKEN), "the token reached the fake server");
    assert!(received.is_empty(), "the fake server received {} bytes: {text}", received.len());
}

#[test]
fn a_ci_dir_planted_by_another_user_is_refused_before_anything_is_sent() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let repo = red_repo();
    open_to_all(repo.path());
    let ci = repo.path().join(".ci");
    std::fs::create_dir(&ci).unwrap();
    stranger.own(&ci);
    std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake = Fake::start(&stranger, &ci.join("odu.sock"));

    let out = repo.odu(&["run"]).env("GH_TOKEN", TOKEN).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(".ci"), "the refusal names .ci: {err}");
    assert!(err.contains(&format!("uid {}", stranger.uid)), "it says whose .ci it is: {err}");
    assert!(err.contains("rm -rf .ci"), "it says what to do: {err}");
    assert_nothing_reached(&fake);
    // Never repaired: the stranger's directory is left as it was.
    assert_eq!(mode(&ci), 0o777);
    assert_eq!(std::fs::metadata(&ci).unwrap().uid(), stranger.uid);
    // The other clients refuse it too.
    for args in [&["status"][..], &["runs"], &["attach"], &["wait"], &["cancel"], &["logs", "-f", "broken"]] {
        let out = repo.odu(args).env("GH_TOKEN", TOKEN).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "odu {args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(".ci"), "odu {args:?}: {}", stderr(&out));
    }
    assert_nothing_reached(&fake);
    assert!(server_pid(repo.path()).is_none(), "no server was started");
}

#[test]
fn a_server_run_by_another_user_in_our_ci_dir_is_refused_by_its_uid() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let repo = red_repo();
    open_to_all(repo.path());
    let ci = repo.path().join(".ci");
    std::fs::create_dir(&ci).unwrap();
    // Open for a moment, long enough for the stranger to bind a socket in it, then private
    // again: the directory is ours and correct, the socket's peer is not us.
    std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake = Fake::start(&stranger, &ci.join("odu.sock"));
    std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o700)).unwrap();

    let out = repo.odu(&["run"]).env("GH_TOKEN", TOKEN).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("uid {}", stranger.uid)), "it names the peer's uid: {err}");
    assert!(err.contains("odu.sock"), "it names the socket: {err}");
    assert_nothing_reached(&fake);
    let out = repo.odu(&["status"]).env("GH_TOKEN", TOKEN).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_nothing_reached(&fake);
    assert!(server_pid(repo.path()).is_none(), "no server was started");
}

#[test]
fn a_ci_dir_open_to_everyone_is_refused_not_tightened() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let ci = repo.path().join(".ci");
    std::fs::create_dir(&ci).unwrap();
    std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = repo.run(&["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writable by other users"), "{err}");
    assert!(err.contains("rm -rf .ci"), "{err}");
    assert_eq!(mode(&ci), 0o777, "left as it was");
    assert_eq!(std::fs::read_dir(&ci).unwrap().count(), 0, "nothing was created in it");
    assert!(server_pid(repo.path()).is_none(), "no server was started");
}

#[test]
fn a_committed_ci_symlink_is_refused_and_its_target_untouched() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    let victim = tempfile::tempdir().unwrap();
    std::fs::set_permissions(victim.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(victim.path(), repo.path().join(".ci")).unwrap();
    repo.git(&["add", "-f", ".ci"]);
    repo.commit("a hostile .ci");
    for args in [&["run"][..], &["serve"], &["status"], &["rerun", "a"]] {
        let out = repo.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "odu {args:?}: {err}");
        assert!(err.contains(".ci") && err.contains("symlink"), "odu {args:?}: {err}");
    }
    assert_eq!(mode(victim.path()), 0o755, "the symlink's target was not chmodded");
    assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 0, "nothing was written through it");
    assert!(server_pid(repo.path()).is_none(), "no server was started");
}

#[test]
fn a_ci_dir_tracked_by_git_is_refused_before_anything_starts() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    true\n");
    // A CI system's own script in .ci is the repository's business; a run label's folder is
    // odu's, and committing one is refused.
    repo.write(".ci/run", "#!/bin/sh\n");
    let planted = format!(".ci/{}/runs/1.json", repo.sha7());
    repo.write(&planted, "{}\n");
    repo.git(&["add", "-f", ".ci/run", &planted]);
    repo.commit("commit .ci");
    for args in [&["run"][..], &["serve"], &["rerun", "a"]] {
        let out = repo.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "odu {args:?}: {err}");
        assert!(err.contains("tracked by git"), "odu {args:?}: {err}");
        assert!(err.contains("git rm -r --cached .ci/"), "odu {args:?}: {err}");
        assert!(err.contains(".gitignore"), "odu {args:?}: {err}");
    }
    let left: Vec<String> = std::fs::read_dir(repo.path().join(".ci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut left = left;
    left.sort();
    let label = planted.split('/').nth(1).unwrap().to_string();
    assert_eq!(left, [label, "run".to_string()], "nothing was created under .ci");
    assert!(server_pid(repo.path()).is_none(), "no server was started");
    // Untracked (and ignored), the same directory is fine.
    repo.git(&["rm", "-r", "-q", "--cached", &planted]);
    std::fs::remove_dir_all(repo.path().join(".ci").join(planted.split('/').nth(1).unwrap())).unwrap();
    repo.commit("untrack odu's files in .ci");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stop_server(&repo);
}

/// Runs `cmd` with a stdout whose reader is already gone; returns its exit code and stderr.
fn with_stdout_closed(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = cmd.stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    drop(cmd);
    finish(child)
}

fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("odu went on for {DEADLINE:?} after its reader went away");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), err)
}

fn assert_quiet(what: &str, (code, err): (Option<i32>, String)) {
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "odu {what}: {err}");
    assert_eq!(code, Some(0), "odu {what}: {err}");
    // `odu hosts` names its config on stderr before its table; nothing else says anything.
    let said: Vec<&str> = err.lines().filter(|l| !l.starts_with("odu: hosts from")).collect();
    assert!(said.is_empty(), "odu {what} said something: {err}");
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    echo hello from a\n");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let commands: &[&[&str]] = &[
        &["runs"],
        &["runs", "-o", "json"],
        &["status"],
        &["status", "-o", "json"],
        &["attach"],
        &["attach", "-o", "json"],
        &["logs", "a"],
        &["logs", "-f", "a"],
        &["dump"],
        &["graph"],
        &["hosts", "-o", "json"],
        &["hosts"],
    ];
    // With the server up, then with nothing serving (answers from the ledger).
    for args in commands.iter().chain([&["wait"][..]].iter()) {
        assert_quiet(&format!("{args:?} (served)"), with_stdout_closed(repo.odu(args)));
    }
    stop_server(&repo);
    for args in commands {
        assert_quiet(&format!("{args:?}"), with_stdout_closed(repo.odu(args)));
    }
}

#[test]
fn a_run_whose_reader_goes_away_still_ends_with_its_verdict() {
    for (justfile, verdict) in
        [("[metadata(\"ci\")]\nci: a\na:\n    true\n", 0), ("[metadata(\"ci\")]\nci: a\na:\n    exit 3\n", 1)]
    {
        let repo = Repo::new(justfile);
        for progress in [&["run", "--progress", "json"][..], &["run"]] {
            let (code, err) = with_stdout_closed(repo.odu(progress));
            assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
            assert_eq!(code, Some(verdict), "odu {progress:?} keeps its verdict: {err}");
        }
        // `odu run 2>&1 | head -1`: stderr's reader is gone too; a panic would exit 101.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = repo.odu(&["run"]);
        let status = cmd.stdout(writer.try_clone().unwrap()).stderr(writer).status().unwrap();
        assert_eq!(status.code(), Some(verdict), "odu run 2>&1 into a closed pipe");
        stop_server(&repo);
    }
}

#[test]
fn followers_leave_quietly_when_their_reader_goes_away() {
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci: forever\nforever:\n    @while true; do echo tick; sleep 0.05; done\n",
    );
    let mut run = Running::spawn(repo.odu(&["run", "--progress", "json"]));
    run.wait_for_line("\"running\"");
    // A reader that takes one line, then goes away.
    let mut child =
        repo.odu(&["logs", "-f", "forever"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first, "tick\n");
    assert_quiet("logs -f", finish(child));
    // Readers gone before the first line.
    for args in
        [&["attach"][..], &["attach", "-o", "json"], &["status"], &["status", "-o", "json"], &["runs"]]
    {
        assert_quiet(&format!("{args:?}"), with_stdout_closed(repo.odu(args)));
    }
    let out = repo.run(&["cancel"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, err) = run.finish();
    assert_eq!(code, Some(130), "{err}");
    stop_server(&repo);
}

#[test]
fn a_checkout_path_longer_than_a_socket_address_runs() {
    let dir = tempfile::Builder::new().prefix(&format!("odu-long-{}-", "x".repeat(200))).tempdir().unwrap();
    let repo = Repo { dir, home: tempfile::tempdir().unwrap() };
    assert!(repo.path().as_os_str().len() > 200);
    repo.git(&["init", "-q", "-b", "main"]);
    repo.write(".gitignore", ".ci/\n");
    repo.write("justfile", "[metadata(\"ci\")]\nci: a\na:\n    echo hello from far away\n");
    repo.commit("init");
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(server_pid(repo.path()).is_some(), "the server serves the long path");
    let status = repo.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert!(stdout(&status).contains("passed"), "{}", stdout(&status));
    for args in [&["logs", "a"][..], &["logs", "-f", "a"]] {
        let logs = repo.run(args);
        assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
        assert!(stdout(&logs).contains("hello from far away"), "{}", stdout(&logs));
    }
    assert!(repo.log("a").contains("hello from far away"));
    let runs = repo.ledger();
    assert_eq!(runs[0]["outcome"], "passed");
    assert_eq!(runs[0]["lanes"][0], local_platform());
    stop_server(&repo);
}
