//! `odu monitor` (and `odu attach` on a terminal): the full-screen dashboard of a run over the
//! socket surface. [`state`] is the dashboard apart from any terminal, [`view`] draws it,
//! [`keys`] is the one key table, [`log`] the focused node's bounded log. The driver here
//! keeps the shown run's copy ([`odu_core::Run::mirror`]) from the `header` and `nodes`
//! streams, follows the focused node's `nodeLog` stream (a finished node's trail file; a log
//! that comes faster than the screen shows it, more than the ring holds within a second,
//! through the run's own log file, its size checked once a frame), sends reruns and cancels as
//! `odu rerun` and `odu cancel` do, and redraws at most 30 times a second, only when something
//! changed or a second ticked. With no server it shows the
//! ledger's latest run and looks for a server once a second; a run that starts is shown.
//!
//! The terminal is restored on every way out: leaving, the run's end (attach), a signal, the
//! socket closing, and a panic (a hook restores it before the panic is reported).

pub mod keys;
pub mod log;
pub mod state;
pub mod view;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossterm::event::{Event, KeyEventKind, MouseButton, MouseEventKind};
use odu_core::run::{EXIT_INTERRUPTED, EXIT_RED};
use odu_core::{NodeId, NodeView, Run, RunEvent};
use odu_proto::{
    HEADER_GET, Header, HeaderFrame, LogItem, NODE_CANCEL, NODE_LOG_GET, NODE_RERUN, NODES_GET, NodesFrame,
    Phase, RUN_CANCEL, RUNS_GET, RunOutcome, RunSummary, RunsFrame,
};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use self::state::{Ask, Dash, Request};
use super::query::{header_of, stored_mirror};
use super::{SurfaceClient, connect, mirror_of};
use crate::clock::now_ms;
use crate::error::{CliError, CliResult};
use crate::link::client::{ClientError, ClientEvent};
use crate::trail::ledger;

/// The shortest time between two frames (30 a second at most).
const FRAME: Duration = Duration::from_millis(34);
/// How often durations tick and a dashboard with no server looks for one.
const TICK: Duration = Duration::from_secs(1);

/// Whether the dashboard can be shown: stdin and stdout are a terminal that can address its
/// cursor (`TERM=dumb` cannot).
pub fn usable() -> bool {
    std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb" && !t.is_empty())
}

/// How the dashboard was asked for.
pub struct Options {
    /// The run to show; default: the live run, else the latest.
    pub run: Option<String>,
    /// Leave when the shown run ends, with its verdict (attach); else stay and show the next.
    pub leave_at_end: bool,
    /// The idle timeout of a server a rerun starts when none is up.
    pub idle: &'static str,
}

/// The terminal in the dashboard's modes; dropping it restores the terminal.
struct Screen {
    terminal: ratatui::Terminal<ratatui::backend::CrosstermBackend<std::io::BufWriter<std::io::Stdout>>>,
}

fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::event::DisableMouseCapture,
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl Screen {
    fn enter() -> CliResult<Screen> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        let fail = |e: std::io::Error| CliError::refused(format!("cannot take over the terminal: {e}"));
        crossterm::terminal::enable_raw_mode().map_err(fail)?;
        let screen = Screen {
            // A frame is one write.
            terminal: ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(
                std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
            ))
            .map_err(fail)?,
        };
        crossterm::execute!(
            std::io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::event::EnableMouseCapture,
            crossterm::cursor::Hide
        )
        .map_err(fail)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// The streams the driver reads.
#[derive(Default)]
struct Streams {
    header: Option<u64>,
    nodes: Option<u64>,
    runs: Option<u64>,
    log: Option<u64>,
}

/// How the focused node's log is followed besides its stream.
#[derive(Default)]
struct Tail {
    /// The log comes faster than the screen shows it: the pane follows the node's trail file
    /// (checked once a frame), and the `nodeLog` stream is dropped.
    tailing: bool,
    /// Log bytes the stream brought since the last tick.
    log_rate: usize,
    /// The node followed through its file ended and its stream is not taken again until it
    /// runs again (a new subscriber replays the whole log).
    detached: bool,
}

/// How the loop ended.
enum End {
    /// The user left (or a signal came).
    Left,
    /// The shown run ended and the dashboard leaves with it.
    RunEnded,
    /// The server went away (attach only).
    Lost,
}

struct Driver {
    repo: PathBuf,
    dash: Dash,
    client: Option<SurfaceClient>,
    streams: Streams,
    header: Option<Header>,
    /// `nodes` frames that came before the header.
    early: Vec<NodesFrame>,
    log_node: Option<(String, NodeId)>,
    tail: Tail,
    requests: HashMap<u64, Request>,
    options: Options,
    dirty: bool,
}

