//! What a node's transition asks GitHub to show: the commit status's state and description.

use odu_core::NodeStatus;
use odu_core::duration::go_duration;
use serde::{Deserialize, Serialize};

/// GitHub's limit on a status description, in characters.
pub const MAX_DESCRIPTION: usize = 140;

/// A commit status's state, as GitHub names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }

    pub fn is_terminal(self) -> bool {
        self != State::Pending
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One commit status: what a context shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub description: String,
}

/// The status a node's move into `to` posts (`None` for `pending` and `skipped`): `<log>` is
/// the node's trail path, `duration_ms` how long it ran.
pub fn for_transition(to: NodeStatus, duration_ms: Option<u64>, log: &str) -> Option<Status> {
    let dur = || go_duration(duration_ms.unwrap_or(0));
    let (state, prefix) = match to {
        NodeStatus::Pending | NodeStatus::Skipped => return None,
        NodeStatus::Running => (State::Pending, "Running: ".to_string()),
        NodeStatus::Ok => (State::Success, format!("Succeeded ({}): ", dur())),
        NodeStatus::Failed => (State::Failure, format!("Failed ({}): ", dur())),
        NodeStatus::Errored => (State::Error, format!("Errored ({}): ", dur())),
        NodeStatus::Cancelled => (State::Error, format!("Cancelled ({}): ", dur())),
    };
    Some(Status { state, description: describe(&prefix, log) })
}

/// The `error` a context last posted `pending` gets when the run stops without ending its node
/// (`Errored (interrupted): <log>`).
pub fn for_interrupt(reason: &str, log: &str) -> Status {
    Status { state: State::Error, description: describe(&format!("Errored ({reason}): "), log) }
}

/// `prefix` then `path`, within [`MAX_DESCRIPTION`] characters: a path too long loses its
/// middle to `…`, keeping its start (the run's folder) and its end (the node's file).
pub fn describe(prefix: &str, path: &str) -> String {
    let whole = format!("{prefix}{path}");
    let count = whole.chars().count();
    if count <= MAX_DESCRIPTION {
        return whole;
    }
    let prefix_len = prefix.chars().count();
    // Room for the path's two ends and the ellipsis.
    let Some(room) = MAX_DESCRIPTION.checked_sub(prefix_len + 1).filter(|room| *room >= 2) else {
        return whole.chars().take(MAX_DESCRIPTION - 1).chain(['…']).collect();
    };
    let head = room / 2;
    let tail = room - head;
    let chars: Vec<char> = path.chars().collect();
    let mut out = String::from(prefix);
    out.extend(&chars[..head]);
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = ".ci/338eb01/x86_64-linux/ci::e2e.log";

    #[test]
    fn each_transition_posts_justcis_wording() {
        let post = |to, ms| for_transition(to, ms, LOG).map(|s| (s.state, s.description));
        assert_eq!(post(NodeStatus::Running, None), Some((State::Pending, format!("Running: {LOG}"))));
        assert_eq!(
            post(NodeStatus::Ok, Some(25_400)),
            Some((State::Success, format!("Succeeded (25s): {LOG}")))
        );
        assert_eq!(
            post(NodeStatus::Failed, Some(8_000)),
            Some((State::Failure, format!("Failed (8s): {LOG}")))
        );
        assert_eq!(
            post(NodeStatus::Errored, Some(60_000)),
            Some((State::Error, format!("Errored (1m0s): {LOG}")))
        );
        assert_eq!(
            post(NodeStatus::Cancelled, Some(3_723_000)),
            Some((State::Error, format!("Cancelled (1h2m3s): {LOG}")))
        );
        assert_eq!(post(NodeStatus::Ok, None), Some((State::Success, format!("Succeeded (0s): {LOG}"))));
        assert_eq!(post(NodeStatus::Skipped, Some(1)), None);
        assert_eq!(post(NodeStatus::Pending, None), None);
        assert_eq!(for_interrupt("interrupted", LOG).description, format!("Errored (interrupted): {LOG}"));
    }

    #[test]
    fn a_long_path_loses_its_middle_and_the_description_fits_in_140_characters() {
        let long = format!(".ci/338eb01/x86_64-linux/{}.log", "ci::a_recipe_with_a_very_long_name".repeat(6));
        let d = describe("Succeeded (1h2m3s): ", &long);
        assert_eq!(d.chars().count(), MAX_DESCRIPTION, "{d}");
        assert!(d.starts_with("Succeeded (1h2m3s): .ci/338eb01/x86_64-linux/"), "{d}");
        assert!(d.ends_with("name.log"), "{d}");
        assert_eq!(d.matches('…').count(), 1, "{d}");
        // Multi-byte characters count as one each and are never split.
        let wide = format!(".ci/338eb01/p/{}.log", "é".repeat(300));
        let d = describe("Running: ", &wide);
        assert_eq!(d.chars().count(), MAX_DESCRIPTION);
        // Exactly at the limit stays whole; one more is shortened.
        let path = "x".repeat(MAX_DESCRIPTION - "Running: ".len());
        assert_eq!(describe("Running: ", &path), format!("Running: {path}"));
        let d = describe("Running: ", &format!("{path}y"));
        assert_eq!(d.chars().count(), MAX_DESCRIPTION);
        assert!(d.ends_with('y') && d.contains('…'), "{d}");
    }
}
