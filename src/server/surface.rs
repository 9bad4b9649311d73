//! The fan-in surface on `.ci/odu.sock`: the run as live, typed state for any number of
//! clients, on the same contract as a lane's stdio (JSON-RPC 2.0 in base64 lines, handshake
//! first).
//!
//! - Cell `nodes.get`: a snapshot of every node (fan-in ids), then deltas; a client that falls
//!   behind is resynchronised with a fresh snapshot (`cell::Hub`).
//! - Stream `nodeLog.get {id}`: the node's log from the first byte of its trail file, then
//!   appends, then `end`; readers follow the file, so a slow one costs no memory.
//! - Cells `runs.get` (every run the server knows) and `header.get` (one run's sha, lanes,
//!   phase and outcome).
//! - Procedures `node.rerun {id}`, `node.cancel {id}`, `lane.cancel {platform}`, `run.cancel`,
//!   `run.start {selectors, flags, env?}`.
//!
//! Every call takes an optional `run` (`<sha7>#<seq>`), defaulting to the live run, else the
//! latest. A finished run is served from its record and trail; a rerun of one starts a new run.
//!
//! Node ids resolve exactly or by unique suffix (`e2e@x86_64-linux` ≡ `ci::e2e@x86_64-linux`).
//! A misbehaving client (garbage, oversized frames, another protocol version) gets an error
//! frame or is disconnected; every other client keeps being served.

use std::collections::BTreeMap;
use std::sync::Arc;

use odu_core::run::{Refusal, RunRequest};
use odu_core::{NodeId, NodeStatus, NodeView};
use odu_proto::{
    HEADER_GET, HeaderFrame, LANE_CANCEL, LogChunk, Message, NODE_CANCEL, NODE_LOG_GET, NODE_RERUN,
    NODES_GET, NodeParams, NodesFrame, RUN_CANCEL, RUN_START, RUNS_GET, RawParams, RpcError, StartParams,
    error_code, item_frame, log_item_frame,
};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::link::socket::split_quiet;
use crate::link::wire::{FrameReader, ReadError, Served, ServerLink, spawn_writer};
use crate::server::coordinator::{AskError, LaneAnswer, RunHandles};
use crate::server::{ClientGuard, Server, Target, evicted_error};
use crate::tool::Env;
use crate::trail::ledger::{self, RunRecord};
use crate::trail::spool::SpoolReader;

/// Frames queued for one client before its streams wait for it: with [`CLIENT_LOG_CHUNK`], a
/// client that never reads holds at most about 350 KiB of the server's memory.
const CLIENT_QUEUE: usize = 8;

/// How long a closing client's last frames may take to leave before its connection is dropped.
const CLOSING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Log bytes per item to a client of the socket (followers are people and scripts, not lanes).
const CLIENT_LOG_CHUNK: usize = 32 * 1024;

