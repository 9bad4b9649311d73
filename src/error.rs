//! The one mapping from failures to what the user sees and the documented exit codes:
//! 0 green, 1 red or refused, 130 interrupted, 2 usage. Also the one door to stdout, so that a
//! reader that goes away (`odu runs | head -1`) ends a command quietly.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// A refusal or failure worth one line to the user: lowercase, saying what to do next.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn refused(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 1 }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 2 }
    }
    /// The reader of stdout went away: the command ends there, with nothing to say (exit 0,
    /// as a Unix tool writing into a closed pipe).
    pub fn stdout_closed() -> Self {
        CliError { message: String::new(), code: 0 }
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
