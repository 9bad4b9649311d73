//! Benchmarks of remote lanes over ssh, against a throwaway sshd in a network namespace (the test
//! lab of `tests/it/lab.rs`; root only).
//!
//! Three scenarios, each timed as the median of `--runs` runs (default 5) after one untimed
//! warm-up per side, the sides interleaved (alternating which goes first) so drift on a shared
//! machine hits both alike:
//!
//! - `wide200_ssh`: 200 independent `@true` recipes under a `[metadata("ci")]` root, `odu run`
//!   wall time on the namespace host over ssh against the same DAG on the localhost lane.
//!   Target: ratio ≤ 1.3.
//! - `log256_ssh`: one node printing 256 MiB of deterministic mixed-length text lines. The trail
//!   file `.ci/<sha7>/<platform>/big.log` must be byte-identical (size + sha256) on every run;
//!   throughput is 256 MiB over the node's own duration as its ledger record has it (the runner's
//!   spawn to exit; with the runner's bounded log window that covers the transfer but for the
//!   last few MiB). Targets: ≥ 100 MiB/s over ssh; the coordinator's (`odu serve`) peak RSS
//!   ≤ 64 MiB. The localhost lane is the baseline.
//! - `setup_ssh`: a one-node pipeline; the time from the run's start (the ledger's `started_at`,
//!   stamped just before the lanes start) to its first real node's start (the node's
//!   `started_at` in the ledger: when its runner spawned it). Target: ≤ 1.5 s over ssh with the
//!   runner and the sha already on the host; the localhost lane is the baseline.
//!
//! Every timed ssh run is checked warm (the `_ci-setup` log says the runner was cached and the
//! sha already present). Each `odu run` starts from an empty `.ci/` and its own `odu serve`,
//! which the bench stops (SIGTERM) after reading its `VmHWM`. The lab host, its namespace, every
//! server and every ssh master the bench made are gone when it exits.
//!
//! Usage: `cargo bench --bench remote -- [--runs N] [--only NAME] [--odu PATH]`. Exit 0 on
//! MISS (a measurement, not a test), 1 when something failed to run or produced wrong output.

// The bench drives odu, sshd and the lab itself: the spawning rule is odu's, not its bench's.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/it/harness.rs"]
mod harness;
#[allow(unused_imports)]
#[path = "../tests/it/lab.rs"]
mod lab;

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest;

use lab::{NetnsHost, SshdOptions};

const KIB: f64 = 1024.0;
const MIB: u64 = 1 << 20;
const LOG_SIZE: u64 = 256 * MIB;
const CHUNK_SIZE: usize = 16 << 20;
const CHUNK_REPEAT: usize = (LOG_SIZE / CHUNK_SIZE as u64) as usize;
const WIDE: usize = 200;
/// A server that the bench fails to stop still goes away on its own.
const IDLE_TIMEOUT: &str = "60s";
/// How long one `odu run` may take before the bench stops it and fails the scenario.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
const SCENARIOS: [&str; 3] = ["wide200_ssh", "log256_ssh", "setup_ssh"];

type BenchResult<T> = Result<T, String>;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Args {
    runs: usize,
    verbose: bool,
    only: Option<String>,
    odu: PathBuf,
}

fn usage() -> String {
    format!(
        "usage: cargo bench --bench remote -- [--runs N] [--only {}] [--odu PATH] [--verbose]\n\
         --verbose prints the _ci-setup log of every ssh run on stderr\n\
         benchmarks odu's remote lanes over ssh against a namespace host (needs root)",
        SCENARIOS.join("|")
    )
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { runs: 5, verbose: false, only: None, odu: PathBuf::from(env!("CARGO_BIN_EXE_odu")) };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{}", usage()));
        match arg.as_str() {
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            "--runs" => {
                let v = value("--runs")?;
                args.runs =
                    v.parse().ok().filter(|&n| n >= 1).ok_or_else(|| format!("--runs {v}: want N >= 1"))?;
            }
            "--only" => {
                let v = value("--only")?;
                if !SCENARIOS.contains(&v.as_str()) {
                    return Err(format!("--only {v}: want one of {}", SCENARIOS.join(", ")));
                }
                args.only = Some(v);
            }
            "--odu" => args.odu = PathBuf::from(value("--odu")?),
            "-v" | "--verbose" => args.verbose = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench remote: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "bench remote: needs root: the ssh host lives in its own network namespace (ip netns). \
             Run it as root, e.g. `sudo -E cargo bench --bench remote`; nothing was measured"
        );
        std::process::exit(1);
    }
    // Ctrl-C reaches the `odu run` in the foreground too (it exits 130): the bench then fails
    // the scenario and cleans up instead of dying with the lab still standing.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let code = run(args);
    std::process::exit(code);
}

