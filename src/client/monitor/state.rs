//! The dashboard's state, apart from any terminal: the matrix of the shown run, the focus, the
//! search, the scroll, the log pane and the mode. Keys change it ([`Dash::key`]); the driver
//! carries out what it asks ([`Ask`]).

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use odu_core::{NodeId, NodeStatus, Run};
use odu_proto::RunSummary;

use super::keys::{Act, act};
use super::log::LogPane;

/// Recipes × platforms of a run: a row per recipe in run order, a column per lane, and the
/// node (if any) in each cell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grid {
    pub tasks: Vec<String>,
    pub platforms: Vec<String>,
    cells: Vec<Vec<bool>>,
    /// Each task's row. The grid is made again at every change of the run's nodes: finding a
    /// task's row in the list compared each name with every one before it, a cost that grew
    /// with the square of the run's size at every delta.
    row_of: HashMap<String, usize>,
}

impl Grid {
    pub fn of(run: &Run) -> Grid {
        let platforms: Vec<String> = run.lanes().iter().map(|l| l.platform.clone()).collect();
        let tasks: Vec<String> = run.tasks().into_iter().map(String::from).collect();
        let row_of = tasks.iter().enumerate().map(|(row, task)| (task.clone(), row)).collect();
        let cells = tasks
            .iter()
            .map(|t| {
                platforms.iter().map(|p| run.view(&NodeId::new(t.as_str(), p.as_str())).is_some()).collect()
            })
            .collect();
        Grid { tasks, platforms, cells, row_of }
    }

    pub fn rows(&self) -> usize {
        self.tasks.len()
    }

    pub fn node(&self, row: usize, col: usize) -> Option<NodeId> {
        let has = self.cells.get(row)?.get(col).copied()?;
        has.then(|| NodeId::new(self.tasks[row].as_str(), self.platforms[col].as_str()))
    }

    pub fn position(&self, id: &NodeId) -> Option<(usize, usize)> {
        let row = *self.row_of.get(&id.task)?;
        let col = self.platforms.iter().position(|p| *p == id.platform)?;
        self.cells[row][col].then_some((row, col))
    }

    /// The cell a move lands on from `from`, skipping cells without a node; `from` when there
    /// is none that way.
    pub fn step(&self, from: (usize, usize), act: Act) -> (usize, usize) {
        let (row, col) = from;
        let found = match act {
            Act::Up => (0..row).rev().find(|r| self.node(*r, col).is_some()).map(|r| (r, col)),
            Act::Down => (row + 1..self.rows()).find(|r| self.node(*r, col).is_some()).map(|r| (r, col)),
            Act::Left => (0..col).rev().find(|c| self.node(row, *c).is_some()).map(|c| (row, c)),
            Act::Right => {
                (col + 1..self.platforms.len()).find(|c| self.node(row, *c).is_some()).map(|c| (row, c))
            }
            _ => None,
        };
        found.unwrap_or(from)
    }
}

/// The node focused first: the first running node, else the first red one, else the first.
pub fn default_focus(run: &Run) -> Option<NodeId> {
    let first = |pred: &dyn Fn(NodeStatus) -> bool| {
        run.nodes().find(|(_, view)| pred(view.status)).map(|(id, _)| id.clone())
    };
    first(&|s| s == NodeStatus::Running)
        .or_else(|| first(&|s| s.is_red()))
        .or_else(|| run.order().first().cloned())
}

/// What the dashboard is doing with keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing a search.
    Search(String),
    /// Waiting for `y` or `n` before this request.
    Confirm(Request),
    Help,
}

/// A request to the run's server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Rerun(NodeId),
    Cancel(NodeId),
    CancelRun,
}

impl Request {
    pub fn describe(&self) -> String {
        match self {
            Request::Rerun(id) => format!("rerun {id} (and what needs it)"),
            Request::Cancel(id) => format!("cancel {id}"),
            Request::CancelRun => "cancel the whole run".into(),
        }
    }
}

/// What the driver must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    Nothing,
    /// Redraw; the focus may have moved (the driver follows the focused node's log).
    Redraw,
    Send(Request),
    /// Show another run from the list of recent runs.
    Open(String),
    Quit,
}

/// Where the matrix was drawn: for mouse clicks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    pub cells: Vec<(u16, u16, u16, NodeId)>,
}

