//! Clients of `.ci/odu.sock`: `status`, `logs`, `rerun`, `cancel`. With no server, `status`
//! answers from the ledger (idle attach) and `logs` reads the trail.

use std::io::Write;
use std::path::{Path, PathBuf};

use odu_core::{NodeStatus, NodeView};
use odu_proto::{NODE_CANCEL, NODE_LOG_GET, NODE_RERUN, NODES_GET, NodesFrame};
use serde_json::json;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use crate::cli::{CancelArgs, LogsArgs, OutputFormat, RerunArgs, StatusArgs};
use crate::client::{Client, ClientEvent};
use crate::error::{CliError, CliResult};
use crate::surface::{LANE_CANCEL, RUN_CANCEL, socket_path};
use crate::{git, ledger};

type SurfaceClient = Client<OwnedReadHalf>;

fn repo() -> CliResult<PathBuf> {
    let cwd = super::current_dir()?;
    Ok(git::toplevel(&cwd).unwrap_or(cwd))
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::refused(format!("cannot start the async runtime: {e}")))
}

/// Connects to the checkout's surface; `None` when nothing serves it.
async fn connect(repo: &Path) -> CliResult<Option<SurfaceClient>> {
    let Ok(stream) = UnixStream::connect(socket_path(repo)).await else { return Ok(None) };
    let (reader, writer) = stream.into_split();
    Client::connect(reader, writer, "odu").await.map(Some).map_err(|e| {
        CliError::refused(format!("the server on {} refused us: {e}", socket_path(repo).display()))
    })
}

async fn first_snapshot(client: &mut SurfaceClient) -> CliResult<(String, Vec<NodeView>)> {
    let stream = client.send(NODES_GET, json!({})).await.map_err(|e| CliError::refused(e.to_string()))?;
    loop {
        match client.next().await.map_err(|e| CliError::refused(e.to_string()))? {
            Some(ClientEvent::Item { stream: s, value }) if s == stream => {
                if let Ok(NodesFrame::Snapshot { name, nodes, .. }) = serde_json::from_str(value.get()) {
                    return Ok((name, nodes));
                }
            }
            Some(ClientEvent::Response { id, result: Err(e) }) if id == stream => {
                return Err(CliError::refused(e.message));
            }
            Some(_) => {}
            None => return Err(CliError::refused("the server closed the link")),
        }
    }
}

fn settled_red(statuses: impl Iterator<Item = NodeStatus> + Clone) -> bool {
    let all_terminal = statuses.clone().all(|s| s.is_terminal());
    all_terminal && statuses.into_iter().any(|s| s.is_red() || s == NodeStatus::Skipped)
}

pub fn status(args: StatusArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            return idle_status(&repo, args.output);
        };
        let (name, nodes) = first_snapshot(&mut client).await?;
        if args.output == OutputFormat::Json {
            let rows: Vec<_> = nodes
                .iter()
                .map(|n| json!({"id": n.id, "status": n.status, "exit_code": n.exit_code, "duration_ms": n.duration_ms}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&json!({"pipeline": name, "live": true, "nodes": rows})).unwrap());
        } else {
            for n in &nodes {
                println!("{} {:<9} {}", n.status.glyph(), n.status.as_str(), n.id);
            }
        }
        Ok(i32::from(settled_red(nodes.iter().map(|n| n.status))))
    })
}

/// `status` with nothing running: the latest run from the ledger.
fn idle_status(repo: &Path, output: OutputFormat) -> CliResult<i32> {
    let records = ledger::list(&repo.join(".ci"));
    let Some(record) = records.first() else {
        return Err(CliError::refused(
            "no run in this checkout yet and none in progress: start one with odu run",
        ));
    };
    let outcome = record.effective_outcome();
    if output == OutputFormat::Json {
        let mut value = serde_json::to_value(record).expect("records serialize");
        value["outcome"] = json!(outcome);
        value["live"] = json!(false);
        println!("{}", serde_json::to_string_pretty(&value).unwrap());
    } else {
        println!("{} {} (no run in progress; the latest run)", record.reference(), outcome);
        for n in &record.nodes {
            println!("{} {:<9} {}", n.status.glyph(), n.status.as_str(), n.id);
        }
    }
    Ok(i32::from(outcome != "passed"))
}

