//! `odu run`: ensures the checkout's server, asks it to `run.start`, and shows the run as it
//! goes (live matrix, lines, or NDJSON) until its verdict. Ctrl-C cancels the run it started.

use std::io::IsTerminal;

use odu_proto::{RUN_START, Started};

use crate::cli::{ProgressFormat, RunArgs};
use crate::client::face::{Face, JsonFace, LiveFace, PlainFace, colors_enabled};
use crate::client::follow::follow;
use crate::client::{self as serve, refused};
use crate::error::{CliError, CliResult, say};
use crate::{hosts, tool::git};

pub use crate::server::start::RUN_ENV;

fn params(args: &RunArgs) -> odu_proto::StartParams {
    odu_proto::StartParams {
        selectors: args.selectors.clone(),
        flags: odu_proto::StartFlags {
            platform: args.platforms.clone(),
            host: args.hosts.clone(),
            root: args.root.clone(),
            no_deps: args.no_deps,
            no_post: args.no_post,
            no_snapshot: args.no_snapshot,
            no_strict: args.no_strict,
            jobs: args.jobs,
            supersede: args.supersede,
        },
        env: Some(std::env::vars().collect()),
    }
}

pub fn run(args: RunArgs) -> CliResult<i32> {
    // Mistakes in the arguments are answered here, without a server.
    for pin in &args.hosts {
        hosts::parse_pin(pin).map_err(|e| CliError::refused(e.message))?;
    }
    if args.jobs == Some(0) {
        return Err(CliError::refused("--jobs must be at least 1"));
    }
    super::parse_duration(&args.idle_timeout, "--idle-timeout")?;
    let post_wait = super::parse_duration(&args.post_wait, "--post-wait")?;
    let repo = git::toplevel(&super::current_dir()?)?;
    let progress_json = args.progress == Some(ProgressFormat::Json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let mut client = serve::ensure(&repo, &args.idle_timeout).await?;
        let started: Started = serde_json::from_value(
            client
                .call(RUN_START, serde_json::to_value(params(&args)).expect("params serialize"))
                .await
                .map_err(refused)?,
        )
        .map_err(|e| CliError::refused(format!("the server answered run.start oddly: {e}")))?;
        for note in &started.notes {
            say(format!("odu: {note}"));
        }
        let lanes: Vec<String> = started.lanes.iter().map(|l| format!("{}={}", l.platform, l.host)).collect();
        say(format!(
            "odu · {} @ {} · run {} · {} (hosts: {})",
            started.pipeline,
            started.label,
            started.run,
            lanes.join(" · "),
            started.hosts_source
        ));
        let face: Box<dyn Face> = if progress_json {
            Box::new(JsonFace::default())
        } else if std::io::stdout().is_terminal() {
            Box::new(LiveFace::new(colors_enabled(true)))
        } else {
            Box::new(PlainFace::new(false))
        };
        follow(&mut client, &started.run, face, true, Some(post_wait)).await
    })
}
