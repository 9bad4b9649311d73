//! Configuration and names odu turns into paths: host pins and hosts files that try to write
//! outside the checkout, hosts files that are not files, localhost lanes under another
//! platform's name, recipe names odu reserves, node ids too long to be file names, and hosts
//! files with typos, duplicates and wrong types.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::DEADLINE;
use crate::lab::output_within;
use crate::repo::*;

const OK: &str = "[metadata(\"ci\")]\nci: a\na:\n    echo hello from a\n";

/// Exit 1 and an `odu:` line holding every one of `needles`.
fn refused_with(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {err}");
    let line = err.lines().find(|l| l.starts_with("odu: ") && needles.iter().all(|n| l.contains(n)));
    assert!(line.is_some(), "no `odu:` line containing all of {needles:?} in: {err}");
}

fn green(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "expected a green run; stderr: {}", stderr(out));
}

fn hosts_file(repo: &Repo, text: &str) -> PathBuf {
    let path = repo.home.path().join("hosts.json");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_with_hosts(repo: &Repo, hosts: &Path) -> Output {
    output_within(repo.odu(&["run"]).env("ODU_HOSTS", hosts), DEADLINE)
}

/// A platform that is not this machine's.
fn other_platform() -> &'static str {
    if local_platform().starts_with("x86_64") { "aarch64-linux" } else { "x86_64-linux" }
}

#[test]
fn a_host_pin_naming_a_path_writes_nothing_outside_the_checkout() {
    let repo = Repo::new(OK);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("a.log");
    std::fs::write(&victim, "precious\n").unwrap();
    // An absolute "platform" once made the lane's log folder that directory.
    let pin = format!("{}=localhost", outside.path().display());
    let out = output_within(&mut repo.odu(&["run", "--host", &pin]), DEADLINE);
    refused_with(&out, &[&format!("{:?} is not a platform", outside.path().display().to_string())]);
    // And a relative one climbed out of `.ci/<sha7>/`.
    let climb = format!("../../../{}", outside.path().file_name().unwrap().to_str().unwrap());
    let relative = format!("{climb}=localhost");
    let out = output_within(&mut repo.odu(&["run", "--host", &relative]), DEADLINE);
    refused_with(&out, &[&format!("{climb:?} is not a platform"), "--host"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1, "nothing new beside the victim");
    assert!(repo.ledger().is_empty(), "a refused run left a record");
    stop_server(&repo);
}

#[test]
fn a_fifo_dev_zero_or_a_huge_file_as_hosts_config_is_refused_at_once() {
    let repo = Repo::new(OK);
    let fifo = repo.home.path().join("hosts.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let huge = repo.home.path().join("huge.json");
    let mut text = String::from("{\"x\": \"");
    text.push_str(&"y".repeat(2 << 20));
    text.push_str("\"}");
    std::fs::write(&huge, text).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&fifo, "is a FIFO, not a regular file"),
        (Path::new("/dev/zero"), "is a character device, not a regular file"),
        (repo.home.path(), "is a directory, not a regular file"),
        (&huge, "is over the 1 MiB a hosts config may hold"),
    ];
    for (path, what) in cases {
        // A server that blocks reading the file never answers: the deadline fails the test.
        let out = run_with_hosts(&repo, path);
        refused_with(&out, &[&path.display().to_string(), what, "ODU_HOSTS"]);
        // The server is not wedged: the next run goes through.
        green(&output_within(&mut repo.odu(&["run"]), DEADLINE));
    }
    assert_eq!(repo.ledger().len(), 4, "only the green runs are recorded");
    stop_server(&repo);
}

#[test]
fn a_recipe_named_like_the_setup_node_is_refused_before_anything_runs() {
    let marker = tempfile::tempdir().unwrap();
    let ran = marker.path().join("ran");
    let repo = Repo::new(&format!(
        "[metadata(\"ci\")]\nci: _ci-setup a\n_ci-setup:\n    touch {ran}\na:\n    touch {ran}\n",
        ran = ran.display()
    ));
    let out = output_within(&mut repo.odu(&["run"]), DEADLINE);
    refused_with(&out, &["\"_ci-setup\"", "rename"]);
    let out = output_within(&mut repo.odu(&["dump"]), DEADLINE);
    refused_with(&out, &["\"_ci-setup\"", "rename"]);
    assert!(stdout(&out).is_empty(), "no plan is printed: {}", stdout(&out));
    assert!(!ran.exists(), "nothing ran");
    assert!(repo.ledger().is_empty(), "a refused run left a record");
    stop_server(&repo);
}

#[test]
fn a_localhost_lane_must_be_this_machines_platform() {
    let repo = Repo::new(OK);
    let here = local_platform();
    let there = other_platform();
    let hosts = hosts_file(&repo, &format!("{{\"{there}\": \"localhost\"}}"));
    let out = run_with_hosts(&repo, &hosts);
    refused_with(
        &out,
        &[&hosts.display().to_string(), there, &format!("this machine is {here}"), "ssh host"],
    );
    // A declared platform cannot relabel localhost either.
    let hosts =
        hosts_file(&repo, &format!("{{\"{here}\": {{\"host\": \"localhost\", \"platform\": \"{there}\"}}}}"));
    let out = run_with_hosts(&repo, &hosts);
    refused_with(&out, &[there, &format!("this machine is {here}")]);
    let out = output_within(&mut repo.odu(&["run", "--host", &format!("{there}=127.0.0.1")]), DEADLINE);
    refused_with(
        &out,
        &[&format!("--host {there}=127.0.0.1"), &format!("this machine is {here}"), "ssh host"],
    );
    assert!(repo.ledger().is_empty(), "a refused run left a record");
    // This machine's own platform still runs on localhost.
    green(&output_within(&mut repo.odu(&["run", "--host", &format!("{here}=localhost")]), DEADLINE));
    stop_server(&repo);
}

