//! The fan-in surface on `.ci/odu.sock`: the run as live, typed state for any number of
//! clients, on the same contract as a lane's stdio (JSON-RPC 2.0 in base64 lines, handshake
//! first).
//!
//! - Cell `nodes.get`: a snapshot of every node (fan-in ids), then deltas; a client that falls
//!   behind is resynchronised with a fresh snapshot (`cell::Hub`).
//! - Stream `nodeLog.get {id}`: the node's log from the first byte of its trail file, then
//!   appends, then `end`; readers follow the file, so a slow one costs no memory.
//! - Procedures `node.rerun {id}`, `node.cancel {id}`, `lane.cancel {platform}`, `run.cancel`.
//!
//! Node ids resolve exactly or by unique suffix (`e2e@x86_64-linux` ≡ `ci::e2e@x86_64-linux`).
//! A misbehaving client (garbage, oversized frames, another protocol version) gets an error
//! frame or is disconnected; every other client keeps being served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use odu_proto::{
    Message, NODE_CANCEL, NODE_LOG_GET, NODE_RERUN, NODES_GET, NodeParams, RpcError, error_code,
};
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::cell::{Hub, NodesValue};
use crate::lane::LaneCommand;
use crate::runner::{LOG_CHUNK, item_frame, log_item_frame};
use crate::spool::{Spool, SpoolReader};
use crate::wire::{FrameReader, Served, ServerLink, spawn_writer};

pub const LANE_CANCEL: &str = "lane.cancel";
pub const RUN_CANCEL: &str = "run.cancel";

/// What the surface shares with the coordinator.
#[derive(Clone)]
pub struct SurfaceShared {
    pub nodes: Arc<Mutex<Hub<NodesValue>>>,
    /// Trail spools by fan-in id.
    pub logs: Arc<BTreeMap<String, Spool>>,
    /// Lane command channels by platform.
    pub lanes: Arc<BTreeMap<String, mpsc::UnboundedSender<LaneCommand>>>,
    /// Asks the coordinator to cancel the whole run.
    pub cancel_run: mpsc::UnboundedSender<()>,
}

