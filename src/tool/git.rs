//! The git facts odu needs: the checkout, its HEAD, whether it is dirty, and detached
//! worktrees that pin HEAD for strict runs.

use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};
use crate::tool;

fn git(dir: &Path, args: &[&str]) -> CliResult<tool::ToolOutput> {
    tool::run("git", args, dir).map_err(|e| CliError::refused(format!("cannot run git ({e}): install git")))
}

/// The top level of the checkout containing `dir`.
pub fn toplevel(dir: &Path) -> CliResult<PathBuf> {
    let out = git(dir, &["rev-parse", "--show-toplevel"])?;
    if !out.success {
        return Err(CliError::refused(format!(
            "{} is not inside a git checkout: run odu from a git repository (or git init one)",
            dir.display()
        )));
    }
    Ok(PathBuf::from(out.stdout.trim()))
}

/// The checkout holding `dir`, found without starting git: the nearest ancestor with a `.git`
/// (a directory, or a file for a worktree). Clients that only talk to the server use it (it
/// saves them a process); with `GIT_DIR` or `GIT_WORK_TREE` set, it asks git.
pub fn toplevel_quick(dir: &Path) -> CliResult<PathBuf> {
    if std::env::var_os("GIT_DIR").is_some() || std::env::var_os("GIT_WORK_TREE").is_some() {
        return toplevel(dir);
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match dir.ancestors().find(|d| d.join(".git").exists()) {
        Some(top) => Ok(top.to_path_buf()),
        None => toplevel(&dir),
    }
}

/// The full sha of HEAD.
pub fn head(repo: &Path) -> CliResult<String> {
    head_of(git(repo, HEAD_ARGS)?)
}

/// HEAD's commit as the files of a plain checkout say it, read without starting git: a
/// detached `HEAD`, or the branch it names as a loose ref or a line of `packed-refs`
/// (gitrepository-layout(5)). A guess, for work that can start before git's answer and is
/// checked against it: `None` for anything less plain (the environment points git
/// elsewhere, a symbolic ref that is not a branch under `refs/`, another ref storage).
pub fn head_quick(repo: &Path) -> Option<String> {
    let git_dir = plain_git_dir(repo)?;
    let is_oid = |s: &str| matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim_end();
    let Some(name) = head.strip_prefix("ref: ") else {
        return is_oid(head).then(|| head.to_string());
    };
    let plain_name = name.starts_with("refs/heads/")
        && name.split('/').all(|part| !part.is_empty() && !part.starts_with('.'));
    if !plain_name {
        return None;
    }
    if let Ok(text) = std::fs::read_to_string(git_dir.join(name)) {
        let oid = text.trim_end();
        return is_oid(oid).then(|| oid.to_string());
    }
    let packed = std::fs::read_to_string(git_dir.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (oid, rest) = line.split_once(' ')?;
        (rest == name && is_oid(oid)).then(|| oid.to_string())
    })
}

/// HEAD and the paths `git status` reports changed (ignoring odu's own `.ci` folder), from one
/// `git status --porcelain=v2 --branch`: started here, so that other start-up work can run
/// beside it, and read by [`HeadAndStatus::finish`].
pub struct HeadAndStatus(Asked);

enum Asked {
    /// Asked by a thread of its own (libgit2 first, then git where it must): a process start
    /// waits until the child has exec'd, and the caller has other work (a worktree to check
    /// out) meanwhile.
    Aside(std::thread::JoinHandle<std::io::Result<StatusAnswer>>),
    /// Started here, when no thread could be.
    Here(std::io::Result<tool::Pending>),
    /// The answer the client that started this server got moments ago ([`FoundStatus`]).
    Found(StatusAnswer),
}

/// How the status check was answered.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum StatusAnswer {
    /// A plain checkout libgit2 found clean where git would ([`clean_in_process`]): HEAD's
    /// full sha.
    Clean { head: String },
    /// What `git status` printed ([`STATUS_ARGS`]).
    Git(tool::ToolOutput),
}

impl StatusAnswer {
    /// An answer a later run may take: not a git that failed.
    fn succeeded(&self) -> bool {
        match self {
            StatusAnswer::Clean { .. } => true,
            StatusAnswer::Git(output) => output.success,
        }
    }
}

/// A `git status` answer as a client hands it to the server it starts ([`tool::Found`]): the
/// checkout, when git was started ([`crate::clock::boot_ns`]: one clock for every process of
/// the machine) and what it printed. The server's first run takes it instead of asking git
/// again if it is at most [`FOUND_STATUS_FRESH_NS`] old; any later run asks git.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FoundStatus {
    repo: PathBuf,
    asked_at_ns: u64,
    answer: StatusAnswer,
}

/// How old a client's `git status` answer may be for its server's first run to take it: the
/// time a server takes to start and be asked (milliseconds), with ample room for a machine so
/// loaded that it takes seconds. The answer is the tree as it was when the user started the
/// run, which a check made a moment later would not make any safer: the tree can change right
/// after either. The bound only keeps an answer from being taken long after it was given.
const FOUND_STATUS_FRESH_NS: u64 = 10_000_000_000;

/// The last `git status` answer this process got, for a server it starts ([`found_status`]).
static ANSWERED: std::sync::Mutex<Option<FoundStatus>> = std::sync::Mutex::new(None);
/// The answer the client that started this server handed over ([`adopt_status`]), not yet
/// taken.
static ADOPTED: std::sync::Mutex<Option<FoundStatus>> = std::sync::Mutex::new(None);

/// The `git status` answer this process got last, for the server it starts.
pub fn found_status() -> Option<FoundStatus> {
    ANSWERED.lock().ok()?.clone()
}

/// Keeps a client's `git status` answer for this server's first run ([`HeadAndStatus::start`]).
pub fn adopt_status(found: Option<FoundStatus>) {
    if let (Some(found), Ok(mut adopted)) = (found, ADOPTED.lock()) {
        *adopted = Some(found);
    }
}

/// The adopted answer for `repo`, once, if it is fresh enough.
fn take_adopted(repo: &Path) -> Option<StatusAnswer> {
    let found = ADOPTED.lock().ok()?.take()?;
    let age = crate::clock::boot_ns().checked_sub(found.asked_at_ns)?;
    (found.repo == repo && found.answer.succeeded() && age <= FOUND_STATUS_FRESH_NS).then_some(found.answer)
}

impl HeadAndStatus {
    pub fn start(repo: &Path) -> HeadAndStatus {
        if let Some(answer) = take_adopted(repo) {
            return HeadAndStatus(Asked::Found(answer));
        }
        let dir = repo.to_path_buf();
        let aside = std::thread::Builder::new().name("git-status".into()).spawn(move || {
            let asked_at_ns = crate::clock::boot_ns();
            let answer = match clean_in_process(&dir) {
                Some(head) => Ok(StatusAnswer::Clean { head }),
                None => tool::Pending::start("git", STATUS_ARGS, &dir, None)
                    .and_then(tool::Pending::finish)
                    .map(StatusAnswer::Git),
            };
            if let (Ok(answer), Ok(mut answered)) = (&answer, ANSWERED.lock()) {
                *answered = Some(FoundStatus { repo: dir, asked_at_ns, answer: answer.clone() });
            }
            answer
        });
        HeadAndStatus(match aside {
            Ok(thread) => Asked::Aside(thread),
            Err(_) => Asked::Here(tool::Pending::start("git", STATUS_ARGS, repo, None)),
        })
    }

