//! Node statuses and their projections (glyph, progress word, colour class).

use serde::{Deserialize, Serialize};

/// The life of one node. `errored` is infrastructure death, never a recipe's own fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Pending,
    Running,
    Ok,
    Failed,
    Skipped,
    Errored,
    Cancelled,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 7] = [
        NodeStatus::Pending,
        NodeStatus::Running,
        NodeStatus::Ok,
        NodeStatus::Failed,
        NodeStatus::Skipped,
        NodeStatus::Errored,
        NodeStatus::Cancelled,
    ];

    /// Whether the node will not change again unless an operator reruns it.
    pub fn is_terminal(self) -> bool {
        !matches!(self, NodeStatus::Pending | NodeStatus::Running)
    }

    /// Red statuses fail a run on their own.
    pub fn is_red(self) -> bool {
        matches!(self, NodeStatus::Failed | NodeStatus::Errored)
    }

    /// Whether a dependent of a node in this status can never run.
    pub fn blocks_dependents(self) -> bool {
        matches!(self, NodeStatus::Failed | NodeStatus::Skipped | NodeStatus::Errored | NodeStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Running => "running",
            NodeStatus::Ok => "ok",
            NodeStatus::Failed => "failed",
            NodeStatus::Skipped => "skipped",
            NodeStatus::Errored => "errored",
            NodeStatus::Cancelled => "cancelled",
        }
    }

    /// The word of the `--progress json` stream; `None` for pending, which is never emitted.
    pub fn progress_word(self) -> Option<&'static str> {
        match self {
            NodeStatus::Pending => None,
            NodeStatus::Ok => Some("success"),
            other => Some(other.as_str()),
        }
    }

    pub fn glyph(self) -> char {
        match self {
            NodeStatus::Pending => '◦',
            NodeStatus::Running => '▶',
            NodeStatus::Ok => '✔',
            NodeStatus::Failed => '✗',
            NodeStatus::Skipped => '⊘',
            NodeStatus::Errored => '⚠',
            NodeStatus::Cancelled => '◼',
        }
    }

    /// ANSI SGR colour for terminal faces.
    pub fn sgr(self) -> &'static str {
        match self {
            NodeStatus::Pending | NodeStatus::Skipped | NodeStatus::Cancelled => "90",
            NodeStatus::Running => "33",
            NodeStatus::Ok => "32",
            NodeStatus::Failed => "31",
            NodeStatus::Errored => "35",
        }
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's outcome as the ledger records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Incomplete,
}

impl Outcome {
    /// `incomplete` unless every node is terminal, `incomplete` if any was cancelled, `failed`
    /// if any is red or skipped, else `passed`. A run is green only when every node is `ok`.
    pub fn of<'a>(statuses: impl IntoIterator<Item = &'a NodeStatus>) -> Outcome {
        let mut outcome = Outcome::Passed;
        for status in statuses {
            match status {
                NodeStatus::Pending | NodeStatus::Running | NodeStatus::Cancelled => {
                    return Outcome::Incomplete;
                }
                NodeStatus::Ok => {}
                NodeStatus::Failed | NodeStatus::Errored | NodeStatus::Skipped => outcome = Outcome::Failed,
            }
        }
        outcome
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Incomplete => "incomplete",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's outcome as its header, its ledger record and the `runs` cell say it: `running`
/// until the outcome is decided, then the [`Outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    Running,
    Passed,
    Failed,
    Incomplete,
}

impl RunOutcome {
    /// The outcome, once decided.
    pub fn decided(self) -> Option<Outcome> {
        match self {
            RunOutcome::Running => None,
            RunOutcome::Passed => Some(Outcome::Passed),
            RunOutcome::Failed => Some(Outcome::Failed),
            RunOutcome::Incomplete => Some(Outcome::Incomplete),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self.decided() {
            None => "running",
            Some(outcome) => outcome.as_str(),
        }
    }
}

impl From<Outcome> for RunOutcome {
    fn from(outcome: Outcome) -> RunOutcome {
        match outcome {
            Outcome::Passed => RunOutcome::Passed,
            Outcome::Failed => RunOutcome::Failed,
            Outcome::Incomplete => RunOutcome::Incomplete,
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a run outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a run outcome (running, passed, failed or incomplete)")]
pub struct BadOutcome(pub String);

impl std::str::FromStr for RunOutcome {
    type Err = BadOutcome;

    fn from_str(word: &str) -> Result<RunOutcome, BadOutcome> {
        match word {
            "running" => Ok(RunOutcome::Running),
            "passed" => Ok(RunOutcome::Passed),
            "failed" => Ok(RunOutcome::Failed),
            "incomplete" => Ok(RunOutcome::Incomplete),
            other => Err(BadOutcome(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_green_only_when_every_node_is_ok() {
        use NodeStatus::*;
        assert_eq!(Outcome::of(&[Ok, Ok]), Outcome::Passed);
        assert_eq!(Outcome::of(&[Ok, Skipped]), Outcome::Failed);
        assert_eq!(Outcome::of(&[Failed, Cancelled]), Outcome::Incomplete);
        assert_eq!(Outcome::of(&[Ok, Running]), Outcome::Incomplete);
        assert_eq!(Outcome::of(&[Errored]), Outcome::Failed);
    }

    #[test]
    fn run_outcomes_read_and_write_the_ledger_words() {
        for word in ["running", "passed", "failed", "incomplete"] {
            let outcome: RunOutcome = word.parse().unwrap();
            assert_eq!(outcome.to_string(), word);
            assert_eq!(serde_json::to_string(&outcome).unwrap(), format!("{word:?}"));
            assert_eq!(outcome.decided().map(RunOutcome::from).unwrap_or(RunOutcome::Running), outcome);
        }
        assert!("green".parse::<RunOutcome>().is_err());
    }
}
