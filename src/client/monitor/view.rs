//! Drawing the dashboard with ratatui: the header, the recipes × platforms matrix, the counts
//! line, the recent runs (with no live run), the log pane and the help line, or the `?` screen
//! over them.

use odu_core::duration::go_duration;
use odu_core::status::Outcome;
use odu_core::{NodeId, NodeStatus};
use odu_proto::RunOutcome;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::keys::{help_line, help_screen};
use super::log::View;
use super::state::{Dash, Mode};
use crate::client::face::{counts_line, shown_duration};

/// Recent runs listed when no run is live.
const RECENT_SHOWN: usize = 5;

fn status_color(status: NodeStatus) -> Color {
    match status {
        NodeStatus::Pending | NodeStatus::Skipped | NodeStatus::Cancelled => Color::DarkGray,
        NodeStatus::Running => Color::Yellow,
        NodeStatus::Ok => Color::Green,
        NodeStatus::Failed => Color::Red,
        NodeStatus::Errored => Color::Magenta,
    }
}

struct Paint {
    color: bool,
}

impl Paint {
    fn fg(&self, color: Color) -> Style {
        if self.color { Style::new().fg(color) } else { Style::new() }
    }
    fn dim(&self) -> Style {
        if self.color { Style::new().fg(Color::DarkGray) } else { Style::new() }
    }
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame, dash: &mut Dash) {
    let area = frame.area();
    let paint = Paint { color: dash.color };
    let warnings = warnings(dash);
    let recent =
        if dash.live || dash.recent.is_empty() { 0 } else { dash.recent.len().min(RECENT_SHOWN) + 1 };
    let rows = dash.grid.rows() as u16;
    let fixed = 1 + warnings.len() as u16 + 1 + 1 + recent as u16;
    let rest = area.height.saturating_sub(fixed);
    // The matrix takes what it needs up to three fifths; the log pane (a title and at least
    // two lines) the rest.
    let matrix = (rows + 1).min((rest * 3 / 5).max(2)).min(rest.saturating_sub(3).max(2)).min(rest);
    let [header, warn, grid, counts, runs, log, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(warnings.len() as u16),
        Constraint::Length(matrix),
        Constraint::Length(1),
        Constraint::Length(recent as u16),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_line(dash, &paint)), header);
    frame.render_widget(
        Paragraph::new(
            warnings.into_iter().map(|w| Line::styled(w, paint.fg(Color::Yellow))).collect::<Vec<_>>(),
        ),
        warn,
    );
    draw_matrix(frame, dash, grid, &paint);
    let counts_text = dash.run.as_ref().map(counts_line).unwrap_or_default();
    frame.render_widget(Paragraph::new(counts_text), counts);
    if recent > 0 {
        draw_recent(frame, dash, runs, &paint);
    }
    draw_log(frame, dash, log, &paint);
    frame.render_widget(Paragraph::new(footer_line(dash, &paint)), footer);
    if dash.mode == Mode::Help {
        draw_help(frame, area);
    }
}

fn header_line(dash: &Dash, paint: &Paint) -> Line<'static> {
    let Some(run) = &dash.run else {
        return Line::from("odu · no runs recorded in this checkout yet (odu run starts one)");
    };
    let (mark, color) = match (run.settled(), run.outcome()) {
        (false, _) => ('▶', Color::Yellow),
        (true, Outcome::Passed) => ('✔', Color::Green),
        (true, _) => ('✗', Color::Red),
    };
    let meta = run.meta();
    let lanes: Vec<String> = run.lanes().iter().map(|l| format!("{}={}", l.platform, l.host)).collect();
    let sha: String = meta.sha.chars().take(12).collect();
    let mut spans = vec![
        Span::styled("odu ", Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(mark.to_string(), paint.fg(color)),
        Span::raw(format!(" {} · run {} · {sha} · {} · {}", meta.pipeline, meta.run, lanes.join(" "), {
            go_duration(run.duration_ms(dash.now))
        })),
    ];
    if !dash.live {
        spans.push(Span::styled(format!(" · {}", run.reported_outcome()), paint.dim()));
    }
    Line::from(spans)
}

/// Lines under the header: what the run could not do, and what is shown with no live run.
fn warnings(dash: &Dash) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(run) = &dash.run {
        for cut in run.truncated_logs() {
            out.push(format!("⚠ the log of {} was cut short: {}", cut.node, cut.reason));
        }
        if let Some(error) = run.record_error() {
            out.push(format!("⚠ the run's record could not be written: {error}"));
        }
        if let Some(posting) = &dash.posting {
            out.push(posting.clone());
        }
        if !dash.live {
            out.push(
                "no run in progress: showing a recorded run ([ ] older/newer); a new run shows here".into(),
            );
        }
    }
    out
}

