//! How a run looks: a live matrix on a TTY, one line per transition when piped, NDJSON with
//! `--progress json`, and always a verdict summary on stderr at the end.

use std::io::Write;

use odu_core::duration::go_duration;
use odu_core::run::Transition;
use odu_core::status::Outcome;
use odu_core::{NodeId, NodeStatus, NodeView, Run};

use crate::clock::now_ms;

/// How a client shows a run: its copy of the run ([`Run::mirror`]) and each transition that
/// copy yields, in order.
pub trait Face {
    fn start(&mut self, _run: &Run) {}
    fn transition(&mut self, run: &Run, change: &Transition);
    /// Called when [`Face::next_tick`] said; faces that animate repaint here.
    fn tick(&mut self, _run: &Run) {}
    /// How long from now until this face wants its next [`Face::tick`]: `None` for a face
    /// that only follows transitions, whose client then sleeps until the run changes.
    fn next_tick(&self) -> Option<std::time::Duration> {
        None
    }
    /// Leaves the terminal clean before the verdict is printed.
    fn finish(&mut self, _run: &Run) {
        self.flush();
    }
    /// Writes out what the transitions so far printed. Called once per batch of transitions,
    /// so a burst of changes is one write, not one per line.
    fn flush(&mut self) {}
}

/// Lines waiting for the next [`Face::flush`]; written on drop too, so none is ever lost. A
/// reader that went away is noted ([`crate::error::stdout_closed`]) for the command to end on.
#[derive(Default)]
struct Pending(Vec<u8>);

