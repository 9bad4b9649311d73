//! A remote lane: one ssh connection (the `openssh` crate over the user's `ssh`: their config,
//! agent and known_hosts apply, `BatchMode`), one `odu-runner --stdio` over it, driven by the
//! same protocol client as the localhost lane.
//!
//! Setup, narrated step by step into the lane's `_ci-setup` log:
//! 1. connect, retrying a bounded number of times with backoff (never on a host key or auth
//!    refusal, which no retry fixes); a healthy connection a lane left to the same host in the
//!    last 10 s is taken over instead (see [`keep`]);
//! 2. probe the host (`uname`, git, just, a cached or installed runner) and check its
//!    platform against the hosts entry;
//! 3. the runner: the one cached under `~/.cache/odu/runner/<content-hash>/`, else this build's
//!    own uploaded there atomically when the platforms match, else an `odu-runner` on PATH;
//! 4. the source: the host fetches the pinned sha from `origin` into a bare cache
//!    `~/.cache/odu/repos/<slug>.git` (under a lock); when it cannot, the coordinator ships the
//!    missing objects as a git bundle over the link. A fresh worktree per run, removed when the
//!    lane is green and kept for debugging when it is red.
//!
//! The remote runner gets only the run's own variables (`ODU_RUN`): never the coordinator's
//! environment or credentials.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use odu_core::NodeStatus;
use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::hosts::HostEntry;
use crate::lane::{LaneCommand, LaneLogs, LaneReport, LaneSpec, die};

/// What a remote lane needs besides its [`LaneSpec`].
#[derive(Clone, Debug)]
pub struct RemoteSource {
    pub entry: HostEntry,
    /// `$ODU_SSH_CONFIG`: an ssh config file for every lane (an entry's own `ssh_config` wins).
    pub ssh_config: Option<PathBuf>,
    /// The coordinator's checkout, where bundles are made.
    pub repo: PathBuf,
    pub origin: Option<String>,
    pub sha: String,
    /// The bare cache's name on the host.
    pub slug: String,
    /// The platform the host must be: the entry's `platform`, else the lane's key.
    pub expect_platform: String,
    /// Names the run's worktree on the host (`<label>-<seq>`).
    pub run_name: String,
}

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
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The session builder for a host entry.
fn builder(entry: &HostEntry, ssh_config: Option<&Path>) -> SessionBuilder {
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(KnownHosts::Strict)
        .connect_timeout(Duration::from_secs(10))
        .server_alive_interval(Duration::from_secs(5))
        // The master outlives no lane: it exits once its last session closed, even when the
        // coordinator was killed and never closed it.
        .control_persist(openssh::ControlPersist::IdleFor(std::num::NonZeroUsize::new(10).expect("non-zero")))
        .control_directory(std::env::temp_dir());
    if let Some(port) = entry.port {
        builder.port(port);
    }
    if let Some(identity) = &entry.identity {
        builder.keyfile(expand_home(identity));
    }
    match (&entry.ssh_config, ssh_config) {
        (Some(own), _) => {
            builder.config_file(expand_home(own));
        }
        (None, Some(shared)) => {
            builder.config_file(shared);
        }
        (None, None) => {}
    }
    builder
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The whole error chain in one line (ssh's own message is at the bottom).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let line =
            e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        if !line.is_empty() {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = e.source();
    }
    text
}

/// Where a lane leaves its ssh connection for the next run to the same host: a directory
/// of this user's, with one file per host entry naming the master's control socket.
fn kept_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    std::env::temp_dir().join(format!("odu-ssh-{}", unsafe { libc::geteuid() }))
}

/// The file naming the kept master for `entry` (everything that picks the connection).
fn kept_file(entry: &HostEntry, ssh_config: Option<&Path>) -> PathBuf {
    let key = format!(
        "{}\n{:?}\n{:?}\n{:?}\n{:?}",
        entry.host, entry.port, entry.identity, entry.ssh_config, ssh_config
    );
    kept_dir().join(sha256_prefix(key.as_bytes(), 12))
}

/// The first `bytes` bytes of `data`'s sha256, in hex: a short name that content picks.
fn sha256_prefix(data: &[u8], bytes: usize) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)[..bytes].iter().map(|b| format!("{b:02x}")).collect()
}

/// The master a previous lane kept for `entry`, if it still answers a command within 3 s
/// (a master whose link died answers `ssh -O check` until its keepalives give up, so a real
/// round trip is asked for).
async fn resume(entry: &HostEntry, ssh_config: Option<&Path>) -> Option<Session> {
    let text = std::fs::read_to_string(kept_file(entry, ssh_config)).ok()?;
    let mut lines = text.lines();
    let ctl = PathBuf::from(lines.next()?);
    let log = lines.next().filter(|l| !l.is_empty()).map(|l| PathBuf::from(l).into_boxed_path());
    if !ctl.exists() {
        // Its master exited: the directory it was made in is all that is left of it.
        forget(&ctl);
        return None;
    }
    let session = Session::resume(ctl.clone().into_boxed_path(), log);
    let mut probe = session.command("true");
    probe.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    match tokio::time::timeout(Duration::from_secs(3), probe.status()).await {
        Ok(Ok(status)) if status.success() => Some(session),
        _ => {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
            forget(&ctl);
            None
        }
    }
}

