//! Records the git commit odu is built from, for `--version` and the runner provisioning's
//! flake reference: `$ODU_GIT_REV` (a Nix build sets it from the flake's revision), else
//! `git rev-parse HEAD` when this crate's directory is the top of a git checkout, else nothing.

// A build script runs git itself: odu's spawner and tool modules are not built yet.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=ODU_GIT_REV");
    let dir = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let rev = match std::env::var("ODU_GIT_REV") {
        Ok(rev) if !rev.trim().is_empty() => rev.trim().to_string(),
        _ => from_git(&dir).unwrap_or_default(),
    };
    println!("cargo:rustc-env=ODU_GIT_REV={rev}");
}

/// HEAD's commit, when `dir` is the top of a git work tree (not a crate unpacked inside some
/// other repository); rerun whenever HEAD moves.
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if std::fs::canonicalize(&top).ok()? != std::fs::canonicalize(dir).ok()? {
        return None;
    }
    for path in ["HEAD", "packed-refs"] {
        watch(dir, path);
    }
    if let Some(reference) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch(dir, &reference);
    }
    let rev = git(dir, &["rev-parse", "HEAD"])?;
    (rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())).then_some(rev)
}

/// Reruns this script when git's file for `name` changes (a missing file would rerun it on every
/// build: a branch whose ref is packed is watched through packed-refs).
fn watch(dir: &Path, name: &str) {
    if let Some(path) = git(dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p))
        && path.exists()
    {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
