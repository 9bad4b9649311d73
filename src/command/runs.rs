//! `odu runs`: every run of this checkout, newest first: served live by the checkout's server
//! when one is up, else read from the ledger (closing the records of runs whose server died).
//! `odu runs prune`: removes the logs of all but the last runs now, and says what it removed.

use odu_proto::{RUNS_GET, RunOutcome, RunSummary, RunsFrame};
use serde_json::json;

use crate::cli::{OutputFormat, PruneArgs, RunsAction, RunsArgs};
use crate::clock::now_ms;
use crate::error::{CliError, CliResult, outln};
use crate::{tool::git, trail::ledger, trail::retention};

pub fn runs(args: RunsArgs) -> CliResult<i32> {
    let cwd = super::current_dir()?;
    let repo = git::toplevel_quick(&cwd).unwrap_or(cwd);
    if let Some(RunsAction::Prune(prune_args)) = args.action {
        return prune(&repo, prune_args);
    }
    if let Some(run) = &args.junit {
        return junit(&repo, Some(run.as_str()).filter(|r| !r.is_empty()));
    }
    let runtime = crate::client::query::runtime()?;
    let served = runtime.block_on(async {
        let Some(mut client) = crate::client::connect(&repo).await? else { return Ok::<_, CliError>(None) };
        // A server that goes away before it answers leaves the ledger to answer.
        match crate::client::first_item(&mut client, RUNS_GET, json!({})).await {
            Ok(RunsFrame::Snapshot { runs, .. }) => Ok(Some(runs)),
            Ok(RunsFrame::Delta { .. }) | Err(_) => Ok(None),
        }
    })?;
    let runs: Vec<RunSummary> = match served {
        Some(runs) => runs,
        None => {
            let ci = repo.join(".ci");
            let (runs, rejected) =
                ledger::summaries(&ci, Some(now_ms())).map_err(|e| CliError::refused(e.to_string()))?;
            for note in &rejected {
                crate::error::say(format!("odu: {note}"));
            }
            runs
        }
    };
    if args.output == OutputFormat::Json {
        outln(serde_json::to_string_pretty(&runs).expect("summaries serialize"))?;
        return Ok(0);
    }
    if runs.is_empty() {
        outln("no runs recorded in this checkout yet (odu run records them under .ci/)")?;
        return Ok(0);
    }
    let now = now_ms();
    let rows: Vec<[String; 4]> = runs
        .iter()
        .map(|r| {
            let verdict = match r.outcome {
                RunOutcome::Passed => "✔ passed".to_string(),
                RunOutcome::Running => "▶ running".to_string(),
                other => format!("✗ {other}"),
            };
            let lanes = r.lanes.join(",");
            let age = ledger::format_ago(now.saturating_sub(r.finished_at.unwrap_or(r.started_at)));
            [r.run.clone(), verdict, lanes, age]
        })
        .collect();
    let widths: Vec<usize> =
        (0..4).map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> =
            row.iter().enumerate().map(|(i, cell)| format!("{cell:<w$}", w = widths[i])).collect();
        outln(line.join("  ").trim_end())?;
    }
    Ok(0)
}

/// `odu runs --junit [RUN]`: an ended run (default: the latest) as JUnit XML on stdout.
fn junit(repo: &std::path::Path, run: Option<&str>) -> CliResult<i32> {
    let record = crate::client::query::stored(repo, &run.map(str::to_string))?;
    if record.outcome == RunOutcome::Running {
        return Err(CliError::refused(format!(
            "run {} is still in progress: wait for it (odu wait --settle), then ask again",
            record.reference()
        )));
    }
    crate::error::out(crate::trail::junit::render(&record, &repo.join(".ci")).as_bytes())?;
    Ok(0)
}

/// `odu runs prune`: the logs of every run but the newest `--keep` (default `$ODU_KEEP_RUNS`,
/// else 20) are removed now; a run still `running` is left alone. Works with or without a server.
fn prune(repo: &std::path::Path, args: PruneArgs) -> CliResult<i32> {
    let keep = args.keep.map_or_else(retention::keep_runs, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let ci = repo.join(".ci");
    let pruned = match std::fs::symlink_metadata(&ci) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            retention::Pruned { keep, ..Default::default() }
        }
        _ => {
            crate::private::check_owned(&ci).map_err(crate::trail::ci::refuse_ci)?;
            retention::prune(&ci, keep, now_ms()).map_err(|e| CliError::refused(e.to_string()))?
        }
    };
    for note in &pruned.notes {
        crate::error::say(format!("odu: {note}"));
    }
    if args.output == OutputFormat::Json {
        outln(serde_json::to_string_pretty(&pruned).expect("a prune serializes"))?;
        return Ok(0);
    }
    if pruned.runs.is_empty() {
        outln(format!("nothing to prune: odu keeps the logs of the last {} runs", pruned.keep))?;
        return Ok(0);
    }
    let runs: Vec<&str> = pruned.runs.iter().map(|r| r.run.as_str()).collect();
    outln(format!(
        "pruned the logs of {} ({}), keeping the last {} runs: {}",
        if runs.len() == 1 { "1 run".to_string() } else { format!("{} runs", runs.len()) },
        retention::format_bytes(pruned.bytes),
        pruned.keep,
        runs.join(", ")
    ))?;
    Ok(0)
}
