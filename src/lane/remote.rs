//! A remote lane: one ssh connection (a master the user's own `ssh` runs in `BatchMode`: their
//! config, agent and known_hosts apply, host-key policy included; sessions go through the
//! `openssh` crate), one `odu-runner --stdio` over it, driven by the same protocol client as the
//! localhost lane.
//!
//! Setup, narrated step by step into the lane's `_ci-setup` log:
//! 1. connect, retrying a bounded number of times with backoff (never on a host key or auth
//!    refusal, which no retry fixes, and which the message tells apart: an unknown host key, a
//!    changed one); a healthy connection a lane left to the same host in the last 10 s is taken
//!    over instead, when its pointer, socket and their directories are the user's alone (see
//!    [`keep`]);
//! 2. probe the host (`uname`, git, just, a cached or installed runner) and check its
//!    platform against the hosts entry;
//! 3. the runner, on a host of odu's own platform: the one cached under
//!    `~/.cache/odu/runner/<content-hash>/`, else this build's own uploaded there atomically. On
//!    a host of another platform: an `odu-runner` of odu's protocol on the host's PATH, else,
//!    when the host has Nix, the flake's `packages.<host system>.odu-runner` at this build's
//!    commit, built there once per flake reference (see [`flake_reference`]), else a refusal
//!    that names both ways to install one;
//! 4. the source: the host fetches the pinned sha from `origin` into a bare cache
//!    `~/.cache/odu/repos/<slug>.git` (under a lock); when it cannot, the coordinator ships the
//!    missing objects as a git bundle over the link. A fresh worktree per run, removed when the
//!    lane is green and kept for debugging when it is red.
//!
//! The remote runner gets only the run's own variables (`ODU_RUN`): never the coordinator's
//! environment or credentials.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use odu_core::NodeStatus;
use openssh::{Session, Stdio};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::hosts::HostEntry;
use crate::lane::{LaneCommand, LaneLogs, LaneReport, LaneSpec, RemoteSource, die};

const CONNECT_ATTEMPTS: u32 = 3;

/// odu's cache on a host, as the host's shell spells it.
const CACHE: &str = "${XDG_CACHE_HOME:-$HOME/.cache}/odu";

/// The probe's findings.
#[derive(Debug, Default)]
pub struct Probe {
    pub platform: String,
    pub git: Option<String>,
    pub just: Option<String>,
    pub cached_runner: Option<String>,
    pub path_runner: Option<String>,
    /// The first line `odu-runner --version` printed on the host.
    pub path_runner_version: Option<String>,
    /// The host's `nix`: on its PATH, or where the Nix installers put it (a non-interactive
    /// ssh session often lacks the profile that puts it on PATH).
    pub nix: Option<String>,
}

impl Probe {
    /// The host's own runner, when it speaks this odu's protocol; else why not, to narrate.
    pub fn usable_path_runner(&self) -> Result<&str, String> {
        let Some(path) = self.path_runner.as_deref() else {
            return Err("no odu-runner on the host's PATH".into());
        };
        let said = self.path_runner_version.as_deref().unwrap_or_default();
        match crate::version::protocol_of(said) {
            Some(p) if p == odu_proto::PROTOCOL_VERSION => Ok(path),
            Some(p) => Err(format!(
                "the host's {path} speaks protocol {p}, not this odu's {}: not using it",
                odu_proto::PROTOCOL_VERSION
            )),
            None => {
                Err(format!("the host's {path} does not say its protocol version ({said:?}): not using it"))
            }
        }
    }
}

/// The flake odu's runner is built from on a host of another platform, by default: this
/// repository's.
pub const FLAKE: &str = "github:juspay/odu";

/// The flake attribute a host of `system` builds its runner from: the hosts entry's `flake`,
/// else `$ODU_FLAKE` (`env_flake`), else this odu's own flake at this build's exact commit (its
/// version's tag when the build did not know its commit).
pub fn flake_reference(entry_flake: Option<&str>, env_flake: Option<&str>, system: &str) -> String {
    let flake = match entry_flake.or(env_flake).filter(|f| !f.is_empty()) {
        Some(flake) => flake.to_string(),
        None => match crate::version::commit() {
            Some(rev) => format!("{FLAKE}/{rev}"),
            None => format!("{FLAKE}/v{}", crate::version::VERSION),
        },
    };
    format!("{flake}#packages.{system}.odu-runner")
}