/// Runs the dashboard until the user leaves (or, with `leave_at_end`, the run ends); returns
/// the exit code.
pub async fn monitor(repo: &Path, options: Options) -> CliResult<i32> {
    let mut driver = Driver {
        repo: repo.to_path_buf(),
        dash: Dash::new(super::face::colors_enabled(true)),
        client: connect(repo).await?,
        streams: Streams::default(),
        header: None,
        early: Vec::new(),
        log_node: None,
        tail: Tail::default(),
        requests: HashMap::new(),
        options,
        dirty: true,
    };
    if driver.client.is_some() {
        driver.subscribe().await?;
    } else if driver.options.leave_at_end {
        return Err(CliError::refused(
            "no run in progress in this checkout: odu runs lists the recorded ones",
        ));
    } else {
        driver.show_stored(driver.options.run.clone());
    }
    let mut screen = Screen::enter()?;
    let (tx, mut input) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = crossterm::event::read() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let end = driver.run(&mut screen, &mut input).await;
    drop(screen);
    match end? {
        End::Left if driver.options.leave_at_end => Ok(EXIT_INTERRUPTED),
        End::Left => Ok(0),
        End::RunEnded => Ok(match &driver.dash.run {
            Some(run) => super::follow::report_end(run, true, driver.header.as_ref()),
            None => EXIT_RED,
        }),
        End::Lost => Err(CliError::refused(
            "the server went away before the run ended (see .ci/odu.serve.log): odu runs shows it incomplete",
        )),
    }
}

/// What woke the loop.
enum Wake {
    Socket(Result<Option<ClientEvent>, ClientError>),
    Input(Option<Event>),
    Tick,
    Draw,
    Signal,
}

impl Driver {
    async fn run(
        &mut self,
        screen: &mut Screen,
        input: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    ) -> CliResult<End> {
        let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut sighup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_draw = tokio::time::Instant::now() - FRAME;
        loop {
            let draw_at = last_draw + FRAME;
            let wake = tokio::select! {
                event = async {
                    match self.client.as_mut() {
                        Some(client) => client.next().await,
                        None => std::future::pending().await,
                    }
                } => Wake::Socket(event),
                event = input.recv() => Wake::Input(event),
                _ = ticker.tick() => Wake::Tick,
                _ = tokio::time::sleep_until(draw_at), if self.dirty || self.tail.tailing => Wake::Draw,
                _ = sigterm.recv() => Wake::Signal,
                _ = sigint.recv() => Wake::Signal,
                _ = sighup.recv() => Wake::Signal,
            };
            match wake {
                Wake::Signal => return Ok(End::Left),
                Wake::Draw => {
                    if self.tail.tailing && self.dash.log.catch_up() {
                        self.dirty = true;
                    }
                    last_draw = tokio::time::Instant::now();
                    if !self.dirty {
                        continue;
                    }
                    self.dash.now = now_ms();
                    screen
                        .terminal
                        .draw(|frame| view::draw(frame, &mut self.dash))
                        .map_err(|e| CliError::refused(format!("cannot draw on the terminal: {e}")))?;
                    self.dirty = false;
                    // Drawing learnt how much fits: the matrix may have scrolled.
                }
                Wake::Tick => {
                    self.tail.log_rate = 0;
                    self.follow_file_end(true).await;
                    if self.client.is_none()
                        && let Some(client) = connect(&self.repo).await.ok().flatten()
                    {
                        self.client = Some(client);
                        self.subscribe().await?;
                    }
                    // Durations tick while a run goes on.
                    if self.dash.run.as_ref().is_some_and(|r| !r.settled()) || self.dash.live {
                        self.dirty = true;
                    }
                }
                Wake::Input(None) => return Ok(End::Left),
                Wake::Input(Some(event)) => {
                    if let Some(end) = self.input(event).await? {
                        return Ok(end);
                    }
                }
                Wake::Socket(Ok(Some(event))) => {
                    if let Some(end) = self.socket(event).await? {
                        return Ok(end);
                    }
                }
                Wake::Socket(_) => {
                    // The server closed the link (or broke it).
                    self.client = None;
                    self.tail = Tail::default();
                    self.streams = Streams::default();
                    if self.options.leave_at_end {
                        return Ok(End::Lost);
                    }
                    self.dash.note = Some("the server went away: showing the ledger".into());
                    self.show_stored(self.dash.run.as_ref().map(|r| r.meta().run.clone()));
                }
            }
        }
    }

