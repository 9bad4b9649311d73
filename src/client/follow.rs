//! Following a run to its verdict: the client's copy of the run ([`Replica`], a
//! [`Run::mirror`] fed every frame), shown through a face, with what the run could not write
//! and why lanes died said after the verdict. `odu run` and `odu attach` share it.

use odu_core::run::{EXIT_INTERRUPTED, EXIT_RED};
use odu_core::{NodeId, NodeView, Run, RunEvent};
use odu_proto::{HEADER_GET, Header, HeaderFrame, NODES_GET, NodesFrame, Phase, RUN_CANCEL, TruncatedLog};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use std::io::IsTerminal;

use super::face::{Face, colors_enabled, verdict};
use super::{SurfaceClient, refused};
use crate::error::{CliError, CliResult, say};
use crate::link::client::ClientEvent;
use crate::{tool::git, trail::ledger};

/// The client's copy of a run ([`Run::mirror`]): built from the header and the first `nodes`
/// snapshot, fed every later frame; the faces show the transitions it yields.
pub struct Replica {
    pub run: Option<Run>,
    pub header: Option<Header>,
    face: Box<dyn Face>,
}

impl Replica {
    pub fn new(face: Box<dyn Face>) -> Replica {
        Replica { run: None, header: None, face }
    }

    /// Takes the run's latest header.
    pub fn observe_header(&mut self, header: Header) {
        if let Some(run) = &mut self.run {
            let _ = run.apply(RunEvent::HeaderObserved(header.clone()));
        }
        self.header = Some(header);
    }

    /// [`Replica::absorb`], then writes out what it printed.
    pub fn apply(&mut self, views: Vec<NodeView>, snapshot_order: Option<Vec<String>>) {
        self.absorb(views, snapshot_order);
        self.face.flush();
    }

    /// Applies node views, the face's lines kept for the next [`Replica::flush`]; the first
    /// call (with the header known) builds the copy, whose snapshot replays what happened
    /// before this client subscribed as the transitions it missed.
    pub fn absorb(&mut self, views: Vec<NodeView>, snapshot_order: Option<Vec<String>>) {
        if self.run.is_none() {
            let (Some(header), Some(order)) = (&self.header, snapshot_order) else { return };
            let order: Vec<NodeId> = order.iter().filter_map(|id| NodeId::parse(id)).collect();
            let run = Run::mirror(header, &order, &views);
            self.face.start(&run);
            self.run = Some(run);
        }
        let run = self.run.as_mut().expect("built above");
        let fx = run.apply(RunEvent::Observed { views });
        for change in &fx.transitions {
            self.face.transition(run, change);
        }
    }

    /// Writes out the lines kept so far.
    pub fn flush(&mut self) {
        self.face.flush();
    }

    /// Whether every node this replica knows is terminal.
    pub fn settled(&self) -> bool {
        self.run.as_ref().is_some_and(Run::settled)
    }

    pub fn tick(&mut self) {
        if let Some(run) = &self.run {
            self.face.tick(run);
        }
    }

    /// When the face wants its next [`Replica::tick`], if ever.
    pub fn next_tick(&self) -> Option<tokio::time::Instant> {
        self.face.next_tick().map(|after| tokio::time::Instant::now() + after)
    }

    pub fn finish(&mut self) {
        self.face.flush();
        if let Some(run) = &self.run {
            self.face.finish(run);
        }
    }
}