/// The one-line refusal for a host of another platform odu found no runner for.
fn no_runner(host: &str, platform: &str, why: &str) -> String {
    format!(
        "no runner for {host} ({platform}): this odu is built for {} and cannot upload its own, and {why}: install odu-runner (protocol {}) on the host with `nix profile install {FLAKE}#odu-runner` or `cargo install odu --locked`",
        crate::hosts::local_platform(),
        odu_proto::PROTOCOL_VERSION
    )
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The prefix of the directory each master's control socket and log are made in.
const MUX_PREFIX: &str = "odu-mux-";

/// How long a master lives once it has no session (ssh's ControlPersist): a fresh one counts
/// from when it connected, so a lane holds it with [`hold_open`] until its runner's session does.
pub const CONTROL_PERSIST: Duration = Duration::from_secs(10);

/// The longest control socket path ssh can bind: `sun_path` holds 104 bytes on macOS and the
/// BSDs (108 on Linux) with its NUL, and ssh first binds `<path>.<16 random characters>`.
const MAX_SOCKET_PATH: usize = 103 - 17;

/// Where a master's socket directory is made: `$TMPDIR` (`tmp`), unless the socket's path would
/// be too long there for a unix socket, then `/tmp`.
fn mux_base(tmp: &Path) -> PathBuf {
    // `<tmp>/odu-mux-XXXXXX/master`
    let socket = tmp.as_os_str().len() + 1 + MUX_PREFIX.len() + 6 + "/master".len();
    if socket <= MAX_SOCKET_PATH { tmp.to_path_buf() } else { PathBuf::from("/tmp") }
}

/// How long a master's directory may hold no socket before it counts as a master's that
/// exited: [`launch`] gives ssh 60 s to connect (its socket appears once it has), and the
/// directory's time is when its socket last came or went.
const EXITED_AFTER: Duration = Duration::from_secs(120);

/// Removes the directories (in `base`) of masters that exited. A kept master exits on its own
/// [`CONTROL_PERSIST`] after its last session and removes its socket, but not the directory
/// [`launch`] made for it nor its log, which nobody else would ever remove when no later run
/// goes to that host. Only the user's own private directories of [`MUX_PREFIX`] with no socket
/// left, and none for [`EXITED_AFTER`], go: a master still connecting has none yet.
fn sweep_exited(base: &Path) {
    for dir in crate::private::entries_named(base, MUX_PREFIX) {
        if crate::private::check_owned(&dir).is_err() {
            continue;
        }
        let quiet = std::fs::symlink_metadata(&dir)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|quiet| quiet > EXITED_AFTER);
        if quiet && std::fs::symlink_metadata(dir.join("master")).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The ssh config file that picks `entry`'s connection: its own, else `$ODU_SSH_CONFIG`.
fn config_file(entry: &HostEntry, ssh_config: Option<&Path>) -> Option<PathBuf> {
    entry.ssh_config.as_deref().map(expand_home).or_else(|| ssh_config.map(Path::to_path_buf))
}

/// The options that pick `entry`'s connection, as on ssh's command line, before its host.
fn ssh_args(entry: &HostEntry, ssh_config: Option<&Path>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![];
    if let Some(config) = config_file(entry, ssh_config) {
        args.extend(["-F".into(), config.into()]);
    }
    if let Some(port) = entry.port {
        args.extend(["-p".into(), port.to_string().into()]);
    }
    if let Some(identity) = &entry.identity {
        // The entry's key, and only it.
        args.extend(["-o".into(), "IdentitiesOnly=yes".into(), "-i".into(), expand_home(identity).into()]);
    }
    args
}

/// Starts an ssh master for `entry`, its control socket and log in a fresh directory of ours
/// (mkdtemp, mode 0700, see [`mux_base`]); or ssh's own words on why it could not.
///
/// Host-key policy is the user's ssh config's: in batch mode ssh's own default already refuses a
/// host whose key it does not know, and a config may accept new hosts (`accept-new`).
pub async fn launch(entry: &HostEntry, ssh_config: Option<&Path>) -> Result<Session, String> {
    let base = mux_base(&std::env::temp_dir());
    // Off the connection's path: the new master's folder is fresh, so never swept.
    let swept = base.clone();
    drop(tokio::task::spawn_blocking(move || sweep_exited(&swept)));
    let dir = tempfile::Builder::new()
        .prefix(MUX_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| format!("cannot make a private directory for the ssh connection: {e}"))?;
    let log = dir.path().join("log");
    let mut ssh = tokio::process::Command::new("ssh");
    ssh.arg("-E").arg(&log).arg("-S").arg(dir.path().join("master")).args(["-M", "-f", "-N"]);
    // The master outlives no lane: it exits once its last session closed, even when the
    // coordinator was killed and never closed it.
    ssh.arg("-o").arg(format!("ControlPersist={}s", CONTROL_PERSIST.as_secs())).args(["-o", "BatchMode=yes"]);
    ssh.args(["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"]);
    ssh.args(ssh_args(entry, ssh_config)).arg("--").arg(&entry.host);
    ssh.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    // ssh forks the master off and exits once it is connected.
    let status = tokio::time::timeout(Duration::from_secs(60), crate::tool::status_async(&mut ssh)).await;
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Ok(Ok(status)) if status.success() => Ok(Session::new_process_mux(dir)),
        Ok(Ok(_)) => Err(said()),
        Ok(Err(e)) => Err(format!("cannot run ssh: {e}")),
        Err(_) => Err(format!("ssh did not connect within 60s {}", said())),
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// `text`'s non-blank lines, trimmed, on one line.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The whole error chain in one line (ssh's own message is at the bottom).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let line = one_line(&e.to_string());
        if !line.is_empty() {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = e.source();
    }
    text
}

/// Why ssh could not connect, as far as its own words tell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// known_hosts has no key for the host. Under `StrictHostKeyChecking yes` ssh names the host
    /// (`name`, as known_hosts spells it); its default in batch mode refuses without a word.
    UnknownHostKey {
        name: Option<String>,
    },
    /// The host offered another key than the one known_hosts holds for it (`offending`:
    /// `file:line`).
    ChangedHostKey {
        name: Option<String>,
        offending: Option<String>,
    },
    AuthRefused,
    Unresolved,
    /// Anything else: maybe transient.
    Other,
}

impl Failure {
    fn of(said: &str) -> Failure {
        let after = |prefix: &str, end: &str| {
            said.lines()
                .find_map(|l| l.trim().split_once(prefix)?.1.split_once(end).map(|(v, _)| v.to_string()))
        };
        if said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || said.contains("has changed and you have requested strict checking")
        {
            Failure::ChangedHostKey {
                name: after("Host key for ", " has changed"),
                offending: said
                    .lines()
                    .filter(|l| l.trim().starts_with("Offending "))
                    .find_map(|l| Some(l.trim().split_once(" key in ")?.1.to_string())),
            }
        } else if said.contains("Host key verification failed") {
            Failure::UnknownHostKey { name: after(" host key is known for ", " and you have") }
        } else if said.contains("Permission denied") {
            Failure::AuthRefused
        } else if said.contains("Could not resolve hostname") {
            Failure::Unresolved
        } else {
            Failure::Other
        }
    }

    /// No retry fixes it.
    fn permanent(&self) -> bool {
        *self != Failure::Other
    }

    /// ssh's words on one line, without its banners (on a changed key, the lines that say so).
    fn words(&self, said: &str) -> String {
        let lines = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('@') && !l.starts_with("Warning: Permanently added"));
        let lines: Vec<&str> = match self {
            Failure::ChangedHostKey { .. } => lines
                .filter(|l| l.contains("has changed") || l.contains("Host key verification failed"))
                .collect(),
            _ => lines.collect(),
        };
        if lines.is_empty() {
            "ssh failed without a word (is its LogLevel QUIET?)".into()
        } else {
            lines.join(" ")
        }
    }
}

/// `text` as one sh word.
fn sh_word(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c)) {
        text.to_string()
    } else {
        quote(text)
    }
}

/// The ssh command line that reaches `entry` by hand as odu does.
fn by_hand(entry: &HostEntry, ssh_config: Option<&Path>) -> String {
    let mut words = vec!["ssh".to_string()];
    words.extend(ssh_args(entry, ssh_config).iter().map(|a| sh_word(&a.to_string_lossy())));
    words.push(sh_word(&entry.host));
    words.join(" ")
}

/// The address and port ssh resolves `entry` to (`ssh -G`), for `ssh-keyscan`.
async fn resolve(entry: &HostEntry, ssh_config: Option<&Path>) -> Option<(String, String)> {
    let mut ssh = tokio::process::Command::new("ssh");
    ssh.arg("-G").args(ssh_args(entry, ssh_config)).arg("--").arg(&entry.host);
    ssh.stdin(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    let out =
        tokio::time::timeout(Duration::from_secs(5), crate::tool::output_async(&mut ssh)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string));
    Some((field("hostname")?, field("port")?))
}

