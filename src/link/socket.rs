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

/// Splits a connection into halves woken only when they have something to do: the read half
/// by data or the peer's end, the write half only while a write waits for room.
///
/// A tokio stream is registered for both kinds of readiness, edge-triggered, and a unix socket
/// signals room every time its peer reads a message. A server sending a client a frame at every
/// node's transition was woken a second time for each of them, by the client's read, with
/// nothing to do.
pub fn split_quiet(stream: UnixStream) -> std::io::Result<(QuietReader, QuietWriter)> {
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    // Taken out of the reactor; left non-blocking.
    let stream = stream.into_std()?;
    // The write half waits for room on a descriptor of its own: the reactor keys a registration
    // on the descriptor, and the read half's stays in place meanwhile.
    let write = stream.try_clone()?;
    // SAFETY: the stream is owned by the AsyncFd, open for as long as it is.
    let read = unsafe { AsyncFd::register_with_interest(stream, Interest::READABLE)? };
    Ok((QuietReader(read), QuietWriter { waiting: None, stream: write }))
}

/// The read half of [`split_quiet`].
pub struct QuietReader(tokio::io::unix::AsyncFd<std::os::unix::net::UnixStream>);

impl tokio::io::AsyncRead for QuietReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::os::fd::AsRawFd;
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            // SAFETY: recv writes at most `unfilled.len()` bytes into it, and exactly the count
            // it returns is marked filled; nothing is read from the uninitialised part.
            let read = guard.try_io(|fd| unsafe {
                let unfilled = buf.unfilled_mut();
                let n = libc::recv(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len(), 0);
                usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
            });
            match read {
                Ok(Ok(n)) => {
                    // SAFETY: recv initialised these `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                // Would block: readiness cleared, wait for the next.
                Err(_) => continue,
            }
        }
    }
}

/// The write half of [`split_quiet`]: writes go straight to the socket; only one that finds no
/// room registers with the reactor, until the writer is flushed (its queue ran dry).
pub struct QuietWriter {
    /// Declared first, so dropped (out of the reactor) before `stream` closes.
    waiting: Option<tokio::io::unix::AsyncFd<RawFd>>,
    stream: std::os::unix::net::UnixStream,
}

/// A descriptor owned elsewhere (the [`QuietWriter`]'s stream), registered while a write waits.
struct RawFd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RawFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

impl QuietWriter {
    fn send(&self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: send reads `buf.len()` bytes of `buf`. MSG_NOSIGNAL: a peer gone is an
            // error (EPIPE), not a signal.
            let n = unsafe {
                libc::send(self.stream.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)
            };
            match usize::try_from(n) {
                Ok(n) => return Ok(n),
                Err(_) => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Whether a write is waiting for room (the writer is registered with the reactor).
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }
}

impl tokio::io::AsyncWrite for QuietWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::os::fd::AsRawFd;
        use tokio::io::Interest;
        use tokio::io::unix::AsyncFd;
        loop {
            let Some(waiting) = &self.waiting else {
                match self.send(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Registered now: a write of ours found the socket full, so the room
                        // its peer makes next is worth a wake.
                        let fd = RawFd(self.stream.as_raw_fd());
                        // SAFETY: `stream` stays open while `waiting` is registered: it is
                        // dropped first, and only ever replaced by None.
                        self.waiting =
                            Some(unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE)? });
                        continue;
                    }
                    written => return std::task::Poll::Ready(written),
                }
            };
            let mut guard = std::task::ready!(waiting.poll_write_ready(cx))?;
            match guard.try_io(|_| self.send(buf)) {
                Ok(written) => return std::task::Poll::Ready(written),
                // Still full: readiness cleared, wait for more room.
                Err(_) => continue,
            }
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // Every queued write went out: the writer leaves the reactor until one finds no room.
        self.waiting = None;
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.waiting = None;
        std::task::Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// What this process's epoll instances watch: (descriptor, event mask), from the kernel.
    fn watched() -> Vec<(i32, u32)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let is_epoll = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[eventpoll]");
            if !is_epoll {
                continue;
            }
            let name = entry.file_name();
            let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", name.to_string_lossy()))
            else {
                continue;
            };
            for line in info.lines().filter(|line| line.starts_with("tfd:")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                out.push((words[1].parse().unwrap(), u32::from_str_radix(words[3], 16).unwrap()));
            }
        }
        out
    }

    fn mask_of(fd: i32) -> Option<u32> {
        watched().into_iter().find(|&(watched, _)| watched == fd).map(|(_, mask)| mask)
    }

    #[tokio::test]
    async fn a_quiet_connection_watches_for_room_only_while_a_write_waits_for_it() {
        use std::os::fd::AsRawFd;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const OUT: u32 = libc::EPOLLOUT as u32;
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (mut reader, mut writer) = split_quiet(ours).unwrap();
        let (read_fd, write_fd) = (reader.0.as_raw_fd(), writer.stream.as_raw_fd());
        let read_mask = mask_of(read_fd).expect("the read half is watched");
        assert_eq!(read_mask & OUT, 0, "the read half is not woken by room: {read_mask:#x}");
        assert_eq!(mask_of(write_fd), None, "an idle write half is not watched");

        // A frame out, read by the peer: nothing is watched for room meanwhile or after.
        writer.write_all(b"hello\n").await.unwrap();
        writer.flush().await.unwrap();
        let mut line = [0u8; 6];
        theirs.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"hello\n");
        assert_eq!(mask_of(write_fd), None);
        assert!(!writer.is_waiting());

        // A peer that reads nothing: the write fills the socket and waits, watched for room.
        let sent: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let task = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            let waited = writer.is_waiting();
            writer.flush().await.unwrap();
            (writer, waited)
        });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while mask_of(write_fd).is_none_or(|mask| mask & OUT == 0) {
            assert!(tokio::time::Instant::now() < deadline, "the waiting write was never watched for room");
            tokio::task::yield_now().await;
        }
        let mut got = vec![0u8; expected.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert!(got == expected, "every byte, in order");
        let (mut writer, waited) = task.await.unwrap();
        assert!(waited, "the write waited for room");
        assert_eq!(mask_of(write_fd), None, "flushed, the write half is not watched any more");

        // Reading: what the peer sends, then its end.
        theirs.write_all(b"request\n").await.unwrap();
        theirs.shutdown().await.unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"request\n");
        writer.shutdown().await.unwrap();
        assert_eq!(theirs.read(&mut line).await.unwrap(), 0, "the write half's shutdown is the peer's end");
    }

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
