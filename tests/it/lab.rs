//! A throwaway ssh test lab, built by the tests themselves without touching any ssh config of the
//! user or the system: [`Sshd`], a user-level sshd on a loopback port, and [`NetnsHost`], an sshd
//! in its own network namespace behind a veth pair whose link a test can cut and restore (root
//! only).
//!
//! Each lab host lives in a tempdir holding throwaway ed25519 keys, its `sshd_config`, and a client
//! `ssh_config` with one `Host <alias>` block (BatchMode, strict host key checking against the
//! tempdir's `known_hosts`), so `ssh -F <config> <alias> <command>` reaches it and reads nothing
//! else. Aliases are unique among live hosts: one client config can cover several hosts with
//! `Include <config> <config>`.
//!
//! The lab finds the processes of a host by its tempdir, `$TMPDIR/odu-lab-<test pid>-<random>`:
//! every sshd process writes its stderr to the tempdir's `sshd.log` (sshd rewrites its own
//! environment when it sets its process title), and every session, and whatever it spawns, has
//! `ODU_LAB_SSHD=<tempdir>` in its environment (sshd `SetEnv`), so killing a host kills them all,
//! even the ones that daemonized. A new lab host also kills the processes and removes the tempdirs
//! of test processes that died without cleaning up. Network namespaces are allocated through lock
//! files under `/tmp/odu-lab-netns`, so a crashed test's namespace is removed by the next test that
//! takes its slot.
//!
//! [`Tmpfs`] plays a small or full disk (root only): a tmpfs of a fixed size, mounted on a
//! lab tempdir, so a test process that died with it mounted has it unmounted and removed by the
//! next lab host or tmpfs, like its other leftovers.
//!
//! The tools come from `bash scripts/install-deps.sh`; a missing one fails the test loudly.

#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::harness::DEADLINE;

const SSHD: &str = "/usr/sbin/sshd";
/// The environment variable marking every process of a lab session (see the module docs).
const MARKER: &str = "ODU_LAB_SSHD";
const DIR_PREFIX: &str = "odu-lab-";
/// How often the lab polls while waiting on an event, always under a deadline.
const POLL: Duration = Duration::from_millis(5);
/// Network namespace slots: each owns a /30 of 10.211.0.0/16.
const SLOTS: u32 = 16384;
const SLOT_DIR: &str = "/tmp/odu-lab-netns";

#[derive(Clone, Debug, Default)]
pub struct SshdOptions {
    /// Printed verbatim on the channel's stdout before every session's command (or login shell),
    /// like a chatty `.bashrc`: sshd runs each session through a `ForceCommand` wrapper that
    /// prints it, then runs `exec "$SHELL" -c "$SSH_ORIGINAL_COMMAND"`. The real home directory
    /// is never touched. Like a chatty `.bashrc`, it breaks subsystems such as sftp.
    pub banner: Option<String>,
    /// Extra variables for every session (sshd `SetEnv`), e.g. a `PATH` without some tool.
    pub env: Vec<(String, String)>,
}

