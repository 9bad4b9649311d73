//! `odu cancel`: a node, a lane (`@platform`) or the whole live run.

use crate::cli::CancelArgs;
use crate::client::query::{cancel_request, header_of, run_params, runtime};
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
        if args.target.as_deref() == Some("") {
            return Err(CliError::usage("cancel takes a node id or @platform, or nothing for the whole run"));
        }
        let (method, what) = cancel_request(args.target.as_deref(), &mut params);
        client.call(method, params).await.map_err(refused)?;
        say(format!("odu: cancelled {what}"));
        Ok(0)
    })
}
