//! The unix socket a checkout's server listens on, `.ci/odu.sock`, reached only through a
//! checked `.ci`: used by the server to bind and by every client to connect.

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::private;

/// The socket's name inside `.ci`.
const SOCKET: &str = "odu.sock";

/// A checkout's `.ci`, open and checked: the directory the socket is bound and reached in.
///
/// It is opened without following a symlink and judged through the descriptor
/// ([`private::check_owned_dir`]): a real directory of ours that no one else can write. The
/// socket is then addressed through that descriptor, `/proc/self/fd/<fd>/odu.sock`, which fits
/// a unix socket address (108 bytes) however long the checkout's path, and names the very
/// directory that was checked even if `.ci` is renamed or replaced meanwhile.
pub struct CiDir {
    dir: std::fs::File,
    path: PathBuf,
}

impl CiDir {
    /// Opens and checks `repo/.ci`; `Ok(None)` when the checkout has none yet.
    pub fn open(repo: &Path) -> Result<Option<CiDir>, private::Untrusted> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = repo.join(".ci");
        // O_PATH needs no read permission on the directory: one that is not ours is judged
        // (and named as someone else's), not merely found unreadable.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path);
        let dir = match opened {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(private::Untrusted::Unreadable { path, error: e.to_string() }),
        };
        private::check_owned_dir(&dir, &path)?;
        Ok(Some(CiDir { dir, path }))
    }

    /// `.ci` as the user knows it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where to bind or reach the socket: through the descriptor when `/proc` is there, else
    /// by its path.
    pub fn socket(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        let via_fd = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        if via_fd.is_dir() { via_fd.join(SOCKET) } else { self.path.join(SOCKET) }
    }
}

/// Refuses a peer on the socket that is not this user: whatever listens in `.ci` learns the
/// caller's environment and can answer any verdict.
pub fn check_peer(stream: &UnixStream, shown: &Path) -> Result<(), String> {
    let cred = stream.peer_cred().map_err(|e| format!("cannot tell who serves {}: {e}", shown.display()))?;
    let me = private::euid();
    if cred.uid() == me {
        return Ok(());
    }
    let pid = cred.pid().map(|p| format!(", pid {p}")).unwrap_or_default();
    Err(format!(
        "{} is served by uid {}{pid}, not by you (uid {me}): odu will not talk to it, since it would see your environment and could fake any verdict: check who started it, then remove the socket (rm .ci/odu.sock) and run again",
        shown.display(),
        cred.uid()
    ))
}

/// Binds the socket in `ci` (0600). A socket nobody answers on is stale and is reclaimed; a
/// live one is never stolen, and one served by another user is refused.
pub async fn bind(ci: &CiDir) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = ci.socket();
    let shown = socket_path_in(ci.path());
    if std::fs::symlink_metadata(&path).is_ok() {
        if let Ok(stream) = UnixStream::connect(&path).await {
            let why = match check_peer(&stream, &shown) {
                Ok(()) => format!("{} is live: another odu serves this checkout", shown.display()),
                Err(why) => why,
            };
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, why));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// `.ci/odu.sock` of a checkout, as the user knows it: for messages. Binding and connecting go
/// through [`CiDir::socket`], which fits a socket address whatever the checkout's path.
pub fn socket_path(repo: &Path) -> PathBuf {
    socket_path_in(&repo.join(".ci"))
}

fn socket_path_in(ci: &Path) -> PathBuf {
    ci.join(SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ci_dir_is_opened_only_when_it_is_a_private_directory_of_ours() {
        let root = tempfile::tempdir().unwrap();
        assert!(CiDir::open(root.path()).unwrap().is_none(), "no .ci yet");
        let target = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(target.path(), root.path().join(".ci")).unwrap();
        assert!(matches!(CiDir::open(root.path()), Err(private::Untrusted::Symlink(_))));
        std::fs::remove_file(root.path().join(".ci")).unwrap();
        std::fs::write(root.path().join(".ci"), "").unwrap();
        assert!(matches!(CiDir::open(root.path()), Err(private::Untrusted::NotADirectory(_))));
        std::fs::remove_file(root.path().join(".ci")).unwrap();
        std::fs::create_dir(root.path().join(".ci")).unwrap();
        std::fs::set_permissions(root.path().join(".ci"), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(CiDir::open(root.path()), Err(private::Untrusted::Writable { .. })));
        std::fs::set_permissions(root.path().join(".ci"), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(CiDir::open(root.path()).unwrap().unwrap().path(), root.path().join(".ci"));
    }

    #[tokio::test]
    async fn the_socket_of_a_checkout_with_a_long_path_binds_and_answers() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("d".repeat(120)).join("e".repeat(120));
        std::fs::create_dir_all(repo.join(".ci")).unwrap();
        let ci = CiDir::open(&repo).unwrap().unwrap();
        assert!(ci.socket().as_os_str().len() < 108, "{}", ci.socket().display());
        let listener = bind(&ci).await.unwrap();
        assert!(socket_path(&repo).exists(), "bound in .ci itself");
        let client = UnixStream::connect(CiDir::open(&repo).unwrap().unwrap().socket()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        check_peer(&client, &socket_path(&repo)).unwrap();
        check_peer(&server, &socket_path(&repo)).unwrap();
        let error = bind(&ci).await.unwrap_err();
        assert!(error.to_string().contains("another odu serves this checkout"), "{error}");
    }
}
