//! The resources: the nodes of the live run (else the latest) and each node's log, read
//! through the tools' own functions; and the watch behind a subscription, which follows the
//! checkout's newest run on the server and says when what a URI shows changed.

use std::sync::Arc;
use std::time::Duration;

use odu_proto::{NODE_LOG_GET, NODES_GET, RUNS_GET, RunOutcome, RunsFrame};
use rmcp::RoleServer;
use rmcp::model::{Resource, ResourceContents, ResourceTemplate};
use rmcp::service::Peer;
use serde_json::{Value, json};

use super::Checkout;
use super::tools::{self, LogsInput, RunIdInput};
use crate::client::connect;
use crate::error::{CliError, CliResult};
use crate::link::client::ClientEvent;

/// The nodes of the live run, else the latest: the `status` tool's answer.
pub const NODES: &str = "odu://run/nodes";
/// A node's log: `odu://run/logs/<node>` (an id or a recipe name).
pub const LOG_PREFIX: &str = "odu://run/logs/";
/// How much of a log a read returns: its tail (the `logs` tool pages through the rest).
pub const LOG_TAIL: u64 = 64 * 1024;
/// Changes closer together than this are told as one.
const COALESCE: Duration = Duration::from_millis(100);

/// What a resource URI names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uri {
    Nodes,
    Log(String),
}

impl Uri {
    pub fn parse(uri: &str) -> CliResult<Uri> {
        if uri == NODES {
            return Ok(Uri::Nodes);
        }
        match uri.strip_prefix(LOG_PREFIX) {
            Some(node) if !node.is_empty() => Ok(Uri::Log(node.to_string())),
            _ => Err(CliError::usage(format!(
                "no resource {uri}: odu serves {NODES} and {LOG_PREFIX}<node> (see resources/list)"
            ))),
        }
    }
}

pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(format!("{LOG_PREFIX}{{node}}"), "node log")
            .with_description("The last 64 KiB of a node's log in the live (else the latest) run; node is an id or a recipe name")
            .with_mime_type("text/plain"),
    ]
}

/// The nodes resource, and one log resource per node of the live (else latest) run.
pub async fn list(checkout: &Checkout) -> Vec<Resource> {
    let mut resources = vec![
        Resource::new(NODES, "nodes")
            .with_description(
                "The nodes of the live run (else the latest): id, status, exit code, duration, log path",
            )
            .with_mime_type("application/json"),
    ];
    if let Ok(status) = tools::status(checkout, RunIdInput::default()).await {
        for node in status["nodes"].as_array().into_iter().flatten() {
            let Some(id) = node["id"].as_str() else { continue };
            resources.push(
                Resource::new(format!("{LOG_PREFIX}{id}"), format!("log of {id}"))
                    .with_description(format!("The last 64 KiB of {id}'s log in run {}", status["run"]))
                    .with_mime_type("text/plain"),
            );
        }
    }
    resources
}

/// What URI `uri` shows now.
pub async fn read(checkout: &Checkout, uri: &str) -> CliResult<ResourceContents> {
    match Uri::parse(uri)? {
        Uri::Nodes => {
            let status = tools::status(checkout, RunIdInput::default()).await?;
            Ok(ResourceContents::text(serde_json::to_string_pretty(&status).expect("json"), uri)
                .with_mime_type("application/json"))
        }
        Uri::Log(node) => {
            let input = LogsInput { node, tail_bytes: Some(LOG_TAIL), ..Default::default() };
            let page = tools::logs(checkout, input).await?;
            Ok(ResourceContents::text(page["text"].as_str().unwrap_or_default(), uri))
        }
    }
}

/// Follows what `uri` shows and tells `peer` each time it changed (at most once per
/// [`COALESCE`]), until aborted: the newest run of the checkout while a server is up, a run
/// this session starts (`started` moves) when none is.
pub async fn watch(
    checkout: Arc<Checkout>,
    uri: String,
    peer: Peer<RoleServer>,
    mut started: tokio::sync::watch::Receiver<u64>,
) {
    let Ok(what) = Uri::parse(&uri) else { return };
    loop {
        started.mark_unchanged();
        if let Ok(Some(client)) = connect(&checkout.repo).await {
            follow(client, &what, &uri, &peer).await;
        }
        // The server went away (or none was up): a run this session starts brings one back;
        // one started elsewhere is found a little later.
        tokio::select! {
            changed = started.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Follows the newest run on one connection until the server goes away.
async fn follow(mut client: crate::client::SurfaceClient, what: &Uri, uri: &str, peer: &Peer<RoleServer>) {
    let Ok(runs) = client.send(RUNS_GET, json!({})).await else { return };
    let mut current: Option<String> = None;
    let mut stream: Option<u64> = None;
    let mut changed = false;
    let mut tick = tokio::time::interval(COALESCE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = client.next() => match event {
                Ok(Some(ClientEvent::Item { stream: s, value })) if s == runs => {
                    let Some(newest) = newest_run(value.get()) else { continue };
                    if current.as_deref() == Some(newest.as_str()) {
                        continue;
                    }
                    if let Some(old) = stream.take() {
                        let _ = client.cancel_stream(old).await;
                    }
                    let params = match what {
                        Uri::Nodes => (NODES_GET, json!({ "run": newest })),
                        Uri::Log(node) => (NODE_LOG_GET, json!({ "run": newest, "id": node })),
                    };
                    stream = client.send(params.0, params.1).await.ok();
                    if current.is_some() {
                        // A new run: new nodes, new logs.
                        let _ = peer.notify_resource_list_changed().await;
                    }
                    current = Some(newest);
                    changed = true;
                }
                Ok(Some(ClientEvent::Item { stream: s, .. })) if Some(s) == stream => changed = true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    if changed {
                        let _ = peer.notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(uri)).await;
                    }
                    return;
                }
            },
            _ = tick.tick() => {
                if std::mem::take(&mut changed)
                    && peer.notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(uri)).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// The run a `runs` frame makes the newest: the first of a snapshot (newest first), a run
/// that is running in a delta.
fn newest_run(frame: &str) -> Option<String> {
    match serde_json::from_str::<RunsFrame>(frame).ok()? {
        RunsFrame::Snapshot { runs, .. } => runs.first().map(|r| r.run.clone()),
        RunsFrame::Delta { runs, .. } => {
            runs.iter().find(|r| r.outcome == RunOutcome::Running).map(|r| r.run.clone())
        }
    }
}

/// A resource's read as an MCP error the client can act on.
pub fn not_found(uri: &str, e: CliError) -> rmcp::ErrorData {
    rmcp::ErrorData::resource_not_found(e.message, Some(Value::String(uri.to_string())))
}
