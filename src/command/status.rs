//! `odu status`: the live run's nodes, or the latest run's from the ledger when nothing serves.
//! A finished run whose logs retention removed says so, and exits 1.

use std::path::Path;

use odu_core::run::{EXIT_PASSED, EXIT_RED};
use odu_proto::Phase;
use serde_json::json;

use crate::cli::{OutputFormat, StatusArgs};
use crate::client::query::{header_of, nodes_of, runtime, stored, stored_mirror};
use crate::client::{connect, exit_code, mirror_of};
use crate::error::{CliResult, out, outln, say};
use crate::trail::ledger;

pub fn status(args: StatusArgs) -> CliResult<i32> {
    let repo = super::repo()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            return idle_status(&repo, &args.run.run, args.output);
        };
        let header = header_of(&mut client, &args.run.run).await?;
        let (order, nodes) = nodes_of(&mut client, &header.run).await?;
        let live = header.phase != Phase::Ended;
        if args.output == OutputFormat::Json {
            let rows: Vec<_> = nodes
                .iter()
                .map(|n| json!({"id": n.id, "status": n.status, "exit_code": n.exit_code, "duration_ms": n.duration_ms}))
                .collect();
            let value = json!({
                "run": header.run, "pipeline": header.pipeline, "live": live, "phase": header.phase,
                "outcome": header.outcome, "nodes": rows, "posting": header.posting,
            });
            outln(serde_json::to_string_pretty(&value).expect("json"))?;
        } else {
            let state = if live { "in progress".to_string() } else { header.outcome.to_string() };
            let mut text = format!("{} {} · {} @ {}\n", header.run, state, header.pipeline, header.label);
            for n in &nodes {
                text.push_str(&format!("{} {:<9} {}\n", n.status.glyph(), n.status.as_str(), n.id));
            }
            out(text.as_bytes())?;
        }
        if let Some(line) = crate::client::follow::posting_warning(&header) {
            say(line);
        }
        if !live && let Some(pruned) = ledger::pruned_logs(&repo.join(".ci"), &header.run) {
            say(format!("odu: {pruned}"));
            return Ok(EXIT_RED);
        }
        // A run in progress is red once it settled red.
        Ok(exit_code(&mirror_of(&header, &order, nodes), EXIT_PASSED))
    })
}

/// `status` with nothing serving: the run from the ledger.
fn idle_status(repo: &Path, run: &Option<String>, output: OutputFormat) -> CliResult<i32> {
    let record = stored(repo, run)?;
    let outcome = record.outcome;
    if output == OutputFormat::Json {
        let mut value = serde_json::to_value(&record).expect("records serialize");
        value["run"] = json!(record.reference());
        value["outcome"] = json!(outcome);
        value["live"] = json!(false);
        outln(serde_json::to_string_pretty(&value).expect("json"))?;
    } else {
        outln(format!("{} {} (no run in progress; the latest run)", record.reference(), outcome))?;
        for n in &record.nodes {
            outln(format!("{} {:<9} {}", n.status.glyph(), n.status.as_str(), n.id))?;
        }
    }
    if let Some(line) = crate::client::follow::posting_warning(&ledger::stored_header(&record)) {
        say(line);
    }
    if let Some(pruned) = ledger::pruned_logs(&repo.join(".ci"), &record.reference()) {
        say(format!("odu: {pruned}"));
        return Ok(EXIT_RED);
    }
    Ok(exit_code(&stored_mirror(&record), EXIT_RED))
}
