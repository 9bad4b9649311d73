//! What the client commands ask of the checkout's server, and of the ledger when nothing
//! serves: the header and nodes of a run, a finished run's copy from its record.

use std::path::Path;

use odu_core::{NodeView, Run};
use odu_proto::{HEADER_GET, Header, HeaderFrame, NODES_GET, NodesFrame, Phase};
use serde_json::json;

use super::{SurfaceClient, first_item, mirror_of};
use crate::clock::now_ms;
use crate::error::{CliError, CliResult};
use crate::trail::ledger::{self, RunRecord};

pub fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))
}

/// Followers that only watch (`attach`, `wait`) step aside for the run: they take CPU only
/// when the nodes leave some (`SCHED_IDLE`), so on a machine busy with the run, watching it
/// never slows it. They still progress under full load, at a low weight, and a subscriber
/// that falls behind gets a fresh snapshot, so nothing queues without bound.
/// `ODU_OBSERVER_PRIORITY=normal` keeps the usual priority. A run that ended needs no room.
pub fn defer_to_the_run(header: &Header) {
    if header.phase == Phase::Ended || std::env::var("ODU_OBSERVER_PRIORITY").is_ok_and(|v| v == "normal") {
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only changes this process's scheduling class; `param` lives
    // across the call.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

pub fn run_params(run: &Option<String>) -> serde_json::Value {
    match run {
        Some(r) => json!({ "run": r }),
        None => json!({}),
    }
}

pub async fn header_of(client: &mut SurfaceClient, run: &Option<String>) -> CliResult<Header> {
    let HeaderFrame::Snapshot { header, .. } = first_item(client, HEADER_GET, run_params(run)).await?;
    Ok(header)
}

/// A `nodes` snapshot: its order and views.
pub async fn nodes_of(client: &mut SurfaceClient, run: &str) -> CliResult<(Vec<String>, Vec<NodeView>)> {
    match first_item(client, NODES_GET, json!({ "run": run })).await? {
        NodesFrame::Snapshot { order, nodes, .. } => Ok((order, nodes)),
        NodesFrame::Delta { nodes, .. } => Ok((nodes.iter().map(|n| n.id.clone()).collect(), nodes)),
    }
}

/// A finished run's copy, from its record.
pub fn stored_mirror(record: &RunRecord) -> Run {
    let views = ledger::stored_views(record);
    let order: Vec<String> = views.iter().map(|v| v.id.clone()).collect();
    mirror_of(&ledger::stored_header(record), &order, views)
}

/// A record from the ledger (with nothing serving): the named run, or the latest. Records the
/// ledger does not trust are left out, each with a note.
pub fn stored(repo: &Path, run: &Option<String>) -> CliResult<RunRecord> {
    let ci = repo.join(".ci");
    // The records' heads first (closing the runs of a server that is gone, as a reader with
    // nothing serving does), then only the record asked for is read whole.
    let (_, rejected) =
        ledger::summaries(&ci, Some(now_ms())).map_err(|e| CliError::refused(e.to_string()))?;
    for note in &rejected {
        crate::error::say(format!("odu: {note}"));
    }
    ledger::find(&ci, run.as_deref()).map_err(CliError::refused)
}

/// The request that cancels `target` of a run whose params are `params`: `None` the whole run,
/// `@platform` a lane, anything else a node id. Returns the method and what it cancels, as
/// said to the user (`the run`, `lane x86_64-linux`, the node's id).
pub fn cancel_request(target: Option<&str>, params: &mut serde_json::Value) -> (&'static str, String) {
    match target {
        None => (odu_proto::RUN_CANCEL, "the run".to_string()),
        Some(t) if t.starts_with('@') => {
            params["platform"] = serde_json::json!(&t[1..]);
            (odu_proto::LANE_CANCEL, format!("lane {}", &t[1..]))
        }
        Some(t) => {
            params["id"] = serde_json::json!(t);
            (odu_proto::NODE_CANCEL, t.to_string())
        }
    }
}
