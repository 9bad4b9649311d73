//! `odu rerun`: a node of the live run and what needs it again, or a new run of an ended one.

use std::collections::BTreeMap;

use odu_proto::NODE_RERUN;
use serde_json::json;

use crate::cli::RerunArgs;
use crate::client::query::{run_params, runtime};
use crate::client::refused;
use crate::error::{CliResult, say};

pub fn rerun(args: RerunArgs) -> CliResult<i32> {
    let repo = super::repo()?;
    runtime()?.block_on(async {
        // A rerun of a finished run starts a new one, so a server is started if need be.
        let mut client = crate::client::ensure(&repo, crate::cli::DEFAULT_IDLE).await?;
        let mut params = run_params(&args.run.run);
        params["id"] = json!(args.target);
        params["env"] = json!(std::env::vars().collect::<BTreeMap<String, String>>());
        let answer = client.call(NODE_RERUN, params).await.map_err(refused)?;
        let run = answer.get("run").and_then(|r| r.as_str()).unwrap_or("?");
        if answer.get("started").is_some() {
            say(format!(
                "odu: that run had ended: started run {run} for {} (follow it with odu attach)",
                args.target
            ));
        } else {
            say(format!("odu: reran {} in run {run} (and what needs it)", args.target));
        }
        Ok(0)
    })
}
