//! `odu wait`: blocks until a node goes red (fail-fast) or the run ends; one JSON verdict.

use std::collections::BTreeMap;

use odu_core::run::EXIT_RED;
use odu_core::status::Outcome;
use odu_core::{NodeStatus, NodeView, Run};
use odu_proto::{HEADER_GET, HeaderFrame, NODES_GET, NodesFrame, Phase};
use serde_json::json;

use crate::client::query::{defer_to_the_run, header_of, nodes_of, runtime};
use crate::client::{connect, exit_code, mirror_of, refused};
use crate::error::{CliError, CliResult, outln};
use crate::link::client::ClientEvent;

/// `wait`: blocks until a node goes red (fail-fast, the default) or the run ends, then prints
/// one JSON verdict.
pub fn wait(args: crate::cli::WaitArgs) -> CliResult<i32> {
    let repo = super::repo()?;
    let timeout = args.timeout.as_deref().map(|t| super::parse_duration(t, "--timeout")).transpose()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            return Err(CliError::refused(
                "no run in progress in this checkout (nothing serves .ci/odu.sock): start one with odu run",
            ));
        };
        let header = header_of(&mut client, &args.run.run).await?;
        defer_to_the_run(&header);
        let run = header.run.clone();
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let header_stream = client.send(HEADER_GET, json!({ "run": run })).await.map_err(refused)?;
        let nodes_stream = client.send(NODES_GET, json!({ "run": run })).await.map_err(refused)?;
        let mut state: BTreeMap<String, NodeView> = BTreeMap::new();
        let mut ended = header.phase == Phase::Ended;
        let mut fail_fast = false;
        let mut timed_out = false;
        while !ended {
            let next = client.next();
            let event = match deadline {
                Some(at) => match tokio::time::timeout_at(at, next).await {
                    Ok(event) => event,
                    Err(_) => {
                        timed_out = true;
                        break;
                    }
                },
                None => next.await,
            };
            match event.map_err(refused)? {
                Some(ClientEvent::Item { stream, value }) if stream == header_stream => {
                    if let Ok(HeaderFrame::Snapshot { header, .. }) = serde_json::from_str(value.get()) {
                        ended = header.phase == Phase::Ended;
                    }
                }
                Some(ClientEvent::Item { stream, value }) if stream == nodes_stream => {
                    let nodes = match serde_json::from_str::<NodesFrame>(value.get()) {
                        Ok(NodesFrame::Snapshot { nodes, .. }) => {
                            state.clear();
                            nodes
                        }
                        Ok(NodesFrame::Delta { nodes, .. }) => nodes,
                        Err(_) => continue,
                    };
                    for n in nodes {
                        state.insert(n.id.clone(), n);
                    }
                    if !args.settle && state.values().any(|n| n.status.is_red()) {
                        fail_fast = true;
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        let final_header = if ended { header_of(&mut client, &Some(run.clone())).await.ok() } else { None };
        let mut order: Vec<String> = state.keys().cloned().collect();
        if ended || fail_fast {
            // The state as it stands now, from a fresh snapshot.
            if let Ok((fresh, nodes)) = nodes_of(&mut client, &run).await {
                order = fresh;
                state = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
            }
        }
        // The run's copy decides the verdict, as every command's does.
        let ended_run =
            final_header.as_ref().map(|h| mirror_of(h, &order, state.values().cloned().collect()));
        let decided = ended_run.as_ref().and_then(Run::verdict);
        let of = |s: NodeStatus| {
            state.values().filter(|n| n.status == s).map(|n| n.id.clone()).collect::<Vec<_>>()
        };
        let passed = decided.is_some_and(|v| v.outcome == Outcome::Passed);
        let verdict = json!({
            "run": run,
            "settled": ended,
            "passed": passed,
            "failed": of(NodeStatus::Failed),
            "errored": of(NodeStatus::Errored),
            "cancelled": of(NodeStatus::Cancelled),
            "fail_fast_tripped": fail_fast,
            "timed_out": timed_out,
            // The run's duration (to its end, or so far), not the wait's.
            "duration_ms": ended_run.as_ref().map_or_else(
                || crate::clock::now_ms().saturating_sub(header.started_at),
                |run| run.duration_ms(crate::clock::now_ms()),
            ),
        });
        outln(verdict)?;
        Ok(ended_run.as_ref().map_or(EXIT_RED, |run| exit_code(run, EXIT_RED)))
    })
}