    /// HEAD's full sha and the changed paths.
    pub fn finish(self) -> CliResult<(String, Vec<String>)> {
        let answer = match self.0 {
            Asked::Aside(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the thread asking git status failed"))),
            Asked::Here(pending) => pending.and_then(tool::Pending::finish).map(StatusAnswer::Git),
            Asked::Found(answer) => Ok(answer),
        }
        .map_err(|e| CliError::refused(format!("cannot run git ({e}): install git")))?;
        let out = match answer {
            StatusAnswer::Clean { head } => return Ok((head, Vec::new())),
            StatusAnswer::Git(out) => out,
        };
        if !out.success {
            let stderr = out.stderr.trim();
            if stderr.contains("unknown option") {
                return Err(CliError::refused(format!(
                    "git status failed: {stderr}: odu needs git >= 2.17 (its status check reads without locks or ahead/behind counts); upgrade git"
                )));
            }
            return Err(CliError::refused(format!("git status failed: {stderr}")));
        }
        parse_status(&out.stdout)
    }
}

const HEAD_ARGS: &[&str] = &["rev-parse", "--verify", "HEAD^{commit}"];
/// Read-only in the user's checkout: `--no-optional-locks` keeps git from refreshing (and so
/// locking and rewriting) the index, which would race the user's own git commands, and
/// `--no-ahead-behind` skips counting the commits between the branch and its upstream, which
/// only the `branch.oid` header is read for (13 ms against 2 ms for a branch 3,000 commits
/// ahead of it).
const STATUS_ARGS: &[&str] = &[
    "--no-optional-locks",
    "status",
    "--porcelain=v2",
    "--branch",
    "--no-ahead-behind",
    "-z",
    "--",
    ".",
    ":(exclude).ci",
];

/// The largest index [`clean_in_process`] checks a tree against, about 1,600 files: git checks a
/// tree's files faster once it is started (on several threads, and with an untracked cache if
/// asked), so past this its start no longer outweighs the difference. Measured here: 10,000
/// files (an index of 800 KB) took libgit2 26–29 ms and the whole `git status` 21 ms; a checkout
/// of two files 0.3 ms against 2.2 ms (git's process start about 1.5 ms of it), and odu's own
/// (230 files beside a large ignored build folder) 2.5 ms against 4 ms.
const STATUS_INDEX_MAX: u64 = 128 * 1024;

/// Settings under which git's status could differ from libgit2's (line endings, attributes,
/// a relocated or sparse worktree, a split or sparse index, case folding, stat checks a user
/// tuned), or under which git is faster (a file system monitor, an untracked cache): any of
/// them set in any file git reads sends the check to git.
const STATUS_SETTINGS: [&str; 16] = [
    "core.worktree",
    "core.autocrlf",
    "core.eol",
    "core.safecrlf",
    "core.attributesfile",
    "core.sparsecheckout",
    "core.splitindex",
    "index.sparse",
    "core.fsmonitor",
    "core.untrackedcache",
    "core.ignorecase",
    "core.precomposeunicode",
    "core.checkstat",
    "core.trustctime",
    "core.symlinks",
    "feature.manyfiles",
];

/// Variables of the environment that leave git's status as it is: who commits, how git talks
/// to remotes and people. Any other `GIT_*` variable sends the check to git.
const STATUS_NEUTRAL_ENV: [&str; 9] = [
    "GIT_AUTHOR_",
    "GIT_COMMITTER_",
    "GIT_SSH",
    "GIT_SSL_",
    "GIT_HTTP_",
    "GIT_ASKPASS",
    "GIT_TERMINAL_PROMPT",
    "GIT_EDITOR",
    "GIT_PAGER",
];

/// Whether no variable named in `names` could change what `git status` answers
/// ([`STATUS_NEUTRAL_ENV`]).
fn neutral_to_status(mut names: impl Iterator<Item = std::ffi::OsString>) -> bool {
    names.all(|name| {
        let name = name.as_encoded_bytes();
        !name.starts_with(b"GIT_")
            || STATUS_NEUTRAL_ENV.iter().any(|prefix| name.starts_with(prefix.as_bytes()))
    })
}

/// HEAD's full sha when libgit2, in this process, finds the plain checkout `repo` clean where
/// `git status` ([`STATUS_ARGS`]) would: no staged or unstaged change and no untracked file
/// outside `.ci` and the ignored ones. This spares the start of a strict run of a clean tree
/// (the case that runs) a git process, about 2 ms.
///
/// `None` sends the check to git: for any tree libgit2 finds dirty (git then names the paths,
/// and decides: libgit2 never refuses a tree git would run), and wherever git's answer could
/// differ or git is faster. That is: a `GIT_*` variable that could point git elsewhere or add
/// configuration ([`STATUS_NEUTRAL_ENV`] lists the harmless ones); a checkout whose `.git` is
/// not a plain folder ([`plain_git_dir`]), or not owned by this user (git's ownership check is
/// git's to make); a config file git reads that includes another, that libgit2 might not read
/// (one under git's install prefix), or that sets one of [`STATUS_SETTINGS`]; an index that is
/// not a regular file or is large; an attributes file that could apply (a `.gitattributes` in
/// the index, `info/attributes`, the user's or the system's, as for [`checkout_in_process`]);
/// an index entry git treats apart (a submodule, a conflict, assume-unchanged, skip-worktree,
/// intent-to-add); replace refs or grafts, which git follows and libgit2 does not; an unborn
/// HEAD; anything libgit2 cannot read.
fn clean_in_process(repo: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !neutral_to_status(std::env::vars_os().map(|(name, _)| name)) {
        return None;
    }
    let git_dir = plain_git_dir(repo)?;
    let uid = crate::private::euid();
    let owned = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.uid() == uid);
    if !owned(repo) || !owned(&git_dir) {
        return None;
    }
    let regular = |path: &Path, max: u64| {
        std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() <= max)
    };
    if !regular(&git_dir.join("index"), STATUS_INDEX_MAX) || !regular(&git_dir.join("HEAD"), 4096) {
        return None;
    }
    let files = config_files(repo)?;
    let libgit2_reads = |file: &PathBuf| {
        file.starts_with(&git_dir)
            || file == Path::new("/etc/gitconfig")
            || file.ends_with(".gitconfig")
            || file.ends_with("git/config")
    };
    for (file, parsed) in parse_config_files(&files)? {
        if !libgit2_reads(file) {
            return None;
        }
        let mut entries = parsed.entries(None).ok()?;
        while let Some(entry) = entries.next() {
            let name = entry.ok()?.name().ok()?.to_ascii_lowercase();
            if STATUS_SETTINGS.contains(&name.as_str()) || name.starts_with("extensions.") {
                return None;
            }
        }
    }
    if ["info/attributes", "info/grafts"]
        .iter()
        .any(|name| std::fs::symlink_metadata(git_dir.join(name)).is_ok())
        || outer_attributes().iter().any(|file| file.exists())
    {
        return None;
    }
    let found =
        git2::Repository::open_ext(repo, git2::RepositoryOpenFlags::NO_SEARCH, [] as [&std::ffi::OsStr; 0])
            .ok()?;
    if found.references_glob("refs/replace/*").ok()?.next().is_some() {
        return None;
    }
    let index = found.index().ok()?;
    for entry in index.iter() {
        const STAGE: u16 = 0x3000;
        const ASSUME_VALID: u16 = 0x8000;
        const INTENT_TO_ADD: u16 = 1 << 13;
        const SKIP_WORKTREE: u16 = 1 << 14;
        let attributes = entry.path == b".gitattributes" || entry.path.ends_with(b"/.gitattributes");
        if entry.mode & 0o170000 == 0o160000
            || entry.flags & (STAGE | ASSUME_VALID) != 0
            || entry.flags_extended & (INTENT_TO_ADD | SKIP_WORKTREE) != 0
            || attributes
        {
            return None;
        }
    }
    let head = found.head().ok()?.peel_to_commit().ok()?.id().to_string();
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .exclude_submodules(true)
        .disable_pathspec_match(true);
    let statuses = found.statuses(Some(&mut options)).ok()?;
    let in_ci = |path: &[u8]| path == b".ci" || path.starts_with(b".ci/");
    statuses.iter().all(|entry| in_ci(entry.path_bytes())).then_some(head)
}

fn head_of(out: tool::ToolOutput) -> CliResult<String> {
    if !out.success {
        return Err(CliError::refused("the repository has no commit yet: commit the justfile first"));
    }
    Ok(out.stdout.trim().to_string())
}