pub fn logs(args: LogsArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        // Without -f, the trail file is the whole answer; -f follows the live stream.
        let client = if args.follow { connect(&repo).await? } else { None };
        let Some(mut client) = client else {
            return idle_logs(&repo, &args.node);
        };
        let stream = client
            .send(NODE_LOG_GET, json!({"id": args.node}))
            .await
            .map_err(|e| CliError::refused(e.to_string()))?;
        let mut out = std::io::stdout().lock();
        loop {
            match client.next().await.map_err(|e| CliError::refused(e.to_string()))? {
                Some(ClientEvent::Item { stream: s, value }) if s == stream => {
                    let item: LogItem =
                        serde_json::from_str(value.get()).map_err(|e| CliError::refused(e.to_string()))?;
                    match item.kind.as_str() {
                        "snapshot" | "append" => {
                            let bytes = item
                                .data
                                .as_deref()
                                .and_then(odu_proto::LogFrame::decode_data)
                                .unwrap_or_default();
                            let _ = out.write_all(&bytes);
                            let _ = out.flush();
                        }
                        "missed" => eprintln!("odu: {} bytes of this log were missed", item.bytes),
                        "end" => return Ok(0),
                        _ => {}
                    }
                }
                Some(ClientEvent::Response { id, result: Err(e) }) if id == stream => {
                    return Err(CliError::refused(e.message));
                }
                Some(_) => {}
                None => return Ok(0),
            }
        }
    })
}

#[derive(serde::Deserialize)]
struct LogItem {
    kind: String,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    bytes: u64,
}

/// `logs` with nothing running: the trail of the latest run.
fn idle_logs(repo: &Path, node: &str) -> CliResult<i32> {
    let records = ledger::list(&repo.join(".ci"));
    let Some(record) = records.first() else {
        return Err(CliError::refused(
            "no run in this checkout yet and none in progress: start one with odu run",
        ));
    };
    let ids: Vec<String> = record.nodes.iter().map(|n| n.id.clone()).collect();
    let id = crate::surface::resolve_node(&ids, node).map_err(CliError::refused)?;
    let entry = record.nodes.iter().find(|n| n.id == id).expect("resolved from these nodes");
    let bytes = std::fs::read(repo.join(&entry.log))
        .map_err(|e| CliError::refused(format!("cannot read {}: {e}", entry.log)))?;
    let _ = std::io::stdout().write_all(&bytes);
    Ok(0)
}

pub fn rerun(args: RerunArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        let mut client = connect(&repo).await?.ok_or_else(no_run)?;
        client
            .call(NODE_RERUN, json!({"id": args.target}))
            .await
            .map_err(|e| CliError::refused(e.to_string()))?;
        eprintln!("odu: reran {} (and what needs it)", args.target);
        Ok(0)
    })
}

pub fn cancel(args: CancelArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            eprintln!("odu: no run in progress in this checkout: nothing to cancel");
            return Ok(0);
        };
        let (method, params, what) = match args.target.as_deref() {
            None => (RUN_CANCEL, json!({}), "the run".to_string()),
            Some("") => {
                return Err(CliError::usage(
                    "cancel takes a node id or @platform, or nothing for the whole run",
                ));
            }
            Some(t) if t.starts_with('@') => {
                (LANE_CANCEL, json!({"platform": &t[1..]}), format!("lane {}", &t[1..]))
            }
            Some(t) => (NODE_CANCEL, json!({"id": t}), t.to_string()),
        };
        client.call(method, params).await.map_err(|e| CliError::refused(e.to_string()))?;
        eprintln!("odu: cancelled {what}");
        Ok(0)
    })
}

fn no_run() -> CliError {
    CliError::refused(
        "no run in progress in this checkout (nothing serves .ci/odu.sock): start one with odu run",
    )
}
