//! A justfile's variables are evaluated once per lane and every node gets the same values, as
//! one `just` invocation gives every recipe it runs.

use std::time::{Duration, Instant};

use crate::repo::*;

/// Two recipes printing one backtick, a shared `mktemp -d`, `uuid()`, an exported variable
/// built from the backtick, and a module with a backtick and a private variable of its own.
const SHARED: &str = r#"
mod pkg

stamp := `date +%s%N`
id := uuid()
_tmp := `mktemp -d`
export DERIVED := "from-" + stamp

[metadata("ci")]
ci: first second pkg::show pkg::again

first:
    @echo "stamp={{stamp}} id={{id}} derived=$DERIVED"
    @echo handed-over > {{_tmp}}/baton

second: first
    @echo "stamp={{stamp}} id={{id}} derived=$DERIVED"
    @echo "baton=$(cat {{_tmp}}/baton)"
"#;

const PKG: &str = r#"
when := `date +%s%N`
_hidden := "hidden-" + when

show:
    @echo "when={{when}} hidden={{_hidden}}"

again:
    @echo "when={{when}} hidden={{_hidden}}"
"#;

fn line<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines().find(|l| l.contains(key)).unwrap_or_else(|| panic!("no {key} in {log}"))
}

#[test]
fn two_recipes_printing_one_backtick_print_one_value() {
    let repo = Repo::with_files(&[("justfile", SHARED), ("pkg/mod.just", PKG)]);
    let out = repo.run(&["run"]);
    let setup = repo.log("_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    let first = repo.log("first");
    let second = repo.log("second");
    let stamp = line(&first, "stamp=");
    assert_eq!(stamp, line(&second, "stamp="), "one value for every node, as `just ci` gives");
    assert!(stamp.contains("derived=from-"), "an exported variable follows the value: {stamp}");
    assert!(second.contains("baton=handed-over"), "the mktemp -d directory is shared: {second}");
    let show = repo.log("pkg::show");
    let when = line(&show, "when=");
    assert_eq!(when, line(&repo.log("pkg::again"), "when="), "a module's variables too");
    assert!(when.contains("hidden-"), "{when}");
    assert!(
        setup.contains("variables evaluated once for this lane")
            && setup.contains("_tmp")
            && setup.contains("pkg::_hidden"),
        "{setup}"
    );
    // The next run gets new values: once per run, not once forever.
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(line(&repo.log("first"), "stamp="), stamp);
    stop_server(&repo);
}

#[test]
fn a_slow_backtick_is_paid_once_per_lane_not_once_per_node() {
    // A chain of ten nodes: evaluated per node, the backtick alone would take 10 × 0.5 s.
    let mut justfile = String::from(
        "slow := `sleep 0.5; echo slow`\n\n[metadata(\"ci\")]\nci: n9\n\nn0:\n    @echo {{slow}}\n",
    );
    for i in 1..10 {
        justfile.push_str(&format!("\nn{i}: n{}\n    @echo {{{{slow}}}}\n", i - 1));
    }
    let repo = Repo::new(&justfile);
    // The server is started first, so the figure is the run's alone.
    let out = repo.run(&["status"]);
    assert!(out.status.success() || out.status.code() == Some(1), "{}", stderr(&out));
    let started = Instant::now();
    let out = repo.run(&["run"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), repo.log("_ci-setup"));
    eprintln!("a 10-node chain with a 0.5 s backtick took {took:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?}: the backtick ran per node");
    assert!(repo.log("n9").contains("slow"));
    stop_server(&repo);
}

#[test]
fn a_lazy_justfile_leaves_its_variables_to_each_node_and_says_so() {
    // Under `set lazy`, `just ci` never evaluates `broken`: odu must not either.
    let justfile =
        "set lazy\nbroken := `exit 3`\nok := \"fine\"\n\n[metadata(\"ci\")]\nci:\n    @echo {{ok}}\n";
    let repo = Repo::new(justfile);
    let out = repo.run(&["run"]);
    let setup = repo.log("_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    assert!(repo.log("ci").contains("fine"));
    assert!(setup.contains("variables are evaluated by each node") && setup.contains("set lazy"), "{setup}");
    stop_server(&repo);
}

#[test]
fn a_variable_that_fails_to_evaluate_fails_the_node_as_just_would() {
    // Not lazy: `just ci` fails on the backtick, and so does the node; setup itself goes on.
    let justfile = "broken := `echo nope >&2; exit 3`\n\n[metadata(\"ci\")]\nci:\n    @echo {{broken}}\n";
    let repo = Repo::new(justfile);
    let out = repo.run(&["run"]);
    let setup = repo.log("_ci-setup");
    assert_eq!(out.status.code(), Some(1), "{}\n{setup}", stderr(&out));
    assert!(setup.contains("variables are evaluated by each node"), "{setup}");
    assert!(repo.log("ci").contains("nope"), "{}", repo.log("ci"));
    stop_server(&repo);
}

/// A lab host whose sessions see this PATH (where the tests' `just` is).
fn lab_host() -> Option<crate::lab::NetnsHost> {
    let options = crate::lab::SshdOptions {
        env: vec![("PATH".into(), std::env::var("PATH").unwrap())],
        ..Default::default()
    };
    crate::lab::NetnsHost::or_skip(options)
}

/// `odu ARGS` with the lab host as the one lane, from `dir`.
fn remote_odu(
    repo: &Repo,
    host: &crate::lab::NetnsHost,
    dir: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let hosts = repo.home.path().join("hosts.json");
    std::fs::write(&hosts, serde_json::json!({ local_platform(): host.alias() }).to_string()).unwrap();
    repo.odu(args)
        .current_dir(dir)
        .env("ODU_HOSTS", &hosts)
        .env("ODU_SSH_CONFIG", host.config())
        .output()
        .unwrap()
}

#[test]
fn a_remote_lane_evaluates_its_variables_once_on_its_own_host() {
    let Some(host) = lab_host() else { return };
    // `where` runs on the host: the lab's sshd marks its sessions with ODU_LAB_SSHD.
    let mut justfile = String::from(
        "where := `echo \"host=${ODU_LAB_SSHD:-none}\"; sleep 0.5`\nstamp := `date +%s%N`\n\n[metadata(\"ci\")]\nci: n4\n\nn0:\n    @echo {{where}} {{stamp}}\n",
    );
    for i in 1..5 {
        justfile.push_str(&format!("\nn{i}: n{}\n    @echo {{{{where}}}} {{{{stamp}}}}\n", i - 1));
    }
    let repo = Repo::new(&justfile);
    let p = local_platform();
    let hosts = repo.home.path().join("hosts.json");
    std::fs::write(&hosts, serde_json::json!({ p.clone(): host.alias() }).to_string()).unwrap();
    let run =
        || repo.odu(&["run"]).env("ODU_HOSTS", &hosts).env("ODU_SSH_CONFIG", host.config()).output().unwrap();
    // The first run uploads the runner and ships the commit; the second is the one timed.
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), repo.log("_ci-setup"));
    let started = Instant::now();
    let out = run();
    let took = started.elapsed();
    let setup = repo.log("_ci-setup");
    assert_eq!(out.status.code(), Some(0), "{}\n{setup}", stderr(&out));
    eprintln!("a 5-node remote chain with a 0.5 s backtick took {took:?}");
    let first = repo.log("n0");
    assert!(!first.contains("host=none"), "the backtick ran on the coordinator: {first}");
    for i in 1..5 {
        assert_eq!(repo.log(&format!("n{i}")), first, "node n{i} got other values");
    }
    assert!(setup.contains("variables evaluated once for this lane"), "{setup}");
    assert!(took < Duration::from_millis(2500), "took {took:?}: the backtick ran per node");
    stop_server(&repo);
}

