//! Real git repositories with real justfiles, and the real `odu` binary run against them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::{DEADLINE, gone, require_tool, until};

pub fn odu_bin() -> &'static str {
    env!("CARGO_BIN_EXE_odu")
}

pub fn local_platform() -> String {
    odu::hosts::local_platform()
}

/// A throwaway git repository with a committed justfile (and `.ci/` ignored).
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub home: tempfile::TempDir,
}

impl Repo {
    pub fn new(justfile: &str) -> Repo {
        Repo::with_files(&[("justfile", justfile)])
    }

    pub fn with_files(files: &[(&str, &str)]) -> Repo {
        require_tool("just");
        require_tool("git");
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let repo = Repo { dir, home };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write(".gitignore", ".ci/\n");
        for (path, text) in files {
            repo.write(path, text);
        }
        repo.commit("init");
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, text: &str) {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.email=odu@test", "-c", "user.name=odu", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    pub fn sha7(&self) -> String {
        self.git(&["rev-parse", "--short=7", "HEAD"])
    }

    /// `odu …` in this repo with a hermetic environment: no hosts config, not nested.
    pub fn odu(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(odu_bin());
        cmd.args(args)
            .current_dir(self.path())
            .env("HOME", self.home.path())
            .env_remove("ODU_HOSTS")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("ODU_RUN")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.odu(args).output().unwrap()
    }

    pub fn log(&self, node_task: &str) -> String {
        let path = self.path().join(format!(".ci/{}/{}/{node_task}.log", self.sha7(), local_platform()));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn ledger(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["runs", "-o", "json"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON an `odu … -o json` call printed.
pub fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(out), stderr(out)))
}

/// The `--progress json` lines of a run.
pub fn progress(out: &Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

/// Final status per node from a progress stream.
pub fn final_statuses(lines: &[serde_json::Value]) -> std::collections::BTreeMap<String, String> {
    lines
        .iter()
        .map(|l| (l["node"].as_str().unwrap().to_string(), l["status"].as_str().unwrap().to_string()))
        .collect()
}

/// A running `odu` whose stdout lines arrive on a channel, and whose stderr is read all along
/// (a run of a thousand nodes writes more than a pipe holds before it exits).
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            use std::io::Read;
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running { child, lines: rx, seen: vec![], stderr: Some(stderr) }
    }

    /// Waits for a stdout line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line containing {needle:?} within {DEADLINE:?}; saw {:?}", self.seen),
            }
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for exit with a deadline; returns (code, stderr).
    pub fn finish(self) -> (Option<i32>, String) {
        self.finish_within(DEADLINE)
    }

    /// [`Running::finish`] with a deadline of its own.
    pub fn finish_within(mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = self.stderr.take().map(|t| t.join().unwrap()).unwrap_or_default();
                return (status.code(), err);
            }
            assert!(std::time::Instant::now() < deadline, "odu did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A directory holding only the named tools (symlinked) plus fakes, for PATH games.
pub fn path_with(tools: &[&str], fakes: &[(&str, &str)]) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    for tool in tools {
        std::os::unix::fs::symlink(real_tool(tool), dir.join(tool)).unwrap();
    }
    for (name, script) in fakes {
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// The executable a bare PATH can run `tool` from. A version manager's shim (pyenv puts one on
/// PATH for `pip install rust-just`) is a script that needs the manager and the whole PATH, so
/// it would run nothing from a PATH of symlinks: the binary behind it is used instead.
pub fn real_tool(tool: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let is_elf = |path: &Path| {
        let mut magic = [0u8; 4];
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
            && magic == *b"\x7fELF"
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found: Vec<PathBuf> = std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .filter(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .collect();
    let first = found
        .first()
        .unwrap_or_else(|| panic!("{tool} is not installed: scripts/install-deps.sh installs it"));
    if is_elf(first) {
        return first.clone();
    }
    // A shim: what it would run, else the first binary further down PATH.
    let behind = Command::new("pyenv").args(["which", tool]).output().ok().filter(|o| o.status.success());
    if let Some(out) = behind {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if is_elf(&path) {
            return path;
        }
    }
    found.iter().find(|p| is_elf(p)).unwrap_or(first).clone()
}

/// Waits until a server answers on the checkout's socket.
pub fn wait_for_socket(repo: &Path) {
    let path = repo.join(".ci/odu.sock");
    until(&format!("a server on {}", path.display()), DEADLINE, || {
        std::os::unix::net::UnixStream::connect(&path).is_ok()
    });
}

/// The pid of the `odu serve` whose working directory is this checkout.
pub fn server_pid(repo: &Path) -> Option<i32> {
    let want = repo.canonicalize().ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) != Some(&&b"serve"[..]) {
            continue;
        }
        if std::fs::read_link(entry.path().join("cwd")).ok().as_deref() == Some(want.as_path()) {
            return Some(pid);
        }
    }
    None
}

/// Stops the checkout's server (SIGTERM: it cancels a live run, records it, and exits).
pub fn stop_server(repo: &Repo) {
    if let Some(pid) = server_pid(repo.path()) {
        // SAFETY: signalling a server this test started (through odu run or odu serve).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        until("the server to exit", DEADLINE, || gone(pid));
    }
}
