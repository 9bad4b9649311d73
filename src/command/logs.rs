//! `odu logs [-f]`: a node's log from the trail, or followed live through the server.

use std::io::Write;
use std::path::Path;

use odu_proto::{LogItem, NODE_LOG_GET};
use serde_json::json;

use crate::cli::LogsArgs;
use crate::client::query::{run_params, runtime, stored};
use crate::client::{connect, refused};
use crate::error::{CliError, CliResult, out, say};
use crate::link::client::ClientEvent;
use crate::trail::ledger;

pub fn logs(args: LogsArgs) -> CliResult<i32> {
    let repo = super::repo()?;
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

/// `logs` from the trail: the node's log of that run (its path derived from the run's label, seq
/// and the node id, never from the record's log string), streamed a buffer at a time whatever its size. A reader that
/// goes away ends it quietly.
fn idle_logs(repo: &Path, run: &Option<String>, node: &str) -> CliResult<i32> {
    use std::io::Read;
    let record = stored(repo, run)?;
    let ids: Vec<String> = record.nodes.iter().map(|n| n.id.clone()).collect();
    let id =
        odu_core::node_id::resolve_node_aliased(&ids, node, &record.aliases).map_err(CliError::refused)?;
    let mut file = match ledger::open_run_log(&repo.join(".ci"), &record, &id, ledger::Access::Read) {
        Ok(file) => file,
        // Another run's log is never shown in place of this run's.
        Err(e @ (ledger::TrailError::Pruned { .. } | ledger::TrailError::Replaced { .. })) => {
            return Err(CliError::refused(e.to_string()));
        }
        // A node that was skipped or cancelled before it started has no log.
        Err(ledger::TrailError::Io { error, .. })
            if error.kind() == std::io::ErrorKind::NotFound
                && let Some(node) = record.nodes.iter().find(|n| n.id == id && never_ran(n)) =>
        {
            say(format!("odu: {id} never ran ({}): it has no log", node.status));
            return Ok(0);
        }
        Err(e) => return Err(CliError::refused(format!("cannot show the log of {id}: {e}"))),
    };
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

/// A node that ended without ever starting: skipped, or cancelled while it waited.
fn never_ran(node: &ledger::NodeRecord) -> bool {
    use odu_core::NodeStatus::{Cancelled, Skipped};
    node.started_at.is_none() && matches!(node.status, Skipped | Cancelled)
}