/// A user-level sshd on a loopback port (see the module docs). Dropping it kills the sshd and
/// every session it started, and removes its tempdir.
pub struct Sshd {
    dir: tempfile::TempDir,
    alias: String,
    addr: Ipv4Addr,
    port: u16,
    user: String,
    netns: Option<String>,
    marker: String,
    child: Mutex<Option<Child>>,
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::with_options(SshdOptions::default())
    }

    pub fn with_options(options: SshdOptions) -> Sshd {
        require_tools(false);
        let mut last = String::new();
        // A port found free can be taken before sshd binds it: try another one.
        for _ in 0..10 {
            let port = free_port();
            let sshd = Sshd::prepare(format!("odu-lab-{port}"), Ipv4Addr::LOCALHOST, port, None, &options);
            match sshd.spawn() {
                Ok(()) => return sshd,
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("sshd found no free loopback port in 10 tries; the last failure: {last}");
    }

    /// Writes the keys and configs of a host listening on `addr:port` (inside `netns` if given).
    fn prepare(
        alias: String,
        addr: Ipv4Addr,
        port: u16,
        netns: Option<String>,
        options: &SshdOptions,
    ) -> Sshd {
        kill_orphans();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("tempdir");
        let marker = dir.path().display().to_string();
        let sshd =
            Sshd { dir, alias, addr, port, user: current_user(), netns, marker, child: Mutex::new(None) };
        let host_key = keygen(&sshd.path("host_ed25519_key"));
        let client_key = keygen(&sshd.path("id_ed25519"));
        write(&sshd.path("authorized_keys"), &client_key);
        write(&sshd.known_hosts(), &format!("{} {host_key}", sshd.known_hosts_name()));

        let quote = |p: PathBuf| format!("\"{}\"", p.display());
        let mut config = format!(
            "ListenAddress {addr}:{port}\n\
             Port {port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PidFile {pid_file}\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PermitUserRC no\n\
             PermitUserEnvironment no\n\
             UseDNS no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             X11Forwarding no\n\
             MaxStartups 200\n\
             SetEnv {MARKER}=\"{marker}\" HOME=\"{home}\"{extra_env}\n\
             Subsystem sftp internal-sftp\n",
            host_key = quote(sshd.path("host_ed25519_key")),
            authorized_keys = quote(sshd.path("authorized_keys")),
            pid_file = quote(sshd.path("sshd.pid")),
            marker = sshd.marker,
            home = sshd.path("home").display(),
            extra_env = options.env.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect::<String>(),
        );
        // Each host has a home of its own, so caches under ~/.cache never mix between hosts.
        std::fs::create_dir_all(sshd.path("home")).expect("create the host's home");
        if sshd_version() >= (9, 8) {
            // Tests connect and disconnect often from one address: never lock it out.
            config.push_str("PerSourcePenalties no\n");
        }
        if let Some(banner) = &options.banner {
            write(&sshd.path("banner"), banner);
            write(
                &sshd.path("banner.sh"),
                &format!(
                    "cat {banner}\n\
                     if [ -n \"${{SSH_ORIGINAL_COMMAND+set}}\" ]; then\n\
                     \x20 exec \"$SHELL\" -c \"$SSH_ORIGINAL_COMMAND\"\n\
                     fi\n\
                     exec \"$SHELL\" -l\n",
                    banner = sh_quote(&sshd.path("banner")),
                ),
            );
            config.push_str(&format!("ForceCommand /bin/sh {}\n", sh_quote(&sshd.path("banner.sh"))));
        }
        write(&sshd.path("sshd_config"), &config);

        sshd.write_client_config(&sshd.config(), &sshd.known_hosts(), Some("yes"));
        sshd
    }

    /// Writes a client config for this host to `path`, like [`Sshd::config`] but trusting the
    /// host keys in `known_hosts` and with `StrictHostKeyChecking <strict>` (`None`: the line is
    /// left out, so ssh's own default applies).
    pub fn write_client_config(&self, path: &Path, known_hosts: &Path, strict: Option<&str>) {
        let quote = |p: &Path| format!("\"{}\"", p.display());
        let strict = strict.map(|s| format!("\x20 StrictHostKeyChecking {s}\n")).unwrap_or_default();
        write(
            path,
            &format!(
                "Host {alias}\n\
                 \x20 HostName {addr}\n\
                 \x20 Port {port}\n\
                 \x20 User {user}\n\
                 \x20 IdentityFile {identity}\n\
                 \x20 IdentitiesOnly yes\n\
                 \x20 IdentityAgent none\n\
                 \x20 UserKnownHostsFile {known_hosts}\n\
                 \x20 GlobalKnownHostsFile /dev/null\n\
                 {strict}\
                 \x20 UpdateHostKeys no\n\
                 \x20 CheckHostIP no\n\
                 \x20 BatchMode yes\n\
                 \x20 LogLevel ERROR\n",
                alias = self.alias,
                addr = self.addr,
                port = self.port,
                user = self.user,
                identity = quote(&self.identity()),
                known_hosts = quote(known_hosts),
            ),
        );
    }

    /// Starts sshd and waits until it listens: it wrote its pid file (which it does once its
    /// socket is bound) and greets a connection. Returns sshd's log when it fails.
    fn spawn(&self) -> Result<(), String> {
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        assert!(slot.is_none(), "sshd is already running");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // sshd's privilege separation directory, which a package install may not create.
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let pid_file = self.path("sshd.pid");
        let _ = fs::remove_file(&pid_file);
        let log = OpenOptions::new().create(true).append(true).open(self.path("sshd.log")).expect("sshd.log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new(tool("ip"));
                cmd.args(["netns", "exec", ns, SSHD]);
                cmd
            }
            None => Command::new(SSHD),
        };
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .env(MARKER, &self.marker)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("sshd.log"))
            .stderr(log);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let pid = child.id().to_string();
        let target = SocketAddr::from((self.addr, self.port));
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait sshd") {
                return Err(format!(
                    "sshd exited ({status}) before listening on {target}; its log:\n{}",
                    self.log()
                ));
            }
            let bound = fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == pid);
            if bound && greets(target) {
                *slot = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                kill_marked(&self.marker);
                return Err(format!(
                    "sshd did not listen on {target} within {DEADLINE:?}; its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The `Host` alias of the client config.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The address sshd listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user ssh logs in as: the current user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The lab host's tempdir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client `ssh_config`, for `ssh -F`.
    pub fn config(&self) -> PathBuf {
        self.path("ssh_config")
    }

    /// The client's `known_hosts`, holding the host's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// The host as `known_hosts` names it: `[127.0.0.1]:2222`, or the bare address on port 22.
    pub fn known_hosts_name(&self) -> String {
        match self.port {
            22 => self.addr.to_string(),
            port => format!("[{}]:{port}", self.addr),
        }
    }

    /// The client's private key.
    pub fn identity(&self) -> PathBuf {
        self.path("id_ed25519")
    }

    /// sshd's log (its stderr, `-e`) so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// `ssh -F <config>`: add options, then the alias and the remote command.
    pub fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(self.config());
        cmd
    }

    /// Runs `remote` on the host through `ssh -F <config> <alias>`, with a deadline.
    pub fn run(&self, remote: &str) -> Output {
        output_within(self.ssh().arg(&self.alias).arg(remote), DEADLINE)
    }

    /// SIGKILLs the sshd and every session it started, like the host's ssh service crashing:
    /// established connections drop, new ones are refused.
    pub fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        kill_marked(&self.marker);
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs only the listening sshd: new connections are refused, established sessions live
    /// on (like restarting a real host's sshd).
    pub fn kill_listener(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts sshd again after [`Sshd::kill`] or [`Sshd::kill_listener`], with the same keys,
    /// address, port and configs.
    pub fn restart(&self) {
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A host in its own network namespace: an sshd on port 22 of the namespace's end of a veth pair,
/// reached from the root namespace through the other end (root only). It derefs to its [`Sshd`]
/// for the alias, configs and the like. The filesystem is shared with the namespace, so the
/// "remote" host sees the same files as the test. Dropping it kills every process in the
/// namespace and deletes the namespace and the veth pair.
pub struct NetnsHost {
    // Dropped in this order: the sshd and its sessions first, then the namespace.
    sshd: Sshd,
    net: Netns,
}

impl NetnsHost {
    /// A new host, or why it cannot be made here (not root). In CI (`CI=true`) that fails the test
    /// instead, as does a missing tool anywhere.
    pub fn new(options: SshdOptions) -> Result<NetnsHost, String> {
        require_tools(true);
        require_root("network namespace hosts")?;
        let net = Netns::create();
        let sshd = Sshd::prepare(
            format!("odu-netns-{}", net.slot),
            net.peer_addr(),
            22,
            Some(net.name.clone()),
            &options,
        );
        sshd.spawn().unwrap_or_else(|e| panic!("{e}"));
        Ok(NetnsHost { sshd, net })
    }

    /// [`NetnsHost::new`], saying on stderr why the test is skipped when it cannot be made.
    pub fn or_skip(options: SshdOptions) -> Option<NetnsHost> {
        NetnsHost::new(options).map_err(|why| eprintln!("skipping: {why}")).ok()
    }

    /// Takes the root namespace's end of the veth down: the host becomes unreachable, and
    /// established connections stall.
    pub fn cut_link(&self) {
        ip(&["link", "set", &self.net.host_veth, "down"]);
    }

    pub fn restore_link(&self) {
        ip(&["link", "set", &self.net.host_veth, "up"]);
    }

    /// SIGKILLs the host's sshd and every session it started.
    pub fn kill_sshd(&self) {
        self.sshd.kill();
    }

    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    pub fn namespace(&self) -> &str {
        &self.net.name
    }

    /// The root namespace's end of the veth pair.
    pub fn host_veth(&self) -> &str {
        &self.net.host_veth
    }

    /// The root namespace's address on the link, as the host sees the test's side.
    pub fn gateway(&self) -> Ipv4Addr {
        self.net.host_addr()
    }
}

impl Deref for NetnsHost {
    type Target = Sshd;

    fn deref(&self) -> &Sshd {
        &self.sshd
    }
}

/// A tmpfs of a fixed size on a fresh lab tempdir (root only): a small disk, or with
/// [`Tmpfs::fill`] a full one. Point a host at it through its environment (e.g.
/// `XDG_CACHE_HOME`), and mount it before starting the [`NetnsHost`] that should see it: a
/// namespace host's sshd runs in a copy of the mount table made when it starts (`ip netns exec`
/// unshares the mount namespace), and when `/` is private no later mount reaches that copy. The
/// files and the size ([`Tmpfs::resize`]) are shared by every copy.
///
/// Dropping it unmounts it, lazily (a process still inside cannot keep it mounted), and removes
/// its directory, also when the test panics; the mount of a test process that was killed is
/// removed by the next lab host or tmpfs (see [`kill_orphans`]).
pub struct Tmpfs {
    // Dropped after `Drop::drop` unmounted `mountpoint`: removes the then empty directories.
    dir: tempfile::TempDir,
    mountpoint: PathBuf,
}

impl Tmpfs {
    /// A tmpfs of `size` bytes, or why it cannot be made here (not root). In CI (`CI=true`) that
    /// fails the test instead.
    pub fn new(size: u64) -> Result<Tmpfs, String> {
        require_root("tmpfs mounts")?;
        kill_orphans();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("tempdir");
        let mountpoint = dir.path().join("disk");
        fs::create_dir(&mountpoint).unwrap_or_else(|e| panic!("create {}: {e}", mountpoint.display()));
        mount_tmpfs(&mountpoint, 0, size).unwrap_or_else(|e| panic!("{e}"));
        Ok(Tmpfs { dir, mountpoint })
    }

    /// [`Tmpfs::new`], saying on stderr why the test is skipped when it cannot be made.
    pub fn or_skip(size: u64) -> Option<Tmpfs> {
        Tmpfs::new(size).map_err(|why| eprintln!("skipping: {why}")).ok()
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Grows (or shrinks, down to what is used) the disk, for every mount namespace at once.
    pub fn resize(&self, size: u64) {
        mount_tmpfs(&self.mountpoint, libc::MS_REMOUNT, size).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Fills the disk: `filler` at its top grows until a write fails with ENOSPC. Returns the
    /// filler's path; removing it frees the space again.
    pub fn fill(&self) -> PathBuf {
        let path = self.mountpoint.join("filler");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let chunk = vec![0u8; 1 << 16];
        loop {
            match file.write(&chunk) {
                Ok(0) => panic!("{} took no more bytes without ENOSPC", path.display()),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("write {}: {e}", path.display()),
            }
        }
        assert_eq!(self.available(), 0, "{} is full, yet has room", self.mountpoint.display());
        path
    }

    /// The bytes left for files (`statvfs`).
    pub fn available(&self) -> u64 {
        let path = c_path(&self.mountpoint);
        // SAFETY: an all-zero statvfs is a valid value for statvfs to overwrite.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a statvfs to fill.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs {}: {}", self.mountpoint.display(), std::io::Error::last_os_error());
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.mountpoint) {
            eprintln!("lab: {e}");
        }
    }
}

/// `mount -t tmpfs -o size=<size>` (with `flags`, e.g. `MS_REMOUNT`) on `target`.
fn mount_tmpfs(target: &Path, flags: libc::c_ulong, size: u64) -> Result<(), String> {
    let path = c_path(target);
    let options = std::ffi::CString::new(format!("size={size}")).expect("no NUL");
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(c"odu-lab".as_ptr(), path.as_ptr(), c"tmpfs".as_ptr(), flags, options.as_ptr().cast())
    };
    match rc {
        0 => Ok(()),
        _ => Err(format!(
            "mount a {size}-byte tmpfs on {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        )),
    }
}

/// Lazily unmounts whatever is mounted on `target`; never panics (it runs in drop).
fn unmount(target: &Path) -> Result<(), String> {
    let path = c_path(target);
    // SAFETY: a NUL-terminated path that outlives the call.
    match unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } {
        0 => Ok(()),
        _ => Err(format!("unmount {}: {}", target.display(), std::io::Error::last_os_error())),
    }
}

/// The mount points at or below `dir` in this process's mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = dir.canonicalize() else { return vec![] };
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(&dir))
        .collect();
    found.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    found
}

/// A mountinfo path field: `\040` and the like are octal escapes for space, tab, newline and `\\`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn c_path(path: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).expect("a path without NUL")
}

/// A network namespace and its veth pair, owning slot `slot` (and its /30) for as long as it holds
/// the slot's lock file.
struct Netns {
    slot: u32,
    name: String,
    host_veth: String,
    peer_veth: String,
    _lock: File,
}

impl Netns {
    fn create() -> Netns {
        let (slot, lock) = acquire_slot();
        let net = Netns {
            slot,
            name: format!("odu-lab-{slot}"),
            host_veth: format!("odulab{slot}"),
            peer_veth: format!("odulab{slot}p"),
            _lock: lock,
        };
        // What a test process that died holding this slot left behind.
        net.remove();
        // From here on, a failure drops `net`, which removes what was made.
        ip(&["netns", "add", &net.name]);
        ip(&[
            "link",
            "add",
            &net.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &net.peer_veth,
            "netns",
            &net.name,
        ]);
        ip(&["addr", "add", &format!("{}/30", net.host_addr()), "dev", &net.host_veth]);
        ip(&["link", "set", &net.host_veth, "up"]);
        ip(&["-n", &net.name, "addr", "add", &format!("{}/30", net.peer_addr()), "dev", &net.peer_veth]);
        ip(&["-n", &net.name, "link", "set", &net.peer_veth, "up"]);
        ip(&["-n", &net.name, "link", "set", "lo", "up"]);
        net
    }

    fn host_addr(&self) -> Ipv4Addr {
        let base = self.slot * 4;
        Ipv4Addr::new(10, 211, (base >> 8) as u8, (base & 0xff) as u8 + 1)
    }

    fn peer_addr(&self) -> Ipv4Addr {
        let base = self.slot * 4;
        Ipv4Addr::new(10, 211, (base >> 8) as u8, (base & 0xff) as u8 + 2)
    }

    /// Kills every process in the namespace, deletes the veth pair and the namespace; never panics
    /// (it runs in drop).
    fn remove(&self) {
        let ns_path = Path::new("/run/netns").join(&self.name);
        if ns_path.exists() {
            let deadline = Instant::now() + DEADLINE;
            loop {
                let pids: Vec<i32> = quiet_ip(&["netns", "pids", &self.name])
                    .map(|out| {
                        String::from_utf8_lossy(&out)
                            .split_whitespace()
                            .filter_map(|p| p.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                if pids.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("lab: processes {pids:?} in {} survived SIGKILL for {DEADLINE:?}", self.name);
                    break;
                }
                for pid in pids {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(POLL);
            }
        }
        if Path::new("/sys/class/net").join(&self.host_veth).exists()
            && let Err(e) = quiet_ip(&["link", "del", &self.host_veth])
        {
            eprintln!("lab: {e}");
        }
        if ns_path.exists()
            && let Err(e) = quiet_ip(&["netns", "del", &self.name])
        {
            eprintln!("lab: {e}");
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Takes the first free namespace slot, free meaning no live process holds its lock file (a
/// process's locks go with it, however it dies).
fn acquire_slot() -> (u32, File) {
    fs::create_dir_all(SLOT_DIR).unwrap_or_else(|e| panic!("create {SLOT_DIR}: {e}"));
    for slot in 0..SLOTS {
        let path = format!("{SLOT_DIR}/{slot}.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        match file.try_lock() {
            Ok(()) => return (slot, file),
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => panic!("lock {path}: {e}"),
        }
    }
    panic!("all {SLOTS} network namespace slots of the ssh lab are taken");
}

/// Runs a command with a deadline, collecting its output (stdin is /dev/null); a command still
/// running at the deadline is killed and fails the test.
pub fn output_within(cmd: &mut Command, within: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{cmd:?} did not finish within {within:?}");
        }
    }
}

/// Generates a passphrase-less ed25519 key pair at `path` and `path.pub`; returns the public key
/// line (`ssh-ed25519 AAAA… odu-lab`).
pub fn keygen(path: &Path) -> String {
    run(Command::new(tool("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "odu-lab", "-f"])
        .arg(path));
    let public = PathBuf::from(format!("{}.pub", path.display()));
    fs::read_to_string(&public).unwrap_or_else(|e| panic!("read {}: {e}", public.display()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether this test can do what only root can (`what` names it); in CI it must.
pub fn require_root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = format!("{what} need root");
        assert!(!in_ci(), "{why}: CI must run the ssh lab tests as root");
        return Err(why);
    }
    Ok(())
}

/// Fails loudly when a tool the lab needs is missing: CI must install it (and so must a developer
/// running these tests).
fn require_tools(netns: bool) {
    let mut missing = vec![];
    for (name, package) in [("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")] {
        if find_tool(name).is_none() {
            missing.push(format!("{name} (package {package})"));
        }
    }
    if !is_executable(Path::new(SSHD)) {
        missing.push(format!("{SSHD} (package openssh-server)"));
    }
    if netns && find_tool("ip").is_none() {
        missing.push("ip (package iproute2)".into());
    }
    assert!(
        missing.is_empty(),
        "the ssh test lab needs {}: install them with `bash scripts/install-deps.sh`",
        missing.join(", ")
    );
}

/// A tool on PATH, or in the sbin directories a non-root PATH may lack.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn tool(name: &str) -> PathBuf {
    find_tool(name)
        .unwrap_or_else(|| panic!("{name} is missing: install it with `bash scripts/install-deps.sh`"))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// sshd's (major, minor) version, from `sshd -V`.
fn sshd_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let out = Command::new(SSHD).arg("-V").output().unwrap_or_else(|e| panic!("{SSHD} -V: {e}"));
        let text = String::from_utf8_lossy(&out.stderr);
        let parsed = text.split_once("OpenSSH_").and_then(|(_, rest)| {
            let (major, rest) = rest.split_once('.')?;
            let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((major.parse().ok()?, minor.parse().ok()?))
        });
        parsed.unwrap_or_else(|| panic!("cannot read the version of {SSHD} -V: {text}"))
    })
}

fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        String::from_utf8_lossy(&run(Command::new("id").arg("-un")).stdout).trim().to_string()
    })
    .clone()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("free port").port()
}

/// Whether an ssh server answers at `addr` with its identification string.
fn greets(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("SSH-2.0-")
}

/// SIGKILLs every process of the lab host whose tempdir is `marker`, until none is left.
fn kill_marked(marker: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let pids: Vec<i32> =
            lab_processes().into_iter().filter(|(_, m)| m == marker).map(|(pid, _)| pid).collect();
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("lab: processes {pids:?} survived SIGKILL for {DEADLINE:?}");
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(POLL);
    }
}

/// Kills the lab processes and removes the lab tempdirs of test processes that are gone (killed
/// before they could clean up).
fn kill_orphans() {
    let orphaned = |dir: &Path| {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(owner, _)| owner.parse::<u32>().ok())
            .is_some_and(|owner| !Path::new("/proc").join(owner.to_string()).exists())
    };
    let markers: std::collections::BTreeSet<String> =
        lab_processes().into_iter().map(|(_, marker)| marker).filter(|m| orphaned(Path::new(m))).collect();
    for marker in markers {
        kill_marked(&marker);
    }
    for entry in fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        if orphaned(&entry.path()) {
            // A tmpfs the dead test left mounted: unmount it rather than empty it and fail.
            for point in mounts_under(&entry.path()) {
                if let Err(e) = unmount(&point) {
                    eprintln!("lab: {e}");
                }
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Every live process of a lab host, with the host's tempdir: sshd processes by their stderr
/// (the tempdir's `sshd.log`), session processes by their environment. Zombies have neither, so
/// they are not listed.
fn lab_processes() -> Vec<(i32, String)> {
    let prefix = format!("{MARKER}=");
    let Ok(entries) = fs::read_dir("/proc") else { return vec![] };
    let by_stderr = |pid: i32| {
        let log = fs::read_link(format!("/proc/{pid}/fd/2")).ok()?;
        let dir = log.parent()?;
        let is_lab = ["sshd.log", "sshd.log (deleted)"].map(std::ffi::OsStr::new).contains(&log.file_name()?)
            && dir.file_name()?.to_str()?.starts_with(DIR_PREFIX);
        is_lab.then(|| dir.display().to_string())
    };
    let by_environment = |pid: i32| {
        let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
        let marker = environ.split(|&b| b == 0).find_map(|var| var.strip_prefix(prefix.as_bytes()))?;
        Some(String::from_utf8_lossy(marker).into_owned())
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, by_stderr(pid).or_else(|| by_environment(pid))?)))
        .collect()
}

/// `ip <args>`, failing the test when it fails.
fn ip(args: &[&str]) {
    run(Command::new(tool("ip")).args(args));
}

/// `ip <args>`: its stdout, or what went wrong; never panics.
fn quiet_ip(args: &[&str]) -> Result<Vec<u8>, String> {
    let Some(ip) = find_tool("ip") else { return Err("ip is missing".into()) };
    let out =
        Command::new(ip).args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("ip {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs a command to completion, failing the test when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Single-quotes a path for sh.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

// The lab's self-tests.

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn loopback_sshd_runs_a_command() {
    let sshd = Sshd::start();
    let out = sshd.run("echo hello");
    assert!(out.status.success(), "ssh failed ({}): {}\nsshd: {}", out.status, stderr(&out), sshd.log());
    assert_eq!(stdout(&out), "hello\n");
    let out = sshd.run("id -un");
    assert_eq!(stdout(&out).trim(), sshd.user());
}

#[test]
fn a_wrong_host_key_fails_verification() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().expect("tempdir");
    let wrong_key = keygen(&other.path().join("key"));
    write(&sshd.known_hosts(), &format!("{} {wrong_key}", sshd.known_hosts_name()));
    let out = sshd.run("echo hello");
    assert_eq!(out.status.code(), Some(255), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("Host key verification failed"), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn the_banner_comes_before_the_command_output() {
    let sshd =
        Sshd::with_options(SshdOptions { banner: Some("welcome to the lab\n".into()), ..Default::default() });
    let out = sshd.run("echo x");
    assert!(out.status.success(), "ssh failed ({}): {}\nsshd: {}", out.status, stderr(&out), sshd.log());
    assert_eq!(stdout(&out), "welcome to the lab\nx\n");
    // The remote command still runs in the user's shell, with its exit code passed through.
    let out = sshd.run("exit 7");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn killing_sshd_drops_sessions_and_refuses_connections_until_restarted() {
    let sshd = Sshd::start();
    let mut session = sshd
        .ssh()
        .arg(sshd.alias())
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh");
    let mut input = session.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let output = session.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let _ = lines_tx.send(line);
        }
    });
    let echo = |input: &mut std::process::ChildStdin, text: &str| {
        writeln!(input, "{text}").expect("write to the session");
        let line = lines.recv_timeout(DEADLINE).expect("the session's echo").expect("read the session");
        assert_eq!(line, text);
    };
    echo(&mut input, "before");

    // Without its listener, the host refuses connections, but the session lives on.
    sshd.kill_listener();
    let out =
        output_within(sshd.ssh().args(["-o", "ConnectTimeout=5"]).arg(sshd.alias()).arg("true"), DEADLINE);
    assert_eq!(out.status.code(), Some(255), "stderr: {}", stderr(&out));
    echo(&mut input, "after the listener died");

    sshd.restart();
    assert!(sshd.run("true").status.success(), "sshd: {}", sshd.log());

    // Killing sshd kills the session too: the client sees its connection drop.
    sshd.kill();
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = session.try_wait().expect("try_wait ssh") {
            break status;
        }
        assert!(Instant::now() < deadline, "the session outlived sshd by {DEADLINE:?}");
        std::thread::sleep(POLL);
    };
    assert_eq!(status.code(), Some(255));
    assert!(lab_processes().iter().all(|(_, m)| *m != sshd.marker), "sshd processes outlived kill");
}

#[test]
fn a_netns_host_is_unreachable_while_its_link_is_cut() {
    let Some(host) = NetnsHost::or_skip(SshdOptions::default()) else { return };
    let probe = || {
        output_within(host.ssh().args(["-o", "ConnectTimeout=2"]).arg(host.alias()).arg("echo up"), DEADLINE)
    };
    let out = probe();
    assert!(out.status.success(), "ssh failed ({}): {}\nsshd: {}", out.status, stderr(&out), host.log());
    assert_eq!(stdout(&out), "up\n");

    host.cut_link();
    let out = probe();
    assert_eq!(out.status.code(), Some(255), "ssh reached a cut host: {}", stdout(&out));

    host.restore_link();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = probe();
        if out.status.success() {
            assert_eq!(stdout(&out), "up\n");
            break;
        }
        assert!(Instant::now() < deadline, "host unreachable {DEADLINE:?} after restore: {}", stderr(&out));
        std::thread::sleep(POLL);
    }

    host.kill_sshd();
    let out = probe();
    assert_eq!(out.status.code(), Some(255), "ssh reached a host without sshd");
}

#[test]
fn netns_hosts_are_cleaned_up() {
    let Some(first) = NetnsHost::or_skip(SshdOptions::default()) else { return };
    let second = NetnsHost::new(SshdOptions { banner: Some("second\n".into()), ..Default::default() })
        .expect("second host");
    assert_ne!(first.addr(), second.addr());
    let out = second.run("echo x");
    assert_eq!(stdout(&out), "second\nx\n", "stderr: {}", stderr(&out));
    let (ns, veth, marker) =
        (first.namespace().to_string(), first.host_veth().to_string(), first.marker.clone());
    drop(first);
    assert!(!Path::new("/run/netns").join(&ns).exists(), "{ns} outlived its host");
    assert!(!Path::new("/sys/class/net").join(&veth).exists(), "{veth} outlived its host");
    assert!(lab_processes().iter().all(|(_, m)| *m != marker), "sshd processes outlived their host");
}

/// Whether `path` is a mount point in this process's mount namespace.
fn is_mounted(path: &Path) -> bool {
    path.canonicalize().is_ok_and(|path| mounts_under(&path).contains(&path))
}

#[test]
fn a_tmpfs_fills_resizes_and_is_unmounted_even_when_the_test_panics() {
    let Some(disk) = Tmpfs::or_skip(1 << 20) else { return };
    let (mountpoint, dir) = (disk.path().to_path_buf(), disk.dir.path().to_path_buf());
    assert!(is_mounted(&mountpoint));
    let filler = disk.fill();
    assert!(fs::metadata(&filler).unwrap().len() > 900 << 10, "a 1 MiB disk took less than 900 KiB");
    let err = fs::write(mountpoint.join("more"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    disk.resize(2 << 20);
    assert!(disk.available() > 900 << 10, "resizing to 2 MiB freed {} bytes", disk.available());
    let panicked = std::panic::catch_unwind(move || {
        let _disk = disk;
        panic!("the test fails while its disk is mounted");
    });
    assert!(panicked.is_err());
    assert!(!is_mounted(&mountpoint), "{} outlived its test", mountpoint.display());
    assert!(!dir.exists(), "{} outlived its test", dir.display());
}

#[test]
fn the_tmpfs_of_a_killed_test_is_unmounted_and_removed_by_the_next_one() {
    if require_root("tmpfs mounts").is_err() {
        return;
    }
    // What a test process killed with its tmpfs mounted leaves: a lab tempdir named after a
    // pid that is gone, with a tmpfs on it.
    let mut dead = Command::new("true").spawn().expect("true");
    dead.wait().expect("wait for true");
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-leftover", dead.id()));
    struct Tidy(PathBuf);
    impl Drop for Tidy {
        fn drop(&mut self) {
            mounts_under(&self.0).iter().for_each(|point| drop(unmount(point)));
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _tidy = Tidy(dir.clone());
    let mountpoint = dir.join("disk");
    fs::create_dir_all(&mountpoint).unwrap();
    mount_tmpfs(&mountpoint, 0, 1 << 20).unwrap();
    fs::write(mountpoint.join("file"), "left behind").unwrap();
    assert!(is_mounted(&mountpoint));

    let _next = Tmpfs::new(1 << 20).expect("root");
    assert!(!is_mounted(&mountpoint), "the killed test's tmpfs is still mounted");
    assert!(!dir.exists(), "the killed test's tempdir is still there");
}
