//! Clients of `.ci/odu.sock`: `status`, `logs`, `attach`, `wait`, `rerun`, `cancel`. With no
//! server, `status`, `logs` and `attach` answer from the ledger and the trail (idle attach).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use odu_core::run::{EXIT_PASSED, EXIT_RED};
use odu_core::status::Outcome;
use odu_core::{NodeStatus, NodeView, Run};
use odu_proto::{
    HEADER_GET, Header, HeaderFrame, LANE_CANCEL, LogItem, NODE_CANCEL, NODE_LOG_GET, NODE_RERUN, NODES_GET,
    NodesFrame, Phase, RUN_CANCEL,
};
use serde_json::json;

use crate::cli::{CancelArgs, LogsArgs, OutputFormat, RerunArgs, StatusArgs};
use crate::client::face::{Face, JsonFace, PlainFace};
use crate::clock::now_ms;
use crate::error::{CliError, CliResult, out, outln, say};
use crate::link::client::ClientEvent;
use crate::trail::ledger::{self, RunRecord};
use crate::{server::surface, tool::git};

use crate::client::refused;
use crate::client::{SurfaceClient, connect, exit_code, first_item, mirror_of};

fn repo() -> CliResult<PathBuf> {
    let cwd = super::current_dir()?;
    Ok(git::toplevel_quick(&cwd).unwrap_or(cwd))
}

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
fn defer_to_the_run(header: &Header) {
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

fn run_params(run: &Option<String>) -> serde_json::Value {
    match run {
        Some(r) => json!({ "run": r }),
        None => json!({}),
    }
}

async fn header_of(client: &mut SurfaceClient, run: &Option<String>) -> CliResult<Header> {
    let HeaderFrame::Snapshot { header, .. } = first_item(client, HEADER_GET, run_params(run)).await?;
    Ok(header)
}

/// A `nodes` snapshot: its order and views.
async fn nodes_of(client: &mut SurfaceClient, run: &str) -> CliResult<(Vec<String>, Vec<NodeView>)> {
    match first_item(client, NODES_GET, json!({ "run": run })).await? {
        NodesFrame::Snapshot { order, nodes, .. } => Ok((order, nodes)),
        NodesFrame::Delta { nodes, .. } => Ok((nodes.iter().map(|n| n.id.clone()).collect(), nodes)),
    }
}

/// A finished run's copy, from its record.
fn stored_mirror(record: &RunRecord) -> Run {
    let views = surface::stored_views(record);
    let order: Vec<String> = views.iter().map(|v| v.id.clone()).collect();
    mirror_of(&surface::stored_header(record), &order, views)
}

/// A record from the ledger (with nothing serving): the named run, or the latest. Records the
/// ledger does not trust are left out, each with a note.
fn stored(repo: &Path, run: &Option<String>) -> CliResult<RunRecord> {
    let ci = repo.join(".ci");
    ledger::recover_unserved(&ci, now_ms());
    let ledger = ledger::read(&ci).map_err(|e| CliError::refused(e.to_string()))?;
    for note in &ledger.rejected {
        eprintln!("odu: {note}");
    }
    ledger.find(run.as_deref()).cloned().map_err(CliError::refused)
}

pub fn status(args: StatusArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            return idle_status(&repo, &args.run.run, args.output);
        };
        let header = header_of(&mut client, &args.run.run).await?;
        let (order, nodes) = nodes_of(&mut client, &header.run).await?;
        let live = header.phase != Phase::Ended;
        if args.output == OutputFormat::Json {
            let rows: Vec<_> = nodes
                .iter()
                .map(|n| json!({"id": n.id, "status": n.status, "exit_code": n.exit_code, "duration_ms": n.duration_ms}))
                .collect();
            let value = json!({
                "run": header.run, "pipeline": header.pipeline, "live": live, "phase": header.phase,
                "outcome": header.outcome, "nodes": rows,
            });
            outln(serde_json::to_string_pretty(&value).expect("json"))?;
        } else {
            let state = if live { "in progress".to_string() } else { header.outcome.to_string() };
            let mut text = format!("{} {} · {} @ {}\n", header.run, state, header.pipeline, header.label);
            for n in &nodes {
                text.push_str(&format!("{} {:<9} {}\n", n.status.glyph(), n.status.as_str(), n.id));
            }
            out(text.as_bytes())?;
        }
        // A run in progress is red once it settled red.
        Ok(exit_code(&mirror_of(&header, &order, nodes), EXIT_PASSED))
    })
}

/// `status` with nothing serving: the run from the ledger.
fn idle_status(repo: &Path, run: &Option<String>, output: OutputFormat) -> CliResult<i32> {
    let record = stored(repo, run)?;
    let outcome = record.effective_outcome();
    if output == OutputFormat::Json {
        let mut value = serde_json::to_value(&record).expect("records serialize");
        value["run"] = json!(record.reference());
        value["outcome"] = json!(outcome);
        value["live"] = json!(false);
        outln(serde_json::to_string_pretty(&value).expect("json"))?;
    } else {
        outln(format!("{} {} (no run in progress; the latest run)", record.reference(), outcome))?;
        for n in &record.nodes {
            outln(format!("{} {:<9} {}", n.status.glyph(), n.status.as_str(), n.id))?;
        }
    }
    Ok(exit_code(&stored_mirror(&record), EXIT_RED))
}

