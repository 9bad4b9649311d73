//! The tools: each an input type (its JSON schema derived from it) and an async function that
//! asks the checkout's server (or reads the ledger) as the matching CLI command does, and
//! answers one JSON object.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use odu_core::NodeId;
use odu_proto::{NODE_RERUN, Phase, RUN_START, RUNS_GET, RunsFrame, Started};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Checkout;
use crate::client::query::{cancel_request, header_of, nodes_of, run_params};
use crate::client::waiting::{WaitFor, wait_for};
use crate::client::{SurfaceClient, connect, ensure, ensure_listed, first_item, mirror_of, refused};
use crate::clock::now_ms;
use crate::error::{CliError, CliResult};
use crate::trail::ledger;

/// What a tool says when nothing serves the checkout.
const NO_SERVER: &str =
    "no run in progress in this checkout (nothing serves .ci/odu.sock): start one with the run tool";

/// The most one `logs` call returns.
pub const MAX_LOG_BYTES: u64 = 1024 * 1024;
/// What `logs` returns by default: the last 16 KiB.
pub const DEFAULT_LOG_BYTES: u64 = 16 * 1024;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInput {
    /// Recipes to run, as `recipe` (every platform) or `recipe@platform` (one lane); empty: the
    /// whole pipeline.
    #[serde(default)]
    pub selectors: Vec<String>,
    /// Use this recipe as the root instead of the `[metadata("ci")]` one.
    pub root: Option<String>,
    /// Only run these platforms.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Run the selected recipes without their dependencies.
    #[serde(default)]
    pub no_deps: bool,
    /// Run the live working tree (dirty or not) instead of a snapshot of HEAD; posts no statuses.
    #[serde(default)]
    pub no_strict: bool,
    /// A strict run that posts no GitHub statuses.
    #[serde(default)]
    pub no_post: bool,
    /// Cancel the run in progress and start this one.
    #[serde(default)]
    pub supersede: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitInput {
    /// The run (`<sha7>#<seq>`); default: the live run, else the latest.
    pub run_id: Option<String>,
    /// Return at the first red node (default true); false waits for every node to settle.
    pub fail_fast: Option<bool>,
    /// Give up after this many milliseconds (the verdict then says `timed_out`).
    pub timeout_ms: Option<u64>,
    /// Refuse when the run is of another commit (a full sha or a prefix of at least 7).
    pub expected_sha: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIdInput {
    /// The run (`<sha7>#<seq>`); default: the live run, else the latest.
    pub run_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsInput {
    /// The node: a full id (`ci::e2e@x86_64-linux`), `recipe@platform`, or a recipe name.
    pub node: String,
    /// The run (`<sha7>#<seq>`); default: the live run, else the latest.
    pub run_id: Option<String>,
    /// The last this many bytes of the log (default 16384); ignored with `offset`.
    pub tail_bytes: Option<u64>,
    /// Read from this byte offset (a `next_offset` of an earlier call) instead of the tail.
    pub offset: Option<u64>,
    /// With `offset`: at most this many bytes (default 16384, at most 1 MiB).
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunInput {
    /// A node id, a recipe name (every platform's node) or `@platform` (that lane's red nodes).
    pub node: String,
    /// The run (`<sha7>#<seq>`); default: the live run, else the latest.
    pub run_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// A node id, a recipe name or `@platform`; without it, the whole run.
    pub node: Option<String>,
    /// The run (`<sha7>#<seq>`); default: the live run.
    pub run_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsInput {
    /// At most this many runs, newest first (default 20).
    pub limit: Option<usize>,
}

async fn served(checkout: &Checkout) -> CliResult<SurfaceClient> {
    connect(&checkout.repo).await?.ok_or_else(|| CliError::refused(NO_SERVER))
}

pub async fn run(checkout: &Checkout, input: RunInput) -> CliResult<Value> {
    let params = odu_proto::StartParams {
        selectors: input.selectors,
        flags: odu_proto::StartFlags {
            platform: input.platforms,
            root: input.root,
            no_deps: input.no_deps,
            no_post: input.no_post,
            no_strict: input.no_strict,
            supersede: input.supersede,
            ..Default::default()
        },
        env: Some(std::env::vars().collect()),
    };
    // As `odu run`: without a server, a refused run starts nothing and leaves nothing behind.
    let mut client = match connect(&checkout.repo).await? {
        Some(client) => client,
        None => {
            let listing = (checkout.preflight)(&checkout.repo, &params)?;
            ensure_listed(&checkout.repo, &checkout.idle, listing).await?
        }
    };
    let answer = client
        .call(RUN_START, serde_json::to_value(&params).expect("params serialize"))
        .await
        .map_err(refused)?;
    let started: Started = serde_json::from_value(answer)
        .map_err(|e| CliError::refused(format!("the server answered run.start oddly: {e}")))?;
    Ok(json!({
        "run": started.run,
        "pipeline": started.pipeline,
        "label": started.label,
        "lanes": started.lanes,
        "hosts_source": started.hosts_source,
        "notes": started.notes,
        "next": "call wait with this run_id for its verdict, status for its nodes",
    }))
}

pub async fn wait(checkout: &Checkout, input: WaitInput) -> CliResult<Value> {
    let mut client = served(checkout).await?;
    let header = header_of(&mut client, &input.run_id).await?;
    if let Some(expected) = input.expected_sha.as_deref().map(str::trim) {
        if expected.len() < 7 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CliError::usage(format!(
                "expected_sha {expected:?} is no commit: pass the full sha or at least its first 7 hex digits (git rev-parse HEAD)"
            )));
        }
        if !header.sha.starts_with(&expected.to_ascii_lowercase()) {
            return Err(CliError::refused(format!(
                "run {} is of commit {}, not {expected}: start a run of this commit with the run tool (supersede: true replaces the live one)",
                header.run, header.sha
            )));
        }
    }
    let how = WaitFor {
        fail_fast: input.fail_fast.unwrap_or(true),
        timeout: input.timeout_ms.map(std::time::Duration::from_millis),
    };
    let verdict = wait_for(&mut client, &header, &how).await?;
    let unposted = ledger::find(&checkout.repo.join(".ci"), Some(&verdict.run))
        .map(|record| record.unposted)
        .unwrap_or_default();
    let mut value = serde_json::to_value(&verdict).expect("a verdict serializes");
    value["sha"] = json!(header.sha);
    value["unposted"] = json!(unposted);
    Ok(value)
}

pub async fn status(checkout: &Checkout, input: RunIdInput) -> CliResult<Value> {
    let Some(mut client) = connect(&checkout.repo).await? else {
        // With nothing serving, the run from the ledger.
        let record = ledger::find(&checkout.repo.join(".ci"), input.run_id.as_deref())
            .map_err(|e| CliError::refused(format!("{e}: start a run with the run tool")))?;
        let nodes: Vec<Value> = record
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id, "status": n.status, "exit_code": n.exit_code,
                    "duration_ms": n.duration_ms, "log": checkout.repo.join(&n.log),
                })
            })
            .collect();
        return Ok(json!({
            "run": record.reference(), "sha": record.sha, "pipeline": record.pipeline, "live": false,
            "outcome": record.outcome, "nodes": nodes,
        }));
    };
    let header = header_of(&mut client, &input.run_id).await?;
    let (order, views) = nodes_of(&mut client, &header.run).await?;
    let run = mirror_of(&header, &order, views.clone());
    let nodes: Vec<Value> = views
        .iter()
        .map(|n| {
            let log = NodeId::parse(&n.id).map(|id| checkout.repo.join(run.log_path(&id)));
            json!({
                "id": n.id, "status": n.status, "exit_code": n.exit_code,
                "duration_ms": n.duration_ms, "log": log,
            })
        })
        .collect();
    Ok(json!({
        "run": header.run, "sha": header.sha, "pipeline": header.pipeline,
        "live": header.phase != Phase::Ended, "outcome": header.outcome, "nodes": nodes,
    }))
}

