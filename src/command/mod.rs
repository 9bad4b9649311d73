//! One module per command: each resolves its raw arguments into its own configuration, then
//! does its work.

pub mod attach;
pub mod cancel;
pub mod docs;
pub mod hosts;
pub mod logs;
pub mod mcp;
pub mod plan;
pub mod protect;
pub mod rerun;
pub mod run;
pub mod runs;
pub mod serve;
pub mod status;
pub mod wait;

use std::path::PathBuf;

use crate::error::{CliError, CliResult};

pub fn current_dir() -> CliResult<PathBuf> {
    std::env::current_dir().map_err(|e| CliError::refused(format!("cannot read the current directory: {e}")))
}

/// `90`, `90s`, `5m`, `1h`, `250ms`, for the flag named `flag`.
pub fn parse_duration(text: &str, flag: &str) -> CliResult<std::time::Duration> {
    let bad = || CliError::usage(format!("{flag} expects a duration like 30s, 5m or 1h, got {text:?}"));
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |at| text.split_at(at));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// The checkout the current directory is in (found without starting git), else the directory.
pub fn repo() -> CliResult<PathBuf> {
    let cwd = current_dir()?;
    Ok(crate::tool::git::toplevel_quick(&cwd).unwrap_or(cwd))
}
