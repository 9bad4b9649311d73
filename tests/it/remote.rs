//! Remote lanes over ssh, against real sshd hosts in network namespaces (see `lab`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::{DEADLINE, gone, until, wait_for_pid};
use crate::lab::{NetnsHost, SshdOptions, Tmpfs};
use crate::repo::*;

/// A host whose sessions see this PATH (where the tests' `just` is), like a configured machine.
fn options() -> SshdOptions {
    SshdOptions { env: vec![("PATH".into(), std::env::var("PATH").unwrap())], ..Default::default() }
}

fn host() -> Option<NetnsHost> {
    NetnsHost::or_skip(options())
}

fn hosts_file(repo: &Repo, hosts: serde_json::Value) -> PathBuf {
    let path = repo.home.path().join("hosts.json");
    std::fs::write(&path, hosts.to_string()).unwrap();
    path
}

fn odu_with(repo: &Repo, hosts: &Path, ssh_config: &Path, args: &[&str]) -> std::process::Command {
    let mut command = repo.odu(args);
    command.env("ODU_HOSTS", hosts).env("ODU_SSH_CONFIG", ssh_config);
    command
}

fn run_with(repo: &Repo, hosts: &Path, ssh_config: &Path, args: &[&str]) -> Output {
    odu_with(repo, hosts, ssh_config, args).output().unwrap()
}

fn trail(repo: &Repo, platform: &str, node: &str) -> String {
    std::fs::read_to_string(repo.path().join(format!(".ci/{}/{platform}/{node}.log", repo.sha7())))
        .unwrap_or_default()
}

const PIPELINE: &str = "[metadata(\"ci\")]\nci: a b\na:\n    @echo remote-a; test -n \"$ODU_LAB_SSHD\" && echo in-the-namespace\nb: a\n    @echo remote-b\n";