/// Removes the directory the openssh crate made for a master (its control socket and log),
/// which a kept master's session no longer owns.
fn forget(ctl: &Path) {
    if let Some(dir) = ctl.parent()
        && dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".ssh-connection"))
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Ends a lane's use of its connection. A healthy one is kept for the next run to the same
/// host (the warm-run setup then skips the ssh handshake); the master still exits 10 s after
/// its last session, as every master does. One whose link is suspect is closed.
pub async fn keep(session: Session, entry: &HostEntry, ssh_config: Option<&Path>, healthy: bool) {
    if !healthy {
        let _ = tokio::time::timeout(Duration::from_secs(5), session.close()).await;
        return;
    }
    let (ctl, log) = session.detach();
    let dir = kept_dir();
    let text = format!(
        "{}\n{}\n",
        ctl.display(),
        log.as_deref().map(|l| l.display().to_string()).unwrap_or_default()
    );
    let saved = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).and_then(|()| {
        let file = tempfile::NamedTempFile::new_in(&dir)?;
        std::fs::write(file.path(), text)?;
        file.persist(kept_file(entry, ssh_config)).map_err(|e| e.error)?;
        Ok(())
    });
    if saved.is_err() {
        // Nobody will take it over: let it go now.
        let path = ctl.to_path_buf();
        let _ = tokio::time::timeout(Duration::from_secs(5), Session::resume(ctl, log).close()).await;
        forget(&path);
    }
}

/// Connects (taking over a connection a previous lane kept, when one answers), retrying
/// transient failures with backoff.
pub async fn connect(
    entry: &HostEntry,
    ssh_config: Option<&Path>,
    narrate: &(dyn Fn(&str) + Sync),
) -> Result<Session, String> {
    if let Some(session) = resume(entry, ssh_config).await {
        narrate(&format!("reusing the ssh connection a previous run left to {}", entry.host));
        return Ok(session);
    }
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=CONNECT_ATTEMPTS {
        match builder(entry, ssh_config).connect(&entry.host).await {
            Ok(session) => return Ok(session),
            Err(e) => {
                let message = describe(&e);
                let permanent =
                    ["Host key verification failed", "Permission denied", "Could not resolve hostname"]
                        .iter()
                        .any(|p| message.contains(p));
                if permanent || attempt == CONNECT_ATTEMPTS {
                    let hint = if message.contains("Host key verification failed") {
                        " (the host key does not match known_hosts: check the host, then fix known_hosts)"
                    } else if message.contains("Permission denied") {
                        " (ssh refused our keys: add one to the host's authorized_keys or load it in ssh-agent)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "cannot connect to {} after {attempt} attempt(s): {message}{hint}",
                        entry.host
                    ));
                }
                narrate(&format!("connecting to {} failed ({message}); retrying in {delay:?}", entry.host));
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Runs `script` with `sh -c` on the host; `(success, stdout, stderr)`.
async fn sh(session: &Session, script: &str, input: Option<&Path>) -> Result<(bool, String, String), String> {
    let mut command = session.command("sh");
    command.arg("-c").arg(script).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().await.map_err(|e| describe(&e))?;
    if let Some(path) = input {
        let mut stdin = child.stdin().take().expect("piped");
        let mut file =
            tokio::fs::File::open(path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let copied = tokio::io::copy(&mut file, &mut stdin).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
        if let Err(e) = copied {
            let out = child.wait_with_output().await.map_err(|e| describe(&e))?;
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(format!("sending {} failed: {e} {err}", path.display()));
        }
    }
    let out = child.wait_with_output().await.map_err(|e| describe(&e))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
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
command -v odu-runner >/dev/null 2>&1 && echo "path_runner=$(command -v odu-runner)"
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

/// Picks (and if need be uploads) the runner; returns its path on the host.
async fn ensure_runner(
    session: &Session,
    probe: &Probe,
    local_runner: &Path,
    hash: &str,
    narrate: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    if let Some(cached) = &probe.cached_runner {
        narrate(&format!("runner {hash} is cached on the host: nothing to upload"));
        return Ok(cached.clone());
    }
    if probe.platform == crate::hosts::local_platform() {
        let size = std::fs::metadata(local_runner).map(|m| m.len()).unwrap_or(0);
        narrate(&format!(
            "uploading this build's runner ({:.1} MiB) to the host's cache",
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
        return Ok(out.lines().last().unwrap_or_default().trim().to_string());
    }
    if let Some(path) = &probe.path_runner {
        narrate(&format!("using the host's own {path} (its protocol version is checked on connect)"));
        return Ok(path.clone());
    }
    Err(format!(
        "no runner for {}: this odu is built for {} so it cannot upload its own; install odu-runner (protocol {}) on the host's PATH",
        probe.platform,
        crate::hosts::local_platform(),
        odu_proto::PROTOCOL_VERSION
    ))
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
    let session = match connect(&source.entry, source.ssh_config.as_deref(), &narrate).await {
        Ok(session) => session,
        Err(reason) => return fail(reason),
    };
    let hash = match runner_hash(&spec.runner) {
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
    match probe.just.as_deref().and_then(crate::runner::parse_version) {
        Some(v) if v >= crate::runner::MIN_JUST => {}
        Some(_) | None => {
            return fail(format!(
                "{} has {}: odu needs just >= 1.57 on the host (pip install rust-just, or cargo install just)",
                source.entry.host,
                probe.just.as_deref().unwrap_or("no just on PATH")
            ));
        }
    }
    let runner = match ensure_runner(&session, &probe, &spec.runner, &hash, &narrate).await {
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
    let views = crate::lane::drive(&remote_spec, &logs, stdout, stdin, commands, &reports).await;
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