    /// Subscribes to the run list and to the wanted run (or the live, else the latest).
    async fn subscribe(&mut self) -> CliResult<()> {
        let Some(client) = self.client.as_mut() else { return Ok(()) };
        if !self.options.leave_at_end {
            self.streams.runs = Some(client.send(RUNS_GET, json!({})).await.map_err(super::refused)?);
        }
        let wanted = self.options.run.clone();
        self.open(wanted).await
    }

    /// Shows run `run` (default: the live, else the latest) through the server.
    async fn open(&mut self, run: Option<String>) -> CliResult<()> {
        let Some(client) = self.client.as_mut() else {
            self.show_stored(run);
            return Ok(());
        };
        for stream in [self.streams.header.take(), self.streams.nodes.take(), self.streams.log.take()]
            .into_iter()
            .flatten()
        {
            let _ = client.cancel_stream(stream).await;
        }
        self.header = None;
        self.early.clear();
        self.log_node = None;
        self.tail = Tail::default();
        let header = match header_of(client, &run).await {
            Ok(header) => header,
            // A server with no run yet: the run list says when one starts.
            Err(e) if self.options.leave_at_end => return Err(e),
            Err(_) => {
                self.show_stored(run);
                return Ok(());
            }
        };
        super::query::defer_to_the_run(&header);
        let params = json!({ "run": header.run });
        self.streams.header = Some(client.send(HEADER_GET, params.clone()).await.map_err(super::refused)?);
        self.streams.nodes = Some(client.send(NODES_GET, params).await.map_err(super::refused)?);
        Ok(())
    }

    /// Shows a run from the ledger (the named one, else the latest), settled.
    fn show_stored(&mut self, run: Option<String>) {
        let ci = self.repo.join(".ci");
        // The runs from their records' heads; only the one shown is read whole.
        let Ok((recent, _)) = ledger::summaries(&ci, Some(now_ms())) else { return };
        self.dash.recent = recent;
        let record = ledger::find(&ci, run.as_deref()).or_else(|_| ledger::find(&ci, None));
        if let Ok(record) = record {
            self.dash.posting = super::follow::posting_warning(&ledger::stored_header(&record))
                .map(|l| l.trim_start_matches("odu: ").to_string());
            self.dash.show(stored_mirror(&record), false);
            self.log_node = None;
            self.follow_focus_log();
        }
        self.dirty = true;
    }

