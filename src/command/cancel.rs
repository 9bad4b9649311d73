//! `odu cancel`: a node, a lane (`@platform`) or the whole live run.

use odu_proto::{LANE_CANCEL, NODE_CANCEL, RUN_CANCEL};
use serde_json::json;

use crate::cli::CancelArgs;
use crate::client::query::{header_of, run_params, runtime};
use crate::client::{connect, refused};
use crate::error::{CliError, CliResult, say};

pub fn cancel(args: CancelArgs) -> CliResult<i32> {
    let repo = super::repo()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            say("odu: no run in progress in this checkout: nothing to cancel");
            return Ok(0);
        };
        if args.run.run.is_none() && header_of(&mut client, &None).await.is_err() {
            say("odu: no run in this checkout yet: nothing to cancel");
            return Ok(0);
        }
        let mut params = run_params(&args.run.run);
        let (method, what) = match args.target.as_deref() {
            None => (RUN_CANCEL, "the run".to_string()),
            Some("") => {
                return Err(CliError::usage(
                    "cancel takes a node id or @platform, or nothing for the whole run",
                ));
            }
            Some(t) if t.starts_with('@') => {
                params["platform"] = json!(&t[1..]);
                (LANE_CANCEL, format!("lane {}", &t[1..]))
            }
            Some(t) => {
                params["id"] = json!(t);
                (NODE_CANCEL, t.to_string())
            }
        };
        client.call(method, params).await.map_err(refused)?;
        say(format!("odu: cancelled {what}"));
        Ok(0)
    })
}
