//! Talking to `just`: its version and its JSON dump.

use std::path::Path;

use crate::error::{CliError, CliResult};
use crate::tool::{self, ToolOutput};

const INSTALL: &str = "install just >= 1.57 (pip install rust-just, or cargo install just)";

fn not_on_path() -> CliError {
    CliError::refused(format!("just is not on PATH: {INSTALL}"))
}

/// Checks a `just --version` answer: new enough, or a refusal naming the version found.
fn check_version(out: ToolOutput) -> CliResult<String> {
    let line = out.stdout.trim().to_string();
    match parse_version(&line) {
        Some(v) if v >= MIN_JUST => Ok(line),
        Some(_) => Err(CliError::refused(format!("{line} is too old: odu needs just >= 1.57; {INSTALL}"))),
        None => Err(CliError::refused(format!("cannot read just's version from {line:?}: {INSTALL}"))),
    }
}

/// `just --dump --dump-format json` in `dir`, after checking just is new enough. The version
/// check runs beside the dump, so it costs no wall time.
pub fn dump(dir: &Path) -> CliResult<String> {
    dump_with(dir, None)
}

/// `dump`, with just found on (and run in) `env` when given.
pub fn dump_with(dir: &Path, env: Option<&tool::Env>) -> CliResult<String> {
    let version = tool::start_with("just", &["--version"], dir, env).map_err(|_| not_on_path())?;
    let dump = tool::start_with("just", &["--dump", "--dump-format", "json"], dir, env)
        .map_err(|_| not_on_path())?;
    let version = tool::finish(version).map_err(|_| not_on_path())?;
    let out = tool::finish(dump).map_err(|_| not_on_path())?;
    check_version(version)?;
    if out.success {
        return Ok(out.stdout);
    }
    let message = out.stderr.trim();
    if message.to_ascii_lowercase().contains("no justfile found") {
        return Err(CliError::refused(format!(
            "no justfile in {} or above it: odu runs a just recipe DAG; add a justfile whose root recipe carries [metadata(\"ci\")]",
            dir.display()
        )));
    }
    Err(rejected(&out.stderr))
}

/// just's own account of what is wrong with the justfile (its `error:` line, then the source
/// line and caret), kept as just printed it.
fn rejected(stderr: &str) -> CliError {
    CliError::refused("just rejected the justfile: fix what it says below, then run again")
        .with_detail(stderr.trim_start_matches('\n'))
}

/// `just --dump`, the justfile as text, in `dir`; `None` when just cannot give it.
pub fn text_dump(dir: &Path, env: Option<&tool::Env>) -> Option<String> {
    let out = tool::finish(tool::start_with("just", &["--dump"], dir, env).ok()?).ok()?;
    out.success.then_some(out.stdout)
}

/// The smallest `just` that dumps child-module dependencies with their paths.
pub const MIN_JUST: (u64, u64) = (1, 57);

/// `just 1.59.0` → (1, 59).
pub fn parse_version(text: &str) -> Option<(u64, u64)> {
    let version = text.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rejection_keeps_justs_lines_as_it_printed_them() {
        let stderr = "error: recipe `ci` has unknown dependency `nosuch`\n ——▶ justfile:2:5\n  │\n2 │ ci: nosuch\n  │     ^^^^^^\n";
        let e = super::rejected(stderr);
        assert!(e.message.starts_with("just rejected the justfile"), "{}", e.message);
        assert_eq!(
            e.detail,
            [
                "error: recipe `ci` has unknown dependency `nosuch`",
                " ——▶ justfile:2:5",
                "  │",
                "2 │ ci: nosuch",
                "  │     ^^^^^^"
            ]
        );
    }
}
