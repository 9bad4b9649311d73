//! `odu wait`: blocks until a node goes red (fail-fast) or the run ends; one JSON verdict.

use crate::client::connect;
use crate::client::query::{defer_to_the_run, header_of, runtime};
use crate::client::waiting::{WaitFor, wait_for};
use crate::error::{CliError, CliResult, outln};

/// `wait`: blocks until a node goes red (fail-fast, the default) or the run ends, then prints
/// one JSON verdict.
pub fn wait(args: crate::cli::WaitArgs) -> CliResult<i32> {
    let repo = super::repo()?;
    let timeout = args.timeout.as_deref().map(|t| super::parse_duration(t, "--timeout")).transpose()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            return Err(CliError::refused(
                "no run in progress in this checkout (nothing serves .ci/odu.sock): start one with odu run",
            ));
        };
        let header = header_of(&mut client, &args.run.run).await?;
        defer_to_the_run(&header);
        let how = WaitFor { fail_fast: !args.settle, timeout };
        let verdict = wait_for(&mut client, &header, &how).await?;
        outln(serde_json::to_value(&verdict).expect("a verdict serializes"))?;
        Ok(verdict.exit_code)
    })
}
