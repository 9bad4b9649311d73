//! How odu reaches people and hosts: `--version`, shell completions and the man page, the
//! statically linked runner, the flake, and `cargo install`.

use std::path::Path;
use std::process::Command;

use crate::repo::odu_bin;

fn runner_bin() -> &'static str {
    env!("CARGO_BIN_EXE_odu-runner")
}

fn stdout_of(command: &mut Command) -> String {
    let out = command.output().expect("run the command");
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The commit this source tree is at, when it is the top of a git checkout.
fn source_commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    (Path::new(&top).canonicalize().ok()? == Path::new(dir).canonicalize().ok()?)
        .then(|| git(&["rev-parse", "HEAD"]))?
}

#[test]
fn both_binaries_say_their_version_commit_and_protocol() {
    let protocol = odu_proto::PROTOCOL_VERSION;
    let version = env!("CARGO_PKG_VERSION");
    let expected = match source_commit() {
        Some(rev) => format!("{version} (commit {rev}, protocol {protocol})"),
        None => format!("{version} (protocol {protocol})"),
    };
    let odu = stdout_of(Command::new(odu_bin()).arg("--version"));
    assert_eq!(odu.trim(), format!("odu {expected}"));
    let runner = stdout_of(Command::new(runner_bin()).arg("--version"));
    assert_eq!(runner.trim(), format!("odu-runner {expected}"));
    assert_eq!(odu::version::protocol_of(&runner), Some(protocol));
}
