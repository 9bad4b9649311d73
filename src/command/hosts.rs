//! `odu hosts`: probes every configured host (reachable, platform, runner cached, just and git)
//! without running anything.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::{HostsArgs, OutputFormat};
use crate::error::{CliError, CliResult, outln, say};
use crate::hosts::{self, HostEntry};
use crate::{lane::remote, server::start, tool};

#[derive(Debug, Serialize)]
struct Report {
    platform: String,
    host: String,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detected: Option<String>,
    /// `cached`, `upload` (this build's, on first use), `path` (the host's own), `nix` (built
    /// there from the flake, on first use) or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    runner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    just: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    git: Option<String>,
    /// What is wrong, and what to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

fn local_version(program: &str) -> Option<String> {
    // From `/`: nothing another user can plant a file in is in the way.
    tool::run(program, &["--version"], std::path::Path::new("/"))
        .ok()
        .filter(|o| o.success)
        .map(|o| o.stdout.trim().to_string())
}

async fn probe_one(platform: String, entry: HostEntry, runner: std::path::PathBuf) -> Report {
    let expect = entry.platform.clone().unwrap_or_else(|| platform.clone());
    let mut report = Report {
        platform: platform.clone(),
        host: entry.host.clone(),
        reachable: false,
        detected: None,
        runner: None,
        just: None,
        git: None,
        problem: None,
    };
    if entry.is_local() {
        report.reachable = true;
        report.detected = Some(hosts::local_platform());
        report.runner = Some(if runner.exists() { "local".into() } else { "none".into() });
        report.just = local_version("just");
        report.git = local_version("git");
    } else {
        let ssh_config =
            std::env::var_os("ODU_SSH_CONFIG").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        // Hashed while ssh connects; a session that only waits holds the fresh master until the
        // probe, which a master idle for its ControlPersist would not see.
        let hashing = remote::runner_hash_off_thread(runner.clone());
        let session = remote::connect(&entry, ssh_config.as_deref(), &|_| {}).await;
        let session = match session {
            Ok(session) => session,
            Err(e) => {
                report.problem = Some(e);
                return report;
            }
        };
        report.reachable = true;
        let hold = remote::hold_open(&session).await;
        let hash = hashing.await.unwrap_or_default();
        match remote::probe(&session, &hash).await {
            Ok(probe) => {
                report.runner = Some(
                    if probe.platform == hosts::local_platform() {
                        if probe.cached_runner.is_some() { "cached" } else { "upload" }
                    } else if probe.usable_path_runner().is_ok() {
                        "path"
                    } else if probe.nix.is_some() {
                        "nix"
                    } else {
                        "none"
                    }
                    .into(),
                );
                report.detected = Some(probe.platform);
                report.just = probe.just;
                report.git = probe.git;
            }
            Err(e) => report.problem = Some(e),
        }
        drop(hold);
        // A connection a live lane may share: leave it as lanes do, never close it under them.
        let healthy = report.problem.is_none();
        remote::keep(session, &entry, ssh_config.as_deref(), healthy).await;
    }
    if report.problem.is_none() {
        report.problem = if report.detected.as_deref().is_some_and(|d| d != expect) {
            Some(format!(
                "the host is {}, not {expect}: fix its key or declare its \"platform\"",
                report.detected.clone().unwrap_or_default()
            ))
        } else if report.git.is_none() {
            Some("git is missing: install it on the host".into())
        } else if report
            .just
            .as_deref()
            .and_then(crate::tool::just::parse_version)
            .is_none_or(|v| v < crate::tool::just::MIN_JUST)
        {
            Some("just >= 1.57 is missing: pip install rust-just, or cargo install just".into())
        } else if report.runner.as_deref() == Some("none") {
            Some(format!(
                "no runner, and no nix to build one: install odu-runner (protocol {}) there with `nix profile install {}#odu-runner` or `cargo install odu --locked`",
                odu_proto::PROTOCOL_VERSION,
                remote::FLAKE
            ))
        } else {
            None
        };
    }
    report
}

pub fn hosts(args: HostsArgs) -> CliResult<i32> {
    let env = |k: &str| std::env::var(k).ok();
    let configured = hosts::resolve(&[], &env)?;
    let runner = start::runner_path(&env)?;
    let runtime = crate::client::query::runtime()?;
    let reports: Vec<Report> = runtime.block_on(async {
        let tasks: Vec<_> = configured
            .entries
            .iter()
            .map(|(p, e)| tokio::spawn(probe_one(p.clone(), e.clone(), runner.clone())))
            .collect();
        let mut reports = Vec::new();
        for task in tasks {
            reports.push(task.await.map_err(|e| CliError::refused(format!("a probe failed: {e}")))?);
        }
        Ok::<_, CliError>(reports)
    })?;
    let bad = reports.iter().any(|r| r.problem.is_some());
    if args.output == OutputFormat::Json {
        outln(serde_json::to_string_pretty(&reports).expect("reports serialize"))?;
    } else {
        say(format!("odu: hosts from {}", configured.source));
        let rows: Vec<BTreeMap<&str, String>> = reports
            .iter()
            .map(|r| {
                BTreeMap::from([
                    ("a", format!("{} {}", if r.problem.is_none() { "✔" } else { "✗" }, r.platform)),
                    ("b", r.host.clone()),
                    ("c", r.detected.clone().unwrap_or_else(|| "-".into())),
                    ("d", format!("runner: {}", r.runner.clone().unwrap_or_else(|| "-".into()))),
                    ("e", r.just.clone().unwrap_or_else(|| "no just".into())),
                    ("f", r.git.clone().unwrap_or_else(|| "no git".into())),
                ])
            })
            .collect();
        let widths: BTreeMap<&str, usize> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|k| (*k, rows.iter().map(|r| r[k].chars().count()).max().unwrap_or(0)))
            .collect();
        for (row, report) in rows.iter().zip(&reports) {
            let line: Vec<String> = row.iter().map(|(k, v)| format!("{v:<w$}", w = widths[k])).collect();
            outln(line.join("  ").trim_end())?;
            if let Some(problem) = &report.problem {
                outln(format!("    {problem}"))?;
            }
        }
    }
    Ok(i32::from(bad))
}
