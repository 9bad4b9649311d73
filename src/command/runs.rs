//! `odu runs`: the ledger of this checkout, newest first. Works with nothing running.

use crate::cli::{OutputFormat, RunsArgs};
use crate::clock::now_ms;
use crate::error::CliResult;
use crate::{git, ledger};

pub fn runs(args: RunsArgs) -> CliResult<i32> {
    let cwd = super::current_dir()?;
    let repo = git::toplevel(&cwd).unwrap_or(cwd);
    let mut records = ledger::list(&repo.join(".ci"));
    for record in &mut records {
        record.outcome = record.effective_outcome().to_string();
    }
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&records).expect("records serialize"));
        return Ok(0);
    }
    if records.is_empty() {
        println!("no runs recorded in this checkout yet (odu run records them under .ci/)");
        return Ok(0);
    }
    let now = now_ms();
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|r| {
            let verdict = match r.outcome.as_str() {
                "passed" => "✔ passed".to_string(),
                "running" => "▶ running".to_string(),
                other => format!("✗ {other}"),
            };
            let lanes = match r.lanes.len() {
                1 => "1 lane".to_string(),
                n => format!("{n} lanes"),
            };
            let age = ledger::format_ago(now.saturating_sub(r.finished_at.unwrap_or(r.started_at)));
            [r.reference(), r.label.clone(), verdict, lanes, age]
        })
        .collect();
    let widths: Vec<usize> =
        (0..5).map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> =
            row.iter().enumerate().map(|(i, cell)| format!("{cell:<w$}", w = widths[i])).collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(0)
}
