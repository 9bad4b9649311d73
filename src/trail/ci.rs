//! The checkout's `.ci` directory itself: made private when absent, refused (never repaired)
//! when it is not the user's alone or git tracks what odu keeps there. Every process that
//! touches `.ci` goes through here first.

use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};
use crate::private::Untrusted;

/// The checkout's `.ci`, where odu keeps its socket, records and logs: created private (0700)
/// when absent. One already there is used only when git does not track it and it is a real
/// directory of this user's that no one else can write; any other is refused, never repaired:
/// not chmodded (as root that would succeed on anyone's directory, or through a symlink on its
/// target), not even when it is ours but open to others, since what they planted in it while
/// it was open would stay.
pub fn ensure_ci_dir(repo: &Path) -> CliResult<PathBuf> {
    ensure_ci_dir_listed(repo, start_tracked_listing(repo))
}

/// `git ls-files -- .ci`, started early for [`ensure_ci_dir_listed`] to read: a run's start
/// asks it while other work goes on. Read from the index in this process where libgit2 can
/// ([`crate::tool::git::tracked_under`]).
pub fn start_tracked_listing(repo: &Path) -> std::io::Result<crate::tool::Pending> {
    // git's answer comes from the index and the config: remembered while neither changes.
    let files = crate::tool::git::config_files(repo).map(|mut files| {
        files.push(repo.join(".git/index"));
        files
    });
    let in_process = || {
        crate::tool::git::tracked_under(repo, ".ci").map(|listed| crate::tool::ToolOutput {
            success: true,
            stdout: listed,
            stderr: String::new(),
        })
    };
    crate::tool::Pending::remembered_or("git", &["ls-files", "--", ".ci"], repo, files, in_process)
}

/// [`ensure_ci_dir`], with git's listing of `.ci` already started.
pub fn ensure_ci_dir_listed(
    repo: &Path,
    listing: std::io::Result<crate::tool::Pending>,
) -> CliResult<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let ci = repo.join(".ci");
    match std::fs::symlink_metadata(&ci) {
        Ok(_) => crate::private::check_owned(&ci).map_err(refuse_ci)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CliError::refused(format!("cannot inspect {}: {e}", ci.display()))),
    }
    refuse_tracked_ci(repo, listing)?;
    match std::fs::DirBuilder::new().mode(0o700).create(&ci) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            crate::private::check_owned(&ci).map_err(refuse_ci)?;
        }
        Err(e) => return Err(CliError::refused(format!("cannot create {}: {e}", ci.display()))),
    }
    Ok(ci)
}

/// Refuses a checkout in which git tracks what odu keeps in `.ci`: `.ci` itself as a file or a
/// link, the `odu.*` files (socket, locks, serve log, heads) or a run label's folder (`<sha7>`,
/// `<sha7>+dirty`): their contents would come from whoever wrote the repository. Other tracked
/// files under `.ci` (a CI system's own scripts, like this repository's `.ci/run`) are left
/// alone: odu derives every path it reads there from ids it validates, so they can never be
/// mistaken for odu's.
fn refuse_tracked_ci(repo: &Path, listing: std::io::Result<crate::tool::Pending>) -> CliResult<()> {
    let out = listing
        .and_then(crate::tool::Pending::finish)
        .map_err(|e| CliError::refused(format!("cannot run git ({e}): install git")))?;
    if !out.success {
        return Err(CliError::refused(format!(
            "cannot ask git whether .ci is tracked: {}",
            out.stderr.trim()
        )));
    }
    match out.stdout.lines().find(|path| odu_owns(path)) {
        None => Ok(()),
        Some(first) => Err(CliError::refused(format!(
            "{} holds files tracked by git where odu keeps its own ({first}): odu will not take its socket, records or logs from a repository: untrack them (git rm -r --cached {first}), add .ci/ to .gitignore, and commit",
            repo.join(".ci").display()
        ))),
    }
}

/// Whether a tracked path (as `git ls-files` prints it) is one of the names odu writes in `.ci`.
fn odu_owns(path: &str) -> bool {
    let Some(rest) = path.strip_prefix(".ci/") else { return path == ".ci" };
    let first = rest.split('/').next().unwrap_or(rest);
    let hex = first.strip_suffix("+dirty").unwrap_or(first);
    first.starts_with("odu.") || (hex.len() >= 7 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What to tell the user about a `.ci` odu will not use: what is wrong, why it matters, and
/// what to do.
pub fn refuse_ci(why: Untrusted) -> CliError {
    let then = match &why {
        Untrusted::Symlink(_) => {
            "odu will not write through it, wherever it points (a repository or another user may have planted it): remove the link (rm .ci) and run again; odu makes a private .ci"
        }
        Untrusted::NotADirectory(_) => {
            "odu keeps its socket and records in a .ci directory: move it out of the way and run again"
        }
        Untrusted::Foreign { .. } => {
            "odu will not use it, since whoever controls it could see your environment and fake verdicts: check who created it, then remove it (rm -rf .ci) and run again; odu makes a private .ci"
        }
        Untrusted::Writable { .. } => {
            "odu will not use it, since anyone could have planted a server or records in it: remove it (rm -rf .ci) and run again; odu makes a private .ci"
        }
        Untrusted::Unreadable { .. } => "check its permissions",
    };
    CliError::refused(format!("{why}: {then}"))
}

/// Opens (creating it 0600) a lock file under `.ci` for `flock`: never through a symlink, never
/// blocking on a FIFO planted in its place.
pub fn open_lock(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tracked_tests {
    #[test]
    fn only_the_names_odu_writes_in_ci_count_as_its_own() {
        for ours in [
            ".ci",
            ".ci/odu.sock",
            ".ci/odu.serve.log",
            ".ci/odu.heads.json",
            ".ci/abc1234/runs/1.json",
            ".ci/abc1234+dirty/x86_64-linux/a.log",
        ] {
            assert!(super::odu_owns(ours), "{ours}");
        }
        for theirs in
            [".ci/run", ".ci/notes.txt", ".ci/scripts/build.sh", ".ci/abc/x", ".ci/xyz1234/x", ".cix"]
        {
            assert!(!super::odu_owns(theirs), "{theirs}");
        }
    }
}
