//! `odu attach` and `odu monitor`: the run as it goes (the dashboard on a terminal, NDJSON with
//! `-o json` or when piped, lines with `-o text`), then its verdict; with nothing serving, the
//! latest run as it ended. A run whose logs retention removed says so, and exits 1.

use std::io::IsTerminal;

use odu_core::run::EXIT_RED;

use crate::cli::OutputFormat;
use crate::client::connect;
use crate::client::exit_code;
use crate::client::face::{Face, JsonFace, PlainFace};
use crate::client::monitor::{Options, monitor};
use crate::client::query::{defer_to_the_run, header_of, runtime, stored};
use crate::error::{CliError, CliResult, say};
use crate::trail::ledger;

/// `attach` and `monitor` on a terminal: the dashboard (attach leaves it when the run ends,
/// monitor stays for the next run). `-o json` (and any of them when stdout or stdin is not a
/// terminal, or `TERM=dumb`): the same NDJSON transition stream as `run --progress json`,
/// ending with the verdict. Idle attach shows the run as it ended.
pub fn attach(args: crate::cli::AttachArgs, stay: bool) -> CliResult<i32> {
    let repo = super::repo()?;
    runtime()?.block_on(async {
        let output = match args.output {
            Some(output) => output,
            None if crate::client::monitor::usable() => {
                let options = Options {
                    run: args.run.run.clone(),
                    leave_at_end: !stay,
                    idle: crate::cli::DEFAULT_IDLE,
                };
                // Attach with no run in progress shows the latest run as it ended, as before.
                if stay || live(&repo, &args.run.run).await? {
                    return monitor(&repo, options).await;
                }
                OutputFormat::Json
            }
            None => OutputFormat::Json,
        };
        let face: Box<dyn Face> = match output {
            OutputFormat::Json => Box::new(JsonFace::default()),
            OutputFormat::Text => Box::new(PlainFace::new(false)),
        };
        let Some(mut client) = connect(&repo).await? else {
            let record = stored(&repo, &args.run.run)?;
            let mut replica = crate::client::follow::Replica::new(face);
            let views = ledger::stored_views(&record);
            replica.observe_header(ledger::stored_header(&record));
            replica.apply(views.clone(), Some(views.iter().map(|v| v.id.clone()).collect()));
            replica.finish();
            if crate::error::stdout_closed() {
                return Err(CliError::stdout_closed());
            }
            // The same account of the run as a live attach ends with.
            if let Some(run) = &replica.run {
                let color = crate::client::face::colors_enabled(std::io::stderr().is_terminal());
                say(crate::client::face::verdict(run, color, true).trim_end_matches('\n'));
            }
            if let Some(line) = crate::client::follow::posting_warning(&ledger::stored_header(&record)) {
                say(line);
            }
            let outcome = record.outcome;
            say(format!("odu: {} {outcome} (no run in progress)", record.reference()));
            if let Some(pruned) = ledger::pruned_logs(&repo.join(".ci"), &record.reference()) {
                say(format!("odu: {pruned}"));
                return Ok(EXIT_RED);
            }
            return Ok(replica.run.as_ref().map_or(EXIT_RED, |run| exit_code(run, EXIT_RED)));
        };
        let header = header_of(&mut client, &args.run.run).await?;
        defer_to_the_run(&header);
        let code = crate::client::follow::follow(&mut client, &header.run, face, false, true, None).await?;
        // Only a finished run can have been pruned: a live one never is.
        if let Some(pruned) = ledger::pruned_logs(&repo.join(".ci"), &header.run) {
            say(format!("odu: {pruned}"));
            return Ok(EXIT_RED);
        }
        Ok(code)
    })
}

/// Whether the run attach would follow is still going.
async fn live(repo: &std::path::Path, run: &Option<String>) -> CliResult<bool> {
    let Some(mut client) = connect(repo).await? else { return Ok(false) };
    Ok(header_of(&mut client, run).await.is_ok_and(|h| h.phase != odu_proto::Phase::Ended))
}
