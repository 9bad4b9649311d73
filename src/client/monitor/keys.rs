//! The dashboard's keys: one table drives what a key does, the help line and the `?` screen.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks of the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Up,
    Down,
    Left,
    Right,
    /// `1`–`9`: the platform column N.
    Jump,
    Search,
    Next,
    Prev,
    Follow,
    LogTop,
    LogBottom,
    PageUp,
    PageDown,
    Rerun,
    Cancel,
    CancelRun,
    OlderRun,
    NewerRun,
    Help,
    Quit,
}

/// A key as the table names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Plain(KeyCode),
    Ctrl(char),
    Digit,
}

impl Key {
    fn matches(self, event: &KeyEvent) -> bool {
        let ctrl = event.modifiers.contains(KeyModifiers::CONTROL);
        match self {
            Key::Plain(code) => !ctrl && event.code == code,
            Key::Ctrl(c) => ctrl && event.code == KeyCode::Char(c),
            Key::Digit => !ctrl && matches!(event.code, KeyCode::Char('1'..='9')),
        }
    }
}

/// One row of the key table.
pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in the help.
    pub label: &'static str,
    pub act: Act,
    pub help: &'static str,
    /// The word on the help line, for the keys shown there.
    pub short: Option<&'static str>,
}

const fn plain(c: char) -> Key {
    Key::Plain(KeyCode::Char(c))
}

/// Every key of the dashboard.
pub const KEYS: &[Binding] = &[
    Binding {
        keys: &[plain('k'), Key::Plain(KeyCode::Up)],
        label: "k ↑",
        act: Act::Up,
        help: "focus the recipe above",
        short: None,
    },
    Binding {
        keys: &[plain('j'), Key::Plain(KeyCode::Down)],
        label: "j ↓",
        act: Act::Down,
        help: "focus the recipe below",
        short: None,
    },
    Binding {
        keys: &[plain('h'), Key::Plain(KeyCode::Left)],
        label: "h ←",
        act: Act::Left,
        help: "focus the platform to the left",
        short: None,
    },
    Binding {
        keys: &[plain('l'), Key::Plain(KeyCode::Right)],
        label: "l →",
        act: Act::Right,
        help: "focus the platform to the right",
        short: Some("hjkl move"),
    },
    Binding {
        keys: &[Key::Digit],
        label: "1-9",
        act: Act::Jump,
        help: "focus platform column N",
        short: None,
    },
    Binding {
        keys: &[plain('/')],
        label: "/",
        act: Act::Search,
        help: "search node names (no match: the log)",
        short: Some("/ search"),
    },
    Binding { keys: &[plain('n')], label: "n", act: Act::Next, help: "next match", short: None },
    Binding { keys: &[plain('N')], label: "N", act: Act::Prev, help: "previous match", short: None },
    Binding {
        keys: &[plain('f')],
        label: "f",
        act: Act::Follow,
        help: "follow the log's end, or stop following",
        short: Some("f follow"),
    },
    Binding { keys: &[plain('g')], label: "g", act: Act::LogTop, help: "the log's first line", short: None },
    Binding {
        keys: &[plain('G')],
        label: "G",
        act: Act::LogBottom,
        help: "the log's last line (follow)",
        short: None,
    },
    Binding {
        keys: &[Key::Plain(KeyCode::PageUp)],
        label: "PgUp",
        act: Act::PageUp,
        help: "a page back in the log",
        short: None,
    },
    Binding {
        keys: &[Key::Plain(KeyCode::PageDown)],
        label: "PgDn",
        act: Act::PageDown,
        help: "a page on in the log",
        short: None,
    },
    Binding {
        keys: &[plain('r')],
        label: "r",
        act: Act::Rerun,
        help: "rerun the focused node (and what needs it)",
        short: Some("r rerun"),
    },
    Binding {
        keys: &[plain('c')],
        label: "c",
        act: Act::Cancel,
        help: "cancel the focused node (asks y/n)",
        short: Some("c cancel"),
    },
    Binding {
        keys: &[plain('C')],
        label: "C",
        act: Act::CancelRun,
        help: "cancel the whole run (asks y/n)",
        short: None,
    },
    Binding {
        keys: &[plain('[')],
        label: "[",
        act: Act::OlderRun,
        help: "with no live run: show the next older run",
        short: None,
    },
    Binding {
        keys: &[plain(']')],
        label: "]",
        act: Act::NewerRun,
        help: "with no live run: show the next newer run",
        short: None,
    },
    Binding { keys: &[plain('?')], label: "?", act: Act::Help, help: "this help", short: Some("? help") },
    Binding {
        keys: &[plain('q'), Key::Ctrl('c')],
        label: "q ^C",
        act: Act::Quit,
        help: "leave the dashboard (the run goes on)",
        short: Some("q quit"),
    },
];

/// What a key does, by the table.
pub fn act(event: &KeyEvent) -> Option<Act> {
    KEYS.iter().find(|b| b.keys.iter().any(|k| k.matches(event))).map(|b| b.act)
}

/// The help line: the table's short words.
pub fn help_line() -> String {
    KEYS.iter().filter_map(|b| b.short).collect::<Vec<_>>().join(" · ")
}

/// The `?` screen's lines.
pub fn help_screen() -> Vec<(String, &'static str)> {
    KEYS.iter().map(|b| (b.label.to_string(), b.help)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn the_table_answers_every_key_the_help_lists() {
        assert_eq!(act(&key(KeyCode::Char('j'))), Some(Act::Down));
        assert_eq!(act(&key(KeyCode::Down)), Some(Act::Down));
        assert_eq!(act(&key(KeyCode::Char('7'))), Some(Act::Jump));
        assert_eq!(act(&key(KeyCode::Char('C'))), Some(Act::CancelRun));
        assert_eq!(act(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Act::Quit));
        assert_eq!(act(&key(KeyCode::Char('x'))), None);
        // Every binding is reachable and appears on the help screen.
        for binding in KEYS {
            assert!(help_screen().iter().any(|(label, _)| label == binding.label));
        }
        assert!(help_line().contains("q quit"));
    }
}
