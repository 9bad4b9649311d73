//! The one mapping from failures to what the user sees and the documented exit codes:
//! 0 green, 1 red or refused, 130 interrupted, 2 usage. Also the one door to stdout, so that a
//! reader that goes away (`odu runs | head -1`) ends a command quietly.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// A refusal or failure worth one line to the user: lowercase, saying what to do next.
/// A tool's own multi-line account of what is wrong (just's error with its source line and
/// caret) travels beside it as `detail`, its lines as the tool printed them.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
    pub code: i32,
    /// What a tool printed about it, one entry a line, shown indented under the message.
    pub detail: Vec<String>,
}

/// Where an error's detail travels in a JSON-RPC error's `data`.
const DETAIL: &str = "detail";

impl CliError {
    pub fn refused(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 1, detail: Vec::new() }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 2, detail: Vec::new() }
    }
    /// The reader of stdout went away: the command ends there, with nothing to say (exit 0,
    /// as a Unix tool writing into a closed pipe).
    pub fn stdout_closed() -> Self {
        CliError { message: String::new(), code: 0, detail: Vec::new() }
    }
    /// The same error, with what a tool printed about it (trailing blank lines dropped).
    pub fn with_detail(mut self, text: &str) -> Self {
        self.detail = text.lines().map(|l| l.trim_end().to_string()).collect();
        while self.detail.last().is_some_and(String::is_empty) {
            self.detail.pop();
        }
        self
    }
    /// What the user reads: `odu: <message>`, then each line of the detail indented under it.
    pub fn render(&self) -> String {
        let mut text = format!("odu: {}", self.message);
        for line in &self.detail {
            text.push_str("\n  ");
            text.push_str(line);
        }
        text
    }
    /// The refusal as the server answers it: the detail rides in the error's `data`.
    pub fn to_rpc(&self) -> odu_proto::RpcError {
        let mut e = odu_proto::RpcError::refused(self.message.clone());
        if !self.detail.is_empty() {
            e.data = Some(serde_json::json!({ DETAIL: self.detail }));
        }
        e
    }
    /// A server's refusal as a client tells it, with any detail it sent.
    pub fn from_rpc(e: odu_proto::RpcError) -> Self {
        let detail = e
            .data
            .as_ref()
            .and_then(|d| d.get(DETAIL))
            .and_then(serde_json::Value::as_array)
            .map(|lines| lines.iter().filter_map(|l| l.as_str().map(String::from)).collect())
            .unwrap_or_default();
        CliError { message: e.message, code: 1, detail }
    }
    /// Whether there is nothing to tell the user.
    pub fn is_quiet(&self) -> bool {
        self.message.is_empty()
    }
}

impl From<odu_core::IngestError> for CliError {
    fn from(e: odu_core::IngestError) -> Self {
        CliError::refused(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// Set once a write to stdout found its reader gone.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away: commands that follow a run stop there.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Writes `bytes` to stdout and flushes. A reader that went away (`EPIPE`; odu ignores
/// `SIGPIPE`, as every Rust program does) is [`CliError::stdout_closed`], and every later
/// write is skipped; any other failure is a refusal.
pub fn out(bytes: &[u8]) -> CliResult<()> {
    if stdout_closed() {
        return Err(CliError::stdout_closed());
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Err(CliError::stdout_closed())
        }
        Err(e) => Err(CliError::refused(format!("cannot write to stdout: {e}"))),
    }
}

/// [`out`] of one line.
pub fn outln(line: impl std::fmt::Display) -> CliResult<()> {
    out(format!("{line}\n").as_bytes())
}

/// Writes `text` and a newline to stderr. A stderr that cannot be written (its reader gone, as
/// in `odu run 2>&1 | head -1`) leaves no one to tell: the line is dropped, and the command
/// goes on to its exit code.
pub fn say(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::CliError;

    #[test]
    fn a_tools_lines_are_shown_as_printed_indented_under_the_message() {
        let e = CliError::refused("just rejected the justfile:")
            .with_detail("error: unknown\n ——▶ justfile:2:5\n  │\n2 │ ci: x\n  │     ^\n\n");
        assert_eq!(
            e.render(),
            "odu: just rejected the justfile:\n  error: unknown\n   ——▶ justfile:2:5\n    │\n  2 │ ci: x\n    │     ^"
        );
        assert_eq!(CliError::refused("plain").render(), "odu: plain");
    }

    #[test]
    fn the_detail_survives_the_wire() {
        let e = CliError::refused("just rejected the justfile:").with_detail("error: a\n  b");
        let wire = serde_json::to_string(&e.to_rpc()).unwrap();
        let back = CliError::from_rpc(serde_json::from_str(&wire).unwrap());
        assert_eq!((back.message, back.detail), (e.message, e.detail));
        let plain = serde_json::to_value(CliError::refused("x").to_rpc()).unwrap();
        assert_eq!(plain, serde_json::json!({"code": -32000, "message": "x"}));
    }
}