/// What to do about `failure`, in parentheses (empty when odu has nothing to add).
async fn hint(failure: &Failure, entry: &HostEntry, ssh_config: Option<&Path>) -> String {
    let by_hand = by_hand(entry, ssh_config);
    match failure {
        Failure::UnknownHostKey { .. } => {
            let keyscan = match resolve(entry, ssh_config).await {
                Some((host, port)) if port == "22" => format!("ssh-keyscan {}", sh_word(&host)),
                Some((host, port)) => format!("ssh-keyscan -p {port} {}", sh_word(&host)),
                None => format!("ssh-keyscan {}", sh_word(&entry.host)),
            };
            format!(
                " (its host key is not in known_hosts, and ssh in batch mode refuses a host it does not know: connect once by hand with `{by_hand}` and accept the key after checking its fingerprint, or add the output of `{keyscan}` to known_hosts; for throwaway hosts, `StrictHostKeyChecking accept-new` in your ssh config accepts a new host's key on first contact)"
            )
        }
        Failure::ChangedHostKey { name, offending } => {
            let name = name.clone().unwrap_or_else(|| entry.host.clone());
            let (file, at) = match offending.as_deref().and_then(|o| o.rsplit_once(':')) {
                Some((file, line)) => (format!(" -f {}", sh_word(file)), format!("{file}:{line}")),
                None => (String::new(), "known_hosts".into()),
            };
            format!(
                " (its host key has changed since it was recorded in {at}: if the host was reinstalled or given a new key, remove the stale line with `ssh-keygen{file} -R {}`, then connect once by hand with `{by_hand}` to accept the new key; if it was not, someone may be impersonating the host: do not connect)",
                sh_word(&name)
            )
        }
        Failure::AuthRefused => {
            " (ssh refused our keys: add one to the host's authorized_keys or load it in ssh-agent)".into()
        }
        Failure::Unresolved | Failure::Other => String::new(),
    }
}

/// Where a lane leaves its ssh connection for the next run to the same host: `ssh/` in odu's
/// private directory ([`crate::private::user_dir`]), 0700 and the user's own, one file per host
/// entry naming the master's control socket. A directory that is not the user's alone is refused
/// (not repaired): why, to narrate.
fn kept_dir() -> Result<PathBuf, String> {
    let dir = crate::private::user_dir().map_err(|e| e.to_string())?.join("ssh");
    crate::private::ensure_private(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// The file in `dir` naming the kept master for `entry` (everything that picks the connection).
fn kept_file(dir: &Path, entry: &HostEntry, ssh_config: Option<&Path>) -> PathBuf {
    let key = format!(
        "{}\n{:?}\n{:?}\n{:?}\n{:?}",
        entry.host, entry.port, entry.identity, entry.ssh_config, ssh_config
    );
    dir.join(sha256_prefix(key.as_bytes(), 12))
}

/// The first `bytes` bytes of `data`'s sha256, in hex: a short name that content picks.
fn sha256_prefix(data: &[u8], bytes: usize) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)[..bytes].iter().map(|b| format!("{b:02x}")).collect()
}

/// A kept master: its control socket, and its log.
#[derive(Debug, PartialEq, Eq)]
struct Pointer {
    ctl: PathBuf,
    log: Option<PathBuf>,
}

/// The pointer file at `path`, opened without following a symlink (a FIFO does not block it):
/// `None` when there is none, why not when it is not a regular file of the user's that nobody
/// else can write, or does not name a master's socket.
fn read_pointer(path: &Path) -> Result<Option<Pointer>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("{} is a symlink", path.display()));
        }
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let meta = file.metadata().map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    crate::private::owned_by_me(path, &meta)
        .and_then(|()| crate::private::writable_by_me_alone(path, &meta))
        .map_err(|why| why.to_string())?;
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_pointer(&text).map(Some).ok_or_else(|| format!("{} does not name a control socket", path.display()))
}

/// A pointer's text: the control socket's absolute path, then its log's, which must be beside it.
fn parse_pointer(text: &str) -> Option<Pointer> {
    let mut lines = text.lines();
    let ctl = PathBuf::from(lines.next()?);
    let dir = ctl.parent().filter(|_| ctl.is_absolute())?;
    let log = lines.next().filter(|l| !l.is_empty()).map(PathBuf::from).filter(|l| l.parent() == Some(dir));
    Some(Pointer { ctl, log })
}