    async fn input(&mut self, event: Event) -> CliResult<Option<End>> {
        let ask = match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                if !self.dash.log.has_source() {
                    self.dash.log.set_source(self.trail_source());
                }
                self.dash.key(key)
            }
            Event::Mouse(mouse) => match mouse.kind {
                MouseEventKind::Down(MouseButton::Left) => self.dash.click(mouse.column, mouse.row),
                MouseEventKind::ScrollUp => self.dash.wheel(true),
                MouseEventKind::ScrollDown => self.dash.wheel(false),
                _ => Ask::Nothing,
            },
            Event::Resize(..) => Ask::Redraw,
            _ => Ask::Nothing,
        };
        match ask {
            Ask::Nothing => {}
            Ask::Redraw => {
                self.dirty = true;
                self.follow_focus_log_live().await;
            }
            Ask::Send(request) => {
                self.dirty = true;
                self.send(request).await?;
            }
            Ask::Open(run) => {
                self.dirty = true;
                self.open(Some(run)).await?;
            }
            Ask::Quit => return Ok(Some(End::Left)),
        }
        Ok(None)
    }

    /// Sends a rerun or a cancel, as `odu rerun` and `odu cancel` do; the answer comes as a
    /// note. A rerun with no server starts one (a finished run's rerun is a new run).
    async fn send(&mut self, request: Request) -> CliResult<()> {
        let Some(run) = self.dash.run.as_ref().map(|r| r.meta().run.clone()) else { return Ok(()) };
        if self.client.is_none() && matches!(request, Request::Rerun(_)) {
            self.client = Some(super::ensure(&self.repo, self.options.idle).await?);
            self.subscribe().await?;
        }
        let Some(client) = self.client.as_mut() else {
            self.dash.note = Some("no run in progress: nothing to cancel".into());
            return Ok(());
        };
        let (method, params) = match &request {
            Request::Rerun(id) => (
                NODE_RERUN,
                json!({
                    "run": run,
                    "id": id.to_string(),
                    "env": std::env::vars().collect::<std::collections::BTreeMap<String, String>>(),
                }),
            ),
            Request::Cancel(id) => (NODE_CANCEL, json!({ "run": run, "id": id.to_string() })),
            Request::CancelRun => (RUN_CANCEL, json!({ "run": run })),
        };
        let id = client.send(method, params).await.map_err(super::refused)?;
        self.dash.note = Some(format!("asked to {}…", request.describe()));
        self.requests.insert(id, request);
        Ok(())
    }

    async fn socket(&mut self, event: ClientEvent) -> CliResult<Option<End>> {
        match event {
            ClientEvent::Item { stream, value } => {
                if Some(stream) == self.streams.log {
                    let Ok(item) = LogItem::parse(value.get()) else { return Ok(None) };
                    match item {
                        LogItem::Snapshot { generation, .. } => {
                            self.tail = Tail::default();
                            self.dash.log.restart(generation);
                            self.push_log(&item).await;
                        }
                        LogItem::Append { .. } | LogItem::Missed { .. } if self.tail.tailing => {}
                        LogItem::Append { .. } => self.push_log(&item).await,
                        LogItem::Missed { bytes } => self.dash.log.missed(bytes),
                        LogItem::End => self.dash.log.ended = true,
                    }
                    self.dirty = true;
                } else if Some(stream) == self.streams.header {
                    let Ok(HeaderFrame::Snapshot { header, .. }) = serde_json::from_str(value.get()) else {
                        return Ok(None);
                    };
                    self.header(header).await;
                } else if Some(stream) == self.streams.nodes {
                    let Ok(frame) = serde_json::from_str::<NodesFrame>(value.get()) else { return Ok(None) };
                    if self.header.is_none() {
                        self.early.push(frame);
                    } else {
                        self.nodes(frame).await;
                    }
                } else if Some(stream) == self.streams.runs {
                    let Ok(frame) = serde_json::from_str::<RunsFrame>(value.get()) else { return Ok(None) };
                    self.runs(frame).await?;
                }
            }
            ClientEvent::Response { id, result } => {
                if let Some(request) = self.requests.remove(&id) {
                    self.dash.note = Some(match result {
                        Ok(answer) => {
                            match answer.get("started").and(answer.get("run")).and_then(|r| r.as_str()) {
                                Some(run) => format!("that run had ended: started run {run}"),
                                None => format!("done: {}", request.describe()),
                            }
                        }
                        Err(e) => format!("refused: {}", e.message),
                    });
                    self.dirty = true;
                } else if let Err(e) = result {
                    // A stream the server refused: say why.
                    self.dash.note = Some(e.message);
                    self.dirty = true;
                }
            }
        }
        // Attach leaves once the run ended and its copy settled.
        let ended = self.header.as_ref().is_some_and(|h| h.phase == Phase::Ended);
        if self.options.leave_at_end && ended && self.dash.run.as_ref().is_some_and(Run::settled) {
            return Ok(Some(End::RunEnded));
        }
        Ok(None)
    }

    async fn push_log(&mut self, item: &LogItem<'_>) {
        let mut bytes = Vec::new();
        if item.decode_append(&mut bytes).is_ok() {
            self.dash.log.push(&bytes);
            self.tail.log_rate += bytes.len();
        }
        if self.tail.log_rate > log::RING_BYTES {
            self.tail_file().await;
        }
    }

    /// More than the ring holds came within a second: more than the screen can show. The pane
    /// follows the node's trail file instead, and the stream (every byte decoded on both ends)
    /// is dropped.
    async fn tail_file(&mut self) {
        if !self.dash.log.has_source() {
            self.dash.log.set_source(self.trail_source());
        }
        let (Some(client), true) = (self.client.as_mut(), self.dash.log.has_source()) else { return };
        if let Some(stream) = self.streams.log.take() {
            let _ = client.cancel_stream(stream).await;
        }
        self.tail.tailing = true;
        self.dash.log.follow_file();
        self.dirty = true;
    }

    /// The end of a node followed through its file: its status says so (the stream is gone);
    /// the file is read to its end, and once more at the next tick before the pane stops
    /// looking. A node that runs again is followed through its stream again.
    async fn follow_file_end(&mut self, tick: bool) {
        let status = match (&self.log_node, &self.dash.run) {
            (Some((_, id)), Some(run)) => run.view(id).map(|v| v.status),
            _ => None,
        };
        let Some(status) = status else { return };
        if self.tail.tailing {
            if !status.is_terminal() {
                return;
            }
            self.dash.log.catch_up();
            if tick && self.dash.log.ended {
                self.tail.tailing = false;
                self.tail.detached = true;
            }
            self.dash.log.ended = true;
            self.dirty = true;
        } else if self.tail.detached && !status.is_terminal() {
            self.log_node = None;
            self.follow_focus_log_live().await;
        }
    }

    async fn header(&mut self, header: Header) {
        let ended = header.phase == Phase::Ended;
        if let Some(run) = &mut self.dash.run
            && run.meta().run == header.run
        {
            let _ = run.apply(RunEvent::HeaderObserved(header.clone()));
        }
        self.dash.posting =
            super::follow::posting_warning(&header).map(|l| l.trim_start_matches("odu: ").to_string());
        self.header = Some(header);
        for frame in std::mem::take(&mut self.early) {
            self.nodes(frame).await;
        }
        self.dirty = true;
        if ended {
            self.dash.live = false;
        }
    }

    async fn nodes(&mut self, frame: NodesFrame) {
        let Some(header) = &self.header else { return };
        match frame {
            NodesFrame::Snapshot { order, nodes, .. } => {
                let live = header.phase != Phase::Ended;
                let run = mirror_of(header, &order, nodes);
                self.dash.show(run, live);
            }
            NodesFrame::Delta { nodes, .. } => self.apply(nodes),
        }
        self.dash.changed();
        self.dirty = true;
        self.follow_focus_log_live().await;
        self.follow_file_end(false).await;
    }

    fn apply(&mut self, views: Vec<NodeView>) {
        if let Some(run) = &mut self.dash.run {
            let _ = run.apply(RunEvent::Observed { views });
        }
    }

    async fn runs(&mut self, frame: RunsFrame) -> CliResult<()> {
        let changed = match frame {
            RunsFrame::Snapshot { runs, .. } => {
                self.dash.recent = runs.clone();
                runs
            }
            RunsFrame::Delta { runs, .. } => {
                for summary in runs.iter().rev() {
                    match self.dash.recent.iter_mut().find(|r| r.run == summary.run) {
                        Some(known) => *known = summary.clone(),
                        None => self.dash.recent.insert(0, summary.clone()),
                    }
                }
                runs
            }
        };
        self.dirty = true;
        // A run that starts is shown, unless a run was named or one is shown live.
        let started: Option<&RunSummary> = changed.iter().find(|r| r.outcome == RunOutcome::Running);
        let shown = self.dash.run.as_ref().map(|r| r.meta().run.clone());
        if let Some(summary) = started
            && self.options.run.is_none()
            && Some(&summary.run) != shown.as_ref()
            && !self.dash.live
        {
            let run = summary.run.clone();
            self.open(Some(run)).await?;
        }
        Ok(())
    }

    /// The focused node's log of the shown run: the run's own file (the label's latest for a
    /// run the ledger does not hold).
    fn trail_source(&self) -> Option<Box<dyn log::Source>> {
        let run = self.dash.run.as_ref()?;
        let id = self.dash.focus.as_ref()?.to_string();
        let ci = self.repo.join(".ci");
        let file = match ledger::find(&ci, Some(&run.meta().run)) {
            Ok(record) => ledger::open_run_log(&ci, &record, &id, ledger::Access::Read),
            Err(_) => ledger::open_trail(&ci, &run.meta().label, &id, ledger::Access::Read),
        };
        file.ok().map(|f| Box::new(f) as Box<dyn log::Source>)
    }

    /// The log pane shows the focused node: of a finished run, its trail file's tail.
    fn follow_focus_log(&mut self) {
        let key = self.focus_key();
        if key == self.log_node {
            return;
        }
        self.log_node = key;
        self.tail = Tail::default();
        self.dash.log = match self.trail_source() {
            Some(source) => log::LogPane::tail_of(source),
            None => log::LogPane::default(),
        };
    }

    fn focus_key(&self) -> Option<(String, NodeId)> {
        Some((self.dash.run.as_ref()?.meta().run.clone(), self.dash.focus.clone()?))
    }

    /// The log pane follows the focused node: live from the socket while the run is live.
    async fn follow_focus_log_live(&mut self) {
        let key = self.focus_key();
        if key == self.log_node {
            return;
        }
        let (Some(client), true) = (self.client.as_mut(), self.dash.live) else {
            self.follow_focus_log();
            return;
        };
        if let Some(stream) = self.streams.log.take() {
            let _ = client.cancel_stream(stream).await;
        }
        self.log_node = key.clone();
        self.tail = Tail::default();
        let Some((run, id)) = key else { return };
        self.streams.log = client.send(NODE_LOG_GET, json!({ "run": run, "id": id.to_string() })).await.ok();
        let source = self.trail_source();
        self.dash.log = log::LogPane::new(source);
    }
}