/// Reads `git status --porcelain=v2 --branch -z`: the `# branch.oid` header names HEAD's
/// commit (`(initial)` before the first one), and every other entry is a changed path (a
/// rename's entry is followed by its old path, which is skipped).
fn parse_status(text: &str) -> CliResult<(String, Vec<String>)> {
    let mut head = None;
    let mut paths = Vec::new();
    let mut entries = text.split('\0').filter(|e| !e.is_empty());
    while let Some(entry) = entries.next() {
        if let Some(oid) = entry.strip_prefix("# branch.oid ") {
            head = Some(oid.to_string());
            continue;
        }
        // Fields before the path: `1` has 8, `2` has 9 (then the old path), `u` has 10.
        let before = match entry.as_bytes()[0] {
            b'#' => continue,
            b'1' => 8,
            b'2' => {
                entries.next();
                9
            }
            b'u' => 10,
            _ => 1,
        };
        paths.push(entry.splitn(before + 1, ' ').nth(before).unwrap_or(entry).to_string());
    }
    match head {
        Some(oid) if oid.len() >= 40 && oid.bytes().all(|b| b.is_ascii_hexdigit()) => Ok((oid, paths)),
        _ => Err(CliError::refused("the repository has no commit yet: commit the justfile first")),
    }
}

/// The `origin` remote's URL, if any.
pub fn origin(repo: &Path) -> Option<String> {
    origin_of(start_origin(repo))
}

/// [`origin`] started, to run beside other start-up work; [`origin_of`] collects it. Read from
/// the config files in process where the answer is plain ([`origin_in_process`]).
pub fn start_origin(repo: &Path) -> Option<tool::Pending> {
    let config = config_files(repo);
    let in_process = || {
        let (success, stdout) = match origin_in_process(repo, config.as_deref()?)? {
            Some(url) => (true, format!("{url}\n")),
            None => (false, String::new()),
        };
        Some(tool::ToolOutput { success, stdout, stderr: String::new() })
    };
    // Besides the config files, git reads a remote from the older `remotes` and `branches`.
    let files = config.clone().map(|mut files| {
        files.extend([repo.join(".git/remotes/origin"), repo.join(".git/branches/origin")]);
        files
    });
    tool::Pending::remembered_or("git", &["remote", "get-url", "origin"], repo, files, in_process).ok()
}

/// The files git reads its configuration from for a command in the plain checkout `repo`
/// (git-config(1): the system file, at `/etc/gitconfig` or under git's install prefix, the
/// global ones, the repository's own), for a command whose answer comes from them alone to be
/// remembered while they are unchanged ([`tool::Pending::remembered`]). `None` when git may
/// read anything else: the server's environment points git at other files or adds config
/// (the rest of it is the same for the server's life), `.git` is not a folder, or a config
/// file includes another or asks for per-worktree config.
pub fn config_files(repo: &Path) -> Option<Vec<PathBuf>> {
    const ELSEWHERE: [&str; 6] = [
        "GIT_OBJECT_DIRECTORY",
        "GIT_CONFIG",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",
    ];
    static SYSTEM: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    if ELSEWHERE.iter().any(|name| std::env::var_os(name).is_some()) {
        return None;
    }
    let git_dir = plain_git_dir(repo)?;
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")));
    let under_prefix = SYSTEM.get_or_init(|| {
        let git = tool::find_on_path(std::env::var_os("PATH").as_deref(), "git")?;
        let git = std::fs::canonicalize(&git).unwrap_or(git);
        Some(git.parent()?.parent()?.join("etc/gitconfig"))
    });
    let mut files = vec![git_dir.join("config"), PathBuf::from("/etc/gitconfig")];
    files.extend(under_prefix.clone());
    files.extend(home.map(|h| h.join(".gitconfig")));
    files.extend(xdg.map(|x| x.join("git/config")));
    let unsure = |text: Vec<u8>| {
        let text = String::from_utf8_lossy(&text).to_ascii_lowercase();
        text.contains("include") || text.contains("worktreeconfig")
    };
    if files.iter().filter_map(|file| std::fs::read(file).ok()).any(unsure) {
        return None;
    }
    Some(files)
}

/// The `.git` folder of a plain checkout: `None` when the environment points git elsewhere
/// (`GIT_DIR`, `GIT_WORK_TREE`, `GIT_INDEX_FILE`, `GIT_COMMON_DIR`) or `repo/.git` is not a
/// real folder (a worktree's or submodule's `.git` file, a link).
fn plain_git_dir(repo: &Path) -> Option<PathBuf> {
    const POINTED: [&str; 4] = ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"];
    if POINTED.iter().any(|var| std::env::var_os(var).is_some()) {
        return None;
    }
    let git_dir = repo.join(".git");
    std::fs::symlink_metadata(&git_dir).is_ok_and(|meta| meta.is_dir()).then_some(git_dir)
}

/// The largest index [`tracked_under`] reads itself: libgit2 hashes the whole file to check it,
/// which git does not, so a very large index is left to git.
const LISTED_INDEX_MAX: u64 = 4 * 1024 * 1024;

/// What `git ls-files -- <dir>` prints in the plain checkout `repo` (one tracked path a line,
/// `dir` itself or under it), read from the index by libgit2 in this process: a git process
/// less on every run's start, and on every run after the index changed. `None` when git must
/// answer: the environment points git elsewhere, `.git` is not a folder, the index is not a
/// regular file (never opened here: a FIFO would block the server's thread) or is very large,
/// or libgit2 cannot read it
/// whole: it refuses an index whose checksum is wrong or that carries an extension readers
/// must understand and it does not (a split or a sparse index), which git reads.
pub fn tracked_under(repo: &Path, dir: &str) -> Option<String> {
    let index = plain_git_dir(repo)?.join("index");
    match std::fs::symlink_metadata(&index) {
        Ok(meta) if meta.is_file() && meta.len() <= LISTED_INDEX_MAX => {}
        // No index yet (nothing was ever added): git lists nothing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(String::new()),
        _ => return None,
    }
    let index = git2::Index::open(&index).ok()?;
    let under = format!("{dir}/");
    let mut listed = String::new();
    for entry in index.iter() {
        if entry.path == dir.as_bytes() || entry.path.starts_with(under.as_bytes()) {
            listed.push_str(&String::from_utf8_lossy(&entry.path));
            listed.push('\n');
        }
    }
    Some(listed)
}