/// A page of node `node`'s log of a run, read from its trail file: never more than
/// [`MAX_LOG_BYTES`] in memory, whatever the log's size. The node is resolved against the live
/// run's nodes (or the record's), as `odu logs` resolves it.
pub async fn logs(checkout: &Checkout, input: LogsInput) -> CliResult<Value> {
    let ci = checkout.repo.join(".ci");
    let (reference, live_ids) = match connect(&checkout.repo).await? {
        Some(mut client) => {
            let header = header_of(&mut client, &input.run_id).await?;
            let (order, _) = nodes_of(&mut client, &header.run).await?;
            (Some(header.run), order)
        }
        None => (input.run_id.clone(), vec![]),
    };
    let record = ledger::find(&ci, reference.as_deref())
        .map_err(|e| CliError::refused(format!("{e}: start a run with the run tool")))?;
    let ids: Vec<String> =
        if live_ids.is_empty() { record.nodes.iter().map(|n| n.id.clone()).collect() } else { live_ids };
    let id = odu_core::node_id::resolve_node_aliased(&ids, &input.node, &record.aliases)
        .map_err(|e| CliError::refused(format!("{e} (the status tool lists the nodes)")))?;
    let mut file = match ledger::open_run_log(&ci, &record, &id, ledger::Access::Read) {
        Ok(file) => file,
        Err(ledger::TrailError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::refused(format!(
                "{id} has no log in run {}: it has not started (or never ran); see its status, or wait",
                record.reference()
            )));
        }
        Err(e) => return Err(CliError::refused(format!("cannot show the log of {id}: {e}"))),
    };
    let size =
        file.metadata().map_err(|e| CliError::refused(format!("cannot read the log of {id}: {e}")))?.len();
    let (start, want) = match input.offset {
        Some(offset) => (offset.min(size), input.max_bytes.unwrap_or(DEFAULT_LOG_BYTES)),
        None => {
            let tail = input.tail_bytes.unwrap_or(DEFAULT_LOG_BYTES);
            (size.saturating_sub(tail), tail)
        }
    };
    let want = want.min(MAX_LOG_BYTES).min(size - start);
    let mut bytes = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.by_ref().take(want).read_to_end(&mut bytes))
        .map_err(|e| CliError::refused(format!("cannot read the log of {id}: {e}")))?;
    let next = start + bytes.len() as u64;
    Ok(json!({
        "run": record.reference(),
        "node": id,
        "log": own_log_path(&ci, &record, &id),
        "size": size,
        "offset": start,
        "next_offset": next,
        "eof": next >= size,
        "text": String::from_utf8_lossy(&bytes),
    }))
}