/// See the module documentation.
pub struct Dash {
    pub run: Option<Run>,
    pub grid: Grid,
    pub focus: Option<NodeId>,
    /// The user moved the focus: it no longer follows the default.
    pub chosen: bool,
    /// The first matrix row shown.
    pub scroll: usize,
    pub mode: Mode,
    /// The last search.
    pub query: String,
    pub log: LogPane,
    /// Recent runs, newest first (shown when no run is live).
    pub recent: Vec<RunSummary>,
    /// The shown run is served live.
    pub live: bool,
    /// A line for the user (a request's answer, an error).
    pub note: Option<String>,
    /// The GitHub statuses the run still owes (or gave up on), as one line; `None` when none.
    pub posting: Option<String>,
    pub color: bool,
    /// ms since the epoch, for ticking durations.
    pub now: u64,
    /// Matrix rows that fit, as last drawn.
    pub matrix_height: usize,
    /// Log lines that fit, as last drawn.
    pub log_height: usize,
    pub hits: Hits,
}

impl Dash {
    pub fn new(color: bool) -> Dash {
        Dash {
            run: None,
            grid: Grid::default(),
            focus: None,
            chosen: false,
            scroll: 0,
            mode: Mode::Normal,
            query: String::new(),
            log: LogPane::default(),
            recent: Vec::new(),
            live: false,
            note: None,
            posting: None,
            color,
            now: 0,
            matrix_height: 10,
            log_height: 10,
            hits: Hits::default(),
        }
    }

    /// Shows `run` (a new one resets focus and scroll).
    pub fn show(&mut self, run: Run, live: bool) {
        let same = self.run.as_ref().is_some_and(|r| r.meta().run == run.meta().run);
        self.grid = Grid::of(&run);
        if !same || self.focus.as_ref().is_none_or(|f| self.grid.position(f).is_none()) {
            self.focus = default_focus(&run);
            self.chosen = false;
            self.scroll = 0;
        }
        self.live = live;
        self.run = Some(run);
        self.keep_focus_visible();
    }

    /// The run's nodes changed: the matrix follows (its shape may have grown), and so does
    /// the focus until the user moves it.
    pub fn changed(&mut self) {
        if let Some(run) = &self.run {
            self.grid = Grid::of(run);
            if self.focus.is_none() || !self.chosen {
                self.focus = default_focus(run);
                self.keep_focus_visible();
            }
        }
    }

    pub fn focus_position(&self) -> Option<(usize, usize)> {
        self.focus.as_ref().and_then(|f| self.grid.position(f))
    }

    /// Scrolls the matrix so the focused row is among the `matrix_height` shown.
    pub fn keep_focus_visible(&mut self) {
        let height = self.matrix_height.max(1);
        let Some((row, _)) = self.focus_position() else { return };
        if row < self.scroll {
            self.scroll = row;
        } else if row >= self.scroll + height {
            self.scroll = row + 1 - height;
        }
        self.scroll = self.scroll.min(self.grid.rows().saturating_sub(height));
    }

    fn set_focus(&mut self, at: (usize, usize)) -> Ask {
        let node = self.grid.node(at.0, at.1);
        if node.is_none() || node == self.focus {
            return Ask::Nothing;
        }
        self.chosen = true;
        self.focus = node;
        self.keep_focus_visible();
        Ask::Redraw
    }

    /// Nodes whose id contains the search (case-insensitive), in matrix order.
    pub fn matches(&self) -> Vec<NodeId> {
        if self.query.is_empty() {
            return Vec::new();
        }
        let needle = self.query.to_lowercase();
        let mut out = Vec::new();
        for row in 0..self.grid.rows() {
            for col in 0..self.grid.platforms.len() {
                if let Some(id) = self.grid.node(row, col)
                    && id.to_string().to_lowercase().contains(&needle)
                {
                    out.push(id);
                }
            }
        }
        out
    }

    pub fn is_match(&self, id: &NodeId) -> bool {
        !self.query.is_empty() && id.to_string().to_lowercase().contains(&self.query.to_lowercase())
    }

    /// The next (or previous) match from the focus: a node, or with no node matching, a line
    /// of the log.
    fn next_match(&mut self, forward: bool) -> Ask {
        let matches = self.matches();
        if matches.is_empty() {
            let query = self.query.clone();
            return if self.log.find(&query, forward, self.log_height) {
                Ask::Redraw
            } else {
                self.note = Some(format!("no match for {query:?}"));
                Ask::Redraw
            };
        }
        let order: Vec<(usize, usize)> = matches.iter().filter_map(|m| self.grid.position(m)).collect();
        let here = self.focus_position().unwrap_or((0, 0));
        let pick = if forward {
            order.iter().find(|p| **p > here).or(order.first())
        } else {
            order.iter().rev().find(|p| **p < here).or(order.last())
        };
        match pick {
            Some(at) => {
                let at = *at;
                self.set_focus(at);
                Ask::Redraw
            }
            None => Ask::Nothing,
        }
    }

