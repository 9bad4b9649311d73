//! Every process odu creates outside a node: short-lived helper commands (`git`,
//! `just --dump`) run to completion, and the long-lived children odu talks to or leaves
//! behind (the localhost runner, an ssh master, a background server). Node processes are
//! spawned in the runner's spawner, and nowhere else: `clippy.toml` forbids `spawn`,
//! `output` and `status` everywhere but these two modules.

pub mod git;
pub mod just;

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The captured result of one tool run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ToolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The environment a tool sees: the process's own, or a run's (the starting client's).
pub type Env = std::collections::BTreeMap<String, String>;

/// A pipe (read end, write end), both close-on-exec: a child gets an end only by being handed it.
pub fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Starts `program args…` in `dir` with stdin closed and its output captured.
pub fn start(program: &str, args: &[&str], dir: &Path) -> std::io::Result<Child> {
    start_with(program, args, dir, None)
}

/// `start`, in `env` when given (the program is looked up on that environment's `PATH`).
pub fn start_with(program: &str, args: &[&str], dir: &Path, env: Option<&Env>) -> std::io::Result<Child> {
    tracing::debug!(program, ?args, dir = %dir.display(), "starting a tool");
    // A program looked up on a PATH other than the server's own makes std fork the whole
    // server (posix_spawnp would search the wrong PATH); found here on that PATH, it is
    // started by path, with posix_spawn, as the process's own PATH would start it.
    let found = env.and_then(|env| find_on_path(env.get("PATH").map(std::ffi::OsStr::new), program));
    let mut command = match &found {
        Some(path) => {
            let mut command = Command::new(path);
            std::os::unix::process::CommandExt::arg0(&mut command, program);
            command
        }
        None => Command::new(program),
    };
    if let Some(env) = env {
        command.env_clear().envs(env);
    }
    command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    spawn(&mut command)
}

/// Starts a long-lived child as configured.
#[allow(clippy::disallowed_methods)]
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    command.spawn()
}

/// [`spawn`] for a child driven from the async runtime.
#[allow(clippy::disallowed_methods)]
pub fn spawn_async(command: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    command.spawn()
}

/// Runs a command to completion from the async runtime; its exit status.
#[allow(clippy::disallowed_methods)]
pub async fn status_async(
    command: &mut tokio::process::Command,
) -> std::io::Result<std::process::ExitStatus> {
    command.status().await
}

/// Runs a command to completion from the async runtime; what it printed.
#[allow(clippy::disallowed_methods)]
pub async fn output_async(command: &mut tokio::process::Command) -> std::io::Result<std::process::Output> {
    command.output().await
}

