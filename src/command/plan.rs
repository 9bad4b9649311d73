//! `odu dump` and `odu graph`: the plan of the justfile in the current directory.

use odu_core::Plan;

use crate::cli::PlanArgs;
use crate::error::{CliResult, out};
use crate::tool::just;

pub fn load(args: &PlanArgs) -> CliResult<Plan> {
    let dir = super::current_dir()?;
    let dump = just::dump(&dir)?;
    Ok(Plan::from_dump(&dump, args.root.as_deref())?)
}

pub fn dump(args: PlanArgs) -> CliResult<i32> {
    out(load(&args)?.to_json_pretty().as_bytes())?;
    Ok(0)
}

pub fn graph(args: PlanArgs) -> CliResult<i32> {
    out(load(&args)?.mermaid().as_bytes())?;
    Ok(0)
}
