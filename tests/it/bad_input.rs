//! Every bad input ends with exit 1 and one `odu:` line that says what to do, with nothing
//! half-written.

use crate::repo::*;

const OK: &str = "[metadata(\"ci\")]\nci: a\na:\n    true\n";

fn refused(out: std::process::Output, needle: &str) {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1 for {needle:?}; stderr: {err}");
    let line = err.lines().find(|l| l.starts_with("odu: ") && l.contains(needle));
    assert!(line.is_some(), "no `odu:` line containing {needle:?} in: {err}");
}

fn no_run_recorded(repo: &Repo) {
    assert!(repo.ledger().is_empty(), "a refused run left a record");
}

#[test]
fn not_a_git_checkout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("justfile"), OK).unwrap();
    let out = std::process::Command::new(odu_bin())
        .arg("run")
        .current_dir(dir.path())
        .env_remove("ODU_RUN")
        .env_remove("ODU_HOSTS")
        .output()
        .unwrap();
    refused(out, "not inside a git checkout");
}

#[test]
fn no_justfile() {
    let repo = Repo::with_files(&[("README", "x")]);
    refused(repo.run(&["run"]), "no justfile");
    no_run_recorded(&repo);
}

#[test]
fn just_missing_or_too_old() {
    let repo = Repo::new(OK);
    let bare = path_with(&["git", "sh", "bash"], &[]);
    let out = repo.odu(&["run"]).env("PATH", &bare).output().unwrap();
    refused(out, "just is not on PATH");
    let old = path_with(&["git", "sh", "bash"], &[("just", "#!/bin/sh\necho 'just 1.50.0'\n")]);
    let out = repo.odu(&["run"]).env("PATH", &old).output().unwrap();
    refused(out, "just 1.50.0 is too old");
}

#[test]
fn a_git_too_old_for_the_status_check_is_named() {
    let repo = Repo::new(OK);
    // A git before 2.17 has no --no-ahead-behind: its status stops at the option.
    let real = crate::repo::real_tool("git");
    let old = format!(
        "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --no-ahead-behind ] && {{ echo \"error: unknown option \\`no-ahead-behind'\" >&2; exit 129; }}; done\nexec {} \"$@\"\n",
        real.display()
    );
    let path = path_with(&["just", "sh", "bash"], &[("git", &old)]);
    // A clean plain checkout's state is read without git: an untracked file makes it git's.
    repo.write("untracked.txt", "x");
    let out = repo.odu(&["run"]).env("PATH", &path).output().unwrap();
    refused(out, "odu needs git >= 2.17");
}

#[test]
fn a_justfile_just_rejects_shows_justs_message() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    echo {{nope}}\n");
    refused(repo.run(&["run"]), "just rejected the justfile");
    let out = repo.run(&["run"]);
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}

#[test]
fn zero_or_several_ci_roots_name_the_candidates() {
    refused(
        Repo::new("a:\n    true\n").run(&["run"]),
        "expected exactly one [metadata(\"ci\")] recipe, found 0",
    );
    let repo = Repo::new("[metadata(\"ci\")]\nx: a\n[metadata(\"ci\")]\ny: a\na:\n    true\n");
    let out = repo.run(&["run"]);
    refused(out, "found 2 (x, y)");
}

#[test]
fn unknown_root() {
    refused(Repo::new(OK).run(&["run", "--root", "nosuch"]), "no recipe named \"nosuch\"");
}

#[test]
fn unknown_or_ambiguous_selectors_list_candidates() {
    let repo = Repo::with_files(&[
        ("justfile", "mod ci\nmod other\n"),
        ("ci/mod.just", "[metadata(\"ci\")]\nall: x other\nx:\n    true\nother:\n    true\n"),
        ("other/mod.just", "x:\n    true\n"),
    ]);
    refused(repo.run(&["run", "nosuch"]), "matches no pipeline recipe");
    let repo = Repo::with_files(&[
        ("justfile", "mod a\nmod b\n[metadata(\"ci\")]\nall: a::x b::x\n"),
        ("a/mod.just", "x:\n    true\n"),
        ("b/mod.just", "x:\n    true\n"),
    ]);
    refused(repo.run(&["run", "x"]), "is ambiguous");
}

#[test]
fn host_without_equals() {
    refused(Repo::new(OK).run(&["run", "--host", "x86_64-linux"]), "--host expects PLATFORM=ADDR");
}

#[test]
fn selector_platform_outside_the_fanout() {
    refused(Repo::new(OK).run(&["run", "a@riscv64-linux"]), "is not in the fan-out");
    refused(
        Repo::new(OK).run(&["run", "--platform", "riscv64-linux"]),
        "--platform riscv64-linux has no host",
    );
}

#[test]
fn non_literal_dependency_argument() {
    let repo = Repo::new("v := \"q\"\n[metadata(\"ci\")]\nci: (a v)\na p:\n    echo {{p}}\n");
    refused(repo.run(&["run"]), "non-literal argument");
}

#[test]
fn hosts_config_that_is_not_json_or_names_no_platform() {
    let repo = Repo::new(OK);
    let hosts = repo.home.path().join("hosts.json");
    std::fs::write(&hosts, "{not json").unwrap();
    let out = repo.odu(&["run"]).env("ODU_HOSTS", &hosts).output().unwrap();
    refused(out, "is not valid JSON");
    std::fs::write(&hosts, "{\"linux\": \"localhost\"}").unwrap();
    let out = repo.odu(&["run"]).env("ODU_HOSTS", &hosts).output().unwrap();
    refused(out, "is not a platform");
}

#[test]
fn usage_errors_exit_two() {
    let out = Repo::new(OK).run(&["run", "--progress", "yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = Repo::new(OK).run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