    /// Focuses the node drawn at a terminal cell.
    pub fn click(&mut self, x: u16, y: u16) -> Ask {
        let hit = self.hits.cells.iter().find(|(cx, cy, w, _)| *cy == y && x >= *cx && x < cx + w);
        match hit.map(|h| h.3.clone()) {
            Some(id) if Some(&id) != self.focus.as_ref() => {
                self.chosen = true;
                self.focus = Some(id);
                Ask::Redraw
            }
            _ => Ask::Nothing,
        }
    }

    /// Scrolls the log with the mouse wheel.
    pub fn wheel(&mut self, up: bool) -> Ask {
        if up {
            self.log.up(3, self.log_height);
        } else {
            self.log.down(3, self.log_height);
        }
        Ask::Redraw
    }

    pub fn key(&mut self, event: KeyEvent) -> Ask {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Help => Ask::Redraw,
            Mode::Confirm(request) => match event.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Ask::Send(request),
                _ => {
                    self.note = Some("nothing done".into());
                    Ask::Redraw
                }
            },
            Mode::Search(mut text) => {
                match event.code {
                    KeyCode::Enter => {
                        self.query = text;
                        self.note = None;
                        return self.next_match(true);
                    }
                    KeyCode::Esc => return Ask::Redraw,
                    KeyCode::Char('c') if event.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ask::Redraw;
                    }
                    KeyCode::Backspace => {
                        text.pop();
                    }
                    KeyCode::Char(c) => text.push(c),
                    _ => {}
                }
                self.mode = Mode::Search(text);
                Ask::Redraw
            }
            Mode::Normal => self.normal_key(event),
        }
    }

    fn normal_key(&mut self, event: KeyEvent) -> Ask {
        let Some(act) = act(&event) else { return Ask::Nothing };
        self.note = None;
        let focus = self.focus_position();
        let page = self.log_height.max(1);
        match act {
            Act::Up | Act::Down | Act::Left | Act::Right => match focus {
                Some(at) => {
                    let to = self.grid.step(at, act);
                    self.set_focus(to)
                }
                None => Ask::Nothing,
            },
            Act::Jump => {
                let KeyCode::Char(c) = event.code else { return Ask::Nothing };
                let col = c as usize - '1' as usize;
                let row = focus.map_or(0, |f| f.0);
                // The same recipe on that platform, else the nearest row that has it.
                let target = (row..self.grid.rows())
                    .chain((0..row).rev())
                    .find(|r| self.grid.node(*r, col).is_some())
                    .map(|r| (r, col));
                match target {
                    Some(at) => self.set_focus(at),
                    None => Ask::Nothing,
                }
            }
            Act::Search => {
                self.mode = Mode::Search(String::new());
                Ask::Redraw
            }
            Act::Next => self.next_match(true),
            Act::Prev => self.next_match(false),
            Act::Follow => {
                self.log.toggle_follow(page);
                Ask::Redraw
            }
            Act::LogTop => {
                self.log.top();
                Ask::Redraw
            }
            Act::LogBottom => {
                self.log.bottom();
                Ask::Redraw
            }
            Act::PageUp => {
                self.log.up(page, page);
                Ask::Redraw
            }
            Act::PageDown => {
                self.log.down(page, page);
                Ask::Redraw
            }
            Act::Rerun => match &self.focus {
                Some(id) => Ask::Send(Request::Rerun(id.clone())),
                None => Ask::Nothing,
            },
            Act::Cancel => self.confirm(self.focus.clone().map(Request::Cancel)),
            Act::CancelRun => self.confirm(Some(Request::CancelRun)),
            Act::OlderRun | Act::NewerRun => self.open_neighbour(act == Act::OlderRun),
            Act::Help => {
                self.mode = Mode::Help;
                Ask::Redraw
            }
            Act::Quit => Ask::Quit,
        }
    }

    fn confirm(&mut self, request: Option<Request>) -> Ask {
        let Some(request) = request else { return Ask::Nothing };
        if !self.live {
            self.note = Some("no run in progress: nothing to cancel".into());
            return Ask::Redraw;
        }
        self.mode = Mode::Confirm(request);
        Ask::Redraw
    }

    fn open_neighbour(&mut self, older: bool) -> Ask {
        if self.live {
            self.note = Some("a run is in progress: it stays shown until it ends".into());
            return Ask::Redraw;
        }
        let shown = self.run.as_ref().map(|r| r.meta().run.clone());
        let at = self.recent.iter().position(|r| Some(&r.run) == shown.as_ref());
        let next = match (at, older) {
            (Some(i), true) => self.recent.get(i + 1),
            (Some(i), false) => i.checked_sub(1).and_then(|i| self.recent.get(i)),
            (None, _) => self.recent.first(),
        };
        match next {
            Some(summary) => Ask::Open(summary.run.clone()),
            None => Ask::Nothing,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;
    use odu_core::run::{Header, LaneInfo, Phase};
    use odu_core::status::RunOutcome;
    use odu_core::{NodeView, RunEvent};

    /// A platform by its short name in these tests: `a`, `b`, `c`.
    pub fn long(platform: &str) -> &str {
        match platform {
            "a" => "x86_64-linux",
            "b" => "aarch64-darwin",
            "c" => "aarch64-linux",
            other => other,
        }
    }

    /// A node id with a short platform name spelled out.
    pub fn full(id: &str) -> String {
        match id.rsplit_once('@') {
            Some((task, platform)) => format!("{task}@{}", long(platform)),
            None => id.to_string(),
        }
    }

    /// A served run's copy: `statuses` per node id (`task@platform`, platforms by short name),
    /// in that order.
    pub fn run_of(platforms: &[&str], nodes: &[(&str, NodeStatus)]) -> Run {
        let header = Header {
            run: "abc1234#1".into(),
            sha: "abc1234def".into(),
            label: "abc1234".into(),
            pipeline: "ci".into(),
            lanes: platforms
                .iter()
                .map(|p| LaneInfo { platform: long(p).to_string(), host: "localhost".into() })
                .collect(),
            phase: Phase::Running,
            outcome: RunOutcome::Running,
            interrupted: false,
            started_at: 1_000_000,
            finished_at: None,
            truncated_logs: vec![],
            record_error: None,
            posting: None,
        };
        let views: Vec<NodeView> = nodes
            .iter()
            .map(|(id, status)| {
                let mut v = NodeView::pending(&full(id), format!("just {id}"), vec![]);
                v.status = *status;
                if *status != NodeStatus::Pending {
                    v.started_at = Some(1_000_000);
                }
                if status.is_terminal() && *status != NodeStatus::Skipped {
                    v.duration_ms = Some(4_000);
                    v.exit_code = Some(if *status == NodeStatus::Ok { 0 } else { 1 });
                }
                v
            })
            .collect();
        let order: Vec<NodeId> = views.iter().filter_map(|v| NodeId::parse(&v.id)).collect();
        let mut run = Run::mirror(&header, &order, &views);
        let _ = run.apply(RunEvent::Observed { views });
        run
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    fn id(s: &str) -> NodeId {
        NodeId::parse(&full(s)).unwrap()
    }

    fn gappy() -> Run {
        use NodeStatus::*;
        run_of(
            &["a", "b"],
            &[("lint@a", Ok), ("lint@b", Ok), ("mac@b", Ok), ("test@a", Failed), ("test@b", Running)],
        )
    }

    #[test]
    fn default_focus_is_the_first_running_then_red_then_first() {
        use NodeStatus::*;
        assert_eq!(default_focus(&gappy()), Some(id("test@b")));
        let red = run_of(&["a"], &[("x@a", Ok), ("y@a", Failed)]);
        assert_eq!(default_focus(&red), Some(id("y@a")));
        let green = run_of(&["a"], &[("x@a", Ok), ("y@a", Ok)]);
        assert_eq!(default_focus(&green), Some(id("x@a")));
    }

    #[test]
    fn focus_moves_skip_gaps_and_stay_at_the_edges() {
        let mut dash = Dash::new(false);
        dash.show(gappy(), true);
        dash.focus = Some(id("lint@a"));
        // mac has no node on a: down from lint@a lands on test@a.
        dash.key(key('j'));
        assert_eq!(dash.focus, Some(id("test@a")));
        dash.key(key('j'));
        assert_eq!(dash.focus, Some(id("test@a")), "nothing below");
        dash.key(key('l'));
        assert_eq!(dash.focus, Some(id("test@b")));
        dash.key(key('k'));
        assert_eq!(dash.focus, Some(id("mac@b")));
        dash.key(key('h'));
        assert_eq!(dash.focus, Some(id("mac@b")), "no node on a in that row");
        dash.key(key('1'));
        assert_eq!(dash.focus, Some(id("test@a")), "the nearest row with a node on column 1");
    }

    #[test]
    fn the_focus_follows_the_default_until_the_user_moves_it() {
        use NodeStatus::*;
        let mut dash = Dash::new(false);
        dash.show(run_of(&["a"], &[("setup@a", Running), ("big@a", Pending), ("small@a", Pending)]), true);
        assert_eq!(dash.focus, Some(id("setup@a")));
        dash.show(run_of(&["a"], &[("setup@a", Ok), ("big@a", Running), ("small@a", Pending)]), true);
        dash.changed();
        assert_eq!(dash.focus, Some(id("big@a")), "the next running node");
        dash.key(key('j'));
        dash.show(run_of(&["a"], &[("setup@a", Ok), ("big@a", Ok), ("small@a", Failed)]), true);
        dash.changed();
        assert_eq!(dash.focus, Some(id("small@a")), "where the user put it");
        dash.key(key('k'));
        dash.changed();
        assert_eq!(dash.focus, Some(id("big@a")), "a chosen focus stays");
    }

    #[test]
    fn scrolling_keeps_the_focus_visible() {
        let nodes: Vec<(String, NodeStatus)> =
            (0..30).map(|i| (format!("t{i:02}@a"), NodeStatus::Ok)).collect();
        let refs: Vec<(&str, NodeStatus)> = nodes.iter().map(|(s, st)| (s.as_str(), *st)).collect();
        let mut dash = Dash::new(false);
        dash.matrix_height = 5;
        dash.show(run_of(&["a"], &refs), true);
        for _ in 0..7 {
            dash.key(key('j'));
        }
        assert_eq!(dash.focus, Some(id("t07@a")));
        assert_eq!(dash.scroll, 3);
        for _ in 0..6 {
            dash.key(key('k'));
        }
        assert_eq!(dash.scroll, 1);
        // A running node deep down is focused and shown at once.
        let mut deep = refs.clone();
        deep[25].1 = NodeStatus::Running;
        let mut dash = Dash::new(false);
        dash.matrix_height = 5;
        dash.show(run_of(&["a"], &deep), true);
        assert_eq!(dash.focus, Some(id("t25@a")));
        assert!(dash.scroll <= 25 && 25 < dash.scroll + 5);
    }

    #[test]
    fn search_focuses_matches_in_order_and_wraps() {
        let mut dash = Dash::new(false);
        dash.show(gappy(), true);
        dash.key(key('/'));
        for c in "LINT".chars() {
            dash.key(key(c));
        }
        assert_eq!(dash.mode, Mode::Search("LINT".into()));
        dash.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert_eq!(dash.mode, Mode::Normal);
        assert_eq!(dash.matches(), [id("lint@a"), id("lint@b")]);
        // From test@b, the next match wraps to the first.
        assert_eq!(dash.focus, Some(id("lint@a")));
        dash.key(key('n'));
        assert_eq!(dash.focus, Some(id("lint@b")));
        dash.key(key('n'));
        assert_eq!(dash.focus, Some(id("lint@a")));
        dash.key(key('N'));
        assert_eq!(dash.focus, Some(id("lint@b")));
    }

    #[test]
    fn a_search_no_node_matches_goes_to_the_log() {
        let mut dash = Dash::new(false);
        dash.show(gappy(), true);
        dash.log.push(b"compiling\nerror: boom\nmore\n");
        dash.log.top();
        dash.query = "boom".into();
        assert_eq!(dash.key(key('n')), Ask::Redraw);
        assert_eq!(dash.log.page(1), ["error: boom"]);
    }

    #[test]
    fn a_click_focuses_the_cell_drawn_there() {
        let mut dash = Dash::new(false);
        dash.show(gappy(), true);
        dash.hits.cells = vec![(10, 3, 4, id("lint@a")), (16, 3, 4, id("lint@b"))];
        assert_eq!(dash.click(17, 3), Ask::Redraw);
        assert_eq!(dash.focus, Some(id("lint@b")));
        assert!(dash.chosen);
        assert_eq!(dash.click(30, 3), Ask::Nothing, "no cell there");
        assert_eq!(dash.focus, Some(id("lint@b")));
    }

    #[test]
    fn cancel_asks_first_and_rerun_does_not() {
        let mut dash = Dash::new(false);
        dash.show(gappy(), true);
        assert_eq!(dash.key(key('c')), Ask::Redraw);
        assert_eq!(dash.mode, Mode::Confirm(Request::Cancel(id("test@b"))));
        assert_eq!(dash.key(key('y')), Ask::Send(Request::Cancel(id("test@b"))));
        dash.key(key('C'));
        assert_eq!(dash.key(key('n')), Ask::Redraw);
        assert_eq!(dash.mode, Mode::Normal);
        assert_eq!(dash.key(key('r')), Ask::Send(Request::Rerun(id("test@b"))));
        assert_eq!(dash.key(key('q')), Ask::Quit);
    }
}
