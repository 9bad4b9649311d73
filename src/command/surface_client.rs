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

/// Follows the live `nodes` cell, calling `on_change(state, changed ids)` on every frame until
/// it returns `Some(exit code)`, the server goes away, or `deadline` passes (`Err(state)`).
async fn follow_nodes(
    client: &mut SurfaceClient,
    deadline: Option<tokio::time::Instant>,
    mut on_change: impl FnMut(&std::collections::BTreeMap<String, NodeView>, &[String]) -> Option<i32>,
) -> CliResult<Result<i32, std::collections::BTreeMap<String, NodeView>>> {
    let stream = client.send(NODES_GET, json!({})).await.map_err(|e| CliError::refused(e.to_string()))?;
    let mut state = std::collections::BTreeMap::new();
    loop {
        let next = async { client.next().await };
        let event = match deadline {
            Some(at) => match tokio::time::timeout_at(at, next).await {
                Ok(event) => event,
                Err(_) => return Ok(Err(state)),
            },
            None => next.await,
        };
        match event.map_err(|e| CliError::refused(e.to_string()))? {
            Some(ClientEvent::Item { stream: s, value }) if s == stream => {
                let Ok(frame) = serde_json::from_str::<NodesFrame>(value.get()) else { continue };
                let nodes = match frame {
                    NodesFrame::Snapshot { nodes, .. } => {
                        state.clear();
                        nodes
                    }
                    NodesFrame::Delta { nodes, .. } => nodes,
                };
                let changed: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
                for n in nodes {
                    state.insert(n.id.clone(), n);
                }
                if let Some(code) = on_change(&state, &changed) {
                    return Ok(Ok(code));
                }
            }
            Some(_) => {}
            None => return Ok(Err(state)),
        }
    }
}

/// Log paths of the live run's nodes, from its ledger record (written when the run starts).
fn log_paths(repo: &Path) -> (String, std::collections::BTreeMap<String, String>) {
    let records = ledger::list(&repo.join(".ci"));
    let live = records.iter().find(|r| r.outcome == "running").or(records.first());
    match live {
        Some(r) => (r.reference(), r.nodes.iter().map(|n| (n.id.clone(), n.log.clone())).collect()),
        None => (String::new(), Default::default()),
    }
}

fn progress_of(view: &NodeView, logs: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let word = view.status.progress_word()?;
    let (task, platform) = view.id.rsplit_once('@').unwrap_or((&view.id, ""));
    let mut line = serde_json::Map::new();
    line.insert("node".into(), json!(view.id));
    line.insert("recipe".into(), json!(task));
    line.insert("platform".into(), json!(platform));
    line.insert("status".into(), json!(word));
    if let Some(code) = view.exit_code {
        line.insert("exit_code".into(), json!(code));
    }
    line.insert("log".into(), json!(logs.get(&view.id).cloned().unwrap_or_default()));
    Some(serde_json::Value::Object(line).to_string())
}

fn all_settled(state: &std::collections::BTreeMap<String, NodeView>) -> bool {
    !state.is_empty() && state.values().all(|n| n.status.is_terminal())
}

/// `attach -o json` (and `attach` when stdout is not a terminal): the same NDJSON transition
/// stream as `run --progress json`, ending with the verdict.
pub fn attach(args: crate::cli::AttachArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            // Idle attach: the latest run, as it ended.
            let records = ledger::list(&repo.join(".ci"));
            let Some(record) = records.first() else {
                return Err(CliError::refused(
                    "no run in this checkout yet and none in progress: start one with odu run",
                ));
            };
            let logs = record.nodes.iter().map(|n| (n.id.clone(), n.log.clone())).collect();
            for n in &record.nodes {
                let mut view = NodeView::pending(&n.id, String::new(), vec![]);
                view.status = n.status;
                view.exit_code = n.exit_code;
                if let Some(line) = progress_of(&view, &logs) {
                    println!("{line}");
                }
            }
            let outcome = record.effective_outcome();
            eprintln!("odu: {} {outcome} (no run in progress)", record.reference());
            return Ok(i32::from(outcome != "passed"));
        };
        let json_lines = args.output == OutputFormat::Json;
        let (reference, logs) = log_paths(&repo);
        let mut last: std::collections::BTreeMap<String, NodeStatus> = Default::default();
        let result = follow_nodes(&mut client, None, |state, changed| {
            let mut out = std::io::stdout().lock();
            for id in changed {
                let view = &state[id];
                if last.get(id) != Some(&view.status) {
                    last.insert(id.clone(), view.status);
                    if !json_lines && view.status != NodeStatus::Pending {
                        let _ =
                            writeln!(out, "{} {:<9} {}", view.status.glyph(), view.status.as_str(), view.id);
                    } else if let Some(line) = progress_of(view, &logs).filter(|_| json_lines) {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            let _ = out.flush();
            all_settled(state).then(|| i32::from(settled_red(state.values().map(|n| n.status))))
        })
        .await?;
        let code = match result {
            Ok(code) => code,
            Err(state) => i32::from(!all_settled(&state) || settled_red(state.values().map(|n| n.status))),
        };
        eprintln!("odu: {reference} {}", if code == 0 { "passed" } else { "did not pass" });
        Ok(code)
    })
}

/// `wait`: blocks until a node goes red (fail-fast, the default) or every node settled, then
/// prints one JSON verdict.
pub fn wait(args: crate::cli::WaitArgs) -> CliResult<i32> {
    let repo = repo()?;
    let timeout = args.timeout.as_deref().map(parse_duration).transpose()?;
    runtime()?.block_on(async {
        let started = std::time::Instant::now();
        let Some(mut client) = connect(&repo).await? else { return Err(no_run()) };
        let (reference, _) = log_paths(&repo);
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let settle = args.settle;
        let mut fail_fast = false;
        let result = follow_nodes(&mut client, deadline, |state, _| {
            let red = state.values().any(|n| n.status.is_red());
            if red && !settle {
                fail_fast = true;
                return Some(1);
            }
            all_settled(state).then_some(0)
        })
        .await?;
        let (state, timed_out) = match &result {
            Ok(_) => (None, false),
            Err(state) => (Some(state.clone()), deadline.is_some_and(|d| tokio::time::Instant::now() >= d)),
        };
        // Re-read the final state for the verdict.
        let state = match state {
            Some(state) => state,
            None => {
                let (_, nodes) = first_snapshot(&mut client).await.unwrap_or_default();
                nodes.into_iter().map(|n| (n.id.clone(), n)).collect()
            }
        };
        let of = |s: NodeStatus| {
            state.values().filter(|n| n.status == s).map(|n| n.id.clone()).collect::<Vec<_>>()
        };
        let settled = all_settled(&state);
        let passed = settled && state.values().all(|n| n.status == NodeStatus::Ok);
        let verdict = json!({
            "run": reference,
            "settled": settled,
            "passed": passed,
            "failed": of(NodeStatus::Failed),
            "errored": of(NodeStatus::Errored),
            "cancelled": of(NodeStatus::Cancelled),
            "fail_fast_tripped": fail_fast,
            "timed_out": timed_out,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        println!("{verdict}");
        Ok(if passed { 0 } else { 1 })
    })
}

/// `90`, `90s`, `5m`, `1h`, `250ms`.
fn parse_duration(text: &str) -> CliResult<std::time::Duration> {
    let bad = || CliError::usage(format!("--timeout expects a duration like 30s, 5m or 1h, got {text:?}"));
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |at| text.split_at(at));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_millis(ms))
}