/// A monorepo package: the justfile is in `pkg/`, none at the top.
const PACKAGE: &str = "[metadata(\"ci\")]\nci: build\n\nbuild:\n    @echo \"built in $(basename \"$PWD\") invoked from {{file_name(invocation_directory())}}\"\n    @test -f marker && echo marker-found\n";

fn package_repo() -> Repo {
    Repo::with_files(&[("pkg/justfile", PACKAGE), ("pkg/marker", "x\n"), ("README", "top\n")])
}

#[test]
fn a_justfile_in_a_subdirectory_runs_from_that_subdirectory_of_the_snapshot() {
    let repo = package_repo();
    let pkg = repo.path().join("pkg");
    // `odu dump` already read it from there; `odu run` must run it from there too.
    let out = repo.odu(&["run"]).current_dir(&pkg).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // `.ci/` is the checkout's, at its top, whichever directory the run started in.
    assert!(!pkg.join(".ci").exists(), "no second .ci inside the package");
    let log = repo.log("build");
    assert!(log.contains("built in pkg invoked from pkg") && log.contains("marker-found"), "{log}");
    // Every other command finds the run from the package directory as well.
    let status = repo.odu(&["status"]).current_dir(&pkg).output().unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let logs = repo.odu(&["logs", "build"]).current_dir(&pkg).output().unwrap();
    assert!(stdout(&logs).contains("marker-found"), "{}", stderr(&logs));
    // A rerun of the finished run starts in the same directory.
    let rerun = repo.odu(&["rerun", "build"]).current_dir(repo.path()).output().unwrap();
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    crate::harness::until("the rerun to finish", crate::harness::DEADLINE, || {
        let runs = repo.ledger();
        runs.len() == 2 && runs.iter().all(|r| r["outcome"] != "running")
    });
    let runs = repo.ledger();
    assert!(runs.iter().all(|r| r["outcome"] == "passed"), "{runs:?}");
    assert!(repo.log("build").contains("built in pkg"), "{}", repo.log("build"));
    // From the top, where there is no justfile, the refusal says so.
    let top = repo.run(&["run"]);
    assert_eq!(top.status.code(), Some(1));
    assert!(stderr(&top).contains("no justfile"), "{}", stderr(&top));
    stop_server(&repo);
}

