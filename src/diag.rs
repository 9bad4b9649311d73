//! Diagnostics: structured `tracing` events for whoever is chasing a problem, on stderr.
//!
//! `ODU_LOG` is an env filter (`ODU_LOG=debug`, `ODU_LOG=odu::lane=trace,odu::server=debug`).
//! Unset, a server or runner shows only warnings, and a client nothing. A client's stderr is the terminal; `odu serve`'s is
//! `.ci/odu.serve.log` when `odu run` started it; a runner's is filed into its lane's
//! `_ci-setup` log. Events carry the run (`run = "<sha7>#<seq>"`), lane (`platform`) and node
//! (`node = "<recipe>@<platform>"`) as fields. What a user must see (errors, the verdict,
//! progress) is plain output, never a diagnostic.

use tracing_subscriber::EnvFilter;

/// Which process is speaking, for the shape of its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// A command in the user's terminal: no timestamps.
    Client,
    /// `odu serve`, whose stderr is a log file: timestamps.
    Server,
    /// `odu-runner`: its stderr becomes `[runner] …` lines of the setup log.
    Runner,
}

/// The environment variable holding the filter.
pub const VAR: &str = "ODU_LOG";

/// Installs the subscriber once for this process. A bad filter is said once and ignored.
pub fn init(process: Process) {
    let asked = std::env::var(VAR).ok().filter(|text| !text.trim().is_empty());
    // A client in the terminal has no warnings of its own to show: with nothing asked, it
    // installs nothing and pays nothing (building a filter and a subscriber costs a short
    // command about a millisecond).
    if asked.is_none() && process == Process::Client {
        return;
    }
    let (filter, bad) = match asked {
        Some(text) => match EnvFilter::try_new(text.trim()) {
            Ok(filter) => (filter, None),
            Err(e) => {
                let why = format!(
                    "{VAR}={text:?} is not a filter ({e}): showing warnings only; try {VAR}=debug or {VAR}=odu::lane=trace"
                );
                (EnvFilter::new("warn"), Some(why))
            }
        },
        None => (EnvFilter::new("warn"), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE);
    let installed = match process {
        Process::Server => builder.try_init(),
        Process::Client | Process::Runner => builder.without_time().try_init(),
    };
    if installed.is_ok()
        && let Some(bad) = bad
    {
        tracing::warn!("{bad}");
    }
}