/// Everything a scenario needs; dropping it removes the host and the fixtures.
struct Ctx {
    odu: PathBuf,
    runs: usize,
    verbose: bool,
    platform: String,
    // Dropped in declaration order: the host (its sshd, sessions, namespace) before the files.
    host: NetnsHost,
    tmp: tempfile::TempDir,
}

fn run(args: Args) -> i32 {
    if let Err(e) = preflight(&args.odu) {
        eprintln!("bench remote: {e}");
        return 1;
    }
    let tmp = match tempfile::Builder::new().prefix("odu-bench-remote-").tempdir() {
        Ok(tmp) => tmp,
        Err(e) => {
            eprintln!("bench remote: cannot make a temp dir: {e}");
            return 1;
        }
    };
    let _ = std::fs::create_dir_all(tmp.path().join("home"));
    let options = SshdOptions {
        env: vec![
            // Where `just` is: the host is configured like this machine.
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            // The remote runner reports its peak RSS into the `_ci-setup` log.
            ("ODU_REPORT_PEAK_RSS".into(), "1".into()),
        ],
        ..Default::default()
    };
    let host = match std::panic::catch_unwind(|| NetnsHost::new(options)) {
        Ok(Ok(host)) => host,
        Ok(Err(why)) => {
            eprintln!("bench remote: cannot make the namespace host: {why}");
            return 1;
        }
        Err(_) => {
            eprintln!("bench remote: cannot make the namespace host (see the panic above)");
            return 1;
        }
    };
    let ctx = Ctx {
        odu: args.odu.clone(),
        runs: args.runs,
        verbose: args.verbose,
        platform: odu::hosts::local_platform(),
        host,
        tmp,
    };
    eprintln!(
        "odu remote bench: {}, {} runs, lanes {p}=localhost and {p}={} (sshd in netns {} at {}), {} cpus, fixtures in {}",
        ctx.odu.display(),
        ctx.runs,
        ctx.host.alias(),
        ctx.host.namespace(),
        ctx.host.addr(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ctx.tmp.path().display(),
        p = ctx.platform,
    );
    let names: Vec<&str> = match &args.only {
        Some(only) => vec![only.as_str()],
        None => SCENARIOS.to_vec(),
    };
    let mut reports = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for name in names {
        eprintln!("  {name} ...");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match name {
            "wide200_ssh" => scenario_wide200(&ctx),
            "log256_ssh" => scenario_log256(&ctx),
            "setup_ssh" => scenario_setup(&ctx),
            _ => unreachable!("checked by parse_args"),
        }));
        let outcome = outcome.unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            Err(text)
        });
        stop_servers(ctx.tmp.path(), true);
        match outcome {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("  {name} FAILED: {e}");
                failed.push((name.to_string(), e));
            }
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
    }
    let leftovers = cleanup(ctx);
    for report in &reports {
        report.print();
    }
    for (name, err) in &failed {
        println!("\n== {name}: ERROR ==\n  {}", err.lines().next().unwrap_or(""));
    }
    if !leftovers.is_empty() {
        println!("\n  note: the bench killed what odu left behind: {}", leftovers.join("; "));
    }
    println!();
    for report in &reports {
        println!("BENCH {}", report.summary());
    }
    for (name, err) in &failed {
        let line = json!({"scenario": name, "status": "ERROR", "error": err.lines().next().unwrap_or("")});
        println!("BENCH {line}");
    }
    if failed.is_empty() && !INTERRUPTED.load(Ordering::SeqCst) { 0 } else { 1 }
}

fn preflight(odu: &Path) -> BenchResult<()> {
    for tool in ["just", "git", "ssh", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool} || test -x /usr/sbin/{tool} || test -x /sbin/{tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("`{tool}` is missing: install it with `bash scripts/install-deps.sh`"));
        }
    }
    if !odu.is_file() {
        return Err(format!("no odu binary at {}: build it with cargo build --release", odu.display()));
    }
    let runner = odu.with_file_name("odu-runner");
    if !runner.is_file() {
        return Err(format!("no {} next to odu: build it with cargo build --release", runner.display()));
    }
    Ok(())
}