#[test]
fn a_remote_lane_goes_green_ships_an_unpushed_commit_and_caches_the_runner() {
    let Some(host) = host() else { return };
    let repo = Repo::new(PIPELINE);
    let p = local_platform();
    let hosts = hosts_file(&repo, serde_json::json!({ p.clone(): host.alias() }));
    let out = run_with(&repo, &hosts, &host.config(), &["run"]);
    let setup = trail(&repo, &p, "_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(trail(&repo, &p, "a").contains("remote-a\nin-the-namespace"), "{}", trail(&repo, &p, "a"));
    assert!(trail(&repo, &p, "b").contains("remote-b"));
    assert!(setup.contains("uploading this build's runner"), "{setup}");
    assert!(setup.contains("shipping a bundle"), "no origin: the commit travels as a bundle: {setup}");
    // The second run uploads nothing and fetches nothing.
    let out = run_with(&repo, &hosts, &host.config(), &["run"]);
    let setup = trail(&repo, &p, "_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(setup.contains("is cached on the host: nothing to upload"), "{setup}");
    assert!(!setup.contains("uploading"), "{setup}");
    assert!(setup.contains("already in the host's cache"), "{setup}");
    assert!(
        setup.contains("reusing the ssh connection"),
        "the first run's connection is taken over: {setup}"
    );
    // A kept connection that died is not reused: the next run connects afresh and goes green.
    host.kill();
    host.restart();
    let out = run_with(&repo, &hosts, &host.config(), &["run"]);
    let setup = trail(&repo, &p, "_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(!setup.contains("reusing the ssh connection"), "{setup}");
    stop_server(&repo);
}

#[test]
fn a_localhost_lane_and_a_namespace_host_go_green_together_and_secrets_stay_home() {
    let Some(host) = host() else { return };
    let justfile =
        "[metadata(\"ci\")]\nci: a\na:\n    @echo on-$(ip -4 -o addr | grep -c 10.211.); env | sort\n";
    let repo = Repo::new(justfile);
    let p = local_platform();
    // The second lane's key is only a label: its entry declares what the host really is.
    let other = if p.starts_with("x86_64") { "aarch64-linux" } else { "x86_64-linux" };
    let hosts = hosts_file(
        &repo,
        serde_json::json!({ p.clone(): "localhost", other: {"host": host.alias(), "platform": p, "jobs": 2} }),
    );
    let out = odu_with(&repo, &hosts, &host.config(), &["run", "--progress", "json"])
        .env("GITHUB_TOKEN", "ghp_do_not_leak")
        .env("ODU_TEST_SECRET", "coordinator-only")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), trail(&repo, other, "_ci-setup"));
    let finals = final_statuses(&progress(&out));
    assert_eq!(finals[&format!("a@{p}")], "success");
    assert_eq!(finals[&format!("a@{other}")], "success");
    let local = trail(&repo, &p, "a");
    let remote = trail(&repo, other, "a");
    assert!(!local.contains("ODU_LAB_SSHD="), "{local}");
    assert!(remote.contains("ODU_LAB_SSHD="), "the remote lane runs on the lab host: {remote}");
    assert!(
        local.contains("ODU_TEST_SECRET=coordinator-only"),
        "the localhost lane sees the shell's environment"
    );
    for secret in ["ghp_do_not_leak", "coordinator-only", "GITHUB_TOKEN", "ODU_TEST_SECRET"] {
        assert!(!remote.contains(secret), "{secret} reached the remote runner: {remote}");
    }
    assert!(remote.contains(&format!("ODU_RUN={}#1", repo.sha7())), "{remote}");
    stop_server(&repo);
}

#[test]
fn the_host_fetches_a_pushed_commit_and_gets_an_unpushed_one_as_a_bundle() {
    let Some(host) = host() else { return };
    let repo = Repo::new(PIPELINE);
    let origin = tempfile::tempdir().unwrap();
    let origin_path = origin.path().display().to_string();
    repo.git(&["init", "-q", "--bare", &origin_path]);
    repo.git(&["remote", "add", "origin", &origin_path]);
    repo.git(&["push", "-q", "origin", "main"]);
    let p = local_platform();
    let hosts = hosts_file(&repo, serde_json::json!({ p.clone(): host.alias() }));
    // An origin that is a path on disk is not GitHub: nothing to post to.
    let out = run_with(&repo, &hosts, &host.config(), &["run", "--no-post"]);
    let setup = trail(&repo, &p, "_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(setup.contains(&format!("the host fetched {} from", repo.sha7())), "{setup}");
    repo.write("extra", "not pushed\n");
    repo.commit("unpushed");
    let out = run_with(&repo, &hosts, &host.config(), &["run", "--no-post"]);
    let setup = trail(&repo, &p, "_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(setup.contains("shipping a bundle"), "{setup}");
    stop_server(&repo);
}

#[test]
fn cutting_the_link_mid_run_errors_the_lane_within_20s_and_the_host_kills_the_group() {
    let Some(host) = host() else { return };
    let gate = tempfile::tempdir().unwrap();
    let pidfile = gate.path().join("remote.pid");
    let justfile = format!(
        "[metadata(\"ci\")]\nci: slow after\nslow:\n    @echo $$ > {}; exec sleep 120\nafter: slow\n    true\n",
        pidfile.display()
    );
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let hosts = hosts_file(&repo, serde_json::json!({ p.clone(): host.alias() }));
    let mut run = Running::spawn(odu_with(&repo, &hosts, &host.config(), &["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"slow@{p}\""));
    let node = wait_for_pid(&pidfile);
    let cut = Instant::now();
    host.cut_link();
    // Noticed: the node's errored transition reaches the client (15 s of silence, checked every
    // second); the run then ends, its record written, within a few seconds more.
    run.wait_for_line("\"status\":\"errored\"");
    let detected = cut.elapsed();
    eprintln!("the dead link was noticed in {detected:?}");
    assert!(detected <= Duration::from_secs(20), "the dead link took {detected:?} to notice");
    let (code, err) = run.finish_within(Duration::from_secs(15));
    assert_eq!(code, Some(1), "{err}");
    let runs: serde_json::Value =
        serde_json::from_slice(&repo.run(&["status", "-o", "json"]).stdout).unwrap();
    let status = |id: &str| {
        runs["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(&format!("slow@{p}")), "errored", "{runs}");
    assert_eq!(status(&format!("after@{p}")), "skipped", "{runs}");
    assert!(trail(&repo, &p, "_ci-setup").contains("died"), "{}", trail(&repo, &p, "_ci-setup"));
    assert!(err.contains(&format!("lane {p} died")), "odu run says why the lane ended: {err}");
    assert_eq!(status(&format!("_ci-setup@{p}")), "ok", "a lane that dies after its setup keeps it ok");
    // The host notices the silence too, and kills the node's process group.
    until("the remote node to be killed", Duration::from_secs(25), || gone(node));
    host.restore_link();
    stop_server(&repo);
}

#[test]
fn sigkill_of_the_coordinator_leaves_nothing_running_on_the_host() {
    let Some(host) = host() else { return };
    let gate = tempfile::tempdir().unwrap();
    let pidfile = gate.path().join("remote.pid");
    let justfile = format!(
        "[metadata(\"ci\")]\nci: slow\nslow:\n    @echo $$ > {}; exec sleep 120\n",
        pidfile.display()
    );
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let hosts = hosts_file(&repo, serde_json::json!({ p.clone(): host.alias() }));
    let mut serve = Running::spawn(odu_with(&repo, &hosts, &host.config(), &["serve"]));
    wait_for_socket(repo.path());
    let mut run = Running::spawn(odu_with(&repo, &hosts, &host.config(), &["run", "--progress", "json"]));
    run.wait_for_line(&format!("\"node\":\"slow@{p}\""));
    let node = wait_for_pid(&pidfile);
    serve.signal(libc::SIGKILL);
    let _ = serve.child.wait();
    let _ = run.finish();
    until("every process on the host but sshd to end", DEADLINE, || {
        let pids =
            std::process::Command::new("ip").args(["netns", "pids", host.namespace()]).output().unwrap();
        String::from_utf8_lossy(&pids.stdout).split_whitespace().all(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "sshd" || comm.is_empty()
        })
    });
    assert!(gone(node), "the node survived");
    let _ = std::fs::remove_file(repo.path().join(".ci/odu.sock"));
}

#[test]
fn a_banner_on_stdout_does_not_break_the_protocol() {
    let Some(host) =
        NetnsHost::or_skip(SshdOptions { banner: Some("Welcome to a chatty host!\n".into()), ..options() })
    else {
        return;
    };
    let repo = Repo::new(PIPELINE);
    let p = local_platform();
    let hosts = hosts_file(&repo, serde_json::json!({ p.clone(): host.alias() }));
    let out = run_with(&repo, &hosts, &host.config(), &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), trail(&repo, &p, "_ci-setup"));
    assert!(trail(&repo, &p, "b").contains("remote-b"));
    stop_server(&repo);
}

const ONE_RECIPE: &str = "[metadata(\"ci\")]\nci: a\na:\n    true\n";

/// The key of a second lane beside the localhost one: a label, its entry declares the platform.
fn other_platform() -> &'static str {
    if local_platform().starts_with("x86_64") { "aarch64-linux" } else { "x86_64-linux" }
}

/// A hosts file with a localhost lane and `entry` under [`other_platform`].
fn two_lanes(repo: &Repo, entry: serde_json::Value) -> PathBuf {
    hosts_file(repo, serde_json::json!({ local_platform(): "localhost", other_platform(): entry }))
}

/// Runs `repo`'s pipeline with `hosts` within 60 s (a run that hangs is killed and fails the
/// test); returns its output and the second lane's setup log.
fn run_two_lanes(repo: &Repo, hosts: &Path, ssh_config: &Path) -> (Output, String) {
    let mut command = odu_with(repo, hosts, ssh_config, &["run", "--progress", "json"]);
    let out = crate::lab::output_within(&mut command, Duration::from_secs(60));
    (out, trail(repo, other_platform(), "_ci-setup"))
}

/// The second lane of a [`two_lanes`] run ended with every one of `messages` in its setup log,
/// which `odu logs` and `odu run`'s stderr show too, its setup errored and its node skipped; the
/// localhost lane still passed, exit 1. Returns the setup log.
fn assert_broken(repo: &Repo, hosts: &Path, ssh_config: &Path, messages: &[impl AsRef<str>]) -> String {
    let (p, other) = (local_platform(), other_platform());
    let (out, setup) = run_two_lanes(repo, hosts, ssh_config);
    assert_eq!(out.status.code(), Some(1), "{}\n{setup}", stderr(&out));
    for message in messages.iter().map(AsRef::as_ref) {
        assert!(setup.contains(message), "{message:?} not in the setup log: {setup}");
    }
    let finals = final_statuses(&progress(&out));
    assert_eq!(finals[&format!("a@{p}")], "success", "the other lane goes on");
    assert_eq!(finals[&format!("_ci-setup@{other}")], "errored", "the setup that could not finish");
    assert_eq!(finals[&format!("a@{other}")], "skipped");
    // odu run's stderr names the reason: the last line odu wrote to the setup log.
    let said = stderr(&out);
    let reason = setup
        .lines()
        .filter_map(|l| l.strip_prefix("[odu] "))
        .find(|l| l.contains(" died: "))
        .expect("odu wrote why the lane died");
    assert!(said.contains(reason), "{reason:?} not on odu run's stderr: {said}");
    assert!(messages.iter().any(|m| reason.contains(m.as_ref())), "the reason names the problem: {reason}");
    let logs = repo.run(&["logs", &format!("_ci-setup@{other}")]);
    let shown = stdout(&logs);
    for message in messages.iter().map(AsRef::as_ref) {
        assert!(shown.contains(message), "{message:?} not in odu logs: {shown}\n{}", stderr(&logs));
    }
    setup
}

/// Runs the pipeline on a localhost lane and a broken second host; the broken lane ends with
/// `message` in its setup log and on the CLI, the localhost lane still passes, exit 1.
fn broken_lane(host: &NetnsHost, entry: serde_json::Value, message: &str) {
    let repo = Repo::new(ONE_RECIPE);
    let hosts = two_lanes(&repo, entry);
    assert_broken(&repo, &hosts, &host.config(), &[message]);
    stop_server(&repo);
}

#[test]
fn broken_hosts_end_their_lane_with_a_clear_message_and_the_others_go_on() {
    let Some(host) = host() else { return };
    let p = local_platform();
    let alias = host.alias().to_string();
    // A host that is not what its entry says.
    let wrong = if p.starts_with("x86_64") { "aarch64-linux" } else { "x86_64-linux" };
    broken_lane(
        &host,
        serde_json::json!(alias),
        &format!("is {p}, but the hosts config lists it as {wrong}"),
    );
    // Auth refused: a key the host does not know.
    let stranger = tempfile::tempdir().unwrap();
    let key = stranger.path().join("id");
    crate::lab::keygen(&key);
    let config = stranger.path().join("config");
    let text = std::fs::read_to_string(host.config())
        .unwrap()
        .replace(&host.identity().display().to_string(), &key.display().to_string());
    std::fs::write(&config, text).unwrap();
    broken_lane(
        &host,
        serde_json::json!({"host": alias, "ssh_config": config.display().to_string(), "platform": p}),
        "Permission denied",
    );
    // A wrong host key.
    let liar = tempfile::tempdir().unwrap();
    let config = liar.path().join("config");
    let known = liar.path().join("known_hosts");
    let other_key = liar.path().join("hostkey");
    let public = crate::lab::keygen(&other_key);
    std::fs::write(&known, format!("{} {public}\n", host.known_hosts_name())).unwrap();
    let text = std::fs::read_to_string(host.config())
        .unwrap()
        .replace(&host.known_hosts().display().to_string(), &known.display().to_string());
    std::fs::write(&config, text).unwrap();
    broken_lane(
        &host,
        serde_json::json!({"host": alias, "ssh_config": config.display().to_string(), "platform": p}),
        "Host key verification failed",
    );
    // Unreachable: nothing listens any more.
    host.kill_sshd();
    broken_lane(&host, serde_json::json!({"host": alias, "platform": p}), "cannot connect to");
}

#[test]
fn hosts_without_just_or_a_writable_cache_are_refused_with_the_fix() {
    let bin = path_with(
        &["git", "sh", "bash", "mkdir", "cat", "chmod", "mv", "rm", "uname", "dirname", "tail"],
        &[],
    );
    let Some(no_just) = NetnsHost::or_skip(SshdOptions {
        env: vec![("PATH".into(), bin.display().to_string())],
        ..Default::default()
    }) else {
        return;
    };
    let p = local_platform();
    broken_lane(
        &no_just,
        serde_json::json!({"host": no_just.alias(), "platform": p}),
        "odu needs just >= 1.57",
    );
    let mut env = options().env;
    env.push(("XDG_CACHE_HOME".into(), "/proc/odu-cache".into()));
    let Some(readonly) = NetnsHost::or_skip(SshdOptions { env, ..Default::default() }) else {
        return;
    };
    broken_lane(
        &readonly,
        serde_json::json!({"host": readonly.alias(), "platform": p}),
        "cannot store the runner in the host's cache",
    );
}

#[test]
fn odu_hosts_probes_every_host_without_running_anything() {
    let Some(host) = host() else { return };
    let repo = Repo::new(PIPELINE);
    let p = local_platform();
    let other = if p.starts_with("x86_64") { "aarch64-linux" } else { "x86_64-linux" };
    let hosts = hosts_file(&repo, serde_json::json!({ p.clone(): host.alias(), other: "localhost" }));
    let out = run_with(&repo, &hosts, &host.config(), &["hosts", "-o", "json"]);
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let remote = reports.as_array().unwrap().iter().find(|r| r["platform"] == p.as_str()).unwrap();
    assert_eq!(remote["reachable"], true, "{reports}");
    assert_eq!(remote["detected"], p.as_str());
    assert_eq!(remote["runner"], "upload", "nothing is cached before the first run");
    assert!(remote["just"].as_str().unwrap().starts_with("just "), "{reports}");
    assert!(remote["git"].as_str().unwrap().starts_with("git version"), "{reports}");
    let local = reports.as_array().unwrap().iter().find(|r| r["platform"] == other).unwrap();
    assert!(
        local["problem"].as_str().unwrap().contains("not aarch64-linux")
            || local["problem"].as_str().unwrap().contains("not x86_64-linux"),
        "{reports}"
    );
    assert_eq!(out.status.code(), Some(1), "a mismatched host makes the probe red");
    assert!(!repo.path().join(".ci").exists(), "probing runs nothing and records nothing");
    host.kill_sshd();
    let out = run_with(&repo, &hosts, &host.config(), &["hosts"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("cannot connect to"), "{}", stdout(&out));
}

/// What a lane that found its host's disk full says to do, before naming odu's cache there.
const DISK_FULL: &str = "the host's disk is full: free space on it, then rerun";

/// The runner this build uploads, and its size.
fn this_runner() -> (PathBuf, u64) {
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_odu-runner"));
    let size = std::fs::metadata(&runner).unwrap().len();
    (runner, size)
}

/// A namespace host whose odu cache, `$XDG_CACHE_HOME/odu`, is on `disk` (mounted before the host
/// starts, so that it sees it).
fn host_on(disk: &Tmpfs) -> NetnsHost {
    let mut env = options().env;
    env.push(("XDG_CACHE_HOME".into(), disk.path().display().to_string()));
    NetnsHost::new(SshdOptions { env, ..Default::default() }).unwrap_or_else(|why| panic!("{why}"))
}

/// The files under `dir` (recursively) whose names pass `keep`.
fn files_under(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(files_under(&path, keep));
        } else if keep(&entry.file_name().to_string_lossy()) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_full_disk_refuses_the_runner_with_the_fix_and_keeps_no_partial_upload() {
    let (runner, size) = this_runner();
    let Some(disk) = Tmpfs::or_skip(1 << 20) else { return };
    assert!(size > 2 << 20, "the runner ({size} bytes) must be too big for a 1 MiB disk");
    let host = host_on(&disk);
    let repo = Repo::new(ONE_RECIPE);
    let hosts = two_lanes(&repo, serde_json::json!({"host": host.alias(), "platform": local_platform()}));
    let cache = disk.path().join("odu");
    assert_broken(
        &repo,
        &hosts,
        &host.config(),
        &[
            "uploading this build's runner",
            "cannot store the runner in the host's cache",
            "No space left on device",
            DISK_FULL,
            &format!("is {}", cache.display()),
        ],
    );
    // Nothing half-written stays behind, to be taken for the runner by a later run.
    let dir = cache.join("runner").join(odu::lane::remote::runner_hash(&runner).unwrap());
    let left = files_under(&cache, &|_| true);
    assert!(left.is_empty(), "the failed upload left {left:?}");
    // With room again, the next run uploads the whole runner and goes green.
    disk.resize(size + (32 << 20));
    let (out, setup) = run_two_lanes(&repo, &hosts, &host.config());
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(setup.contains("uploading this build's runner"), "{setup}");
    assert_eq!(std::fs::metadata(dir.join("odu-runner")).unwrap().len(), size);
    stop_server(&repo);
}

#[test]
fn a_disk_that_fills_up_once_the_runner_is_cached_ends_each_source_step_with_the_fix() {
    let (_, size) = this_runner();
    let Some(disk) = Tmpfs::or_skip(size + (32 << 20)) else { return };
    let host = host_on(&disk);
    let entry = serde_json::json!({"host": host.alias(), "platform": local_platform()});
    let repo = Repo::new(ONE_RECIPE);
    let hosts = two_lanes(&repo, entry.clone());
    let (out, setup) = run_two_lanes(&repo, &hosts, &host.config());
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    let filler = disk.fill();
    let cache = disk.path().join("odu");
    let in_cache = format!("is {}", cache.display());
    let full = |step: &'static str| {
        let messages =
            ["is cached on the host: nothing to upload", step, "No space left on device", DISK_FULL];
        messages.into_iter().map(String::from).chain([in_cache.clone()]).collect::<Vec<_>>()
    };

    // The same commit again: it is in the host's cache, but its worktree does not fit.
    assert_broken(&repo, &hosts, &host.config(), &full("cannot check out"));
    // A new commit: the host cannot fetch it, and the bundle does not fit.
    repo.write("more", "more\n");
    repo.commit("more");
    assert_broken(&repo, &hosts, &host.config(), &full("the host could not take the bundle"));
    let bundles = files_under(&cache, &|name| name.ends_with(".bundle"));
    assert!(bundles.is_empty(), "the failed bundle stayed on the host: {bundles:?}");
    // A new repository: its bare cache cannot even be made.
    let fresh = Repo::new(ONE_RECIPE);
    let fresh_hosts = two_lanes(&fresh, entry);
    assert_broken(
        &fresh,
        &fresh_hosts,
        &host.config(),
        &full("cannot prepare the repository cache on the host"),
    );
    stop_server(&fresh);

    // With room again, what the failed steps left behind does not break the next run.
    std::fs::remove_file(filler).unwrap();
    let (out, setup) = run_two_lanes(&repo, &hosts, &host.config());
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(setup.contains("shipping a bundle"), "{setup}");
    stop_server(&repo);
}

/// A host that says it is [`other_platform`] (its `uname` says so), with the machine's own
/// tools and `fakes` beside that `uname` on its PATH, and no `odu-runner` or `nix` unless a fake
/// is one.
fn foreign_host(fakes: &[(&str, &str)]) -> Option<NetnsHost> {
    let arch = other_platform().split('-').next().unwrap();
    let uname = format!("#!/bin/sh\ncase \"$1\" in -m) echo {arch};; *) echo Linux;; esac\n");
    let mut all = vec![("uname", uname.as_str())];
    all.extend_from_slice(fakes);
    let tools = [
        "git", "sh", "bash", "mkdir", "cat", "chmod", "mv", "rm", "dirname", "tail", "head", "just", "find",
        "flock", "wc",
    ];
    let bin = path_with(&tools, &all);
    NetnsHost::or_skip(SshdOptions {
        env: vec![("PATH".into(), bin.display().to_string())],
        ..Default::default()
    })
}

/// Runs the two-lane pipeline with `$ODU_FLAKE` set.
fn run_two_lanes_with_flake(repo: &Repo, hosts: &Path, ssh_config: &Path, flake: &str) -> (Output, String) {
    let mut command = odu_with(repo, hosts, ssh_config, &["run", "--progress", "json"]);
    command.env("ODU_FLAKE", flake);
    let out = crate::lab::output_within(&mut command, Duration::from_secs(60));
    (out, trail(repo, other_platform(), "_ci-setup"))
}

#[test]
fn a_host_of_another_platform_runs_the_runner_its_nix_builds_from_this_odus_flake() {
    let other = other_platform();
    // What the host's Nix "builds": a store path holding this build's runner.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store/00000000000000000000000000000000-odu-runner-0.1.0");
    std::fs::create_dir_all(store.join("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_odu-runner"), store.join("bin/odu-runner")).unwrap();
    let log = dir.path().join("nix-calls");
    let nix = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\necho 'evaluating...' >&2\necho '{}'\n",
        log.display(),
        store.display()
    );
    // An odu-runner of another protocol on its PATH is passed over.
    let old_runner = "#!/bin/sh\necho 'odu-runner 0.0.1 (protocol 999)'\n";
    let Some(host) = foreign_host(&[("nix", &nix), ("odu-runner", old_runner)]) else { return };
    let calls =
        || std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>();
    let repo = Repo::new(ONE_RECIPE);
    let hosts = two_lanes(&repo, serde_json::json!({"host": host.alias()}));
    let reports = stdout(&run_with(&repo, &hosts, &host.config(), &["hosts", "-o", "json"]));
    assert!(reports.contains("\"runner\": \"nix\""), "{reports}");
    let (out, setup) = run_two_lanes(&repo, &hosts, &host.config());
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    let own = odu::lane::remote::flake_reference(None, None, other);
    assert!(own.starts_with("github:juspay/odu/") && own.ends_with(&format!("#packages.{other}.odu-runner")));
    let calls_made = calls();
    assert_eq!(calls_made.len(), 1, "{calls_made:?}");
    assert!(
        calls_made[0].contains(" build ") && calls_made[0].ends_with(&format!(" {own}")),
        "{calls_made:?}"
    );
    for step in [
        format!("the host is {other}, this odu is built for {}", local_platform()),
        "speaks protocol 999".into(),
        format!("building {own} with the host's"),
        "nix built the runner in".into(),
        format!("starting {}/bin/odu-runner --stdio", store.display()),
    ] {
        assert!(setup.contains(&step), "{step:?} not in {setup}");
    }
    // Built once per odu version: the next run finds it kept on the host.
    let (out, setup) = run_two_lanes(&repo, &hosts, &host.config());
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert_eq!(calls().len(), 1, "{:?}", calls());
    assert!(setup.contains(&format!("the runner nix built for {own} is kept on the host")), "{setup}");
    // $ODU_FLAKE names another flake; a hosts entry's own "flake" wins over it.
    let (out, setup) = run_two_lanes_with_flake(&repo, &hosts, &host.config(), "path:/src/odu");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(calls()[1].ends_with(&format!(" path:/src/odu#packages.{other}.odu-runner")), "{:?}", calls());
    let hosts = two_lanes(&repo, serde_json::json!({"host": host.alias(), "flake": "github:me/odu/fix"}));
    let (out, setup) = run_two_lanes_with_flake(&repo, &hosts, &host.config(), "path:/src/odu");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(
        calls()[2].ends_with(&format!(" github:me/odu/fix#packages.{other}.odu-runner")),
        "{:?}",
        calls()
    );
    stop_server(&repo);
}

#[test]
fn a_host_of_another_platform_with_no_runner_and_no_nix_is_refused_with_both_ways_to_install_one() {
    let Some(host) = foreign_host(&[]) else { return };
    let repo = Repo::new(ONE_RECIPE);
    let hosts = two_lanes(&repo, serde_json::json!({"host": host.alias()}));
    let setup = assert_broken(
        &repo,
        &hosts,
        &host.config(),
        &[
            "no odu-runner on the host's PATH".to_string(),
            "the host has no nix to build a runner with".into(),
            format!("no runner for {} ({})", host.alias(), other_platform()),
            "`nix profile install github:juspay/odu#odu-runner` or `cargo install odu --locked`".into(),
        ],
    );
    assert!(!setup.contains("uploading"), "{setup}");
    stop_server(&repo);
}

/// Whether `true` runs on the host through `session`.
async fn runs(session: &openssh::Session) -> bool {
    let mut probe = session.command("true");
    probe.stdin(openssh::Stdio::null()).stdout(openssh::Stdio::null()).stderr(openssh::Stdio::null());
    matches!(probe.status().await, Ok(status) if status.success())
}

/// A fresh ssh master with no session exits once idle for ControlPersist, counted from when it
/// connected. A lane's setup holds it with a waiting session, so a gap between its steps longer
/// than that (a big runner hashed, a bundle made) does not lose the connection. Without the
/// hold, the same gap ends the master and the next command fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_through_a_long_gap_in_setup_still_runs_the_next_command() {
    use odu::lane::remote::{CONTROL_PERSIST, hold_open, launch};
    let Some(host) = host() else { return };
    let entry = odu::hosts::HostEntry::plain(host.alias());
    let config = host.config();
    let held = launch(&entry, Some(&config)).await.expect("connects");
    let bare = launch(&entry, Some(&config)).await.expect("connects");
    let hold = hold_open(&held).await.expect("the waiting session starts");
    // Both masters have been idle since they connected; only the bare one counts it. Waiting
    // out the persistence is what is tested, so the test waits for it.
    let bare_socket = bare.control_socket().to_path_buf();
    let deadline = Instant::now() + CONTROL_PERSIST + DEADLINE;
    while bare_socket.exists() {
        assert!(Instant::now() < deadline, "an idle master outlived its ControlPersist by {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!runs(&bare).await, "a master that exited still ran a command");
    assert!(runs(&held).await, "the held master was lost in the gap");
    drop(hold);
    assert!(runs(&held).await, "the master runs commands after the hold ends");
    let _ = held.close().await;
}
