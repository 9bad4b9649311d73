//! The way to a remote host trusts nothing another local user could have put there: a kept ssh
//! connection is found only in odu's private directory and taken over only when it, its pointer
//! file and its control socket are the user's own; and host-key policy is the user's ssh config's,
//! with a refusal that says which kind it is and what to do.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::lab::{Sshd, SshdOptions, keygen};
use crate::repo::*;
use crate::stranger::{Stranger, shared_tmp};

/// A host whose sessions see this PATH (where the tests' `just` is).
fn host() -> Sshd {
    Sshd::with_options(SshdOptions {
        env: vec![("PATH".into(), std::env::var("PATH").unwrap())],
        ..Default::default()
    })
}

/// One recipe that says which lab host it ran on.
const WHERE: &str = "[metadata(\"ci\")]\nci: a\na:\n    @echo \"on=$ODU_LAB_SSHD\"\n";

fn hosts_file(repo: &Repo, alias: &str) -> PathBuf {
    let path = repo.home.path().join("hosts.json");
    fs::write(&path, serde_json::json!({ local_platform(): alias }).to_string()).unwrap();
    path
}

/// `odu run` of `repo`'s pipeline on `host` through `ssh_config`, with `env` on top, within 60 s.
fn run_on(repo: &Repo, host: &Sshd, ssh_config: &Path, env: &[(&str, &Path)]) -> Output {
    let mut command = repo.odu(&["run"]);
    command.env("ODU_HOSTS", hosts_file(repo, host.alias())).env("ODU_SSH_CONFIG", ssh_config);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = crate::lab::output_within(&mut command, Duration::from_secs(60));
    stop_server(repo);
    out
}

fn trail(repo: &Repo, node: &str) -> String {
    let path = repo.path().join(format!(".ci/{}/{}/{node}.log", repo.sha7(), local_platform()));
    fs::read_to_string(path).unwrap_or_default()
}

/// The run went green on `host`, and says where it ran when it did not.
fn assert_green_on(repo: &Repo, out: &Output, host: &Sshd) {
    let (setup, ran) = (trail(repo, "_ci-setup"), trail(repo, "a"));
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(out));
    assert!(
        ran.contains(&format!("on={}", host.dir().display())),
        "the recipe did not run on {}: {ran}\n{setup}",
        host.alias()
    );
}

