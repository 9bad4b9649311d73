//! GitHub commit statuses, end to end: the real odu posts to the fake GitHub of
//! `fake_github.rs` (through `ODU_GITHUB_API`), and each test asserts what GitHub ends up
//! showing, in order.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::fake_github::{Fake, TOKEN, early_requests};
use crate::harness::{DEADLINE, until};
use crate::repo::{Repo, Running, local_platform, server_pid, stderr, stop_server};

/// A repo whose origin is on GitHub, and recipes that wait for their gate file to appear.
struct Setup {
    repo: Repo,
    fake: Fake,
    gates: tempfile::TempDir,
    p: String,
}

fn gated(gates: &Path, name: &str) -> String {
    format!("{name}:\n    @until [ -e {}/{name} ]; do sleep 0.02; done\n", gates.display())
}

impl Setup {
    /// `recipes` is the justfile's body after the gates directory is known: `{gates}` in it
    /// is replaced.
    fn new(justfile: impl FnOnce(&Path) -> String) -> Setup {
        let gates = tempfile::tempdir().unwrap();
        let repo = Repo::new(&justfile(gates.path()));
        repo.git(&["remote", "add", "origin", "https://github.com/acme/app.git"]);
        Setup { repo, fake: Fake::start(), gates, p: local_platform() }
    }

    fn odu(&self, args: &[&str]) -> Command {
        let mut cmd = self.repo.odu(args);
        cmd.env("GH_TOKEN", TOKEN).env("ODU_GITHUB_API", self.fake.base()).env_remove("GITHUB_TOKEN");
        cmd
    }

    fn open(&self, gate: &str) {
        std::fs::write(self.gates.path().join(gate), "").unwrap();
    }

    fn ctx(&self, task: &str) -> String {
        format!("{task}@{}", self.p)
    }

    fn log(&self, task: &str) -> String {
        format!(".ci/{}/{}/{task}.log", self.repo.sha7(), self.p)
    }

    /// Waits until GitHub shows `want` as the latest of `context`.
    fn wait_latest(&self, context: &str, want: &str) {
        until(&format!("{context} to show {want}"), DEADLINE, || {
            self.fake.latest().get(context).is_some_and(|s| s.starts_with(want))
        });
    }

    fn sha(&self) -> String {
        self.repo.git(&["rev-parse", "HEAD"]).trim().to_string()
    }
}

/// `Succeeded (0s): <log>` or `(1s)`: durations are real.
fn terminal(seq: &str, state: &str, word: &str, log: &str) -> bool {
    let Some(rest) = seq.strip_prefix(&format!("{state} {word} (")) else { return false };
    let Some((dur, path)) = rest.split_once("): ") else { return false };
    dur.ends_with('s') && dur[..dur.len() - 1].chars().all(|c| c.is_ascii_digit()) && path == log
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files_under(&path));
        } else if kind.is_file() {
            out.push(path);
        }
    }
    out
}

/// The latest run's whole record, as the ledger file holds it.
fn last_record(repo: &Repo) -> serde_json::Value {
    let dir = repo.path().join(format!(".ci/{}/runs", repo.sha7()));
    let seq = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse::<u64>().ok())
        .max()
        .expect("a record");
    let text = std::fs::read_to_string(dir.join(format!("{seq}.json"))).unwrap();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_green_run_posts_pending_then_success_per_node_and_the_token_stays_in_the_server() {
    let s =
        Setup::new(|g| format!("[metadata(\"ci\")]\nci: a b\n{}{}", gated(g, "a"), "b:\n    @env | sort\n"));
    let run = Running::spawn(s.odu(&["run"]));
    s.wait_latest(&s.ctx("a"), "pending");
    // The server holds the token in memory only: not in its environment.
    let server = server_pid(s.repo.path()).expect("a server");
    let environ = std::fs::read(format!("/proc/{server}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains(TOKEN), "the token is in the server's environment");
    s.open("a");
    let (code, err) = run.finish();
    assert_eq!(code, Some(0), "{err}");
    s.wait_latest(&s.ctx("a"), "success");
    let a = s.fake.sequence(&s.ctx("a"));
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(a[0], format!("pending Running: {}", s.log("a")));
    assert!(terminal(&a[1], "success", "Succeeded", &s.log("a")), "{a:?}");
    for task in ["b", "_ci-setup"] {
        let seq = s.fake.sequence(&s.ctx(task));
        assert!(terminal(seq.last().unwrap(), "success", "Succeeded", &s.log(task)), "{task}: {seq:?}");
        assert!(seq.len() <= 2, "at most pending then success: {seq:?}");
        if seq.len() == 2 {
            assert_eq!(seq[0], format!("pending Running: {}", s.log(task)));
        }
    }
    let contexts: std::collections::BTreeSet<String> =
        s.fake.statuses().into_iter().map(|p| p.context).collect();
    assert_eq!(contexts, [s.ctx("_ci-setup"), s.ctx("a"), s.ctx("b")].into_iter().collect());
    let requests = s.fake.requests();
    assert!(requests.iter().all(|r| r.status != 401), "every request carried the token");
    assert!(requests.iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))));
    assert_eq!(requests[0].method, "GET", "the commit's statuses are read before the first post");
    assert!(requests[0].path.ends_with(&format!("/repos/acme/app/commits/{}/statuses", s.sha())));
    assert!(s.fake.statuses().iter().all(|p| p.sha == s.sha()));
    // The lane's environment (b printed it into its log) and everything under .ci: no token.
    let b = std::fs::read_to_string(s.repo.path().join(s.log("b"))).unwrap();
    assert!(b.contains("ODU_RUN="), "{b}");
    for file in files_under(&s.repo.path().join(".ci")) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(TOKEN), "the token is in {}", file.display());
    }
    assert!(!b.contains("GH_TOKEN"), "{b}");
    until("the record to say nothing is owed", DEADLINE, || {
        last_record(&s.repo)["unposted"] == serde_json::json!([])
    });
    stop_server(&s.repo);
}

