//! `odu attach`: the run as it goes (NDJSON with `-o json`, lines otherwise), then its verdict;
//! with nothing serving, the latest run as it ended.

use std::io::IsTerminal;

use odu_core::run::EXIT_RED;

use crate::cli::OutputFormat;
use crate::client::connect;
use crate::client::exit_code;
use crate::client::face::{Face, JsonFace, PlainFace};
use crate::client::query::{defer_to_the_run, header_of, runtime, stored};
use crate::error::{CliError, CliResult, say};
use crate::trail::ledger;

/// `attach -o json` (and `attach` when stdout is not a terminal): the same NDJSON transition
/// stream as `run --progress json`, ending with the verdict. Idle attach shows the run as it
/// ended.
pub fn attach(args: crate::cli::AttachArgs) -> CliResult<i32> {
    let repo = super::repo()?;
    runtime()?.block_on(async {
        let face: Box<dyn Face> = match args.output {
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
                say(crate::client::face::verdict(run, color).trim_end_matches('\n'));
            }
            if let Some(line) = crate::client::follow::posting_warning(&ledger::stored_header(&record)) {
                say(line);
            }
            let outcome = record.outcome;
            say(format!("odu: {} {outcome} (no run in progress)", record.reference()));
            return Ok(replica.run.as_ref().map_or(EXIT_RED, |run| exit_code(run, EXIT_RED)));
        };
        let header = header_of(&mut client, &args.run.run).await?;
        defer_to_the_run(&header);
        crate::client::follow::follow(&mut client, &header.run, face, false, None).await
    })
}
