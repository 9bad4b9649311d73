//! Talking to `just`: its version and its JSON dump.

use std::path::Path;

use crate::error::{CliError, CliResult};
use crate::runner::{MIN_JUST, parse_version};
use crate::tool;

const INSTALL: &str = "install just >= 1.57 (pip install rust-just, or cargo install just)";

/// Checks `just` is on PATH and new enough; returns its version line.
pub fn check_version(dir: &Path) -> CliResult<String> {
    let out = tool::run("just", &["--version"], dir)
        .map_err(|_| CliError::refused(format!("just is not on PATH: {INSTALL}")))?;
    let line = out.stdout.trim().to_string();
    match parse_version(&line) {
        Some(v) if v >= MIN_JUST => Ok(line),
        Some(_) => Err(CliError::refused(format!("{line} is too old: odu needs just >= 1.57; {INSTALL}"))),
        None => Err(CliError::refused(format!("cannot read just's version from {line:?}: {INSTALL}"))),
    }
}

/// `just --dump --dump-format json` in `dir`.
pub fn dump(dir: &Path) -> CliResult<String> {
    let out = tool::run("just", &["--dump", "--dump-format", "json"], dir)
        .map_err(|_| CliError::refused(format!("just is not on PATH: {INSTALL}")))?;
    if out.success {
        return Ok(out.stdout);
    }
    let message = out.stderr.trim();
    if message.contains("No justfile found") {
        return Err(CliError::refused(format!(
            "no justfile in {} or above it: odu runs a just recipe DAG; add a justfile whose root recipe carries [metadata(\"ci\")]",
            dir.display()
        )));
    }
    let one_line = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
    Err(CliError::refused(format!("just rejected the justfile: {one_line}")))
}
