//! JUnit XML: `odu run --junit PATH` and `odu runs --junit [RUN]` on real runs, validated with
//! xmllint against `tests/junit.xsd`, with logs XML cannot carry as they are.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::harness::require_tool;
use crate::repo::{Repo, local_platform, stderr, stdout};

/// Validates `xml` against the JUnit schema with xmllint; its complaints on failure.
fn validate(xml: &str) {
    require_tool("xmllint");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.xml");
    std::fs::write(&file, xml).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/junit.xsd");
    let out =
        Command::new("xmllint").arg("--noout").arg("--schema").arg(&schema).arg(&file).output().unwrap();
    assert!(out.status.success(), "not valid JUnit XML: {}\n{xml}", String::from_utf8_lossy(&out.stderr));
}

/// What xmllint reads at `xpath` in `xml`.
fn xpath(xml: &str, xpath: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint").args(["--xpath", xpath]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{xpath}: {}", String::from_utf8_lossy(&out.stderr));
    // xmllint ends what it prints with a line break of its own.
    let mut text = String::from_utf8(out.stdout).unwrap();
    text.pop();
    text
}

#[test]
fn junit_reports_every_node_of_a_run_as_valid_xml_whatever_its_logs_hold() {
    // A log full of what XML cannot hold: a CDATA end, NUL bytes, invalid UTF-8, escapes.
    let repo = Repo::new(concat!(
        "[metadata(\"ci\")]\nci: good bad after\n",
        "good:\n    echo fine\n",
        "bad:\n    @yes filler | head -c 100000; printf 'a ]]> b\\000c\\377\\376 d\\033[31m red <tag> & done\\n'; exit 3\n",
        "after: bad\n    true\n",
    ));
    let p = local_platform();
    let report = repo.path().join("report.xml");
    let out = repo.run(&["run", "--junit", report.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let xml = std::fs::read_to_string(&report).unwrap();
    validate(&xml);

    // One suite for the platform, one case per node.
    assert_eq!(xpath(&xml, "string(/testsuites/testsuite/@name)"), p);
    assert_eq!(xpath(&xml, "count(/testsuites/testsuite/testcase)"), "4", "{xml}");
    assert_eq!(xpath(&xml, "string(/testsuites/testsuite/@failures)"), "1");
    assert_eq!(xpath(&xml, "string(/testsuites/testsuite/@skipped)"), "1");
    assert_eq!(xpath(&xml, &format!("count(//testcase[@classname='{p}'])")), "4");
    assert_eq!(xpath(&xml, "count(//testcase[@name='good']/*)"), "0");
    assert_eq!(xpath(&xml, "count(//testcase[@name='after']/skipped)"), "1");
    let message = xpath(&xml, "string(//testcase[@name='bad']/failure/@message)");
    assert!(message.contains("exit code 3"), "{message}");
    let body = xpath(&xml, "string(//testcase[@name='bad']/failure)");
    assert!(body.starts_with("exit code 3\n"), "{body:.200}");
    assert!(body.contains("a ]]> b\\x00c\\xff\\xfe d\\x1b[31m red <tag> & done"), "{body:.300}");
    // The last 64 KiB of the log, not all of it.
    assert!(body.contains("the last 65536 bytes of"), "{body:.200}");
    assert!(body.len() < 64 * 1024 + 200, "{}", body.len());
    let time = xpath(&xml, "string(//testcase[@name='bad']/@time)");
    assert!(time.parse::<f64>().is_ok(), "{time}");

    // The ledger's copy: the latest run, or the run named.
    let latest = repo.run(&["runs", "--junit"]);
    assert!(latest.status.success(), "{}", stderr(&latest));
    assert_eq!(stdout(&latest), xml);
    let run = format!("{}#1", repo.sha7());
    let named = repo.run(&["runs", "--junit", &run]);
    assert_eq!(stdout(&named), xml);
    let missing = repo.run(&["runs", "--junit", "0000000#9"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stdout(&missing));
    crate::repo::stop_server(&repo);
}

#[test]
fn junit_has_a_suite_per_platform_with_errors_and_cancelled_nodes() {
    require_tool("xmllint");
    let ci = tempfile::tempdir().unwrap();
    let record: odu::trail::ledger::RunRecord = serde_json::from_value(json!({
        "version": 2, "sha": "0123456789abcdef0123456789abcdef01234567", "label": "0123456", "seq": 1,
        "dirty": false, "pipeline": "ci", "outcome": "failed", "started_at": 1_798_814_443_000u64,
        "finished_at": 1_798_814_453_500u64,
        "lanes": [{"platform": "x86_64-linux", "host": "localhost"}, {"platform": "aarch64-darwin", "host": "mac\"1"}],
        "nodes": [
            {"id": "build@x86_64-linux", "status": "ok", "exit_code": 0, "duration_ms": 1500, "log": ""},
            {"id": "test@x86_64-linux", "status": "errored", "exit_code": null, "duration_ms": 20, "log": ""},
            {"id": "build@aarch64-darwin", "status": "failed", "exit_code": 2, "duration_ms": 7, "log": ""},
            {"id": "fmt \"x\"@aarch64-darwin", "status": "cancelled", "exit_code": null, "duration_ms": null, "log": ""},
        ],
    }))
    .unwrap();
    let xml = odu::trail::junit::render(&record, ci.path());
    validate(&xml);
    assert_eq!(xpath(&xml, "count(/testsuites/testsuite)"), "2");
    assert_eq!(xpath(&xml, "string(/testsuites/@tests)"), "4");
    assert_eq!(xpath(&xml, "string(/testsuites/@time)"), "10.500");
    assert_eq!(xpath(&xml, "string(//testsuite[@name='aarch64-darwin']/@hostname)"), "mac\"1");
    assert_eq!(xpath(&xml, "string(//testsuite[@name='x86_64-linux']/@timestamp)"), "2027-01-01T14:40:43");
    assert_eq!(xpath(&xml, "string(//testcase[@name='build' and @classname='x86_64-linux']/@time)"), "1.500");
    assert_eq!(xpath(&xml, "count(//testcase[@name='test']/error)"), "1");
    assert_eq!(xpath(&xml, "string(//testcase[@name='test']/error/@message)"), "errored no exit code");
    assert_eq!(xpath(&xml, "count(//testcase[@classname='aarch64-darwin' and @name='build']/failure)"), "1");
    assert_eq!(xpath(&xml, "string(//testcase[@name='fmt \"x\"']/skipped/@message)"), "cancelled");
}