/// Follows run `run` to its end through `face`, then prints the verdict (listing every node
/// with `summary_all`, else those not ok). With `owned`, Ctrl-C cancels the run (a second
/// Ctrl-C leaves at once); otherwise it only leaves.
pub async fn follow(
    client: &mut SurfaceClient,
    run: &str,
    face: Box<dyn Face>,
    owned: bool,
    summary_all: bool,
    post_wait: Option<std::time::Duration>,
) -> CliResult<i32> {
    let mut replica = Replica::new(face);
    let header_stream = client.send(HEADER_GET, json!({"run": run})).await.map_err(refused)?;
    let nodes_stream = client.send(NODES_GET, json!({"run": run})).await.map_err(refused)?;
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    // Only a face that animates (or says what still runs after a quiet minute) wakes this
    // client between frames; one that prints transitions sleeps until the run changes.
    let mut tick_at = replica.next_tick();
    let mut pending_views: Vec<(Vec<NodeView>, Option<Vec<String>>)> = Vec::new();
    let mut cancelling = false;
    loop {
        let interrupt = tokio::select! {
            event = client.next() => {
                match event.map_err(refused)? {
                    Some(ClientEvent::Item { stream, value }) if stream == header_stream => {
                        let Ok(HeaderFrame::Snapshot { header, .. }) = serde_json::from_str(value.get()) else { continue };
                        let ended = header.phase == Phase::Ended;
                        replica.observe_header(header);
                        for (views, order) in pending_views.drain(..) {
                            replica.absorb(views, order);
                        }
                        if ended {
                            replica.flush();
                            // The run's own client gives GitHub a bounded while to take
                            // what the run posts.
                            let deadline = tokio::time::Instant::now() + post_wait.unwrap_or_default();
                            if post_wait.is_some() {
                                await_posting(client, header_stream, &mut replica, deadline).await;
                            }
                            break;
                        }
                    }
                    Some(ClientEvent::Item { stream, value }) if stream == nodes_stream => {
                        let (views, order) = match serde_json::from_str::<NodesFrame>(value.get()) {
                            Ok(NodesFrame::Snapshot { order, nodes, .. }) => (nodes, Some(order)),
                            Ok(NodesFrame::Delta { nodes, .. }) => (nodes, None),
                            Err(_) => continue,
                        };
                        if replica.header.is_none() {
                            pending_views.push((views, order));
                        } else {
                            replica.absorb(views, order);
                        }
                    }
                    Some(ClientEvent::Response { id, result: Err(e) }) if id == header_stream || id == nodes_stream => {
                        replica.finish();
                        return Err(CliError::refused(e.message));
                    }
                    Some(_) => {}
                    None => {
                        replica.finish();
                        return Err(CliError::refused(format!(
                            "the server went away before run {run} ended (see .ci/odu.serve.log): odu runs shows it incomplete"
                        )));
                    }
                }
                false
            }
            () = crate::clock::until(tick_at) => {
                replica.tick();
                tick_at = replica.next_tick();
                false
            }
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
        };
        // One write for a burst: what the frames already here print goes out with theirs.
        if !client.has_buffered() {
            replica.flush();
        }
        // A follower whose reader went away is done. The run's own client goes on to the
        // verdict: its exit code is the run's, whoever reads its output.
        if !owned && crate::error::stdout_closed() {
            return Err(CliError::stdout_closed());
        }
        if interrupt {
            if cancelling || !owned {
                replica.finish();
                if owned {
                    say(format!("odu: left run {run} while it stops: odu status shows how it ended"));
                }
                return Ok(EXIT_INTERRUPTED);
            }
            cancelling = true;
            say("odu: interrupted: stopping every node (press Ctrl-C again to leave at once)");
            let _ = client.send(RUN_CANCEL, json!({"run": run})).await;
        }
    }
    // The run ended. Once settled a node never changes again (a rerun is a new run), so a
    // settled replica is final; one that lags behind takes a fresh snapshot.
    let _ = client.cancel_stream(nodes_stream).await;
    if !replica.settled()
        && let Ok(NodesFrame::Snapshot { order, nodes, .. }) =
            super::first_item(client, NODES_GET, json!({"run": run})).await
    {
        replica.apply(nodes, Some(order));
    }
    replica.finish();
    if !owned && crate::error::stdout_closed() {
        return Err(CliError::stdout_closed());
    }
    let Some(run) = &replica.run else {
        let header = replica.header.as_ref().expect("the header ended the loop");
        for line in
            unwritten(header.run.as_str(), &header.truncated_logs, header.record_error.as_deref(), None)
        {
            say(format!("odu: {line}"));
        }
        return Ok(EXIT_RED);
    };
    Ok(report_end(run, summary_all, replica.header.as_ref()))
}

/// Says how a run ended on stderr (the verdict, the GitHub statuses its last `header` says are
/// owed, setups that failed, what it could not write) and returns the exit code of its verdict.
pub fn report_end(run: &Run, all: bool, header: Option<&odu_proto::Header>) -> i32 {
    let summary = verdict(run, colors_enabled(std::io::stderr().is_terminal()), all);
    say(summary.trim_end_matches('\n'));
    if let Some(line) = header.and_then(posting_warning) {
        say(line);
    }
    for line in setup_failures(run) {
        say(format!("odu: {line}"));
    }
    for line in unwritten(&run.meta().run, run.truncated_logs(), run.record_error(), Some(run)) {
        say(format!("odu: {line}"));
    }
    super::exit_code(run, EXIT_RED)
}

