//! Directories only the user can write: where odu keeps anything another local user must not
//! plant, swap or read (snapshot worktrees, runner spools, kept ssh connections).
//!
//! Two rules, both from `SECURITY.md`:
//! - a scratch directory is created atomically under a fresh random name, mode 0700
//!   ([`scratch`]); odu never adopts a path that already exists;
//! - a directory found again by name (the per-user [`user_dir`], `.ci`) is used only when it is
//!   a real directory (not a symlink), owned by the effective user, and writable by nobody else
//!   ([`check_owned`]).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why a directory found by name cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("{} is a symlink, not a directory", .0.display())]
    Symlink(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("permission denied: {} belongs to another user (uid {owner}; you are uid {me})", .path.display())]
    Foreign { path: PathBuf, owner: u32, me: u32 },
    #[error("{} is writable by other users (mode {mode:o})", .path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("cannot inspect {}: {error}", .path.display())]
    Unreadable { path: PathBuf, error: String },
}

/// Checks, without following a symlink, that `path` is a directory owned by the effective
/// user that neither its group nor others can write.
pub fn check_owned(path: &Path) -> Result<(), Untrusted> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Untrusted::Unreadable { path: path.to_path_buf(), error: e.to_string() })?;
    judge(path, &meta)
}

/// [`check_owned`] of what `dir` holds open (opened with `O_PATH | O_NOFOLLOW`, a symlink
/// stays a symlink): judges what the descriptor names, so a rename or swap of `path` after
/// the open changes nothing. `path` only names it in the error.
pub fn check_owned_dir(dir: &std::fs::File, path: &Path) -> Result<(), Untrusted> {
    let meta = dir
        .metadata()
        .map_err(|e| Untrusted::Unreadable { path: path.to_path_buf(), error: e.to_string() })?;
    judge(path, &meta)
}

fn judge(path: &Path, meta: &std::fs::Metadata) -> Result<(), Untrusted> {
    if meta.file_type().is_symlink() {
        return Err(Untrusted::Symlink(path.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(Untrusted::NotADirectory(path.to_path_buf()));
    }
    owned_by_me(path, meta)?;
    writable_by_me_alone(path, meta)
}

/// Refuses what another user owns: `meta` is what `path` (named in the error) holds.
pub fn owned_by_me(path: &Path, meta: &std::fs::Metadata) -> Result<(), Untrusted> {
    let me = euid();
    if meta.uid() != me {
        return Err(Untrusted::Foreign { path: path.to_path_buf(), owner: meta.uid(), me });
    }
    Ok(())
}

/// Refuses what its group or others can write.
pub fn writable_by_me_alone(path: &Path, meta: &std::fs::Metadata) -> Result<(), Untrusted> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// Makes `dir` (its parent must exist) a 0700 directory of the effective user, or checks the
/// one already there with [`check_owned`]. Never repairs a directory someone else owns.
pub fn ensure_private(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // The umask may have narrowed the mode further; it cannot have widened it.
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            check_owned(dir).map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// odu's private directory for this user, created on first use: `$XDG_RUNTIME_DIR/odu` when
/// the runtime directory is the user's own, else `odu` under `$XDG_CACHE_HOME` or
/// `~/.cache`. Every component odu creates is 0700; an existing `odu` directory that fails
/// [`check_owned`] is refused, not repaired.
pub fn user_dir() -> io::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(runtime) = var("XDG_RUNTIME_DIR").filter(|dir| check_owned(dir).is_ok()) {
        let dir = runtime.join("odu");
        ensure_private(&dir)?;
        return Ok(dir);
    }
    let cache =
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache"))).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "neither XDG_RUNTIME_DIR, XDG_CACHE_HOME nor HOME is set")
        })?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&cache)?;
    let dir = cache.join("odu");
    ensure_private(&dir)?;
    Ok(dir)
}

/// A fresh directory under `$TMPDIR` (mkdtemp: a random name created atomically, mode 0700,
/// never an existing path), removed when the handle is dropped unless kept.
pub fn scratch(prefix: &str) -> io::Result<tempfile::TempDir> {
    scratch_in(&std::env::temp_dir(), prefix)
}

/// [`scratch`] under `root` instead of `$TMPDIR`.
pub fn scratch_in(root: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(root)
}

/// The paths of the entries directly in `root` whose names start with `prefix` (none when it
/// cannot be read). On Linux the others cost no allocation: a `$TMPDIR` can hold thousands of
/// entries, and every runner's start and every new ssh master sweep it for their own.
pub fn entries_named(root: &Path, prefix: &str) -> Vec<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Mode, OFlags, RawDir};
        use std::os::unix::ffi::OsStrExt;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(folder) = rustix::fs::open(root, flags, Mode::empty()) else { return vec![] };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
        let mut entries = RawDir::new(&folder, &mut buf);
        let mut found = Vec::new();
        while let Some(Ok(entry)) = entries.next() {
            let name = entry.file_name().to_bytes();
            if name.starts_with(prefix.as_bytes()) {
                found.push(root.join(std::ffi::OsStr::from_bytes(name)));
            }
        }
        found
    }
    #[cfg(not(target_os = "linux"))]
    {
        let Ok(entries) = std::fs::read_dir(root) else { return vec![] };
        entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
            .map(|entry| entry.path())
            .collect()
    }
}