/// Stops every server, kills any ssh master still using the lab's config, then drops the host
/// (its sshd, sessions and namespace) and the fixtures. Returns what had to be killed.
fn cleanup(ctx: Ctx) -> Vec<String> {
    let mut leftovers = Vec::new();
    let servers = stop_servers(ctx.tmp.path(), true);
    if servers > 0 {
        leftovers.push(format!("{servers} odu serve"));
    }
    // ssh masters close with their lane; ControlPersist would end a stray one within 10 s.
    let config = ctx.host.config().display().to_string();
    let masters: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&pid| exe_name(pid).as_deref() == Some("ssh") && argv(pid).iter().any(|a| a == &config))
        .collect();
    for &pid in &masters {
        // SAFETY: kill has no memory-safety preconditions; the pid runs with our lab's config.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if !masters.is_empty() {
        leftovers.push(format!("{} ssh master(s)", masters.len()));
    }
    let ns = ctx.host.namespace().to_string();
    drop(ctx);
    if Path::new("/run/netns").join(&ns).exists() {
        leftovers.push(format!("namespace {ns} could not be removed"));
    }
    leftovers
}

// ---------------------------------------------------------------------------------------------
// /proc

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn argv(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn exe_name(pid: i32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    Some(name.trim_end_matches(" (deleted)").to_string())
}

fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Live `odu serve` processes whose cwd is `dir` (or, with `under`, inside it).
fn find_servers(dir: &Path, under: bool) -> Vec<i32> {
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    all_pids()
        .into_iter()
        .filter(|&pid| {
            exe_name(pid).as_deref() == Some("odu")
                && argv(pid).get(1).map(String::as_str) == Some("serve")
                && !harness::gone(pid)
                && std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd == root || (under && cwd.starts_with(&root)))
        })
        .collect()
}