#[test]
fn a_red_run_posts_failure_and_nothing_for_the_skipped_dependents() {
    let s = Setup::new(|g| {
        format!(
            "[metadata(\"ci\")]\nci: c\nc: a\n    @echo c\n{}",
            gated(g, "a").replace("done\n", "done; exit 3\n")
        )
    });
    let run = Running::spawn(s.odu(&["run"]));
    s.wait_latest(&s.ctx("a"), "pending");
    s.open("a");
    let (code, err) = run.finish();
    assert_eq!(code, Some(1), "{err}");
    s.wait_latest(&s.ctx("a"), "failure");
    let a = s.fake.sequence(&s.ctx("a"));
    assert_eq!(a[0], format!("pending Running: {}", s.log("a")));
    assert!(terminal(&a[1], "failure", "Failed", &s.log("a")), "{a:?}");
    assert_eq!(a.len(), 2);
    assert!(s.fake.sequence(&s.ctx("c")).is_empty(), "a skipped node posts nothing");
    stop_server(&s.repo);
}

#[test]
fn a_second_run_of_the_same_commit_does_not_repost_what_github_shows() {
    let s = Setup::new(|g| format!("[metadata(\"ci\")]\nci: a\n{}", gated(g, "a")));
    s.open("a");
    let out = s.odu(&["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = s.fake.statuses().len();
    let out = s.odu(&["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = s.fake.statuses();
    for ctx in [s.ctx("a"), s.ctx("_ci-setup")] {
        let seq = s.fake.sequence(&ctx);
        assert!(seq.windows(2).all(|w| w[0] != w[1]), "a status posted twice in a row on {ctx}: {seq:?}");
        assert!(seq.last().unwrap().starts_with("success"), "{seq:?}");
    }
    assert!(all.len() >= first, "{all:?}");
    // Each run read the commit's statuses before its first post.
    let requests = s.fake.requests();
    let reads: Vec<usize> =
        requests.iter().enumerate().filter(|(_, r)| r.method == "GET").map(|(i, _)| i).collect();
    assert_eq!(reads.len(), 2, "{requests:?}");
    stop_server(&s.repo);
}

#[test]
fn ctrl_c_mid_run_turns_the_running_nodes_pending_into_error() {
    let s = Setup::new(|g| format!("[metadata(\"ci\")]\nci: a\n{}", gated(g, "a")));
    let run = Running::spawn(s.odu(&["run"]));
    s.wait_latest(&s.ctx("a"), "pending");
    run.signal(libc::SIGINT);
    let (code, err) = run.finish();
    assert_eq!(code, Some(130), "{err}");
    s.wait_latest(&s.ctx("a"), "error");
    let a = s.fake.sequence(&s.ctx("a"));
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(terminal(&a[1], "error", "Cancelled", &s.log("a")), "{a:?}");
    stop_server(&s.repo);
}

#[test]
fn a_server_killed_mid_run_and_a_new_run_post_nothing_twice_and_leave_foreign_contexts_alone() {
    let s = Setup::new(|g| format!("[metadata(\"ci\")]\nci: a\n{}", gated(g, "a")));
    let sha = s.sha();
    s.fake.with(|f| {
        f.statuses.push(crate::fake_github::Posted {
            sha: sha.clone(),
            context: "ci/other".into(),
            state: "pending".into(),
            description: "someone else's".into(),
        })
    });
    let run = Running::spawn(s.odu(&["run"]));
    s.wait_latest(&s.ctx("a"), "pending");
    let server = server_pid(s.repo.path()).expect("a server");
    // SAFETY: killing the server this test started.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let (code, _) = run.finish();
    assert_ne!(code, Some(0));
    let before = s.fake.requests().len();
    s.open("a");
    let out = s.odu(&["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    s.wait_latest(&s.ctx("a"), "success");
    let requests = s.fake.requests();
    assert_eq!(requests[before].method, "GET", "the new server reads GitHub before posting");
    let a = s.fake.sequence(&s.ctx("a"));
    assert_eq!(a.len(), 2, "the pending GitHub already showed was not posted again: {a:?}");
    assert!(terminal(&a[1], "success", "Succeeded", &s.log("a")), "{a:?}");
    assert!(
        requests.iter().filter(|r| r.method == "POST").all(|r| r.body["context"] != "ci/other"),
        "a foreign context was touched"
    );
    stop_server(&s.repo);
}

#[test]
fn a_throttle_on_every_fourth_post_is_waited_out_and_every_final_status_lands() {
    let tasks = ["a", "b", "c", "d", "e", "f"];
    let s = Setup::new(|_| {
        let mut j = format!("[metadata(\"ci\")]\nci: {}\n", tasks.join(" "));
        for t in tasks {
            j.push_str(&format!("{t}:\n    @echo {t}\n"));
        }
        j
    });
    s.fake.with(|f| f.throttle = Some((4, 1)));
    let out = s.odu(&["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut all: Vec<String> = tasks.iter().map(|t| s.ctx(t)).collect();
    all.push(s.ctx("_ci-setup"));
    until("every final status", DEADLINE, || {
        let latest = s.fake.latest();
        all.iter().all(|c| latest.get(c).is_some_and(|l| l.starts_with("success")))
    });
    let requests = s.fake.requests();
    assert!(requests.iter().any(|r| r.status == 403), "the fake throttled");
    assert_eq!(early_requests(&requests), Vec::<String>::new(), "requests sent before their retry-after");
    stop_server(&s.repo);
}

#[test]
fn a_primary_limit_is_waited_out_until_its_reset() {
    let s = Setup::new(|_| "[metadata(\"ci\")]\nci: a\na:\n    @echo a\n".into());
    s.fake.with(|f| f.primary_once = Some(1));
    let out = s.odu(&["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    s.wait_latest(&s.ctx("a"), "success");
    let requests = s.fake.requests();
    assert!(requests[0].reset.is_some(), "{requests:?}");
    assert_eq!(early_requests(&requests), Vec::<String>::new());
    stop_server(&s.repo);
}

#[test]
fn an_api_that_is_down_changes_no_verdict_and_the_record_lists_what_is_owed() {
    let s = Setup::new(|_| "[metadata(\"ci\")]\nci: a\na:\n    @echo a\n".into());
    s.fake.with(|f| f.down = true);
    let out = s.odu(&["run", "--post-wait", "2s"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("GitHub statuses not posted yet"), "{err}");
    assert!(err.contains("503"), "{err}");
    until("the record to list what is owed", DEADLINE, || {
        last_record(&s.repo)["unposted"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["last_error"].as_str().is_some_and(|e| e.contains("503"))))
    });
    let record = last_record(&s.repo);
    let owed = record["unposted"].as_array().expect("unposted").clone();
    let contexts: Vec<&str> = owed.iter().filter_map(|u| u["context"].as_str()).collect();
    assert!(contexts.contains(&s.ctx("a").as_str()), "{record}");
    assert!(owed.iter().all(|u| u["state"] == "success"), "{record}");
    assert!(owed.iter().any(|u| u["last_error"].as_str().is_some_and(|e| e.contains("503"))), "{record}");
    let status = s.repo.run(&["status"]);
    assert!(stderr(&status).contains("not posted yet"), "{}", stderr(&status));
    let attach = s.repo.run(&["attach"]);
    assert!(stderr(&attach).contains("not posted yet"), "{}", stderr(&attach));
    // Once GitHub is back, the server posts what it owes and the record says so.
    s.fake.with(|f| f.down = false);
    s.wait_latest(&s.ctx("a"), "success");
    until("the record to owe nothing", Duration::from_secs(90), || {
        last_record(&s.repo)["unposted"] == serde_json::json!([])
    });
    stop_server(&s.repo);
}

#[test]
fn no_post_sends_no_request_and_a_missing_token_or_a_foreign_origin_is_refused() {
    let s = Setup::new(|_| "[metadata(\"ci\")]\nci: a\na:\n    @echo a\n".into());
    let out = s
        .repo
        .odu(&["run"])
        .env("ODU_GITHUB_API", s.fake.base())
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .env("PATH", crate::repo::path_with(&["just", "git", "sh", "env", "sort", "echo"], &[]))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for way in ["GH_TOKEN", "GITHUB_TOKEN", "gh auth login", "--no-post"] {
        assert!(err.contains(way), "the refusal names {way}: {err}");
    }
    assert!(s.repo.ledger().is_empty(), "nothing ran");
    let out = s.repo.odu(&["run", "--no-post"]).env("ODU_GITHUB_API", s.fake.base()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(s.fake.requests().is_empty(), "--no-post sent {:?}", s.fake.requests());
    s.repo.git(&["remote", "set-url", "origin", "https://gitlab.com/acme/app.git"]);
    let out = s.odu(&["run"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs a GitHub origin") && err.contains("--no-post"), "{err}");
    assert!(s.fake.requests().is_empty());
    stop_server(&s.repo);
}

#[test]
fn an_enterprise_origin_posts_under_the_api_v3_base() {
    let s = Setup::new(|_| "[metadata(\"ci\")]\nci: a\na:\n    @echo a\n".into());
    s.repo.git(&["remote", "set-url", "origin", "git@ghe.example.com:acme/app.git"]);
    let out = s.odu(&["run"]).env("ODU_GITHUB_API", format!("{}/api/v3", s.fake.base())).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    s.wait_latest(&s.ctx("a"), "success");
    let requests = s.fake.requests();
    assert!(requests.iter().all(|r| r.path.starts_with("/api/v3/repos/acme/app/")), "{requests:?}");
    stop_server(&s.repo);
}

const PROTECTED: &str = "[metadata(\"ci\")]\nci: a l\na:\n    @echo a\n[linux]\nl:\n    @echo l\n";

fn protect(s: &Setup, args: &[&str]) -> std::process::Output {
    let mut all = vec!["protect", "--platform", "x86_64-linux", "--platform", "aarch64-darwin"];
    all.extend_from_slice(args);
    s.odu(&all).output().unwrap()
}

fn ruleset(id: u64, source_type: &str, contexts: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "id": id, "name": format!("rs{id}"), "target": "branch", "enforcement": "active",
        "source_type": source_type, "source": "acme/app",
        "conditions": {"ref_name": {"include": ["~DEFAULT_BRANCH"], "exclude": []}},
        "rules": [
            {"type": "deletion"},
            {"type": "required_status_checks", "parameters": {
                "required_status_checks": contexts.iter().map(|c| serde_json::json!({"context": c})).collect::<Vec<_>>(),
                "strict_required_status_checks_policy": true, "do_not_enforce_on_create": false}},
        ],
    })
}

fn required(set: &serde_json::Value) -> Vec<String> {
    set["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "required_status_checks")
        .flat_map(|r| r["parameters"]["required_status_checks"].as_array().unwrap().clone())
        .map(|c| c["context"].as_str().unwrap().to_string())
        .collect()
}

const WANT: [&str; 3] = ["a@aarch64-darwin", "a@x86_64-linux", "l@x86_64-linux"];

#[test]
fn protect_dry_run_prints_the_contexts_odu_posts_without_a_token() {
    let s = Setup::new(|_| PROTECTED.into());
    let out = s
        .repo
        .odu(&["protect", "--dry-run", "--platform", "x86_64-linux", "--platform", "aarch64-darwin"])
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(crate::repo::stdout(&out), format!("{}\n", WANT.join("\n")));
    assert!(s.fake.requests().is_empty());
}

#[test]
fn protect_updates_the_one_ruleset_that_requires_checks_and_leaves_its_other_rules_alone() {
    let s = Setup::new(|_| PROTECTED.into());
    s.fake.with(|f| {
        f.rulesets.insert(7, ruleset(7, "Repository", &["old@x86_64-linux", "a@x86_64-linux"]));
    });
    let out = protect(&s, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ruleset rs7 (#7) now requires 3 contexts on main"), "{err}");
    assert!(err.contains("+a@aarch64-darwin") && err.contains("-old@x86_64-linux"), "{err}");
    let set = s.fake.with(|f| f.rulesets[&7].clone());
    assert_eq!(required(&set), WANT);
    assert_eq!(set["rules"][0]["type"], "deletion", "{set}");
    assert_eq!(set["rules"][1]["parameters"]["strict_required_status_checks_policy"], true, "{set}");
}

#[test]
fn protect_refuses_without_a_ruleset_unless_create_and_refuses_two_or_an_organizations() {
    let s = Setup::new(|_| PROTECTED.into());
    let out = protect(&s, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--create"), "{err}");
    let out = protect(&s, &["--create"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let set = s.fake.with(|f| f.rulesets.values().next().unwrap().clone());
    assert_eq!(required(&set), WANT);
    assert_eq!(set["conditions"]["ref_name"]["include"], serde_json::json!(["~DEFAULT_BRANCH"]));
    assert_eq!(set["rules"].as_array().unwrap().len(), 1, "only the required-checks rule: {set}");
    assert_eq!(set["enforcement"], "active");
    s.fake.with(|f| {
        f.rulesets.insert(9, ruleset(9, "Repository", &["x"]));
    });
    let out = protect(&s, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("2 rulesets require status checks"), "{err}");
    s.fake.with(|f| {
        f.rulesets.clear();
        f.rulesets.insert(3, ruleset(3, "Organization", &["x"]));
    });
    let out = protect(&s, &["--branch", "main"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("organization"), "{err}");
    assert_eq!(s.fake.with(|f| required(&f.rulesets[&3])), ["x"], "untouched");
}

#[test]
fn protect_falls_back_to_classic_branch_protection_without_rulesets() {
    let s = Setup::new(|_| PROTECTED.into());
    s.fake.with(|f| {
        f.no_rulesets = true;
        f.classic.insert("release".into(), vec!["old".into()]);
    });
    let out = protect(&s, &["--branch", "release"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("branch protection of release (classic) now requires 3 contexts"), "{err}");
    assert_eq!(s.fake.with(|f| f.classic["release"].clone()), WANT);
    let out = protect(&s, &["--branch", "main"]);
    assert_eq!(out.status.code(), Some(1), "an unprotected branch is refused: {}", stderr(&out));
}

#[test]
fn a_long_log_path_is_shortened_to_fit_and_a_context_with_1000_statuses_is_left_alone() {
    let long = format!("r{}", "_long".repeat(26));
    let s = Setup::new(|_| {
        format!("[metadata(\"ci\")]\nci: {long} full\n{long}:\n    @true\nfull:\n    @true\n")
    });
    let (sha, full) = (s.sha(), s.ctx("full"));
    s.fake.with(|f| {
        for i in 0..1000 {
            f.statuses.push(crate::fake_github::Posted {
                sha: sha.clone(),
                context: full.clone(),
                state: "success".into(),
                description: format!("old {i}"),
            });
        }
    });
    let out = s.odu(&["run", "--post-wait", "5s"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    s.wait_latest(&s.ctx(&long), "success");
    let latest = s.fake.latest()[&s.ctx(&long)].clone();
    let description = latest.strip_prefix("success ").unwrap();
    assert_eq!(description.chars().count(), 140, "{description}");
    assert!(description.contains('…') && description.ends_with("_long.log"), "{description}");
    let refused: Vec<_> = s.fake.requests().into_iter().filter(|r| r.status == 422).map(|r| r.body).collect();
    assert!(refused.is_empty(), "sent what GitHub refuses: {refused:?}");
    assert!(
        s.fake.sequence(&full).iter().all(|st| st.starts_with("success old")),
        "the full context got nothing"
    );
    // The record follows the poster: it may lag the run's end by a moment.
    until("the record to list only the full context", DEADLINE, || {
        last_record(&s.repo)["unposted"].as_array().is_some_and(|u| u.len() == 1)
    });
    let record = last_record(&s.repo);
    let owed = record["unposted"].as_array().unwrap();
    assert_eq!(owed[0]["context"], full.as_str());
    assert!(owed[0]["last_error"].as_str().unwrap().contains("1000 statuses"), "{record}");
    assert!(err.contains("1 GitHub status never reached GitHub"), "{err}");
    stop_server(&s.repo);
}

#[test]
fn without_a_token_variable_the_token_comes_from_gh_auth_token() {
    let s = Setup::new(|_| "[metadata(\"ci\")]\nci: a\na:\n    @echo a\n".into());
    let gh = format!("#!/bin/sh\n[ \"$1 $2\" = \"auth token\" ] && echo {TOKEN}\n");
    let path = crate::repo::path_with(&["just", "git", "sh"], &[("gh", &gh)]);
    let out = s
        .repo
        .odu(&["run"])
        .env("ODU_GITHUB_API", s.fake.base())
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    s.wait_latest(&s.ctx("a"), "success");
    assert!(s.fake.requests().iter().all(|r| r.status != 401));
    stop_server(&s.repo);
}