pub fn logs(args: LogsArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        // Without -f, the trail file is the whole answer; -f follows the live stream.
        let client = if args.follow { connect(&repo).await? } else { None };
        let Some(mut client) = client else {
            return idle_logs(&repo, &args.run.run, &args.node);
        };
        let mut params = run_params(&args.run.run);
        params["id"] = json!(args.node);
        let stream = client.send(NODE_LOG_GET, params).await.map_err(refused)?;
        loop {
            match client.next().await.map_err(refused)? {
                Some(ClientEvent::Item { stream: s, value }) if s == stream => {
                    let item = LogItem::parse(value.get()).map_err(CliError::refused)?;
                    match item {
                        LogItem::Snapshot { .. } | LogItem::Append { .. } => {
                            let mut bytes = Vec::new();
                            let _ = item.decode_append(&mut bytes);
                            out(&bytes)?;
                        }
                        LogItem::Missed { bytes } => {
                            say(format!("odu: {bytes} bytes of this log were missed"))
                        }
                        LogItem::End => return Ok(0),
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

/// `logs` from the trail: the node's trail file (its path derived from the run's label and the
/// node id, never from the record), streamed a buffer at a time whatever its size. A reader that
/// goes away ends it quietly.
fn idle_logs(repo: &Path, run: &Option<String>, node: &str) -> CliResult<i32> {
    use std::io::Read;
    let record = stored(repo, run)?;
    let ids: Vec<String> = record.nodes.iter().map(|n| n.id.clone()).collect();
    let id = surface::resolve_node(&ids, node).map_err(CliError::refused)?;
    let mut file = ledger::open_trail(&repo.join(".ci"), &record.label, &id, ledger::Access::Read)
        .map_err(|e| CliError::refused(format!("cannot show the log of {id}: {e}")))?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CliError::refused(format!("cannot read the log of {id}: {e}"))),
        };
        if let Err(e) = out.write_all(&buf[..n]) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(0);
            }
            return Err(CliError::refused(format!("cannot write the log of {id}: {e}")));
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::refused(format!("cannot write the log of {id}: {e}")))
        }
        _ => Ok(0),
    }
}

pub fn rerun(args: RerunArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        // A rerun of a finished run starts a new one, so a server is started if need be.
        let mut client = crate::client::ensure(&repo, crate::cli::DEFAULT_IDLE).await?;
        let mut params = run_params(&args.run.run);
        params["id"] = json!(args.target);
        params["env"] = json!(std::env::vars().collect::<BTreeMap<String, String>>());
        let answer = client.call(NODE_RERUN, params).await.map_err(refused)?;
        let run = answer.get("run").and_then(|r| r.as_str()).unwrap_or("?");
        if answer.get("started").is_some() {
            say(format!(
                "odu: that run had ended: started run {run} for {} (follow it with odu attach)",
                args.target
            ));
        } else {
            say(format!("odu: reran {} in run {run} (and what needs it)", args.target));
        }
        Ok(0)
    })
}

pub fn cancel(args: CancelArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        let Some(mut client) = connect(&repo).await? else {
            say("odu: no run in progress in this checkout: nothing to cancel");
            return Ok(0);
        };
        if args.run.run.is_none() && header_of(&mut client, &None).await.is_err() {
            say("odu: no run in this checkout yet: nothing to cancel");
            return Ok(0);
        }
        let mut params = run_params(&args.run.run);
        let (method, what) = match args.target.as_deref() {
            None => (RUN_CANCEL, "the run".to_string()),
            Some("") => {
                return Err(CliError::usage(
                    "cancel takes a node id or @platform, or nothing for the whole run",
                ));
            }
            Some(t) if t.starts_with('@') => {
                params["platform"] = json!(&t[1..]);
                (LANE_CANCEL, format!("lane {}", &t[1..]))
            }
            Some(t) => {
                params["id"] = json!(t);
                (NODE_CANCEL, t.to_string())
            }
        };
        client.call(method, params).await.map_err(refused)?;
        say(format!("odu: cancelled {what}"));
        Ok(0)
    })
}

/// `attach -o json` (and `attach` when stdout is not a terminal): the same NDJSON transition
/// stream as `run --progress json`, ending with the verdict. Idle attach shows the run as it
/// ended.
pub fn attach(args: crate::cli::AttachArgs) -> CliResult<i32> {
    let repo = repo()?;
    runtime()?.block_on(async {
        let face: Box<dyn Face> = match args.output {
            OutputFormat::Json => Box::new(JsonFace::default()),
            OutputFormat::Text => Box::new(PlainFace::new(false)),
        };
        let Some(mut client) = connect(&repo).await? else {
            let record = stored(&repo, &args.run.run)?;
            let mut replica = super::run::Replica::new(face);
            let views = surface::stored_views(&record);
            replica.observe_header(surface::stored_header(&record));
            replica.apply(views.clone(), Some(views.iter().map(|v| v.id.clone()).collect()));
            replica.finish();
            if crate::error::stdout_closed() {
                return Err(CliError::stdout_closed());
            }
            let outcome = record.effective_outcome();
            say(format!("odu: {} {outcome} (no run in progress)", record.reference()));
            return Ok(replica.run.as_ref().map_or(EXIT_RED, |run| exit_code(run, EXIT_RED)));
        };
        let header = header_of(&mut client, &args.run.run).await?;
        defer_to_the_run(&header);
        super::run::follow(&mut client, &header.run, face, false).await
    })
}

/// `wait`: blocks until a node goes red (fail-fast, the default) or the run ends, then prints
/// one JSON verdict.
pub fn wait(args: crate::cli::WaitArgs) -> CliResult<i32> {
    let repo = repo()?;
    let timeout = args.timeout.as_deref().map(|t| super::parse_duration(t, "--timeout")).transpose()?;
    runtime()?.block_on(async {
        let started = std::time::Instant::now();
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
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        outln(verdict)?;
        Ok(ended_run.as_ref().map_or(EXIT_RED, |run| exit_code(run, EXIT_RED)))
    })
}