#[test]
fn a_dependency_argument_too_long_for_a_file_name_still_runs_and_its_log_is_found() {
    // Two 300-byte arguments that differ only at their end: two nodes, two logs.
    let one = format!("{}1", "x".repeat(299));
    let two = format!("{}2", "x".repeat(299));
    let repo = Repo::new(&format!(
        "[metadata(\"ci\")]\nci: (a \"{one}\") (a \"{two}\")\na p:\n    @echo got {{{{p}}}}\n"
    ));
    let out = output_within(&mut repo.odu(&["run"]), DEADLINE);
    green(&out);
    for arg in [&one, &two] {
        let logs = repo.run(&["logs", &format!("a({arg})@{}", local_platform())]);
        assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
        assert_eq!(stdout(&logs), format!("got {arg}\n"));
    }
    let lane = repo.path().join(format!(".ci/{}/{}", repo.sha7(), local_platform()));
    for entry in std::fs::read_dir(&lane).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(name.len() <= 255, "{name:?} is longer than a file name may be");
    }
    stop_server(&repo);
}

#[test]
fn a_lane_whose_logs_cannot_be_created_says_why_on_the_client() {
    let repo = Repo::new(OK);
    let lane = repo.path().join(format!(".ci/{}/{}", repo.sha7(), local_platform()));
    // A folder where a node's log goes: the lane cannot claim that log.
    std::fs::create_dir_all(lane.join("a.log")).unwrap();
    let out = output_within(&mut repo.odu(&["run"]), DEADLINE);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("odu: lane ") && l.contains("a.log") && l.contains("cannot create"));
    assert!(line.is_some(), "the client does not say why the lane failed: {err}");
    // A folder where the setup log goes: the lane cannot say why in it, the client still does.
    std::fs::remove_dir_all(&lane).unwrap();
    std::fs::create_dir_all(lane.join("_ci-setup.log")).unwrap();
    let out = output_within(&mut repo.odu(&["run"]), DEADLINE);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err.lines().find(|l| l.starts_with("odu: lane ") && l.contains("odu.serve.log"));
    assert!(line.is_some(), "the client does not say the lane failed: {err}");
    // A file where the lane's log folder goes: refused before the run starts.
    std::fs::remove_dir_all(&lane).unwrap();
    std::fs::write(&lane, "not a folder").unwrap();
    let out = output_within(&mut repo.odu(&["run"]), DEADLINE);
    refused_with(&out, &["cannot create the log folder", &lane.display().to_string()]);
    stop_server(&repo);
}

/// Every mistake in a hosts file names the key, what was expected and what was found.
#[test]
fn hosts_file_mistakes_name_the_key_and_what_was_expected() {
    let repo = Repo::new(OK);
    let p = local_platform();
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("{{\"{p}\": 42}}"),
            vec![
                format!(
                    "\"{p}\": expected a host (a string like \"localhost\" or \"user@box\") or an object with \"host\""
                ),
                "found the number 42".into(),
            ],
        ),
        (
            format!("{{\"{p}\": {{\"host\": \"localhost\", \"identiy\": \"~/.ssh/id\"}}}}"),
            vec![
                format!("\"{p}\" has an unknown key \"identiy\" (did you mean \"identity\"?)"),
                "the keys are host, port, identity, ssh_config, platform, jobs".into(),
            ],
        ),
        (
            format!("{{\"{p}\": {{\"host\": \"localhost\", \"host\": \"box\"}}}}"),
            vec!["duplicate key \"host\"".into(), "keep one of them".into()],
        ),
        (
            format!("{{\"{p}\": \"localhost\", \"{p}\": \"box\"}}"),
            vec![format!("duplicate key \"{p}\""), "keep one of them".into()],
        ),
        (
            format!("{{\"{p}\": {{\"host\": \"localhost\", \"jobs\": 0}}}}"),
            vec![
                format!("\"jobs\" of \"{p}\": expected a whole number of at least 1"),
                "found the number 0".into(),
            ],
        ),
        (
            format!("{{\"{p}\": {{\"host\": \"box\", \"port\": \"22\"}}}}"),
            vec![
                format!("\"port\" of \"{p}\": expected a port number from 1 to 65535"),
                "found the string \"22\"".into(),
            ],
        ),
        (format!("{{\"{p}\": {{\"port\": 22}}}}"), vec![format!("\"{p}\" has no \"host\"")]),
        (
            format!("{{\"{p}\": \"-oProxyCommand=true\"}}"),
            vec![format!("\"{p}\": expected a host"), "found the string \"-oProxyCommand=true\"".into()],
        ),
        ("[1]".into(), vec!["expected a JSON object of platform → host".into(), "found an array".into()]),
        ("{not json".into(), vec!["is not valid JSON".into()]),
    ];
    let hosts = repo.home.path().join("hosts.json");
    for (text, needles) in cases {
        std::fs::write(&hosts, &text).unwrap();
        let out = run_with_hosts(&repo, &hosts);
        let mut all: Vec<&str> = needles.iter().map(String::as_str).collect();
        let shown = hosts.display().to_string();
        all.push(&shown);
        refused_with(&out, &all);
    }
    assert!(repo.ledger().is_empty(), "a refused run left a record");
    stop_server(&repo);
}
