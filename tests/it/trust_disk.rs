//! A full disk under `.ci`: a log the disk cut short errors its node and says so, a run record
//! that cannot be written is reported and fails `odu run`, no temporary file stays behind, and
//! nothing later claims that a server died when none did.
//!
//! Each test mounts a small tmpfs (root only) over the checkout's `.ci` and drives the real
//! binary through `odu run`, the auto-started server, `odu runs`, `odu status` and a next
//! `odu serve`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::lab::Tmpfs;
use crate::repo::{self, Repo, local_platform, stderr, stdout};

/// `source` bind-mounted on `target`; lazily unmounted when dropped (also on a panic).
struct Bind(PathBuf);

impl Bind {
    fn new(source: &Path, target: &Path) -> Bind {
        let (src, dst) = (c_path(source), c_path(target));
        // SAFETY: NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
        };
        assert_eq!(
            rc,
            0,
            "bind {} on {}: {}",
            source.display(),
            target.display(),
            std::io::Error::last_os_error()
        );
        Bind(target.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let path = c_path(&self.0);
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in a test path")
}

/// A checkout whose `.ci` (a 0700 mount point) is a tmpfs of `size` bytes. Dropping it stops
/// the checkout's server, then unmounts `.ci`, then removes the checkout and the disk.
struct SmallDisk {
    _bind: Bind,
    repo: Repo,
    disk: Tmpfs,
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        repo::stop_server(&self.repo);
    }
}

impl SmallDisk {
    fn new(size: u64, justfile: &str) -> Option<SmallDisk> {
        let disk = Tmpfs::or_skip(size)?;
        let repo = Repo::new(justfile);
        let ci = repo.path().join(".ci");
        std::fs::DirBuilder::new().mode(0o700).create(&ci).unwrap();
        let bind = Bind::new(disk.path(), &ci);
        // A tmpfs's root is 1777 like /tmp, and odu refuses a `.ci` others can write.
        std::fs::set_permissions(&ci, std::fs::Permissions::from_mode(0o700)).unwrap();
        Some(SmallDisk { _bind: bind, repo, disk })
    }

    fn ci(&self) -> PathBuf {
        self.repo.path().join(".ci")
    }

