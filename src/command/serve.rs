//! `odu serve`: the checkout's server in the foreground (or as `odu run` starts it).

use std::time::Duration;

use crate::cli::ServeArgs;
use crate::error::{CliError, CliResult};
use crate::server::serve::{self as server, ServeOptions};

pub fn serve(args: ServeArgs) -> CliResult<i32> {
    let cwd = super::current_dir()?;
    let repo = crate::tool::git::toplevel_quick(&cwd)?;
    let idle_timeout = match args.idle_timeout.as_deref() {
        None | Some("0") | Some("never") => None,
        Some(text) => Some(super::parse_duration(text, "--idle-timeout")?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))?;
    let code = runtime.block_on(server::serve(repo, ServeOptions { idle_timeout, verbose: !args.quiet }))?;
    // Lanes still closing are not waited for: their runners die with their stdin.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}