/// Serves one client until it goes away, misbehaves, or is closed to make room for another.
///
/// A request is answered while the link is still read: a client that goes away meanwhile
/// abandons it (a `run.start` still being prepared then never starts). One request that
/// arrives meanwhile waits for the answer; further ones wait in the socket.
pub async fn serve_client(stream: UnixStream, server: Arc<Server>, guard: ClientGuard) {
    // Halves that wake the server only for the client's requests and for a write waiting on
    // room, not each time the client reads a frame.
    let (reader, writer) = match split_quiet(stream) {
        Ok(halves) => halves,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take a client's connection");
            return;
        }
    };
    let (out, writing) = spawn_writer(writer, CLIENT_QUEUE);
    let frames = FrameReader::with_limits(reader, "odu surface", guard.limits());
    let mut link = ServerLink::new(frames, out.clone(), "server");
    let mut streams: BTreeMap<String, AbortHandle> = BTreeMap::new();
    let mut waiting: Option<Served> = None;
    let closing: Option<RpcError> = loop {
        let next = match waiting.take() {
            Some(served) => Ok(Some(served)),
            None => tokio::select! {
                biased;
                () = guard.evicted() => break Some(evicted_error()),
                next = link.next() => next,
            },
        };
        match next {
            Ok(Some(Served::Request { id, method, params })) => {
                streams.retain(|_, handle| !handle.is_finished());
                let dispatched = dispatch(&server, &out, &mut streams, id.clone(), &method, params);
                tokio::pin!(dispatched);
                let reply = loop {
                    tokio::select! {
                        biased;
                        () = guard.evicted() => break Err(Some(evicted_error())),
                        reply = &mut dispatched => break Ok(reply),
                        next = link.next(), if waiting.is_none() => match next {
                            Ok(Some(served)) => waiting = Some(served),
                            Ok(None) => break Err(None),
                            Err(e) => break Err(Some(read_error(e))),
                        },
                    }
                };
                match reply {
                    Ok(Some(reply)) => {
                        let _ = out.send(reply.to_frame()).await;
                    }
                    Ok(None) => {}
                    // The request is dropped unanswered: its client is gone or being closed.
                    Err(closing) => break closing,
                }
            }
            Ok(Some(Served::CancelStream(id))) => {
                if let Some(handle) = streams.remove(&id.to_string()) {
                    handle.abort();
                    let _ = out.send(Message::ok(id, Value::Null).to_frame()).await;
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(read_error(e)),
        }
    };
    for handle in streams.values() {
        handle.abort();
    }
    // Its buffer goes first; then the last word, and the connection closes even if the client
    // reads nothing.
    drop(link);
    let writer = writing.abort_handle();
    let bye = async move {
        if let Some(error) = closing {
            let _ = out.send(Message::err(Value::Null, error).to_frame()).await;
        }
        drop(out);
        let _ = writing.await;
    };
    let _ = tokio::time::timeout(CLOSING_GRACE, bye).await;
    writer.abort();
}

fn read_error(e: ReadError) -> RpcError {
    let code = match e {
        ReadError::Shut => return evicted_error(),
        ReadError::OverBudget(_) => error_code::BUSY,
        ReadError::TooLarge(_) | ReadError::Io(_) => error_code::INVALID_REQUEST,
    };
    RpcError::new(code, e.to_string())
}

/// Sends one item, leaving the stream open: the value of a finished run never changes.
fn send_once(
    value: &impl serde::Serialize,
    out: &mpsc::Sender<Vec<u8>>,
    id: &Value,
) -> tokio::task::JoinHandle<()> {
    let frame = item_frame(id, &serde_json::to_vec(value).expect("frames serialize"));
    let out = out.clone();
    tokio::spawn(async move {
        let _ = out.send(frame).await;
        std::future::pending::<()>().await;
    })
}

/// Replays a finished node's log of its run ([`ledger::open_run_log`]: never a path from the record,
/// never through a symlink) a chunk at a time: a snapshot, appends, then `end`. A trail that
/// cannot be opened replays as empty.
fn replay_file(
    trail: Result<std::fs::File, ledger::TrailError>,
    out: &mpsc::Sender<Vec<u8>>,
    id: &Value,
) -> tokio::task::JoinHandle<()> {
    let (out, stream) = (out.clone(), id.clone());
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let Ok(file) = trail else {
            let _ = out.send(log_item_frame(&stream, LogChunk::End)).await;
            return;
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut first = true;
        let mut buf = vec![0u8; CLIENT_LOG_CHUNK];
        loop {
            let n = file.read(&mut buf).await.unwrap_or(0);
            if n == 0 && !first {
                break;
            }
            let bytes = &buf[..n];
            let chunk =
                if first { LogChunk::Snapshot { generation: 0, bytes } } else { LogChunk::Append(bytes) };
            first = false;
            if out.send(log_item_frame(&stream, chunk)).await.is_err() {
                return;
            }
            if n == 0 {
                break;
            }
        }
        let _ = out.send(log_item_frame(&stream, LogChunk::End)).await;
    })
}

/// Every fan-in id a rerun target names: a node (exact or unique suffix), a recipe (on every
/// platform that runs it), or `@platform` (that lane's nodes that did not pass).
fn rerun_targets(
    views: &[NodeView],
    token: &str,
    aliases: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let ids: Vec<String> = views.iter().map(|v| v.id.clone()).collect();
    if let Some(platform) = token.strip_prefix('@') {
        let on_lane = |v: &&NodeView| NodeId::parse(&v.id).is_some_and(|node| node.platform == platform);
        if !views.iter().any(|v| on_lane(&v)) {
            return Err(format!("no lane {platform:?} in this run"));
        }
        let red: Vec<String> = views
            .iter()
            .filter(on_lane)
            .filter(|v| v.status.is_terminal() && v.status != NodeStatus::Ok)
            .map(|v| v.id.clone())
            .collect();
        if red.is_empty() {
            return Err(format!(
                "nothing to rerun on lane {platform}: every node there passed or is still going"
            ));
        }
        return Ok(red);
    }
    match odu_core::node_id::resolve_node_aliased(&ids, token, aliases) {
        Ok(id) => Ok(vec![id]),
        Err(e) if odu_core::platform::split_platform(token).is_some() => Err(e),
        Err(e) => {
            let recipe = |id: &str| NodeId::parse(id).map(|node| node.task);
            let matches: Vec<(&String, String)> = ids
                .iter()
                .filter_map(|id| recipe(id).map(|task| (id, task)))
                .filter(|(_, task)| task == token || task.ends_with(&format!("::{token}")))
                .collect();
            let tasks: std::collections::BTreeSet<&str> =
                matches.iter().map(|(_, task)| task.as_str()).collect();
            if tasks.len() == 1 {
                Ok(matches.into_iter().map(|(id, _)| id.clone()).collect())
            } else {
                Err(e)
            }
        }
    }
}