/// Waits for a started tool and collects what it printed.
pub fn finish(child: Child) -> std::io::Result<ToolOutput> {
    let out = child.wait_with_output()?;
    Ok(ToolOutput {
        success: out.status.success(),
        // Valid UTF-8 (the usual case) is taken without a copy.
        stdout: String::from_utf8(out.stdout)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The first executable `name` in the directories of `path` (a `PATH` value), as a process
/// started with that `PATH` would run it.
pub fn find_on_path(path: Option<&std::ffi::OsStr>, name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// What tells the file at `path` (links followed) apart from any other file, and from itself
/// once rewritten.
pub fn file_stamp(path: &Path) -> Option<odu_proto::FileStamp> {
    Some(stamp_of(&std::fs::metadata(path).ok()?))
}

/// The stamp of a file whose metadata is already at hand.
pub fn stamp_of(meta: &std::fs::Metadata) -> odu_proto::FileStamp {
    use std::os::unix::fs::MetadataExt;
    odu_proto::FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    }
}

/// A tool started to run beside other work. Collected with [`Pending::finish`]; one dropped
/// unread (its caller returned early) is killed and reaped, so a long-lived server keeps no
/// zombie.
pub struct Pending(Tool);

enum Tool {
    Running(Child, Option<Remember>),
    /// A remembered answer ([`Pending::remembered`]): nothing was started.
    Known(ToolOutput),
    Finished,
}

/// What a tool run whose answer depends only on a few files is remembered by: the command,
/// and those files' stamps taken before it started.
struct Remember {
    key: RememberKey,
    stamps: Vec<Option<odu_proto::FileStamp>>,
    files: Vec<std::path::PathBuf>,
}

impl Remember {
    /// Remembers `output` as the answer, if nothing it was made from changed meanwhile.
    fn keep(self, output: &ToolOutput) {
        let Remember { key, stamps, files } = self;
        let after: Vec<_> = files.iter().map(|f| file_stamp(f)).collect();
        if after == stamps
            && let Ok(mut map) = REMEMBERED.lock()
        {
            let map = map.get_or_insert_with(Default::default);
            if map.len() >= REMEMBERED_MAX {
                map.clear();
            }
            map.insert(key, (stamps, output.clone()));
        }
    }
}

type RememberKey = (String, Vec<String>, std::path::PathBuf);

type Remembered = std::collections::HashMap<RememberKey, (Vec<Option<odu_proto::FileStamp>>, ToolOutput)>;

/// Answers of tools run in the server's own environment, each with the stamps of the files it
/// read: asked again while those files are unchanged, the answer is given without a process.
static REMEMBERED: std::sync::Mutex<Option<Remembered>> = std::sync::Mutex::new(None);

/// How many answers [`REMEMBERED`] keeps before it starts over (a server serves one checkout).
const REMEMBERED_MAX: usize = 64;

impl Pending {
    /// Starts `program args…` like [`start_with`].
    pub fn start(program: &str, args: &[&str], dir: &Path, env: Option<&Env>) -> std::io::Result<Pending> {
        start_with(program, args, dir, env).map(|child| Pending(Tool::Running(child, None)))
    }

    /// [`Pending::start`] in the server's own environment, for a tool whose answer is a
    /// function of `files` alone (none of which it writes): while each is the file it was when
    /// the same command last finished (or is still absent), the answer is that one, and nothing
    /// starts. `files: None` always starts the tool.
    pub fn remembered(
        program: &str,
        args: &[&str],
        dir: &Path,
        files: Option<Vec<std::path::PathBuf>>,
    ) -> std::io::Result<Pending> {
        Pending::remembered_or(program, args, dir, files, || None)
    }

    /// [`Pending::remembered`], where the tool's answer can often be found in this process:
    /// a remembered answer first, else `in_process`'s (remembered like the tool's), and the tool
    /// is started only when `in_process` gives `None`.
    pub fn remembered_or(
        program: &str,
        args: &[&str],
        dir: &Path,
        files: Option<Vec<std::path::PathBuf>>,
        in_process: impl FnOnce() -> Option<ToolOutput>,
    ) -> std::io::Result<Pending> {
        let Some(files) = files else {
            return match in_process() {
                Some(output) => Ok(Pending(Tool::Known(output))),
                None => Pending::start(program, args, dir, None),
            };
        };
        let key: RememberKey =
            (program.to_string(), args.iter().map(|a| (*a).to_string()).collect(), dir.to_path_buf());
        let stamps: Vec<_> = files.iter().map(|f| file_stamp(f)).collect();
        let known = REMEMBERED.lock().ok().and_then(|map| {
            let (was, output) = map.as_ref()?.get(&key)?;
            (*was == stamps).then(|| output.clone())
        });
        if let Some(output) = known {
            return Ok(Pending(Tool::Known(output)));
        }
        let remember = Remember { key, stamps, files };
        if let Some(output) = in_process() {
            remember.keep(&output);
            return Ok(Pending(Tool::Known(output)));
        }
        let child = start_with(program, args, dir, None)?;
        Ok(Pending(Tool::Running(child, Some(remember))))
    }

    /// Waits for it and collects what it printed.
    pub fn finish(mut self) -> std::io::Result<ToolOutput> {
        let (child, remember) = match std::mem::replace(&mut self.0, Tool::Finished) {
            Tool::Running(child, remember) => (child, remember),
            Tool::Known(output) => return Ok(output),
            Tool::Finished => return Err(std::io::Error::other("a pending tool is finished once")),
        };
        let output = finish(child)?;
        if let Some(remember) = remember {
            remember.keep(&output);
        }
        Ok(output)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Tool::Running(mut child, _) = std::mem::replace(&mut self.0, Tool::Finished) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a client learned from its tools while it checked a run, handed to the server it starts
/// ([`found`], [`adopt`]): each answer comes with what it was made from, which the server
/// checks anew before using it, as it does its own remembered answers.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Found {
    /// `just --version`'s line, by the `just` file that printed it.
    just_version: Option<(std::path::PathBuf, odu_proto::FileStamp, String)>,
    /// The dump of a justfile that names no other file, with what it was made from.
    dump: Option<just::FoundDump>,
    /// Remembered answers ([`Pending::remembered`]): the command, the stamps of the files it
    /// read, what it printed.
    answers: Vec<(RememberKey, Vec<Option<odu_proto::FileStamp>>, ToolOutput)>,
    /// git's status of the checkout, for the server's first run ([`git::FoundStatus`]).
    status: Option<git::FoundStatus>,
}

/// What this process learned from its tools, for a server it starts ([`adopt`]).
pub fn found() -> Found {
    let answers = REMEMBERED
        .lock()
        .ok()
        .and_then(|map| {
            let map = map.as_ref()?;
            Some(
                map.iter()
                    .map(|(key, (stamps, output))| (key.clone(), stamps.clone(), output.clone()))
                    .collect(),
            )
        })
        .unwrap_or_default();
    Found {
        just_version: just::found_version(),
        dump: just::found_dump(),
        answers,
        status: git::found_status(),
    }
}

impl Found {
    /// Itself as JSON in an anonymous file (a memfd, close-on-exec, read from its start), to be
    /// handed to a process through exec; `None` where there is no such file.
    pub fn into_file(self) -> Option<std::os::fd::OwnedFd> {
        use std::io::{Seek, Write};
        use std::os::fd::FromRawFd;
        let bytes = serde_json::to_vec(&self).ok()?;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; the descriptor it returns
        // is owned by nothing else.
        let fd = unsafe { libc::memfd_create(c"odu-found".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just created, and is owned here alone.
        let mut file = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        file.write_all(&bytes).ok()?;
        file.rewind().ok()?;
        Some(file.into())
    }

    /// Reads what [`Found::into_file`] wrote; `None` for anything else (not a regular file,
    /// larger than any dump a server would take, not this JSON).
    pub fn from_file(fd: std::os::fd::OwnedFd) -> Option<Found> {
        use std::io::Read;
        const MAX: u64 = 64 * 1024 * 1024;
        let file = std::fs::File::from(fd);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(MAX + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > MAX {
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }
}

/// Takes the answers a client found ([`found`]) where this process has none of its own. Each
/// is used only while what it was made from is unchanged, checked as for its own answers.
pub fn adopt(found: Found) {
    let Found { just_version, dump, answers, status } = found;
    just::adopt(just_version, dump);
    git::adopt_status(status);
    if let Ok(mut map) = REMEMBERED.lock() {
        let map = map.get_or_insert_with(Default::default);
        for (key, stamps, output) in answers.into_iter().take(REMEMBERED_MAX.saturating_sub(map.len())) {
            map.entry(key).or_insert((stamps, output));
        }
    }
}

/// Runs `program args…` in `dir` with stdin closed. `Err` means it could not be started.
pub fn run(program: &str, args: &[&str], dir: &Path) -> std::io::Result<ToolOutput> {
    finish(start(program, args, dir)?)
}

#[cfg(test)]
mod tests {
    use super::Pending;

    #[test]
    fn found_answers_go_through_a_file_and_fill_only_what_is_not_known() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("read");
        std::fs::write(&file, "one").unwrap();
        let ask = |script: &str| {
            Pending::remembered("sh", &["-c", script], dir.path(), Some(vec![file.clone()]))
                .unwrap()
                .finish()
                .unwrap()
                .stdout
        };
        assert_eq!(ask("echo first"), "first\n");
        let found = super::found();
        assert_eq!(found.answers.len(), 1);
        let handed = super::Found::from_file(found.into_file().expect("a memfd")).expect("read back");
        // This process is the server now: it knows nothing, takes the answer, and gives it
        // without starting the command while the file it read is unchanged.
        *super::REMEMBERED.lock().unwrap() = None;
        super::adopt(handed);
        assert_eq!(ask("echo first"), "first\n");
        let Some(map) = super::REMEMBERED.lock().unwrap().clone() else { panic!("adopted nothing") };
        assert_eq!(map.len(), 1);
        // An answer of its own is not replaced by a handed one.
        let mut other = super::found();
        other.answers[0].2.stdout = "handed\n".into();
        super::adopt(other);
        assert_eq!(ask("echo first"), "first\n", "the server's own answer stays");
        // A changed file is asked again, whoever found the answer.
        std::fs::write(&file, "two!").unwrap();
        assert_eq!(ask("echo second"), "second\n");
        // Anything but such a file is no hand-over.
        let not_json = dir.path().join("not-json");
        std::fs::write(&not_json, "{").unwrap();
        assert!(super::Found::from_file(std::fs::File::open(&not_json).unwrap().into()).is_none());
        assert!(super::Found::from_file(std::fs::File::open(dir.path()).unwrap().into()).is_none());
    }

    #[test]
    fn an_answer_found_in_process_is_remembered_like_the_tools_and_the_tool_starts_only_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("read");
        std::fs::write(&file, "one").unwrap();
        let output =
            |text: &str| super::ToolOutput { success: true, stdout: text.into(), stderr: String::new() };
        let ask_stamping = |files: Option<Vec<std::path::PathBuf>>, in_process: Option<&str>| {
            Pending::remembered_or("sh", &["-c", "echo tool"], dir.path(), files, || in_process.map(output))
                .unwrap()
                .finish()
                .unwrap()
                .stdout
        };
        let ask = |in_process: Option<&str>| ask_stamping(Some(vec![file.clone()]), in_process);
        assert_eq!(ask(Some("found\n")), "found\n");
        // Remembered while the file is unchanged: neither found again nor asked of the tool.
        assert_eq!(ask(Some("found again\n")), "found\n");
        assert_eq!(ask(None), "found\n");
        // And handed to a server like any remembered answer.
        assert_eq!(super::found().answers.len(), 1);
        // A changed file: found anew, else asked of the tool.
        std::fs::write(&file, "two!").unwrap();
        assert_eq!(ask(None), "tool\n");
        // Without files to stamp, nothing is remembered.
        let unstamped = |in_process: Option<&str>| ask_stamping(None, in_process);
        assert_eq!(unstamped(Some("found\n")), "found\n");
        assert_eq!(unstamped(None), "tool\n");
    }

    #[test]
    fn a_pending_tool_dropped_unread_is_killed_and_reaped() {
        let dir = std::env::temp_dir();
        let pending = Pending::start("sleep", &["30"], &dir, None).unwrap();
        let super::Tool::Running(child, _) = &pending.0 else { panic!("sleep did not start") };
        let pid = child.id();
        let started = std::time::Instant::now();
        drop(pending);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the drop waited for sleep 30");
        // Reaped, not a zombie: the process is gone from the table.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} is still in /proc");
    }

    #[test]
    fn a_remembered_answer_is_given_without_a_process_until_a_file_it_read_changes() {
        let dir = tempfile::tempdir().unwrap();
        let read = dir.path().join("read");
        std::fs::write(&read, "one").unwrap();
        let script = "cat read; echo started >> count";
        let ask = |files: Option<Vec<std::path::PathBuf>>| {
            Pending::remembered("sh", &["-c", script], dir.path(), files).unwrap().finish().unwrap().stdout
        };
        let starts = || std::fs::read_to_string(dir.path().join("count")).unwrap_or_default().lines().count();
        assert_eq!(ask(Some(vec![read.clone()])), "one");
        assert_eq!(ask(Some(vec![read.clone()])), "one");
        assert_eq!(starts(), 1, "the second answer started the tool again");
        // The file is replaced (a new inode, as git writes its config and index).
        std::fs::write(dir.path().join("new"), "two").unwrap();
        std::fs::rename(dir.path().join("new"), &read).unwrap();
        assert_eq!(ask(Some(vec![read.clone()])), "two");
        assert_eq!(starts(), 2);
        // A file that appears is a change too, and no files means no remembering.
        assert_eq!(ask(Some(vec![read.clone(), dir.path().join("absent")])), "two");
        std::fs::write(dir.path().join("absent"), "").unwrap();
        assert_eq!(ask(Some(vec![read.clone(), dir.path().join("absent")])), "two");
        assert_eq!(starts(), 4);
        assert_eq!(ask(None), "two");
        assert_eq!(starts(), 5);
    }

    #[test]
    fn a_pending_tool_finishes_with_what_it_printed() {
        let out = Pending::start("sh", &["-c", "echo out; echo err >&2"], &std::env::temp_dir(), None)
            .unwrap()
            .finish()
            .unwrap();
        assert!(out.success);
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("out\n", "err\n"));
    }

    #[test]
    fn a_file_stamp_changes_when_the_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("just");
        std::fs::write(&path, "one").unwrap();
        let first = super::file_stamp(&path).unwrap();
        assert_eq!(super::file_stamp(&path), Some(first));
        std::fs::write(dir.path().join("new"), "other").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        assert_ne!(super::file_stamp(&path), Some(first), "a replaced binary is another file");
        assert_eq!(super::file_stamp(&dir.path().join("missing")), None);
    }
}