/// Each of `files` (git's config files, [`config_files`]) that exists, parsed by libgit2 on its
/// own; `None` when one is anything but a regular file (never opened: a FIFO would block) or
/// cannot be read as config.
fn parse_config_files(files: &[PathBuf]) -> Option<Vec<(&PathBuf, git2::Config)>> {
    let mut parsed = Vec::new();
    for file in files {
        match std::fs::symlink_metadata(file) {
            Ok(meta) if meta.is_file() => parsed.push((file, git2::Config::open(file).ok()?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => return None,
        }
    }
    Some(parsed)
}

/// What `git remote get-url origin` would answer in the plain checkout `repo`, read by libgit2
/// from `config`, the files git reads ([`config_files`]): `Some(Some(url))` for a remote with one
/// URL, `Some(None)` when no file names a remote `origin` at all. `None`, for git to answer,
/// whenever git could answer differently: a file that cannot be read as config, a URL rewritten
/// by an `insteadOf`, more than one URL (git prints the first in its own order of the files),
/// an empty one (which resets the list), a remote `origin` with settings but no URL, git's
/// older `remotes` or `branches` files, or `GIT_CONFIG_NOSYSTEM` (git skips a file listed).
fn origin_in_process(repo: &Path, config: &[PathBuf]) -> Option<Option<String>> {
    if std::env::var_os("GIT_CONFIG_NOSYSTEM").is_some() {
        return None;
    }
    let git_dir = plain_git_dir(repo)?;
    if ["remotes/origin", "branches/origin"]
        .iter()
        .any(|f| std::fs::symlink_metadata(git_dir.join(f)).is_ok())
    {
        return None;
    }
    let mut urls = Vec::new();
    let mut named = false;
    for (_, parsed) in parse_config_files(config)? {
        let mut entries = parsed.entries(None).ok()?;
        while let Some(entry) = entries.next() {
            let entry = entry.ok()?;
            let name = entry.name().ok()?;
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("url.")
                && (lower.ends_with(".insteadof") || lower.ends_with(".pushinsteadof"))
            {
                return None;
            }
            // Section and key are case-blind, the remote's name is not.
            let Some(rest) =
                name.get(..7).filter(|s| s.eq_ignore_ascii_case("remote.")).and_then(|_| name.get(7..))
            else {
                continue;
            };
            let Some((remote, key)) = rest.rsplit_once('.') else { continue };
            if remote != "origin" {
                continue;
            }
            named = true;
            if key.eq_ignore_ascii_case("url") {
                // A key with no value at all is a boolean to git: its error is git's to give.
                if !entry.has_value() {
                    return None;
                }
                urls.push(entry.value().ok()?.to_string());
            }
        }
    }
    match urls.as_slice() {
        [] if !named => Some(None),
        [url] if !url.is_empty() => Some(Some(url.clone())),
        _ => None,
    }
}

/// The URL a [`start_origin`] git printed, if any.
pub fn origin_of(git: Option<tool::Pending>) -> Option<String> {
    let out = git?.finish().ok()?;
    out.success.then(|| out.stdout.trim().to_string())
}

/// `owner/repo` for a GitHub origin (https or ssh form).
pub fn github_repo(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("http://github.com/"))
        .or_else(|| url.strip_prefix("git@github.com:"))
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = rest.split('/');
    let (owner, name) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && !owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

/// A commit of the working tree's tracked changes that no ref names (`git stash create`); HEAD
/// when nothing changed.
pub fn stash_commit(repo: &Path) -> CliResult<String> {
    let out = git(repo, &["stash", "create", "odu live tree"])?;
    let sha = out.stdout.trim();
    if !out.success {
        return Err(CliError::refused(format!(
            "cannot record the live tree as a commit: {}",
            out.stderr.trim()
        )));
    }
    if sha.is_empty() { head(repo) } else { Ok(sha.to_string()) }
}

/// A detached worktree of one commit, removed when dropped.
///
/// It lives inside a fresh private scratch directory (mkdtemp, 0700): git creates the worktree
/// itself as a new subdirectory there, so no other user can plant, swap or read anything in it,
/// and odu never adopts a path it did not just create.
pub struct Snapshot {
    repo: PathBuf,
    pub dir: PathBuf,
    /// Who checked the commit out.
    pub checkout: Checkout,
    /// The private directory holding the worktree; removed (with anything left in it) last.
    scratch: Option<tempfile::TempDir>,
}

impl Snapshot {
    /// The private folder holding the worktree (what a run's record keeps, so that whoever
    /// closes the run after its server died removes it: [`remove_abandoned`]).
    pub fn scratch_path(&self) -> Option<&Path> {
        self.scratch.as_ref().map(tempfile::TempDir::path)
    }

    pub fn create(repo: &Path, sha: &str) -> CliResult<Snapshot> {
        let short = sha.get(..7).unwrap_or(sha);
        let scratch = crate::private::scratch(&format!("odu-{short}-")).map_err(|e| {
            CliError::refused(format!(
                "cannot create a private directory for the snapshot in {} ({e}): set TMPDIR to a writable directory",
                std::env::temp_dir().display()
            ))
        })?;
        // The checkout's files go where the disk has not just freed thousands of others.
        crate::private::spread_subfolders(scratch.path());
        let dir = scratch.path().join(short);
        let name = scratch.path().file_name().and_then(|n| n.to_str()).unwrap_or(short).to_string();
        if let Some(done) = linked_by_hand(repo, &dir, &name, sha) {
            let checkout = done?;
            return Ok(Snapshot { repo: repo.to_path_buf(), dir, checkout, scratch: Some(scratch) });
        }
        let dir_str = dir.display().to_string();
        let out = git(repo, &["worktree", "add", "--detach", "--quiet", &dir_str, sha])?;
        if !out.success {
            return Err(CliError::refused(format!("cannot pin HEAD in a worktree: {}", out.stderr.trim())));
        }
        Ok(Snapshot {
            repo: repo.to_path_buf(),
            dir,
            checkout: Checkout::WorktreeAdd,
            scratch: Some(scratch),
        })
    }
}

/// Why an abandoned snapshot's folder was left where it is.
#[derive(Debug, thiserror::Error)]
pub enum Abandoned {
    #[error("{} is not a folder odu makes for a snapshot of {sha7} in {}", .path.display(), .tmp.display())]
    NotOurs { path: PathBuf, sha7: String, tmp: PathBuf },
    #[error(transparent)]
    Untrusted(#[from] crate::private::Untrusted),
    #[error("cannot remove {}: {error}", .path.display())]
    Remove { path: PathBuf, error: std::io::Error },
}

/// Removes the snapshot of `sha` a server that died left at `scratch` (a run's record names
/// it), and git's record of its worktree in `repo`. Only what such a server makes is touched:
/// a folder right in this process's `$TMPDIR`, named `odu-<sha7>-…`, a real directory (not a
/// link) of the effective user that no one else can write. Anything else (a record naming
/// another path, a folder in another `$TMPDIR`) is left alone and says why; a folder already
/// gone is no error.
pub fn remove_abandoned(repo: &Path, scratch: &Path, sha: &str) -> Result<(), Abandoned> {
    let sha7 = sha.get(..7).unwrap_or(sha);
    let tmp = std::env::temp_dir();
    let ours = scratch.parent() == Some(tmp.as_path())
        && scratch
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("odu-"))
            .and_then(|rest| rest.strip_prefix(sha7))
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('-'))
        && sha7.len() == 7
        && sha7.bytes().all(|b| b.is_ascii_hexdigit());
    if !ours {
        return Err(Abandoned::NotOurs { path: scratch.to_path_buf(), sha7: sha7.to_string(), tmp });
    }
    match std::fs::symlink_metadata(scratch) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        _ => crate::private::check_owned(scratch)?,
    }
    // git's folder for the worktree goes first, as a snapshot's own removal does; where it is
    // not found right there (a worktree half removed), git prunes it once the folder is gone.
    let admin = admin_dir(repo, &scratch.join(sha7))
        .filter(|admin| admin.file_name().is_some_and(|name| Some(name) == scratch.file_name()));
    if let Some(admin) = &admin {
        let _ = std::fs::remove_dir_all(admin);
    }
    std::fs::remove_dir_all(scratch)
        .map_err(|error| Abandoned::Remove { path: scratch.to_path_buf(), error })?;
    if admin.is_none() {
        let _ = git(repo, &["worktree", "prune"]);
    }
    Ok(())
}

/// How a snapshot's files were checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkout {
    /// In odu's own process, by libgit2.
    InProcess,
    /// By `git read-tree -u`, into a worktree odu set up.
    ReadTree,
    /// By `git worktree add`, which set the worktree up too.
    WorktreeAdd,
}

