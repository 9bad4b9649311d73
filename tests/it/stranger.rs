//! The attacker of the trust tests: a second, unprivileged local user, and a world-writable
//! stand-in for `/tmp` that both users share.
//!
//! [`Stranger::new`] makes the user `odu-stranger` once per machine (`useradd`, root only; in CI
//! a missing root fails the test instead of skipping it), under a file lock so parallel test
//! processes do not race on `/etc/passwd`. [`Stranger::command`] runs a program as that user,
//! with no supplementary groups and a home of its own. [`shared_tmp`] is a sticky, mode-1777
//! directory to pass to odu as `TMPDIR`, where the stranger can plant what it likes first.

#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

const NAME: &str = "odu-stranger";

/// A second local user, and a home directory it owns.
pub struct Stranger {
    pub uid: u32,
    pub gid: u32,
    home: tempfile::TempDir,
}

impl Stranger {
    /// The stranger, created if this machine has none yet, or why it cannot be had here (not
    /// root). In CI (`CI=true`) that fails the test instead.
    pub fn new() -> Result<Stranger, String> {
        crate::lab::require_root("a second local user")?;
        let lock = File::create(std::env::temp_dir().join("odu-stranger.lock")).map_err(|e| e.to_string())?;
        // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock for useradd: {}", std::io::Error::last_os_error()));
        }
        if id(&["-u", NAME]).is_none() {
            let out = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME])
                .output()
                .map_err(|e| format!("cannot run useradd: {e}"))?;
            assert!(out.status.success(), "useradd {NAME}: {}", String::from_utf8_lossy(&out.stderr));
        }
        drop(lock);
        let uid = id(&["-u", NAME]).expect("the stranger's uid");
        let gid = id(&["-g", NAME]).expect("the stranger's gid");
        let home = tempfile::tempdir().map_err(|e| e.to_string())?;
        chown(home.path(), Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        Ok(Stranger { uid, gid, home })
    }

    /// [`Stranger::new`], saying on stderr why the test is skipped when it cannot be made.
    pub fn or_skip() -> Option<Stranger> {
        Stranger::new().map_err(|why| eprintln!("skipping: {why}")).ok()
    }

    /// `program` run as the stranger: its uid and gid, no supplementary groups, its own home,
    /// and none of the caller's odu or GitHub settings.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(self.uid)
            .gid(self.gid)
            .env("HOME", self.home.path())
            .env("USER", NAME)
            .env_remove("ODU_HOSTS")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("ODU_RUN")
            .env_remove("GH_TOKEN")
            .env_remove("GITHUB_TOKEN")
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Makes `path` the stranger's.
    pub fn own(&self, path: &Path) {
        chown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
}

/// A world-writable, sticky directory like `/tmp`, for odu's `TMPDIR`, that the stranger can
/// write into first.
pub fn shared_tmp() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("odu-shared-tmp-").tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    dir
}

/// Lets everyone traverse `path` and its ancestors up to `/` (test tempdirs are 0700), so the
/// stranger can reach a directory inside.
pub fn open_to_all(path: &Path) {
    for dir in path.ancestors() {
        let Ok(meta) = fs::metadata(dir) else { continue };
        let mode = meta.permissions().mode();
        if mode & 0o005 != 0o005 {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o005)).expect("chmod o+rx");
        }
    }
}

#[test]
fn the_stranger_is_another_user_with_no_groups_of_ours() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let out = stranger.command("id").output().expect("id");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("uid={}", stranger.uid)), "{text}");
    assert!(!text.contains("(root)"), "the stranger kept a root group: {text}");
    let tmp = shared_tmp();
    let planted = tmp.path().join("planted");
    let out = stranger.command("mkdir").arg(&planted).output().expect("mkdir");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = std::fs::metadata(&planted).expect("planted dir");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), stranger.uid);
}
