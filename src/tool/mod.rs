//! Short-lived helper commands (`git`, `just --dump`) run to completion. Node processes are
//! spawned elsewhere, in the runner's spawner, and nowhere else.

pub mod git;
pub mod just;

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The captured result of one tool run.
pub struct ToolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The environment a tool sees: the process's own, or a run's (the starting client's).
pub type Env = std::collections::BTreeMap<String, String>;

/// Starts `program args…` in `dir` with stdin closed and its output captured.
pub fn start(program: &str, args: &[&str], dir: &Path) -> std::io::Result<Child> {
    start_with(program, args, dir, None)
}

/// `start`, in `env` when given (the program is looked up on that environment's `PATH`).
pub fn start_with(program: &str, args: &[&str], dir: &Path, env: Option<&Env>) -> std::io::Result<Child> {
    let mut command = Command::new(program);
    if let Some(env) = env {
        command.env_clear().envs(env);
    }
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Waits for a started tool and collects what it printed.
pub fn finish(child: Child) -> std::io::Result<ToolOutput> {
    let out = child.wait_with_output()?;
    Ok(ToolOutput {
        success: out.status.success(),
        // Valid UTF-8 (the usual case) is taken without a copy.
        stdout: String::from_utf8(out.stdout)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `program args…` in `dir` with stdin closed. `Err` means it could not be started.
pub fn run(program: &str, args: &[&str], dir: &Path) -> std::io::Result<ToolOutput> {
    finish(start(program, args, dir)?)
}
