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

/// [`head`] and the paths `git status --porcelain` reports (ignoring odu's own `.ci`
/// folder) at once: both gits run side by side, so the pair costs the
/// wall time of the slower one.
pub fn head_and_dirty_paths(repo: &Path) -> CliResult<(String, Vec<String>)> {
    let started = |args: &[&str]| {
        tool::start("git", args, repo)
            .map_err(|e| CliError::refused(format!("cannot run git ({e}): install git")))
    };
    let head_git = started(HEAD_ARGS)?;
    let status_git = started(STATUS_ARGS);
    let finished = |child| {
        tool::finish(child).map_err(|e| CliError::refused(format!("cannot run git ({e}): install git")))
    };
    let head = finished(head_git).and_then(head_of);
    let dirty = status_git.and_then(finished).and_then(dirty_of);
    Ok((head?, dirty?))
}

const HEAD_ARGS: &[&str] = &["rev-parse", "--verify", "HEAD^{commit}"];
const STATUS_ARGS: &[&str] = &["status", "--porcelain", "--", ".", ":(exclude).ci"];

fn head_of(out: tool::ToolOutput) -> CliResult<String> {
    if !out.success {
        return Err(CliError::refused("the repository has no commit yet: commit the justfile first"));
    }
    Ok(out.stdout.trim().to_string())
}

fn dirty_of(out: tool::ToolOutput) -> CliResult<Vec<String>> {
    if !out.success {
        return Err(CliError::refused(format!("git status failed: {}", out.stderr.trim())));
    }
    Ok(out.stdout.lines().map(|l| l.get(3..).unwrap_or(l).to_string()).collect())
}

/// The `origin` remote's URL, if any.
pub fn origin(repo: &Path) -> Option<String> {
    let out = git(repo, &["remote", "get-url", "origin"]).ok()?;
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
    /// The private directory holding the worktree; removed (with anything left in it) last.
    scratch: Option<tempfile::TempDir>,
}

impl Snapshot {
    pub fn create(repo: &Path, sha: &str) -> CliResult<Snapshot> {
        let short = sha.get(..7).unwrap_or(sha);
        let scratch = crate::private::scratch(&format!("odu-{short}-")).map_err(|e| {
            CliError::refused(format!(
                "cannot create a private directory for the snapshot in {} ({e}): set TMPDIR to a writable directory",
                std::env::temp_dir().display()
            ))
        })?;
        let dir = scratch.path().join(short);
        let dir_str = dir.display().to_string();
        let out = git(repo, &["worktree", "add", "--detach", "--quiet", &dir_str, sha])?;
        if !out.success {
            return Err(CliError::refused(format!("cannot pin HEAD in a worktree: {}", out.stderr.trim())));
        }
        Ok(Snapshot { repo: repo.to_path_buf(), dir, scratch: Some(scratch) })
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let _ = git(&self.repo, &["worktree", "remove", "--force", &dir]);
        drop(self.scratch.take());
        let _ = git(&self.repo, &["worktree", "prune"]);
    }
}

#[cfg(test)]
mod tests {
    use super::github_repo;

    #[test]
    fn understands_https_and_ssh_github_remotes() {
        assert_eq!(github_repo("git@github.com:juspay/kolu.git").as_deref(), Some("juspay/kolu"));
        assert_eq!(github_repo("https://github.com/juspay/odu").as_deref(), Some("juspay/odu"));
        assert_eq!(github_repo("https://git.sr.ht/~x/y"), None);
    }
}