    /// Every file under `.ci` whose name marks a temporary copy.
    fn temporaries(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&path, found);
                } else if entry.file_name().to_string_lossy().contains(".tmp") {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.ci(), &mut found);
        found
    }

    /// The outcome `odu runs -o json` gives the latest run.
    fn runs_outcome(&self) -> String {
        let out = self.repo.run(&["runs", "-o", "json"]);
        assert!(out.status.success(), "odu runs: {}", stderr(&out));
        let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        runs[0]["outcome"].as_str().unwrap_or_else(|| panic!("no outcome in {runs:?}")).to_string()
    }

    /// The outcome `odu status -o json` gives the latest run.
    fn status_outcome(&self) -> String {
        let out = self.repo.run(&["status", "-o", "json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("odu status -o json: {e}: {}{}", stdout(&out), stderr(&out)));
        status["outcome"].as_str().unwrap_or_else(|| panic!("no outcome in {status}")).to_string()
    }

    /// Stops the server, then checks that nothing says a server died: its log, `odu runs`
    /// (which closes the records of dead servers), the record itself, and a next server.
    fn assert_no_crash_claimed(&self) {
        repo::stop_server(&self.repo);
        let claims = |text: &str| text.contains("died") || text.contains("cut short");
        let serve_log = std::fs::read_to_string(self.ci().join("odu.serve.log")).unwrap_or_default();
        assert!(!claims(&serve_log), "odu.serve.log claims a crash:\n{serve_log}");
        let runs = self.repo.run(&["runs"]);
        assert!(!claims(&stdout(&runs)) && !claims(&stderr(&runs)), "odu runs: {}", stdout(&runs));
        assert_ne!(self.runs_outcome(), "incomplete", "the run reads as cut short");
        let next = self.repo.run(&["serve", "--idle-timeout", "1s"]);
        assert!(!claims(&stderr(&next)), "the next server claims a crash:\n{}", stderr(&next));
        for record in std::fs::read_dir(self.ci().join(self.repo.sha7()).join("runs")).unwrap().flatten() {
            let text = std::fs::read_to_string(record.path()).unwrap_or_default();
            assert!(!claims(&text), "{} claims a crash:\n{text}", record.path().display());
        }
    }
}

/// A node printing 1 MB on a 256 KiB disk: its log is cut, so it is errored (never ok), its
/// log ends with the reason, `odu run` names it and fails, and the run's record (which cannot
/// be replaced through a temporary copy on the full disk) still ends up final and agreed on.
#[test]
fn a_log_the_disk_cut_short_errors_its_node_and_the_run_says_so() {
    let Some(small) = SmallDisk::new(
        256 * 1024,
        "[metadata(\"ci\")]\nbig:\n    @yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c 1000000\n",
    ) else {
        return;
    };
    let out = small.repo.run(&["run", "--progress", "json", "--idle-timeout", "10m"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a cut log must fail the run:\n{err}");
    let statuses = repo::final_statuses(&repo::progress(&out));
    let big = format!("big@{}", local_platform());
    assert_eq!(statuses.get(&big).map(String::as_str), Some("errored"), "{statuses:?}\n{err}");
    assert!(
        err.lines().any(|l| l.contains(&big) && l.contains("truncated") && l.contains("No space left")),
        "odu run must name the node and the reason:\n{err}"
    );
    let log = small.repo.log("big");
    assert!(log.len() < 1_000_000, "the disk took the whole log?");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("[odu] log truncated: ") && last.contains("No space left"),
        "the log must end with the reason, not: {last:?}"
    );
    assert_eq!(small.runs_outcome(), "failed");
    assert_eq!(small.status_outcome(), "failed", "odu runs and odu status disagree");
    assert_eq!(small.temporaries(), Vec::<PathBuf>::new(), "temporary files left under .ci");
    small.assert_no_crash_claimed();
}

/// The disk fills between the last node and the run's record (the node fills it as its last
/// act, printing nothing): the record is still made final (in place of the old one, which needs
/// no new room), `odu runs` and `odu status` agree, no temporary file stays, nothing claims a
/// crash.
#[test]
fn a_disk_that_fills_before_the_record_is_written_still_gets_a_final_record() {
    let Some(small) = SmallDisk::new(
        256 * 1024,
        "[metadata(\"ci\")]\nfill:\n    @head -c 10000000 /dev/zero > \"$ODU_TEST_FILL\" 2>/dev/null || true\n",
    ) else {
        return;
    };
    let out =
        small.repo.odu(&["run"]).env("ODU_TEST_FILL", small.disk.path().join("filler")).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "the node passed and its log is whole:\n{err}");
    assert_eq!(small.runs_outcome(), "passed");
    assert_eq!(small.status_outcome(), "passed", "odu runs and odu status disagree");
    assert_eq!(small.temporaries(), Vec::<PathBuf>::new(), "temporary files left under .ci");
    small.assert_no_crash_claimed();
}

/// A run whose record cannot be written at all (the node empties it, so there is no old copy
/// to overwrite, and fills the disk): `odu run` says the record could not be written and fails,
/// however green its nodes were; no temporary file stays. The node first waits for the record
/// to show it running: no other write of the record comes before the run ends.
#[test]
fn a_run_whose_record_cannot_be_written_says_so_and_fails() {
    let recipe = concat!(
        "[metadata(\"ci\")]\nfill:\n",
        "    @rec=\"$ODU_TEST_CI/${ODU_RUN%#*}/runs/${ODU_RUN#*#}.json\"; ",
        "n=0; until grep -q '\"status\": \"running\"' \"$rec\" || [ $n -ge 2000 ]; ",
        "do n=$((n+1)); sleep 0.01; done; : > \"$rec\"\n",
        "    @head -c 10000000 /dev/zero > \"$ODU_TEST_CI/filler\" 2>/dev/null || true\n",
    );
    let Some(small) = SmallDisk::new(256 * 1024, recipe) else { return };
    let out = small.repo.odu(&["run"]).env("ODU_TEST_CI", small.disk.path()).output().unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "an unwritten record must fail odu run:\n{err}");
    let record = format!(".ci/{}/runs/1.json", small.repo.sha7());
    assert!(
        err.lines().any(|l| l.contains("record") && l.contains(&record) && l.contains("No space left")),
        "odu run must say the record could not be written:\n{err}"
    );
    assert_eq!(small.temporaries(), Vec::<PathBuf>::new(), "temporary files left under .ci");
}