/// `FS_TOPDIR_FL` from linux/fs.h: the inode flag `chattr +T` sets.
#[cfg(target_os = "linux")]
const TOPDIR: libc::c_int = 0x0002_0000;

/// Asks the file system to place each folder made directly in `dir` in a block group of its own
/// choosing, away from `dir`'s (ext4's "top of directory hierarchies" flag, `chattr +T`;
/// elsewhere nothing happens). A file is made in its folder's group, and on ext4 without a
/// journal a new file is given an inode only past those freed there in the last few seconds to
/// minutes: a folder of fresh logs or a fresh checkout placed where a test suite, a build or an
/// older run just removed thousands of files paid a scan past each of them for every file it
/// made (up to 0.4 ms a file here, against 15 µs in a group of its own). Best effort: an error
/// leaves the folder as it was.
pub fn spread_subfolders(dir: &Path) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(folder) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
        else {
            return;
        };
        let mut flags: libc::c_int = 0;
        // SAFETY: both ioctls take a pointer to one int, which `flags` is, on a descriptor
        // this function owns.
        unsafe {
            if libc::ioctl(folder.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) == 0 && flags & TOPDIR == 0
            {
                flags |= TOPDIR;
                libc::ioctl(folder.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dir`'s inode flags, when its file system has them.
    fn inode_flags(dir: &Path) -> Option<libc::c_int> {
        use std::os::fd::AsRawFd;
        let folder = std::fs::File::open(dir).unwrap();
        let mut flags: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one int, which `flags` is.
        (unsafe { libc::ioctl(folder.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } == 0).then_some(flags)
    }

    #[test]
    fn subfolders_are_spread_on_ext4_and_a_link_to_a_folder_is_not_followed() {
        let dir = scratch("odu-test-").unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        spread_subfolders(&link);
        assert_eq!(inode_flags(&target).unwrap_or(0) & TOPDIR, 0, "the link's target was changed");
        spread_subfolders(&target);
        spread_subfolders(&target);
        // SAFETY: statfs fills the struct it is given.
        let on_ext4 = unsafe {
            let mut fs: libc::statfs = std::mem::zeroed();
            let path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
            libc::statfs(path.as_ptr(), &mut fs) == 0 && fs.f_type == 0xEF53
        };
        if on_ext4 {
            assert_ne!(inode_flags(&target).unwrap() & TOPDIR, 0, "the folder carries the flag");
        }
        // A folder that is not there, or a file, is left as it is, quietly.
        spread_subfolders(&dir.path().join("missing"));
        std::fs::write(dir.path().join("file"), "x").unwrap();
        spread_subfolders(&dir.path().join("file"));
    }

    #[test]
    fn a_scratch_directory_is_new_private_and_unique() {
        let a = scratch("odu-test-").unwrap();
        let b = scratch("odu-test-").unwrap();
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        check_owned(a.path()).unwrap();
    }

    #[test]
    fn symlinks_and_writable_directories_are_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(check_owned(&link), Err(Untrusted::Symlink(_))));
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(check_owned(&real), Err(Untrusted::Writable { .. })));
        assert!(ensure_private(&real).is_err(), "a writable directory is refused, not repaired");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        ensure_private(&real).unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(check_owned(&file), Err(Untrusted::NotADirectory(_))));
    }

    #[test]
    fn only_entries_named_with_the_prefix_are_listed_among_many_others() {
        use std::os::unix::ffi::OsStrExt;
        let root = tempfile::tempdir().unwrap();
        // More entries than one read of the folder returns, names not UTF-8 among them.
        for i in 0..600 {
            std::fs::write(root.path().join(format!("other-{i:04}-{}", "x".repeat(40))), "").unwrap();
        }
        std::fs::create_dir(root.path().join(std::ffi::OsStr::from_bytes(b"odu-runner\xff-bytes"))).unwrap();
        std::fs::write(root.path().join(std::ffi::OsStr::from_bytes(b"\xfe\xfd")), "").unwrap();
        std::fs::create_dir(root.path().join("x-odu-runner-not-a-prefix")).unwrap();
        let ours: Vec<PathBuf> = ["a", "b", "\u{e9}t\u{e9}"]
            .iter()
            .map(|name| root.path().join(format!("odu-runner-{name}")))
            .collect();
        for dir in &ours {
            std::fs::create_dir(dir).unwrap();
        }
        let mut found = entries_named(root.path(), "odu-runner-");
        found.sort();
        let mut want = ours.clone();
        want.sort();
        assert_eq!(found, want);
        assert!(entries_named(&root.path().join("missing"), "odu-runner-").is_empty());
    }
}
