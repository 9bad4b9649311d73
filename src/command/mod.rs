//! One module per command: each resolves its raw arguments into its own configuration, then
//! does its work.

pub mod plan;
pub mod run;
pub mod runs;
pub mod surface_client;

use std::path::PathBuf;

use crate::error::{CliError, CliResult};

pub fn current_dir() -> CliResult<PathBuf> {
    std::env::current_dir().map_err(|e| CliError::refused(format!("cannot read the current directory: {e}")))
}