/// Reads the ended run's header until its poster owes GitHub nothing (or gave up), or until
/// `deadline`.
async fn await_posting(
    client: &mut SurfaceClient,
    header_stream: u64,
    replica: &mut Replica,
    deadline: tokio::time::Instant,
) {
    let owing = |replica: &Replica| {
        replica.header.as_ref().and_then(|h| h.posting.as_ref()).is_some_and(|p| p.trying)
    };
    while owing(replica) {
        let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, client.next()).await else { return };
        if let ClientEvent::Item { stream, value } = event
            && stream == header_stream
            && let Ok(HeaderFrame::Snapshot { header, .. }) = serde_json::from_str(value.get())
        {
            replica.observe_header(header);
        }
    }
}

/// One line while a run still owes GitHub statuses (or gave up on some).
pub fn posting_warning(header: &odu_proto::Header) -> Option<String> {
    let posting = header.posting.as_ref().filter(|p| p.owed > 0)?;
    let n = posting.owed;
    let statuses = if n == 1 { "1 GitHub status" } else { &format!("{n} GitHub statuses") };
    let why = posting.last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default();
    Some(if posting.trying {
        format!(
            "odu: ⚠ {statuses} not posted yet{why}: the server keeps posting; odu status shows what is owed"
        )
    } else {
        format!("odu: ⚠ {statuses} never reached GitHub{why}: the run's record lists them under unposted")
    })
}

/// What the run could not write to the checkout's disk, one line each: the logs cut short
/// (their nodes are errored) and the run's record.
fn unwritten(
    reference: &str,
    truncated: &[TruncatedLog],
    record_error: Option<&str>,
    run: Option<&Run>,
) -> Vec<String> {
    let mut lines: Vec<String> = truncated
        .iter()
        .map(|cut| {
            let log = run.map_or(".ci".to_string(), |run| run.log_path(&cut.node));
            format!(
                "the log of {} is truncated: {}: the node is errored; free space under .ci, then odu rerun {} (log: {log})",
                cut.node, cut.reason, cut.node
            )
        })
        .collect();
    if let Some(error) = record_error {
        lines.push(format!(
            "run {reference} was not recorded: {error}: the ledger does not hold how it ended; free space under .ci"
        ));
    }
    lines
}

/// Node `id`'s log of run `reference` (`<label>#<seq>`): that run's own, never a later one's.
fn run_log(ci: &std::path::Path, reference: &str, id: &str) -> Result<std::fs::File, ledger::TrailError> {
    let record = ledger::find(ci, Some(reference)).map_err(|e| ledger::TrailError::Io {
        path: ci.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::NotFound, e),
    })?;
    ledger::open_run_log(ci, &record, id, ledger::Access::Read)
}

/// Why each lane that died or failed its setup ended, from what odu wrote to its `_ci-setup`
/// log (the `lane … died` line, else its last line): the verdict alone shows only errored and
/// skipped nodes.
fn setup_failures(run: &Run) -> Vec<String> {
    // A run whose every node passed has no failure to explain: its logs are not read.
    if run.outcome() == odu_core::status::Outcome::Passed {
        return Vec::new();
    }
    let repo = std::env::current_dir().ok().and_then(|d| git::toplevel_quick(&d).ok());
    run.nodes()
        .filter(|(id, _)| id.task == odu_core::SETUP)
        .filter_map(|(id, view)| {
            // A setup log that could not even be created still leaves a line here.
            let ci = repo.as_ref()?.join(".ci");
            let mut text = Vec::new();
            if let Ok(mut file) = run_log(&ci, &run.meta().run, &id.to_string()) {
                let _ = std::io::Read::read_to_end(&mut file, &mut text);
            }
            let text = String::from_utf8_lossy(&text);
            let lane = format!("lane {}", id.platform);
            let mut said = text.lines().rev().filter_map(|l| l.strip_prefix("[odu] "));
            let why = match said.clone().find(|l| l.starts_with(&format!("{lane} died"))) {
                Some(died) => died.to_string(),
                None if view.status.is_red() => match said.next() {
                    Some(last) => format!("{lane}: {last}"),
                    None => {
                        format!("{lane}: its setup failed before it could write why (see .ci/odu.serve.log)")
                    }
                },
                None => return None,
            };
            Some(format!("{why} (log: {})", run.log_path(id)))
        })
        .collect()
}