/// Waits until `pid` is gone (a zombie counts), at most `within`.
fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !harness::gone(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// SIGTERMs the servers of `dir` (SIGKILL after 5 s); returns how many there were.
fn stop_servers(dir: &Path, under: bool) -> usize {
    let pids = find_servers(dir, under);
    for &pid in &pids {
        // SAFETY: signalling an `odu serve` of the bench's own fixtures.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for &pid in &pids {
        wait_gone(pid, deadline.saturating_duration_since(Instant::now()));
    }
    for &pid in pids.iter().filter(|&&p| !harness::gone(p)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    pids.len()
}

// ---------------------------------------------------------------------------------------------
// fixtures

fn git(dir: &Path, args: &[&str]) -> BenchResult<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=odu-bench",
            "-c",
            "user.email=bench@odu.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!("git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A committed git repo holding `justfile` (`.ci/` ignored).
struct Fixture {
    dir: PathBuf,
    sha7: String,
}

fn make_repo(ctx: &Ctx, name: &str, justfile: &str) -> BenchResult<Fixture> {
    let dir = ctx.tmp.path().join(name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("justfile"), justfile).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(".gitignore"), ".ci/\n").map_err(|e| e.to_string())?;
    git(&dir, &["init", "-q", "-b", "main"])?;
    git(&dir, &["add", "-A"])?;
    git(&dir, &["commit", "-q", "-m", "bench fixture"])?;
    let sha7 = git(&dir, &["rev-parse", "--short=7", "HEAD"])?;
    Ok(Fixture { dir, sha7 })
}

fn ci_justfile(names: &[String], body: &str) -> String {
    let mut text = format!("[metadata(\"ci\")]\nci: {}\n\n", names.join(" "));
    for name in names {
        let _ = write!(text, "{name}:\n    {body}\n\n");
    }
    text
}

/// 16 MiB of deterministic text lines of mixed lengths (empty to ~500 bytes), ending in `\n`.
fn chunk() -> Vec<u8> {
    let mut state: u64 = 0x0D0_5EED;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let words = [
        "compiling",
        "odu",
        "v0.1.0",
        "warning:",
        "unused",
        "variable",
        "test",
        "ok",
        "finished",
        "release",
        "target(s)",
        "in",
        "0.42s",
        "error[E0308]:",
        "-->",
        "src/lib.rs:12:5",
        "|",
        "=",
        "note:",
        "running",
        "passed;",
        "failed;",
        "ignored;",
    ];
    let lengths = [0usize, 1, 3, 6, 10, 20, 60];
    let mut out = Vec::with_capacity(CHUNK_SIZE + 1024);
    let mut n = 0u64;
    while out.len() < CHUNK_SIZE {
        let k = lengths[(next() % lengths.len() as u64) as usize];
        let _ = write!(ByteWriter(&mut out), "{n:08}");
        for _ in 0..k {
            out.push(b' ');
            out.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
        }
        out.push(b'\n');
        n += 1;
    }
    out.truncate(CHUNK_SIZE);
    *out.last_mut().expect("not empty") = b'\n';
    out
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// (size, hex sha256) of a file.
fn file_digest(path: &Path) -> BenchResult<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// odu runs

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Local,
    Ssh,
}

/// What one `odu run` left behind.
struct RunFacts {
    wall: f64,
    record: Value,
    /// The coordinator's (`odu serve`'s) VmHWM right after the run, KiB.
    server_hwm_kib: u64,
    setup_log: String,
    /// Wall-clock ms when the bench spawned `odu run` and saw it exit.
    spawned_at: f64,
    exited_at: f64,
}

impl RunFacts {
    /// The run's phases in ms: `odu run` spawn to the run's start (server, snapshot, plan), run
    /// start to the first node, first node to the last node's end, last end to `odu run` exit.
    fn phases(&self) -> BenchResult<[f64; 4]> {
        let run_start = self.record["started_at"].as_f64().ok_or("the run record has no started_at")?;
        let nodes = self.record["nodes"].as_array().ok_or("the run record has no nodes")?;
        let real = || nodes.iter().filter(|n| !n["id"].as_str().unwrap_or_default().starts_with("_ci-setup"));
        let first = real().filter_map(|n| n["started_at"].as_f64()).fold(f64::INFINITY, f64::min);
        let last = real()
            .filter_map(|n| Some(n["started_at"].as_f64()? + n["duration_ms"].as_f64()?))
            .fold(f64::NEG_INFINITY, f64::max);
        if !first.is_finite() || !last.is_finite() {
            return Err(format!("the run record lacks node start times: {}", self.record));
        }
        Ok([run_start - self.spawned_at, first - run_start, last - first, self.exited_at - last])
    }

    fn node(&self, recipe: &str) -> BenchResult<&Value> {
        self.record["nodes"]
            .as_array()
            .and_then(|nodes| {
                nodes.iter().find(|n| {
                    let id = n["id"].as_str().unwrap_or_default();
                    id.split('@').next().is_some_and(|task| task.rsplit("::").next() == Some(recipe))
                })
            })
            .ok_or_else(|| format!("no node {recipe} in the run record: {}", self.record))
    }

    /// Milliseconds from the run's start to its first real (non-setup) node's start.
    fn setup_ms(&self) -> BenchResult<f64> {
        let run_start = self.record["started_at"].as_u64().ok_or("the run record has no started_at")?;
        let first = self.record["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| !n["id"].as_str().unwrap_or_default().starts_with("_ci-setup"))
            .filter_map(|n| n["started_at"].as_u64())
            .min()
            .ok_or_else(|| {
                format!("no node of the run record has a started_at (is this odu too old?): {}", self.record)
            })?;
        Ok(first.saturating_sub(run_start) as f64)
    }

    /// The runner's own `peak rss` line in the setup log (ODU_REPORT_PEAK_RSS), KiB.
    fn runner_peak_kib(&self) -> Option<u64> {
        let at = self.setup_log.find("odu-runner: peak rss ")?;
        self.setup_log[at + "odu-runner: peak rss ".len()..].split_whitespace().next()?.parse().ok()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One `odu run` from an empty `.ci/` (its own server, stopped afterwards); checks it passed,
/// and with `expect_warm` that an ssh lane found the runner and the sha cached on the host.
fn odu_run(ctx: &Ctx, fx: &Fixture, lane: Lane, expect_warm: bool) -> BenchResult<RunFacts> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    stop_servers(&fx.dir, false);
    let _ = std::fs::remove_dir_all(fx.dir.join(".ci"));
    let addr = match lane {
        Lane::Local => "localhost",
        Lane::Ssh => ctx.host.alias(),
    };
    let pin = format!("{}={addr}", ctx.platform);
    let mut command = Command::new(&ctx.odu);
    command
        .args(["run", "--no-post", "--idle-timeout", IDLE_TIMEOUT, "--host", &pin])
        .current_dir(&fx.dir)
        .env("HOME", ctx.tmp.path().join("home"))
        .env("ODU_SSH_CONFIG", ctx.host.config())
        .env("ODU_REPORT_PEAK_RSS", "1")
        .env_remove("ODU_HOSTS")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("ODU_RUN")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // stderr to a file: a pipe nobody reads while waiting could fill.
    let stderr_path = ctx.tmp.path().join("odu-run.stderr");
    let stderr_file = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    command.stderr(stderr_file);
    let spawned_at = epoch_ms();
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("cannot run {}: {e}", ctx.odu.display()))?;
    // A wedged run fails the scenario instead of hanging the bench.
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > RUN_DEADLINE {
            // SAFETY: signalling our own child; SIGTERM lets `odu run` cancel its run.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if !wait_gone(child.id() as i32, Duration::from_secs(5)) {
                let _ = child.kill();
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed().as_secs_f64();
    let exited_at = epoch_ms();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let log_dir = fx.dir.join(".ci").join(&fx.sha7).join(&ctx.platform);
    let setup_log = std::fs::read_to_string(log_dir.join("_ci-setup.log")).unwrap_or_default();
    if ctx.verbose && lane == Lane::Ssh {
        eprintln!("    --- _ci-setup.log of the ssh run ---\n{}", setup_log.trim_end());
    }
    let servers = find_servers(&fx.dir, false);
    let server_hwm_kib = servers.first().and_then(|&pid| status_kib(pid, "VmHWM"));
    stop_servers(&fx.dir, false);
    let record_text = |dir: &Path| {
        std::fs::read_dir(dir.join(".ci").join(&fx.sha7).join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let Some(status) = status else {
        return Err(format!(
            "odu run --host {pin} did not finish within {RUN_DEADLINE:?} (stopped):\n--- stderr (tail) ---\n{}\n\
             --- _ci-setup.log (tail) ---\n{}\n--- run record ---\n{}",
            tail(&stderr, 20),
            tail(&setup_log, 20),
            record_text(&fx.dir)
        ));
    };
    if !status.success() {
        return Err(format!(
            "odu run --host {pin} exited {status}:\n--- stderr (tail) ---\n{}\n--- _ci-setup.log (tail) ---\n{}",
            tail(&stderr, 20),
            tail(&setup_log, 20)
        ));
    }
    let server_hwm_kib =
        server_hwm_kib.ok_or("found no `odu serve` for the run (does odu run still start one?)")?;
    let runs = fx.dir.join(".ci").join(&fx.sha7).join("runs");
    let record_path = std::fs::read_dir(&runs)
        .map_err(|e| format!("{}: {e}", runs.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max_by_key(|p| p.file_stem().and_then(|s| s.to_str()?.parse::<u64>().ok()).unwrap_or(0))
        .ok_or_else(|| format!("no run record in {}", runs.display()))?;
    let record: Value = serde_json::from_slice(&std::fs::read(&record_path).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", record_path.display()))?;
    if record["outcome"] != "passed" {
        return Err(format!("the run record says {}: {record}", record["outcome"]));
    }
    if lane == Lane::Ssh && expect_warm {
        for (warm, what) in [
            ("is cached on the host: nothing to upload", "the runner"),
            ("is already in the host's cache", "the sha"),
            ("reusing the ssh connection", "the ssh connection"),
        ] {
            if !setup_log.contains(warm) {
                return Err(format!("{what} was not warm on the host:\n{}", tail(&setup_log, 20)));
            }
        }
    }
    Ok(RunFacts { wall, record, server_hwm_kib, setup_log, spawned_at, exited_at })
}

fn epoch_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// One untimed warm-up per side, then `runs` pairs, alternating which side goes first.
/// `once(lane, timed)` runs one side and returns its figure.
fn measure(
    ctx: &Ctx,
    what: &str,
    unit: (&str, f64),
    mut once: impl FnMut(Lane, bool) -> BenchResult<f64>,
) -> BenchResult<(Vec<f64>, Vec<f64>)> {
    once(Lane::Local, false)?;
    once(Lane::Ssh, false)?;
    let (mut l, mut s) = (Vec::new(), Vec::new());
    for i in 0..ctx.runs {
        if i % 2 == 0 {
            l.push(once(Lane::Local, true)?);
            s.push(once(Lane::Ssh, true)?);
        } else {
            s.push(once(Lane::Ssh, true)?);
            l.push(once(Lane::Local, true)?);
        }
        eprintln!(
            "    run {}/{}: {what} localhost {:.3} {u}, ssh {:.3} {u}",
            i + 1,
            ctx.runs,
            l[i] * unit.1,
            s[i] * unit.1,
            u = unit.0
        );
    }
    Ok((l, s))
}

// ---------------------------------------------------------------------------------------------
// scenarios

fn scenario_wide200(ctx: &Ctx) -> BenchResult<Report> {
    let names: Vec<String> = (0..WIDE).map(|i| format!("r{i:03}")).collect();
    let fx = make_repo(ctx, "wide200", &ci_justfile(&names, "@true"))?;
    let log_dir = fx.dir.join(".ci").join(&fx.sha7).join(&ctx.platform);
    let mut hwm = (Vec::new(), Vec::new());
    let mut setup = (Vec::new(), Vec::new());
    let mut phases: (Vec<[f64; 4]>, Vec<[f64; 4]>) = (Vec::new(), Vec::new());
    let (l, s) = measure(ctx, "wall", ("s", 1.0), |lane, timed| {
        let facts = odu_run(ctx, &fx, lane, timed)?;
        let missing: Vec<&String> =
            names.iter().filter(|n| !log_dir.join(format!("{n}.log")).exists()).collect();
        if !missing.is_empty() {
            return Err(format!(
                "odu run left no log for {} recipes, e.g. {:?}",
                missing.len(),
                &missing[..3.min(missing.len())]
            ));
        }
        if timed {
            match lane {
                Lane::Local => {
                    hwm.0.push(facts.server_hwm_kib);
                    setup.0.push(facts.setup_ms()?);
                    phases.0.push(facts.phases()?);
                }
                Lane::Ssh => {
                    hwm.1.push(facts.server_hwm_kib);
                    setup.1.push(facts.setup_ms()?);
                    phases.1.push(facts.phases()?);
                }
            }
        }
        Ok(facts.wall)
    })?;
    let max_mib = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64 / KIB;
    Ok(Report {
        name: "wide200_ssh",
        title: "200 independent trivial recipes, ssh lane vs localhost lane",
        runs: ctx.runs,
        baseline_label: "odu run, localhost lane".into(),
        odu_label: "odu run, ssh lane (netns host, warm)".into(),
        baseline: l,
        odu: s,
        unit: Unit::Seconds,
        target_ratio: Some(1.3),
        checks: vec![
            Check::new("coordinator peak RSS, localhost (max)", max_mib(&hwm.0), "MiB"),
            Check::new("coordinator peak RSS, ssh (max)", max_mib(&hwm.1), "MiB"),
            Check::new("localhost: run start -> first node spawned (median)", median(&setup.0), "ms").digits(0),
            Check::new("ssh: run start -> first node spawned (median)", median(&setup.1), "ms").digits(0),
        ],
        notes: vec![
            "wall = `odu run` spawn to exit (server start, snapshot, plan, lane, 200 nodes); every run starts from an empty .ci/ and its own odu serve".into(),
            format!("phases, median ms (spawn -> run start | -> first node | -> last node end | -> odu run exit): localhost {} ; ssh {}", phase_text(&phases.0), phase_text(&phases.1)),
            "warm host: one untimed warm-up run per side uploaded the runner and shipped the sha; every timed ssh run's _ci-setup log was checked to say both were cached and that it reused the ssh connection the previous run kept (masters idle out 10 s after their last session)".into(),
        ],
    })
}

fn scenario_log256(ctx: &Ctx) -> BenchResult<Report> {
    let chunk = chunk();
    let chunk_path = ctx.tmp.path().join("chunk16m.txt");
    std::fs::write(&chunk_path, &chunk).map_err(|e| e.to_string())?;
    let mut hasher = sha2::Sha256::new();
    for _ in 0..CHUNK_REPEAT {
        hasher.update(&chunk);
    }
    let expected = (LOG_SIZE, hex(&hasher.finalize()));
    drop(chunk);
    // `@` keeps just from echoing the line into the log; one `cat` of the chunk 16 times is far
    // faster than the throughput measured.
    let quoted = format!("'{}'", chunk_path.display());
    let body = format!("@cat {}", vec![quoted.as_str(); CHUNK_REPEAT].join(" "));
    let fx = make_repo(ctx, "log256", &format!("[metadata(\"ci\")]\nci: big\n\nbig:\n    {body}\n"))?;

    #[derive(Default)]
    struct Side {
        /// The node's own duration (ledger), s.
        duration: Vec<f64>,
        /// Node start (ledger) to the trail file's last write, s.
        to_disk: Vec<f64>,
        wall: Vec<f64>,
        hwm: Vec<u64>,
        runner: Vec<u64>,
    }
    let mut sides = [Side::default(), Side::default()];
    let (l, s) = measure(ctx, "node", ("s", 1.0), |lane, timed| {
        let facts = odu_run(ctx, &fx, lane, timed)?;
        let node = facts.node("big")?;
        let log = fx.dir.join(node["log"].as_str().ok_or("the node record has no log path")?);
        let got = file_digest(&log)?;
        if got != expected {
            return Err(format!(
                "{}: {} bytes sha256 {}, expected {} bytes sha256 {}",
                log.display(),
                got.0,
                got.1,
                expected.0,
                expected.1
            ));
        }
        let duration = node["duration_ms"].as_u64().ok_or("the node record has no duration_ms")? as f64 / 1e3;
        let started =
            node["started_at"].as_u64().ok_or("the node record has no started_at (is this odu too old?)")?;
        let written = std::fs::metadata(&log)
            .and_then(|m| m.modified())
            .map_err(|e| e.to_string())?
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs_f64();
        if timed {
            let side = &mut sides[(lane == Lane::Ssh) as usize];
            side.duration.push(duration);
            side.to_disk.push(written - started as f64 / 1e3);
            side.wall.push(facts.wall);
            side.hwm.push(facts.server_hwm_kib);
            side.runner.extend(facts.runner_peak_kib());
        }
        // 256 MiB per run: do not keep it around.
        let _ = std::fs::remove_dir_all(fx.dir.join(".ci"));
        Ok(duration)
    })?;
    let [local, ssh] = sides;
    let mib = LOG_SIZE as f64 / MIB as f64;
    let max_mib = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64 / KIB;
    let mut checks = vec![
        Check::new("ssh throughput (256 MiB / node duration)", mib / median(&s), "MiB/s").at_least(100.0),
        Check::new("localhost throughput (baseline)", mib / median(&l), "MiB/s"),
        Check::new("ssh: 256 MiB / (node start -> log on disk)", mib / median(&ssh.to_disk), "MiB/s"),
        Check::new("localhost: 256 MiB / (node start -> log on disk)", mib / median(&local.to_disk), "MiB/s"),
        Check::new("coordinator peak RSS, ssh (max)", max_mib(&ssh.hwm), "MiB").at_most(64.0),
        Check::new("coordinator peak RSS, localhost (max)", max_mib(&local.hwm), "MiB"),
    ];
    if !ssh.runner.is_empty() {
        checks.push(Check::new("remote runner peak RSS (max)", max_mib(&ssh.runner), "MiB"));
    }
    Ok(Report {
        name: "log256_ssh",
        title: "one node printing 256 MiB, ssh lane vs localhost lane",
        runs: ctx.runs,
        baseline_label: "node duration, localhost lane".into(),
        odu_label: "node duration, ssh lane (netns host, warm)".into(),
        baseline: l,
        odu: s,
        unit: Unit::Seconds,
        target_ratio: None,
        checks,
        notes: vec![
            "the trail file .ci/<sha7>/<platform>/big.log was byte-identical (size + sha256) to the generated 256 MiB on every run".into(),
            "node duration = the ledger's duration_ms of `big` (its runner's spawn to exit: the runner's 4 MiB log window holds the node back while the link lags); 'log on disk' = the trail file's mtime minus the node's started_at".into(),
            format!(
                "whole `odu run` wall (median): localhost {:.3} s, ssh {:.3} s; coordinator = the run's `odu serve`, VmHWM right after the run",
                median(&local.wall),
                median(&ssh.wall)
            ),
        ],
    })
}

fn scenario_setup(ctx: &Ctx) -> BenchResult<Report> {
    let fx = make_repo(ctx, "setup", "[metadata(\"ci\")]\nci: first\n\nfirst:\n    @true\n")?;
    let (l, s) = measure(ctx, "run start -> first node", ("ms", 1e3), |lane, timed| {
        Ok(odu_run(ctx, &fx, lane, timed)?.setup_ms()? / 1e3)
    })?;
    Ok(Report {
        name: "setup_ssh",
        title: "warm lane setup: run start to the first node spawned",
        runs: ctx.runs,
        baseline_label: "localhost lane".into(),
        odu_label: "ssh lane (runner cached, sha present)".into(),
        baseline: l,
        odu: s.clone(),
        unit: Unit::Millis,
        target_ratio: None,
        checks: vec![Check::new("ssh: run start -> first node spawned", median(&s) * 1e3, "ms").at_most(1500.0).digits(0)],
        notes: vec![
            "from the run record: the run's started_at (stamped after the snapshot and plan, just before the lanes start) to the node's started_at (its runner spawning it); ms resolution, one clock (the host is a namespace of this machine)".into(),
            "the ssh lane's share: taking over the kept ssh master (one `true` round trip), probe, cache checks, worktree checkout on the host, runner start, handshake, configure, _ci-setup (just --version)".into(),
        ],
    })
}

// ---------------------------------------------------------------------------------------------
// reporting

fn phase_text(phases: &[[f64; 4]]) -> String {
    (0..4)
        .map(|i| format!("{:.0}", median(&phases.iter().map(|p| p[i]).collect::<Vec<_>>())))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 }
}

struct Check {
    label: String,
    value: f64,
    unit: &'static str,
    target: Option<f64>,
    higher_is_better: bool,
    digits: usize,
}

impl Check {
    fn new(label: &str, value: f64, unit: &'static str) -> Check {
        Check { label: label.into(), value, unit, target: None, higher_is_better: false, digits: 1 }
    }

    fn at_most(mut self, target: f64) -> Check {
        self.target = Some(target);
        self
    }

    fn at_least(mut self, target: f64) -> Check {
        self.target = Some(target);
        self.higher_is_better = true;
        self
    }

    fn digits(mut self, digits: usize) -> Check {
        self.digits = digits;
        self
    }

    fn passed(&self) -> Option<bool> {
        let target = self.target?;
        Some(if self.higher_is_better { self.value >= target } else { self.value <= target })
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

struct Report {
    name: &'static str,
    title: &'static str,
    runs: usize,
    baseline_label: String,
    odu_label: String,
    /// Seconds, one per timed run.
    baseline: Vec<f64>,
    odu: Vec<f64>,
    unit: Unit,
    target_ratio: Option<f64>,
    checks: Vec<Check>,
    notes: Vec<String>,
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        None => "",
        Some(true) => "PASS",
        Some(false) => "MISS",
    }
}

impl Report {
    fn ratio(&self) -> f64 {
        median(&self.odu) / median(&self.baseline)
    }

    fn ratio_passed(&self) -> Option<bool> {
        self.target_ratio.map(|t| self.ratio() <= t)
    }

    fn passed(&self) -> bool {
        self.ratio_passed() != Some(false) && self.checks.iter().all(|c| c.passed() != Some(false))
    }

    fn print(&self) {
        println!("\n== {}: {} (median of {} runs) ==", self.name, self.title, self.runs);
        let (scale, unit) = match self.unit {
            Unit::Seconds => (1.0, "s"),
            Unit::Millis => (1e3, "ms"),
        };
        let w = 48;
        println!(
            "  {:<w$} {:9.3} {unit}",
            format!("baseline: {}", self.baseline_label),
            median(&self.baseline) * scale
        );
        println!(
            "  {:<w$} {:9.3} {unit}",
            format!("odu:      {}", self.odu_label),
            median(&self.odu) * scale
        );
        let target = self.target_ratio.map(|t| format!("target <= {t}")).unwrap_or_default();
        let line = format!(
            "  {:<w$} {:9.3} {:<6} {target:<20} {}",
            "ratio ssh/localhost",
            self.ratio(),
            "",
            verdict(self.ratio_passed())
        );
        println!("{}", line.trim_end());
        for c in &self.checks {
            let target = c
                .target
                .map(|t| format!("target {} {t} {}", if c.higher_is_better { ">=" } else { "<=" }, c.unit))
                .unwrap_or_default();
            let line = format!(
                "  {:<w$} {:9.d$} {:<6} {target:<20} {}",
                c.label,
                c.value,
                c.unit,
                verdict(c.passed()),
                d = c.digits
            );
            println!("{}", line.trim_end());
        }
        for note in &self.notes {
            println!("  note: {note}");
        }
        let list = |v: &[f64]| v.iter().map(|t| format!("{:.3}", t * scale)).collect::<Vec<_>>().join(" ");
        println!("  runs ({unit}): baseline {} | odu {}", list(&self.baseline), list(&self.odu));
    }

    fn summary(&self) -> Value {
        let round = |v: f64, places: i32| {
            let f = 10f64.powi(places);
            (v * f).round() / f
        };
        let checks: serde_json::Map<String, Value> = self
            .checks
            .iter()
            .map(|c| {
                let status = verdict(c.passed());
                (
                    c.label.clone(),
                    json!({"value": round(c.value, 2), "unit": c.unit, "target": c.target,
                           "status": if status.is_empty() { Value::Null } else { json!(status) }}),
                )
            })
            .collect();
        json!({
            "scenario": self.name,
            "status": if self.passed() { "PASS" } else { "MISS" },
            "runs": self.runs,
            "baseline_median_s": round(median(&self.baseline), 4),
            "odu_median_s": round(median(&self.odu), 4),
            "ratio": round(self.ratio(), 4),
            "target_ratio": self.target_ratio,
        })
        .as_object()
        .cloned()
        .map(|mut o| {
            o.insert("checks".into(), Value::Object(checks));
            Value::Object(o)
        })
        .expect("an object")
    }
}