/// The name odu gives the kept connection of a hosts entry that is only `alias`, reached through
/// `$ODU_SSH_CONFIG` `ssh_config`: anyone can work it out.
fn kept_name(alias: &str, ssh_config: &Path) -> String {
    use sha2::Digest;
    let key = format!("{alias}\nNone\nNone\nNone\n{:?}", Some(ssh_config));
    sha2::Sha256::digest(key.as_bytes())[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a kept-connection pointer holds: the master's control socket, then its log.
fn pointer_to(socket: &Path) -> String {
    format!("{}\n\n", socket.display())
}

/// An ssh master to `host` with its control socket at `dir/m`, started by the stranger (with
/// copies of the host's client key and config it can read) or by us. It exits when dropped.
struct Master {
    socket: PathBuf,
}

impl Master {
    fn start(host: &Sshd, dir: &Path, stranger: Option<&Stranger>) -> Master {
        let key = dir.join("id");
        fs::copy(host.identity(), &key).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let known = dir.join("known_hosts");
        fs::copy(host.known_hosts(), &known).unwrap();
        let config = dir.join("config");
        let text = fs::read_to_string(host.config())
            .unwrap()
            .replace(&host.identity().display().to_string(), &key.display().to_string())
            .replace(&host.known_hosts().display().to_string(), &known.display().to_string());
        fs::write(&config, text).unwrap();
        let socket = dir.join("m");
        let log = dir.join("log");
        let mut command = match stranger {
            Some(stranger) => {
                for path in [dir, &key, &known, &config] {
                    stranger.own(path);
                }
                stranger.command("ssh")
            }
            None => Command::new("ssh"),
        };
        command
            .arg("-F")
            .arg(&config)
            .args(["-M", "-f", "-N", "-S"])
            .arg(&socket)
            .arg("-E")
            .arg(&log)
            .arg(host.alias())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = command.status().unwrap();
        assert!(
            status.success(),
            "the master did not start: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(fs::symlink_metadata(&socket).is_ok(), "the master made no socket");
        Master { socket }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // Root may talk to anyone's master.
        let _ = Command::new("ssh")
            .arg("-S")
            .arg(&self.socket)
            .args(["-O", "exit", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A directory for `XDG_RUNTIME_DIR`, so the test knows where odu's private directory is.
fn runtime_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// `dir`, made 0700.
fn private_dir(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir.to_path_buf()
}

#[test]
fn a_pointer_another_user_planted_in_a_shared_tmpdir_is_not_followed() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let (host, decoy) = (host(), host());
    let tmp = shared_tmp();
    let runtime = runtime_dir();
    let repo = Repo::new(WHERE);
    // The stranger plants, where odu used to look, a pointer to a master of its own on another
    // host, under the name odu would give this host's connection.
    let planted = tmp.path().join(format!("odu-ssh-{}", odu::private::euid()));
    fs::create_dir(&planted).unwrap();
    let _master = Master::start(&decoy, &planted, Some(&stranger));
    let pointer = planted.join(kept_name(host.alias(), &host.config()));
    fs::write(&pointer, pointer_to(&planted.join("m"))).unwrap();
    stranger.own(&pointer);

    let env = [("TMPDIR", tmp.path()), ("XDG_RUNTIME_DIR", runtime.path())];
    let out = run_on(&repo, &host, &host.config(), &env);
    assert_green_on(&repo, &out, &host);
    assert!(!trail(&repo, "_ci-setup").contains("reusing the ssh connection"));
    // odu keeps its own connection in its private directory, and takes it over next time.
    let kept = runtime.path().join("odu/ssh").join(kept_name(host.alias(), &host.config()));
    let meta = fs::symlink_metadata(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display()));
    assert_eq!((meta.uid(), meta.mode() & 0o777), (odu::private::euid(), 0o600));
    let dir = fs::metadata(kept.parent().unwrap()).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o700);
    let out = run_on(&repo, &host, &host.config(), &env);
    assert_green_on(&repo, &out, &host);
    assert!(
        trail(&repo, "_ci-setup").contains("reusing the ssh connection"),
        "{}",
        trail(&repo, "_ci-setup")
    );
}

#[test]
fn a_kept_connection_directory_someone_else_owns_or_can_write_is_refused() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let (host, decoy) = (host(), host());
    let runtime = runtime_dir();
    let env = [("XDG_RUNTIME_DIR", runtime.path())];
    let repo = Repo::new(WHERE);
    // Our own master to the decoy, named as this host's connection: only the directory is wrong.
    let masters = tempfile::tempdir().unwrap();
    let _master = Master::start(&decoy, masters.path(), None);
    let kept = private_dir(&runtime.path().join("odu")).join("ssh");
    fs::create_dir(&kept).unwrap();
    let pointer = kept.join(kept_name(host.alias(), &host.config()));
    fs::write(&pointer, pointer_to(&masters.path().join("m"))).unwrap();

    // Owned by the stranger.
    stranger.own(&kept);
    let out = run_on(&repo, &host, &host.config(), &env);
    assert_green_on(&repo, &out, &host);
    let setup = trail(&repo, "_ci-setup");
    assert!(setup.contains(&format!("belongs to another user (uid {}", stranger.uid)), "{setup}");
    assert!(!setup.contains("reusing the ssh connection"), "{setup}");
    assert_eq!(
        fs::read_to_string(&pointer).unwrap(),
        pointer_to(&masters.path().join("m")),
        "odu wrote there"
    );

    // Ours, but anyone may write into it.
    std::os::unix::fs::chown(&kept, Some(odu::private::euid()), None).unwrap();
    fs::set_permissions(&kept, fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_on(&repo, &host, &host.config(), &env);
    assert_green_on(&repo, &out, &host);
    let setup = trail(&repo, "_ci-setup");
    assert!(setup.contains("writable by other users"), "{setup}");
    assert!(!setup.contains("reusing the ssh connection"), "{setup}");
}

#[test]
fn a_kept_connection_whose_control_socket_is_not_ours_is_not_taken_over() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let (host, decoy) = (host(), host());
    let runtime = runtime_dir();
    let env = [("XDG_RUNTIME_DIR", runtime.path())];
    let repo = Repo::new(WHERE);
    let kept = private_dir(&private_dir(&runtime.path().join("odu")).join("ssh"));
    let pointer = kept.join(kept_name(host.alias(), &host.config()));

    // First, a pointer that passes every check is taken over, wherever its master leads: the
    // checks below are what stops the others.
    let ours = tempfile::tempdir().unwrap();
    let master = Master::start(&decoy, ours.path(), None);
    fs::write(&pointer, pointer_to(&master.socket)).unwrap();
    let out = run_on(&repo, &host, &host.config(), &env);
    assert_green_on(&repo, &out, &decoy);
    assert!(trail(&repo, "_ci-setup").contains("reusing the ssh connection"));

    // The same master, its socket given to the stranger.
    std::os::unix::fs::chown(&master.socket, Some(stranger.uid), Some(stranger.gid)).unwrap();
    fs::write(&pointer, pointer_to(&master.socket)).unwrap();
    let out = run_on(&repo, &host, &host.config(), &env);
    assert_green_on(&repo, &out, &host);
    let setup = trail(&repo, "_ci-setup");
    assert!(setup.contains(&format!("belongs to another user (uid {}", stranger.uid)), "{setup}");
    assert!(!setup.contains("reusing the ssh connection"), "{setup}");

    // The stranger's own master, in its own directory.
    let theirs = tempfile::tempdir().unwrap();
    crate::stranger::open_to_all(theirs.path());
    let _theirs = Master::start(&decoy, theirs.path(), Some(&stranger));
    fs::write(&pointer, pointer_to(&theirs.path().join("m"))).unwrap();
    let out = run_on(&repo, &host, &host.config(), &env);
    assert_green_on(&repo, &out, &host);
    let setup = trail(&repo, "_ci-setup");
    assert!(setup.contains(&format!("belongs to another user (uid {}", stranger.uid)), "{setup}");
    assert!(!setup.contains("reusing the ssh connection"), "{setup}");
}

#[test]
fn a_tmpdir_too_long_for_a_unix_socket_still_reaches_the_host() {
    let host = host();
    let repo = Repo::new(WHERE);
    let base = tempfile::tempdir().unwrap();
    let long = base.path().join("t".repeat(100));
    fs::create_dir(&long).unwrap();
    let out = run_on(&repo, &host, &host.config(), &[("TMPDIR", &long)]);
    assert_green_on(&repo, &out, &host);
}

/// Host-key policy is the user's ssh config's.
#[test]
fn a_config_that_accepts_new_host_keys_reaches_a_host_it_never_saw() {
    let host = host();
    let repo = Repo::new(WHERE);
    let client = tempfile::tempdir().unwrap();
    let (config, known) = (client.path().join("config"), client.path().join("known_hosts"));
    fs::write(&known, "").unwrap();
    host.write_client_config(&config, &known, Some("accept-new"));
    let out = run_on(&repo, &host, &config, &[]);
    assert_green_on(&repo, &out, &host);
    let learnt = fs::read_to_string(&known).unwrap();
    assert!(learnt.contains(&host.known_hosts_name()), "ssh recorded the key it accepted: {learnt:?}");
}

/// The run is red, and its setup log and stderr both say every one of `messages`.
fn assert_refused(repo: &Repo, out: &Output, messages: &[&str]) {
    let setup = trail(repo, "_ci-setup");
    assert_eq!(out.status.code(), Some(1), "{}\n{setup}", stderr(out));
    for message in messages {
        assert!(setup.contains(message), "{message:?} not in the setup log: {setup}");
        assert!(stderr(out).contains(message), "{message:?} not on stderr: {}", stderr(out));
    }
}

#[test]
fn an_unknown_host_key_is_told_apart_from_a_changed_one() {
    let host = host();
    let client = tempfile::tempdir().unwrap();
    let (config, known) = (client.path().join("config"), client.path().join("known_hosts"));
    fs::write(&known, "").unwrap();
    let unknown = ["its host key is not in known_hosts", "once by hand", "ssh-keyscan"];
    // ssh's own default in batch mode refuses an unknown key without naming it.
    host.write_client_config(&config, &known, None);
    let repo = Repo::new(WHERE);
    let out = run_on(&repo, &host, &config, &[]);
    assert_refused(&repo, &out, &unknown);
    assert!(!stderr(&out).contains("has changed"), "{}", stderr(&out));
    // Strict checking names the key it lacks.
    host.write_client_config(&config, &known, Some("yes"));
    let out = run_on(&repo, &host, &config, &[]);
    assert_refused(&repo, &out, &unknown);
    assert!(stderr(&out).contains(&host.known_hosts_name()), "{}", stderr(&out));
    // Another key than the host's.
    let public = keygen(&client.path().join("other"));
    fs::write(&known, format!("{} {public}", host.known_hosts_name())).unwrap();
    for strict in [None, Some("yes"), Some("accept-new")] {
        host.write_client_config(&config, &known, strict);
        let out = run_on(&repo, &host, &config, &[]);
        let remove = format!("ssh-keygen -f {} -R '{}'", known.display(), host.known_hosts_name());
        assert_refused(&repo, &out, &["its host key has changed", &remove]);
        assert!(!stderr(&out).contains("not in known_hosts"), "{}", stderr(&out));
    }
}