/// Where the page was read: the run's own log file (`.ci/<label>/runs/<seq>/<platform>/…`),
/// which a later run never replaces.
fn own_log_path(ci: &Path, record: &ledger::RunRecord, id: &str) -> Option<std::path::PathBuf> {
    let node = NodeId::parse(id)?;
    let latest = node.log_path(&record.label);
    let file = Path::new(&latest).file_name()?;
    Some(ledger::run_logs_dir(ci, &record.label, record.seq).join(&node.platform).join(file))
}

pub async fn rerun(checkout: &Checkout, input: RerunInput) -> CliResult<Value> {
    // A rerun of a finished run starts a new one, so a server is started if need be.
    let mut client = ensure(&checkout.repo, &checkout.idle).await?;
    let mut params = run_params(&input.run_id);
    params["id"] = json!(input.node);
    params["env"] = json!(std::env::vars().collect::<BTreeMap<String, String>>());
    let answer = client.call(NODE_RERUN, params).await.map_err(refused)?;
    let run = answer.get("run").cloned().unwrap_or(Value::Null);
    let started = answer.get("started").is_some();
    Ok(json!({
        "run": run,
        "node": input.node,
        "new_run": started,
        "next": if started {
            "that run had ended: this started a new run; call wait with its run_id"
        } else {
            "the node (and what needs it) runs again in the same run; call wait"
        },
    }))
}

pub async fn cancel(checkout: &Checkout, input: CancelInput) -> CliResult<Value> {
    let mut client = served(checkout).await?;
    let header = header_of(&mut client, &input.run_id).await?;
    let mut params = json!({ "run": header.run });
    let target = input.node.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let (method, what) = cancel_request(target, &mut params);
    client.call(method, params).await.map_err(refused)?;
    Ok(json!({ "run": header.run, "cancelled": what }))
}

pub async fn runs(checkout: &Checkout, input: RunsInput) -> CliResult<Value> {
    let limit = input.limit.unwrap_or(20);
    let served = match connect(&checkout.repo).await? {
        Some(mut client) => match first_item(&mut client, RUNS_GET, json!({})).await {
            Ok(RunsFrame::Snapshot { runs, .. }) => Some(runs),
            Ok(RunsFrame::Delta { .. }) | Err(_) => None,
        },
        None => None,
    };
    let runs = match served {
        Some(runs) => runs,
        None => {
            let (runs, rejected) = ledger::summaries(&checkout.repo.join(".ci"), Some(now_ms()))
                .map_err(|e| CliError::refused(e.to_string()))?;
            for note in &rejected {
                eprintln!("odu: {note}");
            }
            runs
        }
    };
    let runs: Vec<_> = runs.into_iter().take(limit).collect();
    Ok(json!({ "runs": runs }))
}