/// The label of a recipe: its module prefix (`ci::`) apart, to be dimmed.
fn split_label(task: &str) -> (&str, &str) {
    match task.rfind("::") {
        Some(at) => task.split_at(at + 2),
        None => ("", task),
    }
}

fn draw_matrix(frame: &mut Frame, dash: &mut Dash, area: Rect, paint: &Paint) {
    dash.hits.cells.clear();
    if area.height == 0 {
        return;
    }
    let body = area.height.saturating_sub(1) as usize;
    dash.matrix_height = body.max(1);
    dash.keep_focus_visible();
    let Some(run) = &dash.run else { return };
    let grid = &dash.grid;
    let width = area.width as usize;
    let label_full = grid.tasks.iter().map(|t| t.chars().count()).max().unwrap_or(6).max(6);
    let cell_full = grid.platforms.iter().map(|p| p.chars().count()).max().unwrap_or(8).max(9);
    let columns = grid.platforms.len();
    let full = 1 + label_full + columns * (cell_full + 2);
    // A terminal too narrow for names and durations shows glyphs only.
    let glyphs = full > width;
    let cell_w = if glyphs { 1 } else { cell_full };
    let label_w =
        if glyphs { width.saturating_sub(1 + columns * 2).clamp(1, label_full) } else { label_full };
    let mut lines = Vec::new();
    let mut heading = vec![Span::raw(format!(" {:<label_w$}", "recipe"))];
    for (i, p) in grid.platforms.iter().enumerate() {
        let name = if glyphs {
            char::from_digit((i + 1) as u32 % 36, 36).unwrap_or('·').to_string()
        } else {
            p.clone()
        };
        heading.push(Span::raw(format!("  {name:<cell_w$}")));
    }
    let shown_to = (dash.scroll + body).min(grid.rows());
    if grid.rows() > body {
        heading.push(Span::styled(
            format!("  rows {}–{} of {}", dash.scroll + 1, shown_to, grid.rows()),
            paint.dim(),
        ));
    }
    lines.push(Line::from(heading).style(Style::new().add_modifier(Modifier::BOLD)));
    for row in dash.scroll..shown_to {
        let task = &grid.tasks[row];
        let (prefix, name) = split_label(task);
        let label: String = format!("{prefix}{name}");
        let label = if label.chars().count() > label_w {
            // Keep the recipe's own name, cutting the prefix first.
            let keep: String =
                label.chars().rev().take(label_w).collect::<Vec<_>>().into_iter().rev().collect();
            keep
        } else {
            format!("{label:<label_w$}")
        };
        let prefix_len = prefix.chars().count().min(label.chars().count());
        let (shown_prefix, shown_name): (String, String) =
            if label.chars().count() >= prefix.chars().count() + name.chars().count() {
                (label.chars().take(prefix_len).collect(), label.chars().skip(prefix_len).collect())
            } else {
                (String::new(), label.clone())
            };
        let row_match = grid.platforms.iter().any(|p| dash.is_match(&NodeId::new(task.as_str(), p.as_str())));
        let name_style = if row_match {
            Style::new().add_modifier(Modifier::UNDERLINED | Modifier::BOLD)
        } else {
            Style::new()
        };
        let mut spans = vec![
            Span::raw(" "),
            Span::styled(shown_prefix, paint.dim()),
            Span::styled(shown_name, name_style),
        ];
        let y = area.y + 1 + (row - dash.scroll) as u16;
        let mut x = area.x + 1 + label_w as u16;
        for col in 0..grid.platforms.len() {
            spans.push(Span::raw("  "));
            x += 2;
            let Some(id) = grid.node(row, col) else {
                spans.push(Span::styled(format!("{:<cell_w$}", "·"), paint.dim()));
                x += cell_w as u16;
                continue;
            };
            let view = run.view(&id).expect("the grid holds the run's nodes");
            let text = if glyphs {
                view.status.glyph().to_string()
            } else {
                let d = shown_duration(view, dash.now).unwrap_or_default();
                format!("{:<cell_w$}", format!("{} {d}", view.status.glyph()))
            };
            let mut style = paint.fg(status_color(view.status));
            if dash.is_match(&id) {
                style = style.add_modifier(Modifier::UNDERLINED | Modifier::BOLD);
            }
            if dash.focus.as_ref() == Some(&id) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            dash.hits.cells.push((x, y, cell_w as u16, id));
            spans.push(Span::styled(text, style));
            x += cell_w as u16;
        }
        lines.push(Line::from(spans));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_recent(frame: &mut Frame, dash: &Dash, area: Rect, paint: &Paint) {
    let shown = dash.run.as_ref().map(|r| r.meta().run.clone());
    let mut lines = vec![Line::styled("recent runs", Style::new().add_modifier(Modifier::BOLD))];
    for summary in dash.recent.iter().take(RECENT_SHOWN) {
        let (mark, color) = match summary.outcome {
            RunOutcome::Passed => ("✔", Color::Green),
            RunOutcome::Running => ("▶", Color::Yellow),
            _ => ("✗", Color::Red),
        };
        let pointer = if Some(&summary.run) == shown.as_ref() { "›" } else { " " };
        let ago = crate::trail::ledger::format_ago(
            dash.now.saturating_sub(summary.finished_at.unwrap_or(summary.started_at)),
        );
        lines.push(Line::from(vec![
            Span::raw(format!("{pointer} ")),
            Span::styled(mark, paint.fg(color)),
            Span::raw(format!(
                " {:<16} {:<10} {} {ago}",
                summary.run,
                summary.outcome,
                summary.lanes.join(",")
            )),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_log(frame: &mut Frame, dash: &mut Dash, area: Rect, paint: &Paint) {
    if area.height == 0 {
        return;
    }
    let what = match &dash.focus {
        Some(id) => id.to_string(),
        None => "no node".into(),
    };
    let mut state = match dash.log.view {
        View::Follow if dash.log.ended => "ended".to_string(),
        View::Follow => "following".to_string(),
        View::At(_) => "scrolled (f follows)".to_string(),
    };
    if dash.log.missed > 0 {
        state.push_str(&format!(" · {} bytes missed", dash.log.missed));
    }
    let block = Block::new()
        .borders(Borders::TOP)
        .border_style(paint.dim())
        .title(format!(" log · {what} · {state} "));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    dash.log_height = (inner.height as usize).max(1);
    let page = dash.log.page(inner.height as usize);
    let needle = dash.query.to_lowercase();
    let lines: Vec<Line> = page.into_iter().map(|text| highlight(text, &needle, paint)).collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// A log line with every match of the search marked.
fn highlight(text: String, needle: &str, paint: &Paint) -> Line<'static> {
    if needle.is_empty() {
        return Line::from(text);
    }
    let lower = text.to_lowercase();
    // Lowercasing can change lengths: mark only when it did not.
    if lower.len() != text.len() {
        return Line::from(text);
    }
    let mark = if paint.color {
        Style::new().bg(Color::Yellow).fg(Color::Black)
    } else {
        Style::new().add_modifier(Modifier::REVERSED)
    };
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find(needle) {
        let start = at + found;
        let end = start + needle.len();
        if start > at {
            spans.push(Span::raw(text[at..start].to_string()));
        }
        spans.push(Span::styled(text[start..end].to_string(), mark));
        at = end;
    }
    spans.push(Span::raw(text[at..].to_string()));
    Line::from(spans)
}

fn footer_line(dash: &Dash, paint: &Paint) -> Line<'static> {
    match &dash.mode {
        Mode::Search(text) => Line::from(format!("/{text}█  (enter searches, esc leaves)")),
        Mode::Confirm(request) => Line::styled(
            format!("{}? y/n", request.describe()),
            paint.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        _ => match &dash.note {
            Some(note) => Line::styled(note.clone(), paint.fg(Color::Cyan)),
            None => Line::styled(help_line(), paint.dim()),
        },
    }
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let entries = help_screen();
    let label_w = entries.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(4);
    let mut lines: Vec<Line> =
        entries.iter().map(|(label, help)| Line::from(format!(" {label:<label_w$}  {help}"))).collect();
    lines.push(Line::from(""));
    lines.push(Line::from(" click a cell to focus it · any key closes this help"));
    let width = lines.iter().map(|l| l.width() as u16).max().unwrap_or(20) + 3;
    let height = lines.len() as u16 + 2;
    let w = width.min(area.width);
    let h = height.min(area.height);
    let rect =
        Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" odu monitor: keys ")), rect);
}

#[cfg(test)]
mod tests {
    use odu_core::NodeStatus::{self, *};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::style::{Color, Modifier};

    use super::super::state::tests::run_of;
    use super::super::state::{Dash, Mode};
    use super::draw;

    /// The screen as text, then every styled stretch of each row: what a snapshot shows.
    fn screen(buffer: &Buffer) -> String {
        let area = buffer.area;
        let mut text = String::new();
        let mut marks = String::new();
        for y in 0..area.height {
            let mut line = String::new();
            let mut stretches: Vec<(u16, u16, String)> = Vec::new();
            for x in 0..area.width {
                let cell = &buffer[(x, y)];
                line.push_str(cell.symbol());
                let mut style = String::new();
                if cell.fg != Color::Reset {
                    style.push_str(&format!("{:?}", cell.fg));
                }
                if cell.bg != Color::Reset {
                    style.push_str(&format!(" on {:?}", cell.bg));
                }
                for (flag, name) in [
                    (Modifier::BOLD, "bold"),
                    (Modifier::REVERSED, "reversed"),
                    (Modifier::UNDERLINED, "underlined"),
                ] {
                    if cell.modifier.contains(flag) {
                        style.push_str(&format!(" {name}"));
                    }
                }
                let style = style.trim().to_string();
                match stretches.last_mut() {
                    Some((_, end, last)) if *last == style && *end == x => *end = x + 1,
                    _ => stretches.push((x, x + 1, style)),
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
            let styled: Vec<String> = stretches
                .into_iter()
                .filter(|(_, _, s)| !s.is_empty())
                .map(|(from, to, s)| format!("{from}..{to} {s}"))
                .collect();
            if !styled.is_empty() {
                marks.push_str(&format!("{y:>2}: {}\n", styled.join(", ")));
            }
        }
        format!("{text}---\n{marks}")
    }

    fn render(dash: &mut Dash, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        // Twice: the first draw learns how much fits, as the live dashboard's first frame does.
        terminal.draw(|f| draw(f, dash)).unwrap();
        terminal.draw(|f| draw(f, dash)).unwrap();
        screen(terminal.backend().buffer())
    }

    fn dash_of(platforms: &[&str], nodes: &[(&str, NodeStatus)]) -> Dash {
        let mut dash = Dash::new(true);
        dash.show(run_of(platforms, nodes), true);
        dash.now = 1_012_000;
        dash
    }

    fn three_platforms() -> Dash {
        let mut dash = dash_of(
            &["a", "b", "c"],
            &[
                ("_ci-setup@a", Ok),
                ("_ci-setup@b", Ok),
                ("_ci-setup@c", Ok),
                ("ci::build@a", Ok),
                ("ci::build@b", Ok),
                ("ci::build@c", Running),
                ("ci::test@a", Running),
                ("ci::test@b", Pending),
                ("ci::test@c", Pending),
                ("ci::e2e@a", Pending),
            ],
        );
        dash.log.push(b"compiling odu v0.1.0\n\x1b[32mtest result\x1b[0m: ok. 12 passed\nrunning 3 tests\n");
        dash
    }

    #[test]
    fn a_running_three_platform_run() {
        insta::assert_snapshot!(render(&mut three_platforms(), 80, 20));
    }

    #[test]
    fn a_red_run_with_skipped_nodes() {
        let mut dash = dash_of(
            &["a", "b"],
            &[
                ("_ci-setup@a", Ok),
                ("_ci-setup@b", Ok),
                ("build@a", Ok),
                ("build@b", Failed),
                ("test@a", Errored),
                ("test@b", Skipped),
                ("deploy@a", Skipped),
                ("deploy@b", Skipped),
            ],
        );
        dash.log.push(b"cc: error: no input files\nerror: recipe `build` failed with exit code 1\n");
        insta::assert_snapshot!(render(&mut dash, 80, 16));
    }

    #[test]
    fn a_narrow_terminal_shows_glyphs_only() {
        insta::assert_snapshot!(render(&mut three_platforms(), 36, 16));
    }

    #[test]
    fn a_pipeline_taller_than_the_screen_scrolls_to_the_focus() {
        let names: Vec<String> = (0..40).map(|i| format!("ci::step{i:02}@a")).collect();
        let nodes: Vec<(&str, NodeStatus)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.as_str(),
                    if i < 30 {
                        Ok
                    } else if i == 30 {
                        Running
                    } else {
                        Pending
                    },
                )
            })
            .collect();
        let mut dash = dash_of(&["a"], &nodes);
        insta::assert_snapshot!(render(&mut dash, 60, 20));
    }

    #[test]
    fn search_highlights_nodes_and_log_lines() {
        let mut dash = three_platforms();
        dash.query = "test".into();
        dash.mode = Mode::Search("tes".into());
        insta::assert_snapshot!(render(&mut dash, 80, 20));
    }

    #[test]
    fn the_help_screen() {
        let mut dash = three_platforms();
        dash.mode = Mode::Help;
        insta::assert_snapshot!(render(&mut dash, 80, 30));
    }
}