/// Makes `dir` a linked worktree of `repo` at `sha` without `git worktree add`, which writes a
/// few small files (gitrepository-layout(5): the worktree's `.git` file naming
/// `.git/worktrees/<name>`, and there `gitdir`, `commondir` and a detached `HEAD`) and then
/// starts a second git to check the files out (`reset --hard`). odu writes those files itself
/// and checks the commit out in process with libgit2 ([`checkout_in_process`]): the index and
/// the files, modes and links as `reset --hard` makes them, and no git process at all, about
/// 3 ms less on every run's start. Where libgit2 could check out differently, because an
/// attributes file could name a filter driver only git runs (LFS, for one), git does it:
/// `read-tree --reset -u` of the detached `HEAD` odu wrote, which fills the index and the files
/// as `reset --hard` would without the ref updates a reset makes (`ORIG_HEAD`, `HEAD`, their
/// locks).
///
/// `None` when the checkout is not the plain case (its `.git` is not a real folder, git is
/// pointed elsewhere by the environment, or the repository uses per-worktree config or a
/// sparse checkout, which `git worktree add` carries over): the caller asks git instead.
fn linked_by_hand(repo: &Path, dir: &Path, name: &str, sha: &str) -> Option<CliResult<Checkout>> {
    if !repo.is_absolute() || !dir.is_absolute() {
        return None;
    }
    let git_dir = plain_git_dir(repo)?;
    let config = std::fs::read_to_string(git_dir.join("config")).ok()?.to_ascii_lowercase();
    if config.contains("worktreeconfig") || config.contains("sparsecheckout") {
        return None;
    }
    let worktrees = git_dir.join("worktrees");
    match std::fs::create_dir(&worktrees) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    if !std::fs::symlink_metadata(&worktrees).is_ok_and(|meta| meta.is_dir()) {
        return None;
    }
    let admin = worktrees.join(name);
    // The worktree's own `.git` first: `git worktree prune` drops an entry whose worktree is
    // missing, and never one whose worktree is there.
    let made = std::fs::create_dir(dir)
        .and_then(|()| std::fs::write(dir.join(".git"), format!("gitdir: {}\n", admin.display())))
        .and_then(|()| std::fs::create_dir(&admin));
    if made.is_err() {
        let _ = std::fs::remove_dir_all(dir);
        return None;
    }
    let written = std::fs::write(admin.join("gitdir"), format!("{}\n", dir.join(".git").display()))
        .and_then(|()| std::fs::write(admin.join("commondir"), "../..\n"))
        .and_then(|()| std::fs::write(admin.join("HEAD"), format!("{sha}\n")));
    let checked_out = match written {
        Ok(()) if checkout_in_process(dir, sha).is_some() => return Some(Ok(Checkout::InProcess)),
        // `--reset -u` overwrites whatever a failed checkout left.
        Ok(()) => git(dir, &["read-tree", "--reset", "-u", "--no-recurse-submodules", "HEAD"]),
        Err(e) => {
            Err(CliError::refused(format!("cannot write the worktree's files in {}: {e}", admin.display())))
        }
    };
    match checked_out {
        Ok(out) if out.success => Some(Ok(Checkout::ReadTree)),
        Ok(out) => {
            let _ = std::fs::remove_dir_all(&admin);
            let _ = std::fs::remove_dir_all(dir);
            Some(Err(CliError::refused(format!("cannot pin HEAD in a worktree: {}", out.stderr.trim()))))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&admin);
            let _ = std::fs::remove_dir_all(dir);
            Some(Err(e))
        }
    }
}

/// Checks commit `sha` out into the fresh linked worktree at `dir` (its index and its files,
/// submodules left empty as `--no-recurse-submodules` leaves them), in this process. `None`
/// when git must do it: libgit2 cannot read the repository or fails to check it out (git may
/// well manage: its failure is the one reported), or an attributes file could apply
/// (gitattributes(5): `.gitattributes` anywhere in the commit, `info/attributes`,
/// `core.attributesFile` or its default under `$XDG_CONFIG_HOME`, the system's), since a
/// filter driver one names runs only in git. libgit2 applies `core.autocrlf`, `core.eol`,
/// `core.symlinks` and `core.fileMode` as git does.
fn checkout_in_process(dir: &Path, sha: &str) -> Option<()> {
    let repo = git2::Repository::open(dir).ok()?;
    let commit = repo.find_commit(git2::Oid::from_str(sha).ok()?).ok()?;
    let tree = commit.tree().ok()?;
    let config = repo.config().ok()?;
    if config.get_path("core.attributesFile").is_ok()
        || outer_attributes().iter().chain([&repo.commondir().join("info/attributes")]).any(|f| f.exists())
        || names_attributes(&tree)?
    {
        return None;
    }
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.force().recreate_missing(true);
    let done = repo.index().and_then(|mut index| {
        index.read_tree(&tree)?;
        repo.checkout_index(Some(&mut index), Some(&mut checkout))?;
        // The checkout recorded each file's stat data in the index: written, `git status` in
        // the worktree compares stat data, not contents.
        index.write()
    });
    done.ok()
}

/// The attributes files outside the repository git reads when `core.attributesFile` is unset:
/// the user's (`$XDG_CONFIG_HOME/git/attributes`, else `~/.config/git/attributes`) and the
/// system's (`etc/gitattributes` beside the `git` on PATH, `/etc/gitattributes`). With
/// `GIT_ATTR_NOSYSTEM` git skips the system's, but listing it only sends odu to git.
fn outer_attributes() -> Vec<PathBuf> {
    let mut files = Vec::new();
    match (std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()), std::env::var_os("HOME")) {
        (Some(xdg), _) => files.push(PathBuf::from(xdg).join("git/attributes")),
        (None, Some(home)) => files.push(PathBuf::from(home).join(".config/git/attributes")),
        (None, None) => {}
    }
    let git = tool::find_on_path(std::env::var_os("PATH").as_deref(), "git");
    if let Some(prefix) = git.as_deref().and_then(Path::parent).and_then(Path::parent) {
        files.push(prefix.join("etc/gitattributes"));
    }
    files.push(PathBuf::from("/etc/gitattributes"));
    files
}

/// Whether `tree` holds a `.gitattributes` at any depth; `None` if it cannot be read whole.
fn names_attributes(tree: &git2::Tree) -> Option<bool> {
    let mut found = false;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if entry.name_bytes() == b".gitattributes" {
            found = true;
            return git2::TreeWalkResult::Abort;
        }
        git2::TreeWalkResult::Ok
    });
    // An abort is reported as an error; only a walk that did not end on a find failed.
    (found || walked.is_ok()).then_some(found)
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // Removed without starting git when its administrative folder is where a plain
        // checkout keeps it: two gits in a row held every run's end back by their start-up.
        if let Some(admin) = admin_dir(&self.repo, &self.dir) {
            drop(self.scratch.take());
            if std::fs::remove_dir_all(&admin).is_ok() {
                return;
            }
        }
        let dir = self.dir.display().to_string();
        let _ = git(&self.repo, &["worktree", "remove", "--force", &dir]);
        drop(self.scratch.take());
        let _ = git(&self.repo, &["worktree", "prune"]);
    }
}

/// The folder git keeps for the worktree at `dir` (`<repo>/.git/worktrees/<name>`, named by
/// the `gitdir:` line of the worktree's `.git` file), when it is a real folder right there;
/// `None` for anything else (a checkout whose `.git` is itself a file, a link), which is left
/// to `git worktree remove`.
fn admin_dir(repo: &Path, dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dir.join(".git")).ok()?;
    let admin = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    let worktrees = repo.join(".git").join("worktrees").canonicalize().ok()?;
    let meta = std::fs::symlink_metadata(&admin).ok()?;
    let name = admin.file_name()?;
    (meta.is_dir() && admin.parent()?.canonicalize().ok()? == worktrees && !name.is_empty())
        .then(|| worktrees.join(name))
}

#[cfg(test)]
mod tests {
    use super::{Snapshot, github_repo};