/// Whether a kept master's control socket is still there (`false`: its master exited), or why
/// it is not to be trusted: the socket and its directory must be the user's own, and the
/// directory writable by nobody else.
fn check_socket(ctl: &Path) -> Result<bool, String> {
    use std::os::unix::fs::FileTypeExt;
    let dir = ctl.parent().unwrap_or(Path::new("/"));
    let absent = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    match std::fs::symlink_metadata(dir) {
        Err(e) if absent(&e) => return Ok(false),
        _ => crate::private::check_owned(dir).map_err(|why| why.to_string())?,
    }
    let meta = match std::fs::symlink_metadata(ctl) {
        Ok(meta) => meta,
        Err(e) if absent(&e) => return Ok(false),
        Err(e) => return Err(format!("cannot inspect {}: {e}", ctl.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!("{} is not a socket", ctl.display()));
    }
    crate::private::owned_by_me(ctl, &meta).map_err(|why| why.to_string())?;
    Ok(true)
}

/// The master a previous lane kept for `entry`, if it is the user's own and still answers a
/// command within 3 s (a master whose link died answers `ssh -O check` until its keepalives
/// give up, so a real round trip is asked for). What is not trusted is narrated and left alone.
async fn resume(
    entry: &HostEntry,
    ssh_config: Option<&Path>,
    narrate: &(dyn Fn(&str) + Sync),
) -> Option<Session> {
    let not_taken = |why: String| {
        narrate(&format!(
            "not taking over the kept ssh connection to {}: {why}; connecting afresh",
            entry.host
        ))
    };
    let dir = match kept_dir() {
        Ok(dir) => dir,
        Err(why) => {
            not_taken(format!(
                "{why} (remove it: odu makes it again, mode 0700); no connection is kept until then"
            ));
            return None;
        }
    };
    let pointer = match read_pointer(&kept_file(&dir, entry, ssh_config)) {
        Ok(Some(pointer)) => pointer,
        Ok(None) => return None,
        Err(why) => {
            not_taken(why);
            return None;
        }
    };
    match check_socket(&pointer.ctl) {
        Ok(true) => {}
        Ok(false) => {
            // Its master exited: the directory it was made in is all that is left of it.
            forget(&pointer.ctl);
            return None;
        }
        Err(why) => {
            not_taken(why);
            return None;
        }
    }
    let session =
        Session::resume(pointer.ctl.clone().into_boxed_path(), pointer.log.map(PathBuf::into_boxed_path));
    let mut probe = session.command("true");
    probe.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    match tokio::time::timeout(Duration::from_secs(3), probe.status()).await {
        Ok(Ok(status)) if status.success() => Some(session),
        _ => {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
            forget(&pointer.ctl);
            None
        }
    }
}

/// Removes the directory [`launch`] made for a master (its control socket and log), which a
/// kept master's session no longer owns; never one that is not the user's own.
fn forget(ctl: &Path) {
    if let Some(dir) = ctl.parent()
        && dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(MUX_PREFIX))
        && crate::private::check_owned(dir).is_ok()
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Ends a lane's use of its connection. A healthy one is kept for the next run to the same
/// host (the warm-run setup then skips the ssh handshake); the master still exits 10 s after
/// its last session, as every master does. One whose link is suspect is closed, and so is one
/// that cannot be kept in a directory of the user's own.
pub async fn keep(session: Session, entry: &HostEntry, ssh_config: Option<&Path>, healthy: bool) {
    if !healthy {
        let _ = tokio::time::timeout(Duration::from_secs(5), session.close()).await;
        return;
    }
    let (ctl, log) = session.detach();
    let text = format!(
        "{}\n{}\n",
        ctl.display(),
        log.as_deref().map(|l| l.display().to_string()).unwrap_or_default()
    );
    let saved = kept_dir().ok().is_some_and(|dir| {
        let write = || {
            use std::io::Write;
            // Created 0600 under a fresh name, then renamed over the old pointer.
            let mut file = tempfile::NamedTempFile::new_in(&dir)?;
            file.write_all(text.as_bytes())?;
            file.persist(kept_file(&dir, entry, ssh_config)).map_err(|e| e.error)?;
            Ok::<_, std::io::Error>(())
        };
        write().is_ok()
    });
    if !saved {
        // Nobody will take it over: let it go now.
        let path = ctl.to_path_buf();
        let _ = tokio::time::timeout(Duration::from_secs(5), Session::resume(ctl, log).close()).await;
        forget(&path);
    }
}

/// Connects (taking over a connection a previous lane kept, when one is the user's own and
/// answers), retrying transient failures with backoff.
pub async fn connect(
    entry: &HostEntry,
    ssh_config: Option<&Path>,
    narrate: &(dyn Fn(&str) + Sync),
) -> Result<Session, String> {
    if let Some(session) = resume(entry, ssh_config, narrate).await {
        narrate(&format!("reusing the ssh connection a previous run left to {}", entry.host));
        return Ok(session);
    }
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=CONNECT_ATTEMPTS {
        match launch(entry, ssh_config).await {
            Ok(session) => return Ok(session),
            Err(said) => {
                let failure = Failure::of(&said);
                let words = failure.words(&said);
                if failure.permanent() || attempt == CONNECT_ATTEMPTS {
                    let hint = hint(&failure, entry, ssh_config).await;
                    return Err(format!(
                        "cannot connect to {} after {attempt} attempt(s): {words}{hint}",
                        entry.host
                    ));
                }
                narrate(&format!("connecting to {} failed ({words}); retrying in {delay:?}", entry.host));
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Runs `script` with `sh -c` on the host; `(success, stdout, stderr)`. When the session itself
/// fails (ssh exits 255: the master is gone, or the host refused the session), the error keeps
/// what ssh said on its stderr, which is where it says why.
async fn sh(session: &Session, script: &str, input: Option<&Path>) -> Result<(bool, String, String), String> {
    use tokio::io::AsyncReadExt;
    let mut command = session.command("sh");
    command.arg("-c").arg(script).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().await.map_err(|e| describe(&e))?;
    let mut stdout = child.stdout().take().expect("piped");
    let mut stderr = child.stderr().take().expect("piped");
    let read_out = async {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out).await;
        out
    };
    let read_err = async {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        err
    };
    let send = async {
        let Some(path) = input else { return Ok(()) };
        let mut stdin = child.stdin().take().expect("piped");
        let mut file =
            tokio::fs::File::open(path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let copied = tokio::io::copy(&mut file, &mut stdin).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
        copied.map(drop).map_err(|e| format!("sending {} failed: {e}", path.display()))
    };
    let (sent, out, err) = tokio::join!(send, read_out, read_err);
    let err = String::from_utf8_lossy(&err).trim().to_string();
    let status = child.wait().await.map_err(|e| {
        let said = one_line(&err);
        let master = master_said(session);
        let said = [said, master].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ");
        // With its master gone, ssh's client tries the placeholder host name it was given and
        // says that name cannot be resolved: what happened is that the connection closed.
        let what = if session.control_socket().exists() {
            describe(&e)
        } else {
            "the ssh connection closed (its master exited)".to_string()
        };
        if said.is_empty() { what } else { format!("{what} ({said})") }
    });
    if let Err(why) = sent {
        return Err(format!("{why} {err}"));
    }
    Ok((status?.success(), String::from_utf8_lossy(&out).into_owned(), err))
}

/// The last lines the session's master wrote to its log (`-E`, beside its control socket), in one
/// line: where ssh says why a link ended.
fn master_said(session: &Session) -> String {
    let Some(dir) = session.control_socket().parent() else { return String::new() };
    let text = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" ")
}

/// `why` a step failed on the host, then what to do next: when the host's own words say its
/// disk (or the user's quota) is full, where odu's cache is there (its shell expands the path in
/// one more short round trip), else `guess`.
async fn next_step(session: &Session, why: String, guess: &str) -> String {
    if !["No space left on device", "Disk quota exceeded"].iter().any(|full| why.contains(full)) {
        return format!("{why}{guess}");
    }
    let script = format!(r#"echo "{CACHE}""#);
    let cache = match tokio::time::timeout(Duration::from_secs(5), sh(session, &script, None)).await {
        Ok(Ok((true, out, _))) => out.lines().last().unwrap_or_default().trim().to_string(),
        _ => String::new(),
    };
    let cache = if cache.is_empty() { CACHE.to_string() } else { cache };
    format!(
        "{why} (the host's disk is full: free space on it, then rerun; odu's cache there, with the worktrees kept from red runs, is {cache})"
    )
}

/// The lines between two markers, so a banner or motd around them is ignored.
fn between<'a>(text: &'a str, begin: &str, end: &str) -> Vec<&'a str> {
    text.lines().skip_while(|l| l.trim() != begin).skip(1).take_while(|l| l.trim() != end).collect()
}

fn platform_of(os: &str, arch: &str) -> String {
    let os = match os {
        "Linux" => "linux",
        "Darwin" => "darwin",
        other => return format!("{arch}-{}", other.to_lowercase()),
    };
    let arch = match arch {
        "arm64" => "aarch64",
        other => other,
    };
    format!("{arch}-{os}")
}

/// Probes a host: its platform, tools, and runners.
pub async fn probe(session: &Session, runner_hash: &str) -> Result<Probe, String> {
    let script = format!(
        r#"echo ODU-PROBE-BEGIN
echo "os=$(uname -s)"; echo "arch=$(uname -m)"
command -v git >/dev/null 2>&1 && echo "git=$(git --version 2>&1)"
command -v just >/dev/null 2>&1 && echo "just=$(just --version 2>&1)"
if command -v odu-runner >/dev/null 2>&1; then echo "path_runner=$(command -v odu-runner)"
echo "path_runner_version=$(odu-runner --version 2>&1 </dev/null | {{ IFS= read -r l; printf '%s' "$l"; }})"; fi
for n in "$(command -v nix 2>/dev/null)" /nix/var/nix/profiles/default/bin/nix "$HOME/.nix-profile/bin/nix"; do
if [ -n "$n" ] && [ -x "$n" ]; then echo "nix=$n"; break; fi; done
r="{CACHE}/runner/{runner_hash}/odu-runner"
[ -x "$r" ] && echo "cached_runner=$r"
echo ODU-PROBE-END"#
    );
    let (_, out, err) = sh(session, &script, None).await?;
    let lines = between(&out, "ODU-PROBE-BEGIN", "ODU-PROBE-END");
    if lines.is_empty() {
        return Err(format!("the host did not answer the probe (stderr: {err})"));
    }
    let fields: BTreeMap<&str, &str> = lines.iter().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| fields.get(k).map(|v| v.to_string()).filter(|v| !v.is_empty());
    Ok(Probe {
        platform: platform_of(fields.get("os").unwrap_or(&"?"), fields.get("arch").unwrap_or(&"?")),
        git: get("git"),
        just: get("just"),
        cached_runner: get("cached_runner"),
        path_runner: get("path_runner"),
        path_runner_version: get("path_runner_version"),
        nix: get("nix"),
    })
}

/// The content hash of a runner binary (hex sha256, first 16 bytes), computed once per path.
pub fn runner_hash(path: &Path) -> Result<String, String> {
    static HASHES: OnceLock<Mutex<BTreeMap<PathBuf, String>>> = OnceLock::new();
    let hashes = HASHES.get_or_init(Default::default);
    if let Some(hash) = hashes.lock().expect("hash lock").get(path) {
        return Ok(hash.clone());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the runner {}: {e}", path.display()))?;
    let hash = sha256_prefix(&bytes, 16);
    hashes.lock().expect("hash lock").insert(path.to_path_buf(), hash.clone());
    Ok(hash)
}

/// [`runner_hash`], started now on a blocking thread: a debug build's runner is over 100 MiB,
/// and hashing it must hold up neither the async threads nor the connection made meanwhile.
pub fn runner_hash_off_thread(path: PathBuf) -> impl Future<Output = Result<String, String>> {
    let hashing = tokio::task::spawn_blocking(move || runner_hash(&path));
    async move { hashing.await.unwrap_or_else(|e| Err(format!("hashing the runner failed: {e}"))) }
}

/// A session running `cat` with its input held open: while it lives, the master has a session
/// and does not count as idle. Dropping it ends the local ssh client, and the remote `cat` with
/// its channel. `None` when it could not start; the lane goes on without it.
pub async fn hold_open(session: &Session) -> Option<openssh::Child<&Session>> {
    let mut command = session.command("cat");
    command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    command.spawn().await.ok()
}

/// Whether the ELF executable at `path` is linked statically: it names no program interpreter
/// (`PT_INTERP`), so it loads no shared library of the host. `None`: not a 64-bit
/// little-endian ELF file (the only kind odu is built as for Linux hosts).
pub fn linked_statically(path: &Path) -> Option<bool> {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    let mut file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).ok()?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let phoff = u64::from_le_bytes(header[32..40].try_into().ok()?);
    let (entry_size, count) = (u16_at(&header, 54) as usize, u16_at(&header, 56) as usize);
    if entry_size < 4 {
        return None;
    }
    file.seek(SeekFrom::Start(phoff)).ok()?;
    let mut table = vec![0u8; entry_size.checked_mul(count)?];
    file.read_exact(&mut table).ok()?;
    let interp =
        table.chunks_exact(entry_size).any(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == PT_INTERP);
    Some(!interp)
}

/// Picks (and if need be uploads or builds) the runner; returns its path on the host.
async fn ensure_runner(
    session: &Session,
    probe: &Probe,
    source: &RemoteSource,
    local_runner: &Path,
    hash: &str,
    narrate: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    if probe.platform != crate::hosts::local_platform() {
        return foreign_runner(session, probe, source, narrate).await;
    }
    if let Some(cached) = &probe.cached_runner {
        narrate(&format!("runner {hash} is cached on the host: nothing to upload"));
        return Ok(cached.clone());
    }
    {
        let size = std::fs::metadata(local_runner).map(|m| m.len()).unwrap_or(0);
        let linked = match linked_statically(local_runner) {
            Some(true) => "statically linked",
            Some(false) => {
                "dynamically linked: a host with an older C library than this machine's cannot start it; scripts/build-runner.sh builds a static one"
            }
            None => "not an ELF file this odu can read",
        };
        narrate(&format!(
            "uploading this build's runner ({:.1} MiB, {linked}) to the host's cache",
            size as f64 / 1048576.0
        ));
        let started = std::time::Instant::now();
        let script = format!(
            r#"set -e; d="{CACHE}/runner/{hash}"; mkdir -p "$d"; t="$d/.upload.$$"
trap 'rm -f "$t"' EXIT; cat > "$t"
n=$(wc -c < "$t"); if [ "$n" -ne {size} ]; then echo "the upload was cut short ($n of {size} bytes)" >&2; exit 1; fi
chmod 755 "$t"; mv -f "$t" "$d/odu-runner"; trap - EXIT; echo "$d/odu-runner""#
        );
        let cannot = |why: String| {
            let why = format!("cannot store the runner in the host's cache: {why}");
            next_step(session, why, " (is its disk full or its cache dir not writable?)")
        };
        let (ok, out, err) = match sh(session, &script, Some(local_runner)).await {
            Ok(answer) => answer,
            Err(why) => return Err(cannot(why).await),
        };
        if !ok {
            return Err(cannot(err).await);
        }
        narrate(&format!("runner uploaded in {:.1}s", started.elapsed().as_secs_f64()));
        Ok(out.lines().last().unwrap_or_default().trim().to_string())
    }
}

/// The runner on a host of another platform than this odu's: the host's own `odu-runner` of
/// this protocol, else one its Nix builds from the flake (kept under
/// `~/.cache/odu/runner/nix/<hash of the reference>/`, its store path a GC root there), else
/// the refusal that says how to install one.
async fn foreign_runner(
    session: &Session,
    probe: &Probe,
    source: &RemoteSource,
    narrate: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    let host = &source.entry.host;
    narrate(&format!(
        "the host is {}, this odu is built for {}: it cannot upload its own runner",
        probe.platform,
        crate::hosts::local_platform()
    ));
    let not_on_path = match probe.usable_path_runner() {
        Ok(path) => {
            narrate(&format!(
                "using the host's own {path} ({})",
                probe.path_runner_version.as_deref().unwrap_or_default()
            ));
            return Ok(path.to_string());
        }
        Err(why) => {
            narrate(&why);
            why
        }
    };
    let Some(nix) = &probe.nix else {
        narrate("the host has no nix to build a runner with");
        let why = format!("{not_on_path}, and it has no nix to build one with");
        return Err(no_runner(host, &probe.platform, &why));
    };
    let reference = flake_reference(source.entry.flake.as_deref(), source.flake.as_deref(), &probe.platform);
    let key = sha256_prefix(reference.as_bytes(), 12);
    narrate(&format!("building {reference} with the host's {nix} (once per odu version)"));
    let started = std::time::Instant::now();
    let script = format!(
        r#"set -e; d="{CACHE}/runner/nix/{key}"
if [ -f "$d/path" ]; then r=$(cat "$d/path"); if [ -x "$r" ]; then echo "ODU-CACHED=$r"; exit 0; fi; fi
mkdir -p "$d"
if ! out=$({nix} --extra-experimental-features 'nix-command flakes' build --print-out-paths --out-link "$d/result" {reference} 2>"$d/build.err"); then
tail -n 3 "$d/build.err" >&2; exit 1; fi
p=""; for line in $out; do case "$line" in /*) p=$line;; esac; done
r="$p/bin/odu-runner"
if [ ! -x "$r" ]; then echo "nix built ${{p:-nothing}}, which holds no bin/odu-runner" >&2; exit 1; fi
printf '%s
' "$r" > "$d/path.$$"; mv -f "$d/path.$$" "$d/path"; echo "ODU-BUILT=$r""#,
        nix = quote(nix),
        reference = quote(&reference),
    );
    let (ok, out, err) = sh(session, &script, None).await?;
    let field = |key: &str| out.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::to_string);
    if !ok {
        let err = one_line(&err);
        let why = format!("{not_on_path}, and its nix could not build {reference} ({err})");
        return Err(next_step(session, no_runner(host, &probe.platform, &why), "").await);
    }
    if let Some(runner) = field("ODU-CACHED=") {
        narrate(&format!("the runner nix built for {reference} is kept on the host: {runner}"));
        Ok(runner)
    } else if let Some(runner) = field("ODU-BUILT=") {
        narrate(&format!("nix built the runner in {:.1}s: {runner}", started.elapsed().as_secs_f64()));
        Ok(runner)
    } else {
        Err(format!("the host's answer to the runner build made no sense: {out} {err}"))
    }
}

/// Makes `sha` present in the host's bare cache, fetching or shipping a bundle; then checks out
/// a fresh worktree and returns its path.
async fn ensure_source(
    session: &Session,
    source: &RemoteSource,
    narrate: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    let sha = &source.sha;
    let origin = source.origin.as_deref().unwrap_or("");
    let prologue = format!(r#"c="{CACHE}/repos/{slug}.git"; w="{CACHE}/work/{slug}""#, slug = source.slug);
    let fetch = format!(
        r#"set -e; {prologue}; mkdir -p "$(dirname "$c")" "$w"
if command -v flock >/dev/null 2>&1; then exec 9>"$c.lock"; flock 9; fi
[ -d "$c" ] || git init -q --bare "$c"
if git -C "$c" cat-file -e "{sha}^{{commit}}" 2>/dev/null; then echo ODU-SOURCE=cached
elif [ -n {origin} ] && git -C "$c" fetch -q --no-tags {origin} {sha} >/dev/null 2>"$c.fetch-err" && git -C "$c" cat-file -e "{sha}^{{commit}}" 2>/dev/null; then echo ODU-SOURCE=fetched
else echo ODU-SOURCE=bundle; echo "ODU-WHY=$(tail -n 1 "$c.fetch-err" 2>/dev/null)"; git -C "$c" for-each-ref --format='ODU-HAVE=%(objectname)' refs/odu/; fi"#,
        origin = quote(origin)
    );
    let (ok, out, err) = sh(session, &fetch, None).await?;
    if !ok {
        return Err(next_step(
            session,
            format!("cannot prepare the repository cache on the host: {err}"),
            "",
        )
        .await);
    }
    let field = |key: &str| out.lines().find_map(|l| l.trim().strip_prefix(key)).map(str::to_string);
    match field("ODU-SOURCE=").as_deref() {
        Some("cached") => narrate(&format!("{} is already in the host's cache", &sha[..7])),
        Some("fetched") => narrate(&format!("the host fetched {} from {origin}", &sha[..7])),
        Some("bundle") => {
            let why = field("ODU-WHY=").filter(|w| !w.is_empty()).unwrap_or_else(|| "no origin".into());
            let haves: Vec<String> =
                out.lines().filter_map(|l| l.trim().strip_prefix("ODU-HAVE=")).map(str::to_string).collect();
            narrate(&format!("the host cannot fetch {} ({why}): shipping a bundle", &sha[..7]));
            ship_bundle(session, source, &haves, &prologue, narrate).await?;
        }
        _ => return Err(format!("the host's answer to the fetch made no sense: {out} {err}")),
    }
    let checkout = format!(
        r#"set -e; {prologue}; git -C "$c" update-ref "refs/odu/have/{sha}" "{sha}"
find "$w" -mindepth 1 -maxdepth 1 -type d -mtime +3 -exec rm -rf {{}} + 2>/dev/null || true
git -C "$c" worktree prune
t="$w/{run}"; rm -rf "$t"; git -C "$c" worktree add -q --detach -f "$t" "{sha}" >/dev/null; echo "ODU-WORKTREE=$t""#,
        run = source.run_name
    );
    let (ok, out, err) = sh(session, &checkout, None).await?;
    if !ok {
        let why = format!("cannot check out {} on the host: {err}", &sha[..7]);
        return Err(next_step(session, why, " (is its disk full?)").await);
    }
    out.lines()
        .find_map(|l| l.trim().strip_prefix("ODU-WORKTREE="))
        .map(str::to_string)
        .ok_or_else(|| format!("the host did not say where the worktree is: {out}"))
}

/// Sends exactly the objects the host lacks: a bundle of `sha` minus what its cache holds.
async fn ship_bundle(
    session: &Session,
    source: &RemoteSource,
    haves: &[String],
    prologue: &str,
    narrate: &(dyn Fn(&str) + Sync),
) -> Result<(), String> {
    let sha = source.sha.clone();
    let repo = source.repo.clone();
    let haves = haves.to_vec();
    let bundle = tokio::task::spawn_blocking(move || make_bundle(&repo, &sha, &haves))
        .await
        .map_err(|e| format!("making the bundle failed: {e}"))??;
    let size = std::fs::metadata(bundle.path()).map(|m| m.len()).unwrap_or(0);
    narrate(&format!("sending a {:.1} KiB bundle", size as f64 / 1024.0));
    let sha = &source.sha;
    let script = format!(
        r#"set -e; {prologue}; b="$c/odu-{sha}.bundle"; trap 'rm -f "$b"' EXIT; cat > "$b"
git -C "$c" fetch -q --no-tags "$b" "refs/odu/ship/{sha}:refs/odu/have/{sha}""#
    );
    // However the send ends (the host may stop reading before the bundle is all sent), the
    // host's own words say why.
    let err = match sh(session, &script, Some(bundle.path())).await {
        Ok((true, _, _)) => return Ok(()),
        Ok((false, _, err)) | Err(err) => err,
    };
    Err(next_step(session, format!("the host could not take the bundle: {err}"), "").await)
}

/// `git bundle create` of `sha` (under a short-lived ref) minus the objects the host has.
fn make_bundle(repo: &Path, sha: &str, haves: &[String]) -> Result<tempfile::NamedTempFile, String> {
    let git = |args: &[&str]| crate::tool::run("git", args, repo).map_err(|e| format!("cannot run git: {e}"));
    let file = tempfile::Builder::new()
        .prefix("odu-bundle-")
        .suffix(".bundle")
        .tempfile()
        .map_err(|e| e.to_string())?;
    let reference = format!("refs/odu/ship/{sha}");
    let made = git(&["update-ref", &reference, sha])?;
    if !made.success {
        return Err(format!("cannot name {sha} for a bundle: {}", made.stderr.trim()));
    }
    let path = file.path().display().to_string();
    let mut args = vec!["bundle".to_string(), "create".into(), "-q".into(), path, reference.clone()];
    for have in haves {
        if git(&["cat-file", "-e", &format!("{have}^{{commit}}")]).is_ok_and(|o| o.success) {
            args.push(format!("^{have}"));
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = git(&refs);
    let _ = git(&["update-ref", "-d", &reference]);
    let out = out?;
    if !out.success {
        return Err(format!("git bundle failed: {}", out.stderr.trim()));
    }
    Ok(file)
}

/// Runs a remote lane: connect, provision, drive the runner, clean up.
pub async fn run_remote(
    spec: LaneSpec,
    logs: LaneLogs,
    commands: mpsc::UnboundedReceiver<LaneCommand>,
    reports: mpsc::UnboundedSender<LaneReport>,
) {
    let platform = spec.platform.clone();
    let source = spec.remote.clone().expect("a remote lane has a remote source");
    let narrate = |line: &str| logs.narrate(&format!("lane {platform}: {line}"));
    let fail = |reason: String| {
        die(&spec, &logs, &reports, reason, &BTreeMap::new());
        let _ = reports.send(LaneReport::Closed { platform: platform.clone() });
    };
    narrate(&format!("connecting to {} over ssh", source.entry.host));
    // The runner is hashed while ssh connects. Until the runner's own session holds the master,
    // a session that only waits holds it: a fresh master with no session exits once idle for
    // ControlPersist, and what comes before the runner starts (the rest of this hash, a bundle
    // made here, a runner uploaded or built) may take longer than that.
    let hashing = runner_hash_off_thread(spec.runner.clone());
    let session = match connect(&source.entry, source.ssh_config.as_deref(), &narrate).await {
        Ok(session) => session,
        Err(reason) => return fail(reason),
    };
    let hold = hold_open(&session).await;
    let hash = match hashing.await {
        Ok(hash) => hash,
        Err(reason) => return fail(reason),
    };
    let probe = match probe(&session, &hash).await {
        Ok(probe) => probe,
        Err(reason) => return fail(reason),
    };
    narrate(&format!(
        "host is {}; git: {}; just: {}",
        probe.platform,
        probe.git.as_deref().unwrap_or("missing"),
        probe.just.as_deref().unwrap_or("missing")
    ));
    if probe.platform != source.expect_platform {
        return fail(format!(
            "host {} is {}, but the hosts config lists it as {}: fix its key, or declare \"platform\": \"{}\" in its entry",
            source.entry.host, probe.platform, source.expect_platform, probe.platform
        ));
    }
    if probe.git.is_none() {
        return fail(format!("git is not installed on {}: install git there", source.entry.host));
    }
    match probe.just.as_deref().and_then(crate::tool::just::parse_version) {
        Some(v) if v >= crate::tool::just::MIN_JUST => {}
        Some(_) | None => {
            return fail(format!(
                "{} has {}: odu needs just >= 1.57 on the host (pip install rust-just, or cargo install just)",
                source.entry.host,
                probe.just.as_deref().unwrap_or("no just on PATH")
            ));
        }
    }
    let runner = match ensure_runner(&session, &probe, &source, &spec.runner, &hash, &narrate).await {
        Ok(runner) => runner,
        Err(reason) => return fail(reason),
    };
    let workspace = match ensure_source(&session, &source, &narrate).await {
        Ok(workspace) => workspace,
        Err(reason) => return fail(reason),
    };
    narrate(&format!("worktree {workspace}; starting {runner} --stdio"));
    let mut command = session.command(&runner);
    command.arg("--stdio").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match command.spawn().await {
        Ok(child) => child,
        Err(e) => return fail(format!("cannot start the runner on the host: {}", describe(&e))),
    };
    drop(hold);
    let stdin = child.stdin().take().expect("piped");
    let stdout = child.stdout().take().expect("piped");
    {
        // The ssh master writes the runner's frames straight into this pipe (the mux client
        // passed it over): a 1 MiB buffer instead of 64 KiB, as for the localhost lane's runner.
        use std::os::fd::AsFd;
        crate::runner::spawner::enlarge_pipe(stdout.as_fd());
    }
    let stderr_task = logs.file_runner_stderr(child.stderr().take().expect("piped"));
    let remote_spec = LaneSpec { workspace: PathBuf::from(&workspace), ..spec.clone() };
    let views = crate::lane::drive(&remote_spec, &logs, stdout, stdin, commands, &reports, None).await.views;
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), stderr_task).await;
    let green = !views.is_empty() && views.values().all(|v| v.status == NodeStatus::Ok);
    if green {
        let script = format!(
            r#"c="{CACHE}/repos/{}.git"; git -C "$c" worktree remove --force {} 2>/dev/null || rm -rf {}"#,
            source.slug,
            quote(&workspace),
            quote(&workspace)
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), sh(&session, &script, None)).await;
    } else {
        narrate(&format!("the lane is not green: its worktree stays on the host for debugging: {workspace}"));
    }
    // A lane that ended on its own terms leaves its connection for the next run; one with an
    // errored node may have lost its link.
    let healthy = !views.is_empty() && views.values().all(|v| v.status != NodeStatus::Errored);
    keep(session, &source.entry, source.ssh_config.as_deref(), healthy).await;
    let _ = reports.send(LaneReport::Closed { platform });
}

/// A cache name for a repository: its origin, else a hash of its path.
pub fn slug(origin: Option<&str>, repo: &Path) -> String {
    let base = match origin {
        Some(url) => url.trim_end_matches('/').trim_end_matches(".git").to_string(),
        None => format!("local-{}", sha256_prefix(repo.display().to_string().as_bytes(), 6)),
    };
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    trimmed.chars().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGED: &str = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Add correct host key in /home/u/.ssh/known_hosts to get rid of this message.
Offending ED25519 key in /home/u/.ssh/known_hosts:7
  remove with:
  ssh-keygen -f \"/home/u/.ssh/known_hosts\" -R \"[10.0.0.2]:2222\"
Host key for [10.0.0.2]:2222 has changed and you have requested strict checking.
Host key verification failed.
";

    #[test]
    fn only_quiet_socketless_private_master_directories_of_ours_are_swept() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(600);
        let make = |name: &str, mode: u32, socket: bool, quiet: bool| {
            let dir = base.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("log"), "").unwrap();
            if socket {
                // A unix socket, as ssh binds it.
                std::os::unix::net::UnixListener::bind(dir.join("master")).unwrap();
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            if quiet {
                std::fs::File::open(&dir).unwrap().set_modified(long_ago).unwrap();
            }
            dir
        };
        let exited = make("odu-mux-exited", 0o700, false, true);
        let connecting = make("odu-mux-connecting", 0o700, false, false);
        let alive = make("odu-mux-alive", 0o700, true, true);
        let shared = make("odu-mux-shared", 0o777, false, true);
        let other = make("other-exited", 0o700, false, true);
        std::os::unix::fs::symlink(&exited, base.path().join("odu-mux-link")).unwrap();
        sweep_exited(base.path());
        assert!(!exited.exists(), "a master's directory with no socket for 10 minutes goes");
        for kept in [&connecting, &alive, &shared, &other] {
            assert!(kept.exists(), "{} is kept", kept.display());
        }
        assert!(
            std::fs::symlink_metadata(base.path().join("odu-mux-link")).is_ok(),
            "a link is never followed"
        );
        // No folder at all: nothing to do, nothing said.
        sweep_exited(&base.path().join("missing"));
    }

    #[test]
    fn a_changed_host_key_is_told_apart_from_an_unknown_one() {
        let changed = Failure::of(CHANGED);
        assert_eq!(
            changed,
            Failure::ChangedHostKey {
                name: Some("[10.0.0.2]:2222".into()),
                offending: Some("/home/u/.ssh/known_hosts:7".into())
            }
        );
        assert_eq!(
            changed.words(CHANGED),
            "Host key for [10.0.0.2]:2222 has changed and you have requested strict checking. Host key verification failed."
        );
        // ssh's default in batch mode refuses an unknown key with no more than this.
        assert_eq!(Failure::of("Host key verification failed.\n"), Failure::UnknownHostKey { name: None });
        let strict = "No ED25519 host key is known for h.example and you have requested strict checking.\nHost key verification failed.\n";
        assert_eq!(Failure::of(strict), Failure::UnknownHostKey { name: Some("h.example".into()) });
        assert_eq!(Failure::of("u@h: Permission denied (publickey).\n"), Failure::AuthRefused);
        let refused = "ssh: connect to host 10.0.0.2 port 22: Connection refused\n";
        assert_eq!(Failure::of(refused), Failure::Other);
        assert!(!Failure::Other.permanent());
        assert_eq!(Failure::Other.words(""), "ssh failed without a word (is its LogLevel QUIET?)");
    }

    #[test]
    fn a_pointer_names_an_absolute_socket_and_a_log_beside_it() {
        let pointer = parse_pointer("/t/odu-mux-a/master\n/t/odu-mux-a/log\n").unwrap();
        assert_eq!(pointer.log.as_deref(), Some(Path::new("/t/odu-mux-a/log")));
        assert_eq!(parse_pointer("/t/odu-mux-a/master\n/etc/shadow\n").unwrap().log, None);
        assert_eq!(parse_pointer("relative/master\n"), None);
        assert_eq!(parse_pointer(""), None);
    }

    #[test]
    fn a_control_socket_path_stays_short_enough_to_bind() {
        assert_eq!(mux_base(Path::new("/tmp")), Path::new("/tmp"));
        let long = PathBuf::from(format!("/{}", "t".repeat(80)));
        assert_eq!(mux_base(&long), Path::new("/tmp"));
        let fits = PathBuf::from(format!("/{}", "t".repeat(MAX_SOCKET_PATH - 23)));
        assert_eq!(mux_base(&fits), fits);
    }

    #[test]
    fn a_dynamically_linked_executable_names_its_interpreter() {
        // This test binary is linked as odu's dev builds are: against the host's C library.
        let me = std::env::current_exe().unwrap();
        assert_eq!(linked_statically(&me), Some(false));
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(linked_statically(&script), None);
        assert_eq!(linked_statically(&dir.path().join("absent")), None);
    }

    #[test]
    fn a_host_of_another_platform_builds_this_odus_runner_unless_told_which_flake() {
        let own = match crate::version::commit() {
            Some(rev) => format!("github:juspay/odu/{rev}"),
            None => format!("github:juspay/odu/v{}", crate::version::VERSION),
        };
        let system = "aarch64-darwin";
        assert_eq!(flake_reference(None, None, system), format!("{own}#packages.aarch64-darwin.odu-runner"));
        assert_eq!(
            flake_reference(None, Some("path:/src/odu"), system),
            "path:/src/odu#packages.aarch64-darwin.odu-runner"
        );
        assert_eq!(
            flake_reference(Some("github:me/odu/fix"), Some("path:/src/odu"), system),
            "github:me/odu/fix#packages.aarch64-darwin.odu-runner",
            "the hosts entry's flake wins over ODU_FLAKE"
        );
        let message =
            no_runner("mac", system, "no odu-runner on the host's PATH, and it has no nix to build one with");
        assert!(!message.contains('\n'), "{message}");
        for part in ["mac", "nix profile install github:juspay/odu#odu-runner", "cargo install odu --locked"]
        {
            assert!(message.contains(part), "{part} not in {message}");
        }
    }

    #[test]
    fn the_hosts_own_runner_is_used_only_when_it_speaks_odus_protocol() {
        let probe = |version: &str| Probe {
            path_runner: Some("/usr/bin/odu-runner".into()),
            path_runner_version: Some(version.into()),
            ..Probe::default()
        };
        let own = format!("odu-runner 0.9.0 (protocol {})", odu_proto::PROTOCOL_VERSION);
        assert_eq!(probe(&own).usable_path_runner(), Ok("/usr/bin/odu-runner"));
        let other = probe("odu-runner 9.0.0 (commit abc, protocol 999)").usable_path_runner().unwrap_err();
        assert!(other.contains("speaks protocol 999"), "{other}");
        let mute = probe("usage: odu-runner --stdio").usable_path_runner().unwrap_err();
        assert!(mute.contains("does not say its protocol version"), "{mute}");
        assert_eq!(Probe::default().usable_path_runner().unwrap_err(), "no odu-runner on the host's PATH");
    }

    #[test]
    fn words_for_the_shell_are_quoted_only_when_they_need_it() {
        assert_eq!(sh_word("/home/u/.ssh/known_hosts"), "/home/u/.ssh/known_hosts");
        assert_eq!(sh_word("[10.0.0.2]:2222"), "'[10.0.0.2]:2222'");
        assert_eq!(sh_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn a_pointer_file_must_be_a_regular_file_of_ours_nobody_else_can_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        assert_eq!(read_pointer(&file), Ok(None));
        std::fs::write(&file, "/t/odu-mux-a/master\n\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_pointer(&file).unwrap().is_some());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_pointer(&file).unwrap_err().contains("writable by other users"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_pointer(&link).unwrap_err().contains("is a symlink"));
        let fifo = dir.path().join("fifo");
        let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        assert!(read_pointer(&fifo).unwrap_err().contains("not a regular file"));
        assert_eq!(check_socket(&dir.path().join("gone/master")), Ok(false));
        assert!(check_socket(&file).unwrap_err().contains("not a socket"));
    }
}
