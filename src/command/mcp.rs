//! `odu mcp`: serves the checkout's runs as MCP tools on stdio until the client goes away.

use crate::cli::McpArgs;
use crate::client::mcp::{Checkout, serve};
use crate::client::query::runtime;
use crate::error::{CliError, CliResult};
use crate::server::start;
use crate::tool::git;

pub fn mcp(args: McpArgs) -> CliResult<i32> {
    super::parse_duration(&args.idle_timeout, "--idle-timeout")?;
    let dir = match args.dir {
        Some(dir) => std::fs::canonicalize(&dir)
            .map_err(|e| CliError::usage(format!("--dir {}: {e}: name a checkout", dir.display())))?,
        None => super::current_dir()?,
    };
    let repo = git::toplevel(&dir)?;
    let checkout = Checkout {
        repo,
        idle: args.idle_timeout,
        preflight: |repo, params| {
            start::plan_run(repo, params, None, start::Reading::Checkout, None)
                .map(|planned| planned.ci_listing)
        },
    };
    runtime()?.block_on(serve(checkout))?;
    Ok(0)
}