/// Resolves a node id exactly or by unique suffix (`e2e@p` ≡ `ci::e2e@p`, `e2e` when only one
/// platform runs it).
pub fn resolve_node<'a>(ids: impl IntoIterator<Item = &'a String>, token: &str) -> Result<String, String> {
    let ids: Vec<&String> = ids.into_iter().collect();
    if ids.iter().any(|id| *id == token) {
        return Ok(token.to_string());
    }
    let matches: Vec<&&String> = ids
        .iter()
        .filter(|id| {
            let (task, platform) = id.rsplit_once('@').unwrap_or((id, ""));
            let task_matches = |t: &str| task == t || task.ends_with(&format!("::{t}"));
            match token.rsplit_once('@') {
                Some((t, p)) => p == platform && task_matches(t),
                None => task_matches(token),
            }
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((**one).clone()),
        [] => Err(format!(
            "no node matches {token:?} (nodes: {})",
            ids.iter().take(20).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )),
        many => Err(format!(
            "{token:?} is ambiguous ({}): use the full id",
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Binds `.ci/odu.sock` (0600). A socket nobody answers on is stale and is reclaimed; a live
/// one is never stolen.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is live: another odu serves this checkout", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves clients until the task is aborted.
pub async fn serve(listener: UnixListener, shared: SurfaceShared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(serve_client(stream, shared.clone()));
    }
}

async fn serve_client(stream: UnixStream, shared: SurfaceShared) {
    let (reader, writer) = stream.into_split();
    let (out, _writer) = spawn_writer(writer, 64);
    let mut link = ServerLink::new(FrameReader::new(reader, "odu surface"), out.clone(), "server");
    let mut streams: BTreeMap<String, AbortHandle> = BTreeMap::new();
    loop {
        match link.next().await {
            Ok(Some(Served::Request { id, method, params })) => {
                if let Some(reply) = dispatch(&shared, &out, &mut streams, id.clone(), &method, params).await
                {
                    let _ = out.send(reply.to_frame()).await;
                }
            }
            Ok(Some(Served::CancelStream(id))) => {
                if let Some(handle) = streams.remove(&id.to_string()) {
                    handle.abort();
                    let _ = out.send(Message::ok(id, Value::Null).to_frame()).await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let error = RpcError::new(error_code::INVALID_REQUEST, e.to_string());
                let _ = out.send(Message::err(Value::Null, error).to_frame()).await;
                break;
            }
        }
    }
    for handle in streams.values() {
        handle.abort();
    }
}

fn node_ids(shared: &SurfaceShared) -> Vec<String> {
    shared.logs.keys().cloned().collect()
}

async fn dispatch(
    shared: &SurfaceShared,
    out: &mpsc::Sender<Vec<u8>>,
    streams: &mut BTreeMap<String, AbortHandle>,
    id: Value,
    method: &str,
    params: Value,
) -> Option<Message> {
    let node = |params: &Value| -> Result<String, RpcError> {
        let p: NodeParams =
            serde_json::from_value(params.clone()).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        resolve_node(&node_ids(shared), &p.id).map_err(RpcError::refused)
    };
    let result: Result<Value, RpcError> = match method {
        NODES_GET => {
            let mut sub = shared.nodes.lock().expect("hub lock").subscribe();
            let (out, stream) = (out.clone(), id.clone());
            let task = tokio::spawn(async move {
                while let Some(frame) = sub.next().await {
                    let json = serde_json::to_vec(&frame).expect("frames serialize");
                    if out.send(item_frame(&stream, &json)).await.is_err() {
                        break;
                    }
                }
            });
            streams.insert(id.to_string(), task.abort_handle());
            return None;
        }
        NODE_LOG_GET => match node(&params) {
            Ok(node) => {
                let mut reader = SpoolReader::new(&shared.logs[&node], LOG_CHUNK);
                let (out, stream) = (out.clone(), id.clone());
                let task = tokio::spawn(async move {
                    while let Some(chunk) = reader.next().await {
                        if out.send(log_item_frame(&stream, &chunk)).await.is_err() {
                            break;
                        }
                    }
                });
                streams.insert(id.to_string(), task.abort_handle());
                return None;
            }
            Err(e) => Err(e),
        },
        NODE_RERUN | NODE_CANCEL => match node(&params) {
            Ok(node) => lane_call(shared, &node, method == NODE_RERUN).await,
            Err(e) => Err(e),
        },
        LANE_CANCEL => {
            let platform = params.get("platform").and_then(Value::as_str).unwrap_or_default().to_string();
            if !shared.lanes.contains_key(&platform) {
                let lanes: Vec<&String> = shared.lanes.keys().collect();
                Err(RpcError::refused(format!("no lane {platform:?} in this run (lanes: {lanes:?})")))
            } else {
                let live: Vec<String> = {
                    let hub = shared.nodes.lock().expect("hub lock");
                    hub.current()
                        .nodes
                        .iter()
                        .filter(|n| !n.status.is_terminal() && n.id.ends_with(&format!("@{platform}")))
                        .map(|n| n.id.clone())
                        .collect()
                };
                for node in live {
                    let _ = lane_call(shared, &node, false).await;
                }
                Ok(json!({"ok": true}))
            }
        }
        RUN_CANCEL => {
            let _ = shared.cancel_run.send(());
            Ok(json!({"ok": true}))
        }
        other => Err(RpcError::new(error_code::METHOD_NOT_FOUND, format!("unknown method {other:?}"))),
    };
    Some(match result {
        Ok(value) => Message::ok(id, value),
        Err(error) => Message::err(id, error),
    })
}

/// Sends a rerun or cancel to the node's lane and waits for its answer.
async fn lane_call(shared: &SurfaceShared, node: &str, rerun: bool) -> Result<Value, RpcError> {
    let (task, platform) = node.rsplit_once('@').expect("fan-in ids carry a platform");
    let lane =
        shared.lanes.get(platform).ok_or_else(|| RpcError::refused(format!("no lane {platform:?}")))?;
    let (reply, answer) = oneshot::channel();
    let command = if rerun {
        LaneCommand::Rerun { id: task.to_string(), reply }
    } else {
        LaneCommand::Cancel { id: task.to_string(), reply }
    };
    lane.send(command).map_err(|_| RpcError::refused(format!("lane {platform} has finished")))?;
    match answer.await {
        Ok(Ok(())) => Ok(json!({"ok": true})),
        Ok(Err(e)) => Err(RpcError::refused(e)),
        Err(_) => Err(RpcError::refused(format!("lane {platform} has finished"))),
    }
}

/// `.ci/odu.sock` of a checkout.
pub fn socket_path(repo: &Path) -> PathBuf {
    repo.join(".ci").join("odu.sock")
}