    /// Runs git in `dir`, which must succeed; what it printed.
    fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
        let out = crate::tool::run("git", args, dir).unwrap();
        assert!(out.success, "git {args:?}: {}", out.stderr);
        out.stdout
    }

    /// A repository of one commit holding a justfile, and that commit's sha.
    fn one_commit() -> (tempfile::TempDir, String) {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| git_in(repo.path(), args);
        git(&["init", "-q"]);
        std::fs::write(repo.path().join("justfile"), "a:\n    true\n").unwrap();
        git(&["add", "-A"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]);
        let sha = git(&["rev-parse", "HEAD"]).trim().to_string();
        (repo, sha)
    }

    #[test]
    fn the_index_lists_what_git_lists_under_a_folder_or_leaves_it_to_git() {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| git_in(repo.path(), args);
        git(&["init", "-q"]);
        assert_eq!(super::tracked_under(repo.path(), ".ci").as_deref(), Some(""), "no index yet");
        for file in [".ci/run", ".ci/odu.sock", ".ci/abc1234/runs/1.json", ".cix", "ci/x", "src/.ci/y"] {
            let path = repo.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "x").unwrap();
        }
        git(&["add", "-A"]);
        let listed = || super::tracked_under(repo.path(), ".ci");
        assert_eq!(listed(), Some(git(&["ls-files", "--", ".ci"])));
        assert_eq!(listed().unwrap().lines().count(), 3, "{:?}", listed());
        // The compressed form of the index reads the same.
        git(&["update-index", "--index-version", "4"]);
        assert_eq!(listed(), Some(git(&["ls-files", "--", ".ci"])));
        // A split index keeps entries in another file, which libgit2 does not read: git lists.
        git(&["update-index", "--split-index"]);
        assert_eq!(listed(), None, "a split index is git's to read");
        git(&["update-index", "--no-split-index"]);
        assert_eq!(listed(), Some(git(&["ls-files", "--", ".ci"])));
        // An index that is no regular file is not opened here (a FIFO would block the opener).
        let index = repo.path().join(".git/index");
        std::fs::remove_file(&index).unwrap();
        make_fifo(&index);
        assert_eq!(listed(), None, "a FIFO is git's to refuse");
    }

    fn make_fifo(path: &std::path::Path) {
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads one NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn the_origin_read_in_process_is_what_git_says_or_is_left_to_git() {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| crate::tool::run("git", args, repo.path()).unwrap();
        assert!(git(&["init", "-q"]).success);
        let says = || {
            let out = git(&["remote", "get-url", "origin"]);
            out.success.then(|| out.stdout.trim().to_string())
        };
        // Where the machine's own config sends odu to git (an include, say), nothing is read.
        let config = super::config_files(repo.path());
        let plain = config.is_some();
        let ours = || super::origin_in_process(repo.path(), config.as_deref()?);
        let agrees = || match ours() {
            Some(answer) => assert_eq!(answer, says()),
            None => assert!(!plain, "a plain answer was left to git"),
        };
        agrees();
        assert!(git(&["remote", "add", "origin", "https://github.com/o/r.git"]).success);
        agrees();
        if plain {
            assert_eq!(ours(), Some(Some("https://github.com/o/r.git".into())));
        }
        // Two URLs: git prints the first in its order of the files.
        assert!(git(&["config", "--add", "remote.origin.url", "https://example.com/x.git"]).success);
        assert_eq!(ours(), None);
        assert!(git(&["config", "--unset-all", "remote.origin.url"]).success);
        // A remote with settings and no URL.
        assert_eq!(ours(), None);
        // A URL rewritten by git.
        assert!(git(&["config", "remote.origin.url", "gh:o/r"]).success);
        assert!(git(&["config", "url.https://github.com/.insteadOf", "gh:"]).success);
        assert_eq!(ours(), None);
        assert_eq!(says().as_deref(), Some("https://github.com/o/r"));
        assert!(git(&["config", "--remove-section", "url.https://github.com/"]).success);
        agrees();
        // git's older remotes file.
        std::fs::create_dir_all(repo.path().join(".git/remotes")).unwrap();
        std::fs::write(repo.path().join(".git/remotes/origin"), "URL: https://example.com/y.git\n").unwrap();
        assert_eq!(ours(), None);
    }

    #[test]
    fn a_handed_status_is_taken_once_for_its_own_checkout_while_fresh_and_successful() {
        let output = |success| crate::tool::ToolOutput { success, stdout: "x".into(), stderr: String::new() };
        let handed = |repo: &str, age_ns: u64, success| super::FoundStatus {
            repo: repo.into(),
            asked_at_ns: crate::clock::boot_ns().saturating_sub(age_ns),
            answer: super::StatusAnswer::Git(output(success)),
        };
        let stdout = |answer: super::StatusAnswer| match answer {
            super::StatusAnswer::Git(output) => output.stdout,
            super::StatusAnswer::Clean { head } => head,
        };
        let repo = std::path::Path::new("/a/checkout");
        super::adopt_status(Some(handed("/a/checkout", 1_000_000, true)));
        assert!(super::take_adopted(std::path::Path::new("/another")).is_none(), "another checkout's");
        assert!(super::take_adopted(repo).is_none(), "tried once, whatever came of it");
        super::adopt_status(Some(handed("/a/checkout", 1_000_000, true)));
        assert_eq!(super::take_adopted(repo).map(stdout), Some("x".into()), "fresh");
        assert!(super::take_adopted(repo).is_none(), "taken once");
        super::adopt_status(Some(handed("/a/checkout", super::FOUND_STATUS_FRESH_NS + 1_000_000, true)));
        assert!(super::take_adopted(repo).is_none(), "too old");
        super::adopt_status(Some(handed("/a/checkout", 1_000_000, false)));
        assert!(super::take_adopted(repo).is_none(), "a failed status is asked again");
        // A tree libgit2 found clean is handed over as such.
        let clean = super::StatusAnswer::Clean { head: "c".repeat(40) };
        super::adopt_status(Some(super::FoundStatus {
            repo: repo.into(),
            asked_at_ns: crate::clock::boot_ns(),
            answer: clean,
        }));
        assert_eq!(super::take_adopted(repo).map(stdout), Some("c".repeat(40)), "clean");
    }

    /// What `git status` (as odu asks it) and the in-process check say of `repo`: git's
    /// changed paths, and libgit2's answer. Run on a thread with a deadline, so that a check
    /// that blocked (on a FIFO, say) fails the test instead of hanging it.
    fn both_checks(repo: &std::path::Path) -> (Vec<String>, Option<String>) {
        let dir = repo.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(super::clean_in_process(&dir)).unwrap());
        let ours = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the in-process check blocked");
        let out = crate::tool::run("git", super::STATUS_ARGS, repo).unwrap();
        assert!(out.success, "git status: {}", out.stderr);
        let (head, changed) = super::parse_status(&out.stdout).unwrap();
        if let Some(ours) = &ours {
            assert_eq!(ours, &head, "libgit2's HEAD is git's");
            assert!(changed.is_empty(), "libgit2 found clean what git finds changed: {changed:?}");
        }
        (changed, ours)
    }

    #[test]
    fn the_in_process_status_check_finds_clean_only_what_git_finds_clean() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        let git = |args: &[&str]| git_in(root, args);
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        git(&["init", "-q"]);
        write("justfile", "a:\n    true\n");
        write("src/lib.txt", "one\n");
        write(".gitignore", ".ci/\ntarget/\n");
        assert_eq!(super::clean_in_process(root), None, "no commit yet (and no index): git's to say");
        git(&["add", "-A"]);
        assert_eq!(super::clean_in_process(root), None, "no commit yet: git's to say");
        git(&["add", "-A"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"]);
        let clean = |what: &str| {
            let (changed, ours) = both_checks(root);
            assert!(changed.is_empty(), "{what}: {changed:?}");
            assert!(ours.is_some(), "{what}: a plain clean tree is checked in process");
        };
        clean("committed");
        // Ignored files and odu's own folder leave the tree clean, to both.
        write("target/debug/x", "built");
        write(".ci/odu.serve.log", "log");
        clean("ignored files and .ci");
        // A file touched but unchanged is clean (its contents are compared).
        let lib = root.join("src/lib.txt");
        let file = std::fs::File::options().write(true).open(&lib).unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        drop(file);
        let index = || std::fs::read(root.join(".git/index")).unwrap();
        let before = index();
        clean("touched");
        assert_eq!(index(), before, "the check only reads the user's index");
        // Every change is dirty to libgit2, which leaves it to git to name.
        let dirty = |what: &str| {
            let (changed, ours) = both_checks(root);
            assert!(!changed.is_empty(), "{what}: git finds it changed");
            assert_eq!(ours, None, "{what}");
        };
        write("src/lib.txt", "two\n");
        dirty("a modified file");
        git(&["add", "src/lib.txt"]);
        dirty("a staged change");
        git(&["reset", "-q", "--hard"]);
        write("src/new.txt", "new");
        dirty("an untracked file");
        std::fs::remove_file(root.join("src/new.txt")).unwrap();
        // What the ignore rules let through is untracked to both: a file a later pattern takes
        // back, and one no pattern of the repository's own exclude file covers.
        write("gen/a.txt", "a");
        write("gen/keep.txt", "k");
        write(".git/info/exclude", "gen/*\n!gen/keep.txt\n");
        dirty("a file taken back from an ignored folder's contents");
        write(".git/info/exclude", "gen/\n");
        clean("a folder the repository's exclude file ignores");
        write(".git/info/exclude", "gen/\n!gen/keep.txt\n");
        clean("a file under an ignored folder, which no pattern can take back");
        write(".git/info/exclude", "");
        dirty("an untracked folder");
        std::fs::remove_dir_all(root.join("gen")).unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
        clean("an empty folder, which git does not list");
        std::fs::remove_dir(root.join("empty")).unwrap();
        std::fs::remove_file(&lib).unwrap();
        dirty("a deleted file");
        make_fifo(&lib);
        dirty("a FIFO where a tracked file was");
        std::fs::remove_file(&lib).unwrap();
        git(&["checkout", "-q", "--", "src/lib.txt"]);
        std::fs::set_permissions(&lib, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        dirty("a mode change");
        std::fs::set_permissions(&lib, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        clean("mode back");
        // Clean trees that git could see otherwise are git's to check.
        let git_checks = |what: &str| {
            let (changed, ours) = both_checks(root);
            assert!(changed.is_empty(), "{what}: {changed:?}");
            assert_eq!(ours, None, "{what}: git checks it");
        };
        git(&["config", "core.autocrlf", "input"]);
        git_checks("line endings set");
        git(&["config", "--unset", "core.autocrlf"]);
        git(&["update-index", "--assume-unchanged", "src/lib.txt"]);
        git_checks("an assume-unchanged file");
        git(&["update-index", "--no-assume-unchanged", "src/lib.txt"]);
        git(&["update-index", "--skip-worktree", "src/lib.txt"]);
        git_checks("a skip-worktree file");
        git(&["update-index", "--no-skip-worktree", "src/lib.txt"]);
        clean("skip-worktree undone");
        write("src/.gitattributes", "*.txt text\n");
        git(&["add", "-A"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "attributes"]);
        git_checks("an attributes file in the tree");
        git(&["rm", "-q", "src/.gitattributes"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "no attributes"]);
        clean("attributes removed");
        write(".git/info/attributes", "*.txt -text\n");
        git_checks("the repository's own attributes");
        std::fs::remove_file(root.join(".git/info/attributes")).unwrap();
        clean("info/attributes removed");
        // A submodule: a gitlink in the index.
        let head = git(&["rev-parse", "HEAD"]);
        git(&["update-index", "--add", "--cacheinfo", &format!("160000,{},sub", head.trim())]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "gitlink"]);
        std::fs::create_dir(root.join("sub")).unwrap();
        let (_, ours) = both_checks(root);
        assert_eq!(ours, None, "a submodule is git's to check");
        git(&["rm", "-q", "--cached", "sub"]);
        git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "no gitlink"]);
        clean("gitlink removed");
        // Replace refs, which git follows and libgit2 does not.
        git(&["replace", "HEAD~1", "HEAD"]);
        git_checks("replace refs");
        git(&["replace", "-d", "HEAD~1"]);
        clean("replace removed");
    }

    #[test]
    fn the_in_process_status_check_leaves_a_large_tree_to_git() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        git_in(root, &["init", "-q"]);
        for folder in 0..20 {
            let dir = root.join(format!("d{folder:02}"));
            std::fs::create_dir(&dir).unwrap();
            for file in 0..100 {
                std::fs::write(dir.join(format!("f{file:03}.txt")), "x").unwrap();
            }
        }
        git_in(root, &["add", "-A"]);
        git_in(root, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "many"]);
        let index = std::fs::metadata(root.join(".git/index")).unwrap().len();
        assert!(index > super::STATUS_INDEX_MAX, "2,000 files make an index of {index} bytes");
        let (changed, ours) = both_checks(root);
        assert!(changed.is_empty(), "{changed:?}");
        assert_eq!(ours, None, "git checks a large tree faster");
    }

    #[test]
    fn the_in_process_status_check_leaves_a_checkout_of_another_user_to_git() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        git_in(root, &["init", "-q"]);
        std::fs::write(root.join("justfile"), "a:\n    true\n").unwrap();
        git_in(root, &["add", "-A"]);
        git_in(root, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"]);
        assert!(super::clean_in_process(root).is_some());
        let other = crate::private::euid() + 1;
        std::os::unix::fs::lchown(root.join(".git"), Some(other), None)
            .expect("changing a folder's owner needs root, which these tests run as");
        assert_eq!(super::clean_in_process(root), None, "git decides whether to trust it");
    }

    #[test]
    fn only_harmless_git_variables_leave_the_status_check_in_process() {
        let names =
            |names: &[&str]| names.iter().map(std::ffi::OsString::from).collect::<Vec<_>>().into_iter();
        assert!(super::neutral_to_status(names(&["HOME", "PATH", "GIT_SSL_CAINFO", "GIT_AUTHOR_NAME"])));
        for pointed in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_CONFIG_COUNT",
            "GIT_CONFIG_GLOBAL",
            "GIT_ATTR_SOURCE",
        ] {
            assert!(!super::neutral_to_status(names(&["HOME", pointed])), "{pointed}");
        }
    }

    #[test]
    fn heads_guess_reads_a_detached_a_loose_and_a_packed_head_and_nothing_stranger() {
        let repo = tempfile::tempdir().unwrap();
        let git_dir = repo.path().join(".git");
        std::fs::create_dir_all(git_dir.join("refs/heads")).unwrap();
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let head = |text: &str| std::fs::write(git_dir.join("HEAD"), text).unwrap();
        let guess = || super::head_quick(repo.path());
        head(&format!("{a}\n"));
        assert_eq!(guess(), Some(a.clone()), "detached");
        head("ref: refs/heads/main\n");
        assert_eq!(guess(), None, "an unborn branch");
        std::fs::write(
            git_dir.join("packed-refs"),
            format!("# pack-refs with: peeled\n{b} refs/heads/main\n^{a}\n"),
        )
        .unwrap();
        assert_eq!(guess(), Some(b.clone()), "packed");
        std::fs::write(git_dir.join("refs/heads/main"), format!("{a}\n")).unwrap();
        assert_eq!(guess(), Some(a.clone()), "a loose ref wins over its packed line");
        for odd in ["ref: refs/heads/../../HEAD\n", "ref: refs/tags/main\n", "ref: HEAD\n", "nonsense\n"] {
            head(odd);
            assert_eq!(guess(), None, "{odd:?}");
        }
        std::fs::write(git_dir.join("refs/heads/main"), "ref: refs/heads/other\n").unwrap();
        head("ref: refs/heads/main\n");
        assert_eq!(guess(), None, "a symbolic branch");
        // A checkout whose .git is a file (a worktree, a submodule) is not read by hand.
        let linked = tempfile::tempdir().unwrap();
        std::fs::write(linked.path().join(".git"), format!("gitdir: {}\n", git_dir.display())).unwrap();
        assert_eq!(super::head_quick(linked.path()), None);
    }

    #[test]
    fn a_snapshot_leaves_no_worktree_behind() {
        let (repo, sha) = one_commit();
        let git = |args: &[&str]| git_in(repo.path(), args);
        let snapshot = Snapshot::create(repo.path(), &sha).unwrap();
        let dir = snapshot.dir.clone();
        assert!(dir.join("justfile").is_file());
        assert_eq!(git(&["worktree", "list", "--porcelain"]).matches("worktree ").count(), 2);
        assert!(super::admin_dir(repo.path(), &dir).is_some(), "removed without starting git");
        drop(snapshot);
        assert!(!dir.exists(), "the worktree's folder is gone");
        assert!(!repo.path().join(".git/worktrees").read_dir().is_ok_and(|mut d| d.next().is_some()));
        assert_eq!(
            git(&["worktree", "list", "--porcelain"]).matches("worktree ").count(),
            1,
            "git knows of it no more"
        );
    }

    #[test]
    fn a_dead_servers_snapshot_is_removed_and_nothing_else_is() {
        use std::os::unix::fs::PermissionsExt;
        let (repo, sha) = one_commit();
        let git = |args: &[&str]| git_in(repo.path(), args);
        let worktrees = || git(&["worktree", "list", "--porcelain"]).matches("worktree ").count();
        // What a server killed mid-run leaves: the folder, the checkout, git's entry.
        let mut snapshot = Snapshot::create(repo.path(), &sha).unwrap();
        let scratch = snapshot.scratch.take().unwrap().keep();
        std::mem::forget(snapshot);
        assert_eq!(worktrees(), 2);
        // Not odu's to remove: another commit's name, a path elsewhere, a link to the folder,
        // a folder others can write.
        let other = "f".repeat(40);
        assert!(matches!(
            super::remove_abandoned(repo.path(), &scratch, &other),
            Err(super::Abandoned::NotOurs { .. })
        ));
        let elsewhere = tempfile::tempdir_in(repo.path()).unwrap();
        let named = elsewhere.path().join(scratch.file_name().unwrap());
        std::fs::create_dir(&named).unwrap();
        assert!(matches!(
            super::remove_abandoned(repo.path(), &named, &sha),
            Err(super::Abandoned::NotOurs { .. })
        ));
        assert!(named.is_dir());
        let link = std::env::temp_dir().join(format!("odu-{}-link{}", &sha[..7], std::process::id()));
        std::os::unix::fs::symlink(&named, &link).unwrap();
        let refused = super::remove_abandoned(repo.path(), &link, &sha);
        assert!(matches!(refused, Err(super::Abandoned::Untrusted(_))), "{refused:?}");
        assert!(named.is_dir(), "a link is never followed");
        std::fs::remove_file(&link).unwrap();
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            super::remove_abandoned(repo.path(), &scratch, &sha),
            Err(super::Abandoned::Untrusted(_))
        ));
        assert!(scratch.is_dir());
        // The folder odu made: removed, and git forgets the worktree.
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700)).unwrap();
        super::remove_abandoned(repo.path(), &scratch, &sha).unwrap();
        assert!(!scratch.exists());
        assert_eq!(worktrees(), 1, "git knows of it no more");
        // Once more: already gone.
        super::remove_abandoned(repo.path(), &scratch, &sha).unwrap();
    }

    #[test]
    fn a_snapshot_is_a_clean_detached_worktree_git_knows_made_by_hand_or_by_git() {
        for sparse in [false, true] {
            let repo = tempfile::tempdir().unwrap();
            let git = git_in;
            git(repo.path(), &["init", "-q"]);
            std::fs::create_dir(repo.path().join("src")).unwrap();
            std::fs::write(repo.path().join("justfile"), "a:\n    true\n").unwrap();
            std::fs::write(repo.path().join("src/x.txt"), "x\n").unwrap();
            git(repo.path(), &["add", "-A"]);
            git(repo.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]);
            if sparse {
                // A repository git must set the worktree up for itself.
                git(repo.path(), &["config", "extensions.worktreeConfig", "true"]);
            }
            let sha = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_string();
            let snapshot = Snapshot::create(repo.path(), &sha).unwrap();
            let dir = snapshot.dir.clone();
            assert_eq!(std::fs::read_to_string(dir.join("src/x.txt")).unwrap(), "x\n");
            assert_eq!(git(&dir, &["rev-parse", "HEAD"]).trim(), sha);
            assert_eq!(git(&dir, &["status", "--porcelain"]), "", "sparse={sparse}");
            // By hand it is named after its private folder (`odu-<sha7>-…`); git names it `<sha7>`.
            let admin = super::admin_dir(repo.path(), &dir).unwrap();
            let by_hand = admin.file_name().unwrap().to_str().unwrap().starts_with("odu-");
            assert_eq!(by_hand, !sparse);
            let expected = if sparse { super::Checkout::WorktreeAdd } else { super::Checkout::InProcess };
            assert_eq!(snapshot.checkout, expected);
            let listed = git(repo.path(), &["worktree", "list", "--porcelain"]);
            assert!(listed.contains("detached"), "{listed}");
            // git's own housekeeping keeps it while it is there.
            git(repo.path(), &["worktree", "prune"]);
            assert_eq!(
                git(repo.path(), &["worktree", "list", "--porcelain"]).matches("worktree ").count(),
                2
            );
            drop(snapshot);
            assert!(!dir.exists());
            assert_eq!(
                git(repo.path(), &["worktree", "list", "--porcelain"]).matches("worktree ").count(),
                1
            );
        }
    }

    #[test]
    fn a_snapshot_keeps_modes_and_links_and_leaves_filter_drivers_to_git() {
        use std::os::unix::fs::PermissionsExt;
        let repo = tempfile::tempdir().unwrap();
        let git = git_in;
        let commit = |message: &str| {
            git(repo.path(), &["add", "-A"]);
            git(repo.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message]);
            git(repo.path(), &["rev-parse", "HEAD"]).trim().to_string()
        };
        git(repo.path(), &["init", "-q"]);
        let path = repo.path();
        std::fs::write(path.join("justfile"), "a:\n    ./run.sh\n").unwrap();
        std::fs::write(path.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(path.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("run.sh", path.join("link")).unwrap();
        std::fs::create_dir(path.join("deep")).unwrap();
        std::fs::write(path.join("deep/a.txt"), "abc\n").unwrap();
        let sha = commit("plain");
        let snapshot = Snapshot::create(path, &sha).unwrap();
        assert_eq!(snapshot.checkout, super::Checkout::InProcess, "no attributes: no git process");
        let dir = snapshot.dir.clone();
        let mode = std::fs::metadata(dir.join("run.sh")).unwrap().permissions().mode();
        assert_ne!(mode & 0o111, 0, "the executable stays executable: {mode:o}");
        assert_eq!(std::fs::read_link(dir.join("link")).unwrap(), std::path::Path::new("run.sh"));
        assert_eq!(std::fs::read_to_string(dir.join("deep/a.txt")).unwrap(), "abc\n");
        assert_eq!(git(&dir, &["status", "--porcelain"]), "", "the index matches the files");
        drop(snapshot);

        // A filter driver runs only in git: a commit whose attributes name one, even deep in the
        // tree, is checked out by git, and the driver's output is what the node sees.
        git(path, &["config", "filter.upper.smudge", "tr a-z A-Z"]);
        git(path, &["config", "filter.upper.clean", "tr A-Z a-z"]);
        std::fs::write(path.join("deep/.gitattributes"), "*.txt filter=upper\n").unwrap();
        let sha = commit("filtered");
        let snapshot = Snapshot::create(path, &sha).unwrap();
        assert_eq!(snapshot.checkout, super::Checkout::ReadTree);
        assert_eq!(std::fs::read_to_string(snapshot.dir.join("deep/a.txt")).unwrap(), "ABC\n");
        assert_eq!(git(&snapshot.dir, &["status", "--porcelain"]), "");
    }

    #[test]
    fn status_v2_gives_head_and_every_changed_path() {
        let sha = "a".repeat(40);
        let text = format!(
            "# branch.oid {sha}\0# branch.head main\01 .M N... 100644 100644 100644 {sha} {sha} src/a b.rs\02 R. N... 100644 100644 100644 {sha} {sha} R100 new.rs\0old.rs\0u UU N... 100644 100644 100644 100644 {sha} {sha} {sha} both.rs\0? new file\0"
        );
        let (head, paths) = super::parse_status(&text).unwrap();
        assert_eq!(head, sha);
        assert_eq!(paths, ["src/a b.rs", "new.rs", "both.rs", "new file"]);
        assert!(super::parse_status("# branch.oid (initial)\0# branch.head main\0").is_err());
    }

    #[test]
    fn understands_https_and_ssh_github_remotes() {
        assert_eq!(github_repo("git@github.com:juspay/kolu.git").as_deref(), Some("juspay/kolu"));
        assert_eq!(github_repo("https://github.com/juspay/odu").as_deref(), Some("juspay/odu"));
        assert_eq!(github_repo("https://git.sr.ht/~x/y"), None);
    }
}
