//! Waiting on a run: until a node goes red (fail-fast) or the run ends, or a deadline passes,
//! then its verdict as the run's own copy decides it. `odu wait` prints it; the MCP `wait`
//! tool answers with it.

use std::collections::BTreeMap;
use std::time::Duration;

use odu_core::run::EXIT_RED;
use odu_core::status::Outcome;
use odu_core::{NodeStatus, NodeView, Run};
use odu_proto::{HEADER_GET, Header, HeaderFrame, NODES_GET, NodesFrame, Phase};
use serde::Serialize;
use serde_json::json;

use super::query::{header_of, nodes_of};
use super::{SurfaceClient, exit_code, mirror_of, refused};
use crate::error::CliResult;
use crate::link::client::ClientEvent;

/// How long to wait, and for what.
#[derive(Clone, Debug)]
pub struct WaitFor {
    /// Return at the first red node instead of when every node has settled.
    pub fail_fast: bool,
    pub timeout: Option<Duration>,
}

/// Where a run stands when the wait ends.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub run: String,
    pub settled: bool,
    pub passed: bool,
    pub failed: Vec<String>,
    pub errored: Vec<String>,
    pub cancelled: Vec<String>,
    pub fail_fast_tripped: bool,
    pub timed_out: bool,
    /// The run's duration (to its end, or so far), not the wait's.
    pub duration_ms: u64,
    /// The exit code of `odu wait`: the run's verdict's, red while undecided.
    #[serde(skip)]
    pub exit_code: i32,
}

/// Waits on the run whose header is `header` (from [`header_of`]).
pub async fn wait_for(client: &mut SurfaceClient, header: &Header, how: &WaitFor) -> CliResult<Verdict> {
    let run = header.run.clone();
    let deadline = how.timeout.map(|d| tokio::time::Instant::now() + d);
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
                if how.fail_fast && state.values().any(|n| n.status.is_red()) {
                    fail_fast = true;
                    break;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    let _ = client.cancel_stream(header_stream).await;
    let _ = client.cancel_stream(nodes_stream).await;
    let final_header = if ended { header_of(client, &Some(run.clone())).await.ok() } else { None };
    let mut order: Vec<String> = state.keys().cloned().collect();
    if ended || fail_fast {
        // The state as it stands now, from a fresh snapshot.
        if let Ok((fresh, nodes)) = nodes_of(client, &run).await {
            order = fresh;
            state = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
        }
    }
    // The run's copy decides the verdict, as every command's does.
    let ended_run = final_header.as_ref().map(|h| mirror_of(h, &order, state.values().cloned().collect()));
    let decided = ended_run.as_ref().and_then(Run::verdict);
    let of =
        |s: NodeStatus| state.values().filter(|n| n.status == s).map(|n| n.id.clone()).collect::<Vec<_>>();
    Ok(Verdict {
        run,
        settled: ended,
        passed: decided.is_some_and(|v| v.outcome == Outcome::Passed),
        failed: of(NodeStatus::Failed),
        errored: of(NodeStatus::Errored),
        cancelled: of(NodeStatus::Cancelled),
        fail_fast_tripped: fail_fast,
        timed_out,
        duration_ms: ended_run.as_ref().map_or_else(
            || crate::clock::now_ms().saturating_sub(header.started_at),
            |run| run.duration_ms(crate::clock::now_ms()),
        ),
        exit_code: ended_run.as_ref().map_or(EXIT_RED, |run| exit_code(run, EXIT_RED)),
    })
}
