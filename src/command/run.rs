//! `odu run`: ensures the checkout's server, asks it to `run.start`, and shows the run as it
//! goes (live matrix, lines, or NDJSON) until its verdict. Ctrl-C cancels the run it started.

use std::io::IsTerminal;

use odu_proto::{RUN_START, Started};

use crate::cli::{ProgressFormat, RunArgs, SummaryFormat};
use crate::client::face::{Face, JsonFace, LiveFace, PlainFace, colors_enabled};
use crate::client::follow::follow;
use crate::client::{self as serve, refused};
use crate::error::{CliError, CliResult, say};
use crate::{hosts, tool::git};

use crate::server::start;
pub use crate::server::start::RUN_ENV;

fn params(args: &RunArgs, dir: Option<String>) -> odu_proto::StartParams {
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
            dir,
            yes: args.yes,
        },
        env: Some(std::env::vars().collect()),
    }
}

/// Where `cwd` is inside the checkout at `repo`, as a relative path (`pkg/sub`); `None` at
/// its top (or when it cannot be told, and the run starts at the top as before).
fn subdirectory(repo: &std::path::Path, cwd: &std::path::Path) -> Option<String> {
    let cwd = std::fs::canonicalize(cwd).ok()?;
    let repo = std::fs::canonicalize(repo).ok()?;
    let relative = cwd.strip_prefix(&repo).ok()?;
    let text = relative.to_str()?;
    (!text.is_empty()).then(|| text.to_string())
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
    let cwd = super::current_dir()?;
    // Found without starting git (a process saved on every run); git is asked when unsure.
    let repo = git::toplevel_quick(&cwd)?;
    let dir = subdirectory(&repo, &cwd);
    let post_wait = super::parse_duration(&args.post_wait, "--post-wait")?;
    let progress_json = args.progress == Some(ProgressFormat::Json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))?;
    let params = params(&args, dir);
    runtime.block_on(async {
        // Without a server, the run's refusals are found here, before one is started and before
        // .ci exists: a refused run starts nothing and leaves nothing behind. The server it
        // starts takes this check's answers for its first run (git's status only while a moment
        // old, the rest while what they were made from is unchanged); a server already up
        // checks again as it prepares the run.
        // A server that answers is used as it is: one connection, one handshake.
        let mut client = match serve::connect(&repo).await? {
            Some(client) => client,
            None => {
                // git's listing of .ci (checked before .ci is made) runs beside the plan's.
                let planned = start::plan_run(&repo, &params, None, start::Reading::Checkout, None)?;
                serve::ensure_listed(&repo, &args.idle_timeout, planned.ci_listing).await?
            }
        };
        let started: Started = serde_json::from_value(
            client
                .call(RUN_START, serde_json::to_value(&params).expect("params serialize"))
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
        let live = !progress_json && std::io::stdout().is_terminal();
        let face: Box<dyn Face> = if progress_json {
            Box::new(JsonFace::default())
        } else if live {
            Box::new(LiveFace::new(colors_enabled(true)))
        } else {
            Box::new(PlainFace::new(false))
        };
        // Under the live matrix the summary names what needs a look; piped, every node.
        let summary_all = args.summary.map_or(!live, |s| s == SummaryFormat::All);
        let code = follow(&mut client, &started.run, face, true, summary_all, Some(post_wait)).await?;
        if let Some(path) = &args.junit {
            write_junit(&repo, &started.run, path)?;
        }
        Ok(code)
    })
}

/// Writes run `run` as JUnit XML to `path` once it ended; a run left before it ended says so.
fn write_junit(repo: &std::path::Path, run: &str, path: &std::path::Path) -> CliResult<()> {
    let ci = repo.join(".ci");
    let record = crate::trail::ledger::find(&ci, Some(run)).map_err(CliError::refused)?;
    if record.outcome == odu_proto::RunOutcome::Running {
        say(format!("odu: run {run} had not ended: no JUnit XML written to {}", path.display()));
        return Ok(());
    }
    std::fs::write(path, crate::trail::junit::render(&record, &ci)).map_err(|e| {
        CliError::refused(format!(
            "cannot write the JUnit XML of run {run} to {}: {e}: name a writable path (odu runs --junit {run} prints it)",
            path.display()
        ))
    })
}