#[test]
fn a_justfile_in_a_subdirectory_runs_from_that_subdirectory_on_a_remote_lane() {
    let Some(host) = lab_host() else { return };
    let repo = package_repo();
    let out = remote_odu(&repo, &host, &repo.path().join("pkg"), &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), repo.log("_ci-setup"));
    let log = repo.log("build");
    assert!(log.contains("built in pkg invoked from pkg") && log.contains("marker-found"), "{log}");
    stop_server(&repo);
}

#[test]
fn a_strict_run_says_once_before_it_starts_that_the_snapshot_lacks_the_ignored_dotenv() {
    let justfile = "set dotenv-load\n\n[metadata(\"ci\")]\nci:\n    @echo \"greeting=${GREETING:-unset}\"\n";
    let repo = Repo::with_files(&[("justfile", justfile), (".gitignore", ".ci/\n.env\n")]);
    repo.write(".env", "GREETING=hello\n");
    let out = repo.run(&["run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("the snapshot lacks .env").count(), 1, "said once, before the run: {err}");
    let said = err.find("the snapshot lacks .env").unwrap();
    assert!(said < err.find("odu · ci").unwrap(), "said before the run starts: {err}");
    assert!(err.contains("commit a template") && err.contains("--no-strict"), "{err}");
    let setup = repo.log("_ci-setup");
    assert_eq!(setup.matches("the snapshot lacks .env").count(), 1, "{setup}");
    assert!(repo.log("ci").contains("greeting=unset"), "strict runs keep testing what is committed");
    // Again on the same server, whose dump of this justfile is remembered: the dump names this
    // run's snapshot, and the same is said.
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("the snapshot lacks .env").count(), 1, "{}", stderr(&out));
    // The live tree has it: nothing to say.
    let out = repo.run(&["run", "--no-strict"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("lacks"), "{}", stderr(&out));
    stop_server(&repo);
}

#[test]
fn a_committed_dotenv_template_or_a_dotenv_path_is_looked_for_where_just_looks() {
    // The template is committed: the snapshot has what the checkout has.
    let justfile = "set dotenv-filename := \".env.ci\"\n\n[metadata(\"ci\")]\nci:\n    @echo \"greeting=${GREETING:-unset}\"\n";
    let repo = Repo::with_files(&[("justfile", justfile), (".env.ci", "GREETING=template\n")]);
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("lacks"), "{}", stderr(&out));
    assert!(repo.log("ci").contains("greeting=template"));
    stop_server(&repo);
    // A package's dotenv-path, ignored: named by its path in the checkout.
    let justfile = "set dotenv-path := \"config/local.env\"\n\n[metadata(\"ci\")]\nci:\n    @echo \"greeting=${GREETING:-unset}\"\n";
    let repo = Repo::with_files(&[("pkg/justfile", justfile), (".gitignore", ".ci/\nlocal.env\n")]);
    repo.write("pkg/config/local.env", "GREETING=local\n");
    let out = repo.odu(&["run"]).current_dir(repo.path().join("pkg")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("the snapshot lacks pkg/config/local.env"), "{}", stderr(&out));
    stop_server(&repo);
}

#[test]
fn cancelling_a_run_ends_a_backtick_still_being_evaluated() {
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("backtick.pid");
    let justfile = format!(
        "slow := `echo $$ > {}; sleep 300; echo late`\n\n[metadata(\"ci\")]\nci:\n    @echo {{{{slow}}}}\n",
        pid_file.display()
    );
    let repo = Repo::new(&justfile);
    let run = Running::spawn(repo.odu(&["run"]));
    let pid = crate::harness::wait_for_pid(&pid_file);
    let out = repo.run(&["cancel"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    crate::harness::until("the backtick to be ended", crate::harness::DEADLINE, || crate::harness::gone(pid));
    let (code, err) = run.finish();
    assert_ne!(code, Some(0), "{err}");
    stop_server(&repo);
}

#[test]
fn a_run_from_an_untracked_directory_starts_where_just_finds_the_same_justfile() {
    let justfile = "[metadata(\"ci\")]\nci:\n    @echo \"from {{file_name(invocation_directory())}}\"\n";
    let repo = Repo::with_files(&[("justfile", justfile), (".gitignore", ".ci/\ntarget/\nscratch/\n")]);
    // An ignored build directory: the snapshot lacks it, and just finds the top's justfile.
    std::fs::create_dir_all(repo.path().join("target/debug")).unwrap();
    let out = repo.odu(&["run"]).current_dir(repo.path().join("target/debug")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("target/debug is not in the run's worktree")
            && stderr(&out).contains("the top of the checkout"),
        "{}",
        stderr(&out)
    );
    // An ignored directory with a justfile of its own: starting above it would run another one.
    repo.write("scratch/justfile", "[metadata(\"ci\")]\nci:\n    @echo scratch\n");
    let out = repo.odu(&["run"]).current_dir(repo.path().join("scratch")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no scratch/justfile") && stderr(&out).contains("--no-strict"),
        "{}",
        stderr(&out)
    );
    // The live tree has it.
    let out = repo.odu(&["run", "--no-strict"]).current_dir(repo.path().join("scratch")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stop_server(&repo);
}

/// A `just` on PATH that writes each invocation's arguments to `calls` and runs the real one.
fn counting_just(calls: &std::path::Path) -> std::path::PathBuf {
    let real = real_tool("just");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        calls.display(),
        real.display()
    );
    let dir = path_with(&[], &[("just", &script)]);
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    path.into()
}

#[test]
fn a_localhost_lane_asks_just_nothing_the_server_already_asked_on_this_host() {
    let repo = Repo::new("[metadata(\"ci\")]\nci: a\na:\n    @echo a\n");
    let calls = repo.path().join(".git/just-calls");
    let path = counting_just(&calls);
    let count = |what: &str| {
        std::fs::read_to_string(&calls).unwrap_or_default().lines().filter(|l| l.contains(what)).count()
    };
    let out = repo.odu(&["run"]).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), repo.log("_ci-setup"));
    // The client's check asks once and hands the answers to the server it starts, whose plan
    // asks nothing again; the runner trusts the server's answer about the very same file, and
    // its nodes run.
    assert_eq!(count("--version"), 1, "{}", std::fs::read_to_string(&calls).unwrap());
    assert_eq!(count("--dump-format json"), 1, "{}", std::fs::read_to_string(&calls).unwrap());
    assert_eq!(count("--no-deps"), 1);
    assert!(repo.log("_ci-setup").contains("[odu] just 1."), "{}", repo.log("_ci-setup"));
    stop_server(&repo);
    // A justfile with a variable is still evaluated by the lane, once.
    std::fs::write(
        repo.path().join("justfile"),
        "x := `echo 1`\n[metadata(\"ci\")]\nci: a\na:\n    @echo {{x}}\n",
    )
    .unwrap();
    repo.git(&["commit", "-qam", "a variable"]);
    std::fs::remove_file(&calls).unwrap();
    let out = repo.odu(&["run"]).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), repo.log("_ci-setup"));
    // The client's dump (handed to the server) and the lane's evaluation.
    assert_eq!(count("--dump-format json"), 2, "{}", std::fs::read_to_string(&calls).unwrap());
    assert!(repo.log("a").contains('1'));
    stop_server(&repo);
}