/// A rerun of a finished run starts a new run (history is append-only) with the same flags.
async fn restart(
    server: &Arc<Server>,
    record: &RunRecord,
    token: &str,
    env: Option<Env>,
) -> Result<Value, RpcError> {
    let views = ledger::stored_views(record);
    let targets = rerun_targets(&views, token, &record.aliases).map_err(RpcError::refused)?;
    let mut params = StartParams { selectors: record.selectors.clone(), flags: record.flags.clone(), env };
    if let Some(platform) = token.strip_prefix('@') {
        params.flags.platform = vec![platform.to_string()];
    } else {
        params.selectors = targets;
    }
    let started = server.start_run(params).await?;
    Ok(json!({"ok": true, "run": started.run, "started": started}))
}

async fn dispatch(
    server: &Arc<Server>,
    out: &mpsc::Sender<Vec<u8>>,
    streams: &mut BTreeMap<String, AbortHandle>,
    id: Value,
    method: &str,
    params: RawParams,
) -> Option<Message> {
    // A client's params are small: read as a value, of which each request takes what it needs.
    let params: Value = match serde_json::from_str(params.get()) {
        Ok(params) => params,
        Err(e) => return Some(Message::err(id, RpcError::invalid_params(e.to_string()))),
    };
    let run = params.get("run").and_then(Value::as_str).map(str::to_string);
    tracing::debug!(method, run = ?run, "request");
    let target = || server.target(run.as_deref());
    let node_param = |params: &Value| -> Result<String, RpcError> {
        let p: NodeParams =
            serde_json::from_value(params.clone()).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        Ok(p.id)
    };
    let ended = |r: &RunRecord| {
        RpcError::refused(format!("run {} has ended ({}): nothing to cancel", r.reference(), r.outcome))
    };
    let stream = |task: tokio::task::JoinHandle<()>, streams: &mut BTreeMap<String, AbortHandle>| {
        streams.insert(id.to_string(), task.abort_handle());
        None
    };
    let result: Result<Value, RpcError> = match method {
        RUNS_GET => {
            let sub = server.runs.lock().expect("hub lock").subscribe();
            return stream(sub.forward(out, &id), streams);
        }
        NODES_GET => match target() {
            Ok(Target::Live(run)) => {
                let sub = run.nodes.lock().expect("hub lock").subscribe();
                return stream(sub.forward(out, &id), streams);
            }
            Ok(Target::Stored(record)) => {
                let nodes = ledger::stored_views(&record);
                let frame = NodesFrame::Snapshot {
                    revision: 1,
                    name: record.pipeline.clone(),
                    order: nodes.iter().map(|n| n.id.clone()).collect(),
                    nodes,
                };
                return stream(send_once(&frame, out, &id), streams);
            }
            Err(e) => Err(e),
        },
        HEADER_GET => match target() {
            Ok(Target::Live(run)) => {
                let sub = run.header.lock().expect("hub lock").subscribe();
                return stream(sub.forward(out, &id), streams);
            }
            Ok(Target::Stored(record)) => {
                let mut header = ledger::stored_header(&record);
                if let Some(posting) = server.posting_of(&header.run) {
                    header.posting = Some(posting);
                }
                let frame = HeaderFrame::Snapshot { revision: 1, header };
                return stream(send_once(&frame, out, &id), streams);
            }
            Err(e) => Err(e),
        },
        NODE_LOG_GET => match (target(), node_param(&params)) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(Target::Live(run)), Ok(token)) => {
                match odu_core::node_id::resolve_node_aliased(run.logs.keys(), &token, &run.aliases) {
                    Ok(node) => {
                        let mut reader = SpoolReader::new(&run.logs[&node], CLIENT_LOG_CHUNK);
                        let (out, stream_id) = (out.clone(), id.clone());
                        let task = tokio::spawn(async move {
                            while let Some(chunk) = reader.next().await {
                                if out.send(log_item_frame(&stream_id, chunk.as_log())).await.is_err() {
                                    break;
                                }
                            }
                        });
                        return stream(task, streams);
                    }
                    Err(e) => Err(RpcError::refused(e)),
                }
            }
            (Ok(Target::Stored(record)), Ok(token)) => {
                let ids: Vec<String> = record.nodes.iter().map(|n| n.id.clone()).collect();
                match odu_core::node_id::resolve_node_aliased(&ids, &token, &record.aliases) {
                    Ok(node) => {
                        match ledger::open_run_log(&server.ci, &record, &node, ledger::Access::Read) {
                            // Another run's log is never shown in place of a pruned one.
                            Err(
                                e @ (ledger::TrailError::Pruned { .. } | ledger::TrailError::Replaced { .. }),
                            ) => Err(RpcError::refused(e.to_string())),
                            trail => return stream(replay_file(trail, out, &id), streams),
                        }
                    }
                    Err(e) => Err(RpcError::refused(e)),
                }
            }
        },
        NODE_RERUN => match (target(), node_param(&params)) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(Target::Live(run)), Ok(token)) => {
                let views: Vec<NodeView> =
                    run.nodes.lock().expect("hub lock").current().nodes.iter().cloned().collect();
                match rerun_targets(&views, &token, &run.aliases) {
                    Ok(nodes) => {
                        let mut result = Ok(json!({"ok": true, "run": run.reference, "nodes": nodes}));
                        for node in &nodes {
                            if let Err(e) = lane_call(&run, RunRequest::Rerun, node).await {
                                result = Err(e);
                                break;
                            }
                        }
                        result
                    }
                    Err(e) => Err(RpcError::refused(e)),
                }
            }
            (Ok(Target::Stored(record)), Ok(token)) => {
                let env = params.get("env").and_then(|e| serde_json::from_value(e.clone()).ok());
                restart(server, &record, &token, env).await
            }
        },
        NODE_CANCEL => match (target(), node_param(&params)) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(Target::Live(run)), Ok(token)) => {
                match odu_core::node_id::resolve_node_aliased(run.logs.keys(), &token, &run.aliases) {
                    Ok(node) => lane_call(&run, RunRequest::Cancel, &node).await,
                    Err(e) => Err(RpcError::refused(e)),
                }
            }
            (Ok(Target::Stored(record)), _) => Err(ended(&record)),
        },
        LANE_CANCEL => match target() {
            Err(e) => Err(e),
            Ok(Target::Stored(record)) => Err(ended(&record)),
            Ok(Target::Live(run)) => {
                let platform = params.get("platform").and_then(Value::as_str).unwrap_or_default().to_string();
                match run.ask(RunRequest::CancelLane { platform }).await {
                    // Each node's cancel may fail on its own (it just finished): the lane is
                    // cancelled all the same.
                    Ok(answers) => {
                        for LaneAnswer { answer, .. } in answers {
                            let _ = answer.await;
                        }
                        Ok(json!({"ok": true}))
                    }
                    // Nothing of a finished lane is left to cancel.
                    Err(AskError::Refused(Refusal::LaneFinished(_))) => Ok(json!({"ok": true})),
                    Err(e) => Err(RpcError::refused(e.to_string())),
                }
            }
        },
        RUN_CANCEL => match target() {
            Err(e) => Err(e),
            Ok(Target::Stored(record)) => Err(ended(&record)),
            Ok(Target::Live(run)) => {
                let _ = run.cancel_run.send(());
                Ok(json!({"ok": true, "run": run.reference}))
            }
        },
        RUN_START => match serde_json::from_value::<StartParams>(params) {
            Ok(params) => server.start_run(params).await.map(|started| json!(started)),
            Err(e) => Err(RpcError::invalid_params(e.to_string())),
        },
        other => Err(RpcError::new(error_code::METHOD_NOT_FOUND, format!("unknown method {other:?}"))),
    };
    Some(match result {
        Ok(value) => Message::ok(id, value),
        Err(error) => Message::err(id, error),
    })
}

/// Asks the coordinator to rerun or cancel a node (a fan-in id) and waits for its lane's
/// answer.
async fn lane_call(
    run: &RunHandles,
    request: impl FnOnce(NodeId) -> RunRequest,
    node: &str,
) -> Result<Value, RpcError> {
    let id = node.parse::<NodeId>().map_err(|e| RpcError::refused(e.to_string()))?;
    let answers = run.ask(request(id)).await.map_err(|e| RpcError::refused(e.to_string()))?;
    for LaneAnswer { platform, answer } in answers {
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RpcError::refused(e)),
            Err(_) => return Err(RpcError::refused(format!("lane {platform} has finished"))),
        }
    }
    Ok(json!({"ok": true}))
}
