//! odu's scratch directories and its runners' deaths, tried as an attacker would: another
//! local user planting the paths odu used to pick, and a runner killed outright mid-run.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::repo::*;
use crate::stranger::{Stranger, shared_tmp};

fn in_tmp(mut cmd: std::process::Command, tmp: &Path) -> std::process::Command {
    cmd.env("TMPDIR", tmp);
    cmd
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn as_stranger(stranger: &Stranger, script: &str, args: &[&str]) {
    let out = stranger.command("sh").arg("-c").arg(script).arg("sh").args(args).output().unwrap();
    assert!(out.status.success(), "the stranger's script failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn assert_untouched(dir: &Path, stranger: &Stranger, files: &[&str]) {
    let meta = std::fs::symlink_metadata(dir).unwrap_or_else(|e| panic!("{} is gone: {e}", dir.display()));
    assert_eq!(meta.uid(), stranger.uid, "{} changed hands", dir.display());
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(names, files, "odu wrote into the planted {}", dir.display());
}

#[test]
fn the_snapshot_worktree_is_never_a_directory_another_user_planted() {
    let Some(stranger) = Stranger::or_skip() else { return };
    let tmp = shared_tmp();
    let repo = Repo::new(
        "[metadata(\"ci\")]\nci:\n    @echo \"ours ran in $(pwd -P)\"; stat -c 'parent %u %a' \"$(dirname \"$(pwd -P)\")\"\n",
    );
    let sha7 = repo.sha7();
    let serve = Running::spawn(in_tmp(repo.odu(&["serve"]), tmp.path()));
    wait_for_socket(repo.path());
    let server = server_pid(repo.path()).expect("the server's pid");
    // Every name the server could pick for its first snapshot, planted first, each holding a
    // recipe that would run as us.
    let pwned = tmp.path().join("pwned");
    let hostile = format!("[metadata(\"ci\")]\nci:\n    touch {}; echo hostile ran\n", pwned.display());
    let prefix = tmp.path().join(format!("odu-{sha7}-{server}-"));
    as_stranger(
        &stranger,
        r#"for i in $(seq 0 999); do mkdir -m 777 "$1$i" && printf '%s' "$2" > "$1$i/justfile" || exit 1; done"#,
        &[prefix.to_str().unwrap(), &hostile],
    );
    let out = in_tmp(repo.odu(&["run"]), tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let log = repo.log("ci");
    assert!(log.contains("ours ran in "), "our recipe did not run: {log}");
    assert!(!log.contains("hostile"), "{log}");
    assert!(!pwned.exists(), "the planted recipe ran as us");
    // The worktree sat in a directory only we could write, not in anything planted.
    let worktree = log.lines().find_map(|l| l.strip_prefix("ours ran in ")).unwrap().to_string();
    assert!(Path::new(&worktree).starts_with(tmp.path()), "{worktree}");
    assert!(!worktree.starts_with(prefix.to_str().unwrap()), "odu adopted a planted path: {worktree}");
    assert!(
        log.contains(&format!("parent {} 700", euid())),
        "the worktree's directory was not private: {log}"
    );
    assert!(!Path::new(&worktree).exists(), "the snapshot was not removed after the run");
    for i in 0..1000 {
        assert_untouched(Path::new(&format!("{}{i}", prefix.display())), &stranger, &["justfile"]);
    }
    serve.signal(libc::SIGTERM);
    let (code, err) = serve.finish();
    assert_eq!(code, Some(0), "{err}");
}