impl Pending {
    fn flush(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = crate::error::out(&self.0);
        self.0.clear();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Whether to colour output written to a terminal.
pub fn colors_enabled(is_tty: bool) -> bool {
    is_tty && std::env::var_os("NO_COLOR").is_none() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

fn paint(on: bool, sgr: &str, text: &str) -> String {
    if on { format!("\x1b[{sgr}m{text}\x1b[0m") } else { text.to_string() }
}

/// The duration shown for a node: final when terminal, ticking while it runs.
pub fn shown_duration(view: &NodeView, now: u64) -> Option<String> {
    match (view.status, view.duration_ms, view.started_at) {
        (_, Some(ms), _) => Some(go_duration(ms)),
        (NodeStatus::Running, None, Some(start)) => Some(go_duration(now.saturating_sub(start))),
        _ => None,
    }
}

/// One line of the `--progress json` stream, fields in the documented order.
#[derive(serde::Serialize)]
struct ProgressLine<'a> {
    node: &'a str,
    recipe: &'a str,
    platform: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    log: &'a str,
}

/// The `--progress json` line of `change`. It says the status the node changed to, which the
/// run's copy may already have left behind: a node whose running view was folded away is heard
/// start (without an exit code) before it is heard end.
pub fn progress_line(run: &Run, change: &Transition) -> Option<String> {
    let id = &change.node;
    let view = run.view(id)?;
    let line = ProgressLine {
        node: &view.id,
        recipe: &id.task,
        platform: &id.platform,
        status: change.to.progress_word()?,
        exit_code: view.exit_code.filter(|_| change.to.is_terminal()),
        log: &run.log_path(id),
    };
    Some(serde_json::to_string(&line).expect("progress lines serialize"))
}

/// NDJSON on stdout, one line per transition (never for `pending`).
#[derive(Default)]
pub struct JsonFace {
    out: Pending,
}

impl Face for JsonFace {
    fn transition(&mut self, run: &Run, change: &Transition) {
        if let Some(line) = progress_line(run, change) {
            self.out.0.extend_from_slice(line.as_bytes());
            self.out.0.push(b'\n');
        }
    }

    fn flush(&mut self) {
        self.out.flush();
    }
}

/// One line per transition on stdout, with a heartbeat when nothing happened for a minute.
pub struct PlainFace {
    color: bool,
    last_line: std::time::Instant,
    out: Pending,
}

impl PlainFace {
    pub fn new(color: bool) -> Self {
        PlainFace { color, last_line: std::time::Instant::now(), out: Pending::default() }
    }
}

impl Face for PlainFace {
    fn transition(&mut self, run: &Run, change: &Transition) {
        let Some(node) = run.view(&change.node) else { return };
        if change.to == NodeStatus::Pending {
            return;
        }
        // The status changed to, not the node's latest: see [`progress_line`].
        let status = change.to;
        let mut line = format!("{} {:<9} {}", status.glyph(), status.as_str(), node.id);
        if status.is_terminal()
            && let Some(d) = shown_duration(node, now_ms())
        {
            line.push_str(&format!(" {d}"));
        }
        if status.is_red() {
            line.push_str(&format!("  → {}", run.log_path(&change.node)));
        }
        let _ = writeln!(self.out.0, "{}", paint(self.color, status.sgr(), &line));
        self.last_line = std::time::Instant::now();
    }

    fn flush(&mut self) {
        self.out.flush();
    }

    fn tick(&mut self, run: &Run) {
        if self.last_line.elapsed() < HEARTBEAT {
            return;
        }
        let now = now_ms();
        let running: Vec<String> = run
            .views()
            .iter()
            .filter(|n| n.status == NodeStatus::Running)
            .map(|n| format!("{} ({})", n.id, shown_duration(n, now).unwrap_or_default()))
            .collect();
        if !running.is_empty() {
            let _ = writeln!(self.out.0, "… still running: {}", running.join(", "));
            self.out.flush();
        }
        self.last_line = std::time::Instant::now();
    }

    fn next_tick(&self) -> Option<std::time::Duration> {
        Some(HEARTBEAT.saturating_sub(self.last_line.elapsed()))
    }
}

/// How long a plain face stays quiet before it says what is still running.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// The live matrix (recipes × platforms) repainted in place on a TTY. Red transitions are
/// printed above it so they stay in the scrollback. The region never takes more rows than the
/// terminal has (nor a line more columns): a pipeline that does not fit shows its running and
/// red nodes and how many more are ok ([`fit_region`]), so a redraw never leaves frames behind
/// in the scrollback.
pub struct LiveFace {
    color: bool,
    drawn: usize,
    spinner: usize,
}

impl LiveFace {
    pub fn new(color: bool) -> Self {
        LiveFace { color, drawn: 0, spinner: 0 }
    }

    fn clear(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, run: &Run, out: &mut impl Write) {
        let (width, height) = crossterm::terminal::size().unwrap_or((80, 24));
        let lines = fit_region(run, now_ms(), self.color, self.spinner, width as usize, height as usize);
        for line in &lines {
            let _ = writeln!(out, "{line}");
        }
        self.drawn = lines.len();
        let _ = out.flush();
    }
}

impl Face for LiveFace {
    fn start(&mut self, run: &Run) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[?25l");
        self.draw(run, &mut out);
    }

    fn transition(&mut self, run: &Run, change: &Transition) {
        if !change.to.is_red() {
            return;
        }
        let Some(node) = run.view(&change.node) else { return };
        let mut out = std::io::stdout().lock();
        self.clear(&mut out);
        // The status changed to, not the node's latest: see [`progress_line`].
        let status = change.to;
        let line = format!("{} {} {}  → {}", status.glyph(), status, node.id, run.log_path(&change.node));
        let _ = writeln!(out, "{}", paint(self.color, status.sgr(), &line));
        self.draw(run, &mut out);
    }

    fn next_tick(&self) -> Option<std::time::Duration> {
        Some(REPAINT)
    }

    fn tick(&mut self, run: &Run) {
        self.spinner = self.spinner.wrapping_add(1);
        let mut out = std::io::stdout().lock();
        self.clear(&mut out);
        self.draw(run, &mut out);
    }

    fn finish(&mut self, run: &Run) {
        let mut out = std::io::stdout().lock();
        self.clear(&mut out);
        self.draw(run, &mut out);
        let _ = write!(out, "\x1b[?25h");
        let _ = out.flush();
    }
}

/// Cuts `text` to `width` columns (one a char: the faces' glyphs are one column wide).
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The live region for a `width` × `height` terminal: the whole matrix when it fits (a row is
/// left for the cursor), else the header, every running and every red node (as many as fit),
/// `… N more ok` (and what else is left), and the counts line. No line is wider than `width`.
pub fn fit_region(
    run: &Run,
    now: u64,
    color: bool,
    spinner: usize,
    width: usize,
    height: usize,
) -> Vec<String> {
    let rows = height.saturating_sub(1).max(3);
    // The matrix is its header, the platforms' line, a row a task and the counts line: whether
    // it has the rows is known without drawing it. A run of thousands of nodes, which never
    // fits, was drawn whole twice at every repaint only to find that out.
    if run.tasks().len() + 3 <= rows {
        let full = render_matrix(run, now, false, spinner);
        if full.iter().all(|l| l.chars().count() <= width) {
            return render_matrix(run, now, color, spinner);
        }
    }
    // The header as drawn (its mark in colour) when it fits, else cut plain.
    let plain = matrix_header(run, now, false, spinner);
    let header = if plain.chars().count() <= width {
        matrix_header(run, now, color, spinner)
    } else {
        cut(&plain, width)
    };
    let mut lines = vec![header];
    let shown: Vec<(&NodeId, &NodeView)> =
        run.nodes().filter(|(_, v)| v.status == NodeStatus::Running || v.status.is_red()).collect();
    // The header, the `… more` line and the counts take three rows.
    let room = rows.saturating_sub(3);
    for (_, view) in shown.iter().take(room) {
        let mut line = format!("  {} {}", view.status.glyph(), view.id);
        if let Some(d) = shown_duration(view, now) {
            line.push_str(&format!(" {d}"));
        }
        lines.push(paint(color, view.status.sgr(), &cut(&line, width)));
    }
    let mut more = Vec::new();
    let hidden = shown.len().saturating_sub(room);
    if hidden > 0 {
        more.push(format!("{hidden} more running or red"));
    }
    let ok = run.count(NodeStatus::Ok);
    if ok > 0 {
        more.push(format!("{ok} more ok"));
    }
    for status in [NodeStatus::Pending, NodeStatus::Skipped, NodeStatus::Cancelled] {
        let n = run.count(status);
        if n > 0 {
            more.push(format!("{n} {status}"));
        }
    }
    if !more.is_empty() {
        lines.push(cut(&format!("  … {}", more.join(" · ")), width));
    }
    lines.push(cut(&counts_line(run), width));
    lines
}

/// How often the live matrix repaints (its spinner and running durations) between changes.
const REPAINT: std::time::Duration = std::time::Duration::from_millis(120);

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// The matrix's first line: the run's mark (a spinner until it settles), pipeline, commit and
/// duration.
fn matrix_header(run: &Run, now: u64, color: bool, spinner: usize) -> String {
    let mark = match (run.settled(), run.outcome()) {
        (false, _) => SPINNER[spinner % SPINNER.len()].to_string(),
        (true, Outcome::Passed) => paint(color, "32", "✔"),
        (true, _) => paint(color, "31", "✗"),
    };
    let meta = run.meta();
    format!("odu {mark} {} @ {} · {}", meta.pipeline, meta.label, go_duration(run.duration_ms(now)))
}

/// The matrix: a header, one row per task with a cell per platform, and a counts line.
pub fn render_matrix(run: &Run, now: u64, color: bool, spinner: usize) -> Vec<String> {
    let platforms: Vec<&str> = run.lanes().iter().map(|l| l.platform.as_str()).collect();
    let tasks = run.tasks();
    let mut lines = vec![matrix_header(run, now, color, spinner)];
    let label = |t: &str| t.strip_prefix("ci::").unwrap_or(t).to_string();
    let width = tasks.iter().map(|t| label(t).chars().count()).max().unwrap_or(6).max(6);
    let cell_width = platforms.iter().map(|p| p.len()).max().unwrap_or(8).max(10);
    let mut header = format!("  {:<width$}", "recipe");
    for p in &platforms {
        header.push_str(&format!("  {p:<cell_width$}"));
    }
    lines.push(paint(color, "1", header.trim_end()));
    for task in &tasks {
        let mut row = format!("  {:<width$}", label(task));
        for p in &platforms {
            let cell = match run.view(&NodeId::new(*task, *p)) {
                Some(node) => {
                    let text =
                        format!("{} {}", node.status.glyph(), shown_duration(node, now).unwrap_or_default());
                    let padded = format!("{text:<cell_width$}");
                    paint(color, node.status.sgr(), &padded)
                }
                None => format!("{:<cell_width$}", "·"),
            };
            row.push_str("  ");
            row.push_str(&cell);
        }
        lines.push(row.trim_end().to_string());
    }
    lines.push(counts_line(run));
    lines
}

/// `3 ok · 1 running · 1 failed` (empty buckets dropped).
pub fn counts_line(run: &Run) -> String {
    NodeStatus::ALL
        .iter()
        .filter_map(|s| {
            let n = run.count(*s);
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The verdict summary printed on stderr at the end of every run: every node with `all`, else
/// only the nodes that are not ok; then the counts.
pub fn verdict(run: &Run, color: bool, all: bool) -> String {
    let mut out = format!("── {} run summary @ {} ──\n", run.meta().pipeline, run.meta().label);
    let now = now_ms();
    for (id, node) in run.nodes() {
        let status = node.status;
        if !all && status == NodeStatus::Ok {
            continue;
        }
        let mut line = format!("  {} {:<44} {:<9}", status.glyph(), node.id, status.as_str());
        if let Some(d) = shown_duration(node, now) {
            line.push_str(&format!(" {d}"));
        }
        if let Some(code) = node.exit_code.filter(|c| *c != 0) {
            line.push_str(&format!(" (exit {code})"));
        }
        if status.is_red() || status == NodeStatus::Cancelled {
            line.push_str(&format!("  {}", run.log_path(id)));
        }
        out.push_str(&paint(color, status.sgr(), line.trim_end()));
        out.push('\n');
    }
    let word = match (run.interrupted(), run.outcome()) {
        (true, _) => paint(color, "33", "INTERRUPTED"),
        (false, Outcome::Passed) => paint(color, "32", "OK"),
        (false, Outcome::Failed) => paint(color, "31", "FAILED"),
        (false, Outcome::Incomplete) => paint(color, "33", "INCOMPLETE"),
    };
    out.push_str(&format!(
        "{} ok · {} failed · {} errored · {} skipped · {} cancelled — {word} in {}\n",
        run.count(NodeStatus::Ok),
        run.count(NodeStatus::Failed),
        run.count(NodeStatus::Errored),
        run.count(NodeStatus::Skipped),
        run.count(NodeStatus::Cancelled),
        go_duration(run.duration_ms(now)),
    ));
    out
}

#[cfg(test)]
mod tests {
    use odu_core::NodeStatus;

    use super::*;
    use crate::client::monitor::state::tests::run_of;

    fn long_run() -> Run {
        let names: Vec<String> = (0..70).map(|i| format!("ci::step{i:02}@a")).collect();
        let nodes: Vec<(&str, NodeStatus)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let status = match i {
                    3 | 40 => NodeStatus::Failed,
                    50..=54 => NodeStatus::Running,
                    55.. => NodeStatus::Pending,
                    _ => NodeStatus::Ok,
                };
                (n.as_str(), status)
            })
            .collect();
        run_of(&["a"], &nodes)
    }

    #[test]
    fn a_face_of_transitions_only_wants_no_tick_and_a_plain_face_one_at_its_quiet_minute() {
        assert_eq!(JsonFace::default().next_tick(), None, "NDJSON sleeps until the run changes");
        let mut plain = PlainFace::new(false);
        let due = plain.next_tick().expect("a plain face says what still runs");
        assert!(due <= HEARTBEAT && due > HEARTBEAT - std::time::Duration::from_secs(5), "{due:?}");
        // Quiet for longer than a minute: due at once, and a tick says what runs, then waits
        // a whole minute again.
        plain.last_line = std::time::Instant::now() - HEARTBEAT - std::time::Duration::from_secs(1);
        assert_eq!(plain.next_tick(), Some(std::time::Duration::ZERO));
        plain.tick(&long_run());
        let due = plain.next_tick().expect("the next heartbeat");
        assert!(due > HEARTBEAT - std::time::Duration::from_secs(5), "{due:?}");
    }

    #[test]
    fn a_pipeline_taller_than_the_terminal_shows_running_and_red_nodes_and_the_rest_counted() {
        let run = long_run();
        let lines = fit_region(&run, 1_010_000, false, 0, 80, 24);
        assert!(lines.len() < 24, "{lines:#?}");
        for id in ["step03", "step40", "step50", "step54"] {
            assert!(lines.iter().any(|l| l.contains(id)), "{id} is shown: {lines:#?}");
        }
        assert!(!lines.iter().any(|l| l.contains("step00")), "ok nodes are counted, not listed");
        assert!(lines.iter().any(|l| l.contains("… 48 more ok · 15 pending")), "{lines:#?}");
        assert_eq!(lines.last().unwrap(), &counts_line(&run));
        // Even a terminal too short for every running node keeps to its height.
        let lines = fit_region(&run, 1_010_000, false, 0, 80, 6);
        assert!(lines.len() <= 5, "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("5 more running or red")), "{lines:#?}");
        // And to its width.
        let lines = fit_region(&run, 1_010_000, false, 0, 20, 24);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:#?}");
    }

    #[test]
    fn a_pipeline_that_fits_shows_the_whole_matrix() {
        let run = run_of(&["a"], &[("build@a", NodeStatus::Ok), ("test@a", NodeStatus::Running)]);
        let lines = fit_region(&run, 1_010_000, false, 0, 80, 24);
        assert_eq!(lines, render_matrix(&run, 1_010_000, false, 0));
    }

    #[test]
    fn a_node_seen_only_once_it_ended_is_printed_starting_then_ending() {
        let mut run = run_of(&["a"], &[("build@a", NodeStatus::Pending)]);
        // Its running view was folded away: the copy hears only that it ended, and failed.
        let ended = run_of(&["a"], &[("build@a", NodeStatus::Failed)]).views().to_vec();
        let fx = run.apply(odu_core::RunEvent::Observed { views: ended });
        let (mut json, mut plain) = (JsonFace::default(), PlainFace::new(false));
        for change in &fx.transitions {
            json.transition(&run, change);
            plain.transition(&run, change);
        }
        let json: Vec<serde_json::Value> = String::from_utf8(std::mem::take(&mut json.out.0))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let said: Vec<(&str, Option<i64>)> =
            json.iter().map(|l| (l["status"].as_str().unwrap(), l["exit_code"].as_i64())).collect();
        assert_eq!(said, [("running", None), ("failed", Some(1))]);
        let plain = String::from_utf8(std::mem::take(&mut plain.out.0)).unwrap();
        let words: Vec<&str> = plain.lines().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
        assert_eq!(words, ["running", "failed"], "{plain}");
    }

    #[test]
    fn the_short_summary_lists_only_what_is_not_ok() {
        let run = long_run();
        let short = verdict(&run, false, false);
        assert!(short.contains("step03") && short.contains("step50") && !short.contains("step00"), "{short}");
        assert!(short.lines().last().unwrap().starts_with("48 ok · 2 failed"), "{short}");
        let all = verdict(&run, false, true);
        assert!(all.contains("step00"), "{all}");
    }
}
