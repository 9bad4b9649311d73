//! A justfile's variables, evaluated once per lane and given to every node.
//!
//! `just` evaluates a justfile's variables once per invocation; odu runs one invocation per
//! node, so a backtick (`` `date +%s%N` ``, `` `mktemp -d` ``) or `uuid()` would give every node
//! its own value, and a slow backtick would be paid by every node. During `_ci-setup` the runner
//! evaluates them once, in the lane's worktree and environment (where the nodes run), and every
//! node gets them as `NAME=VALUE` overrides (`just --no-deps NAME=VALUE … recipe args`).
//!
//! `just --evaluate` prints public variables only: private ones, and what they refer to, are
//! evaluated one at a time (`just NAME=VALUE… --evaluate NAME`) once what they refer to is
//! fixed, so each variable is evaluated exactly once and every value agrees with the others.
//! When that cannot be done faithfully (`set lazy`, `set lists`, a failing evaluation, a value
//! too large for a command line), the variables are left to each node, as before, and the
//! setup log says why.
//!
//! Evaluation runs the justfile's backticks, as a node does: each `just` it starts gets a
//! process group of its own, handed to `on_group` so the runner records and ends it like a
//! node's (a cancelled run, a dead runner), and strays left in it are ended when it exits.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use crate::tool::just::{self, ModuleVariables};

/// The largest value passed on a node's command line (Linux caps one argument at 128 KiB).
const MAX_VALUE: usize = 64 * 1024;
/// The largest total of all overrides on a node's command line.
const MAX_TOTAL: usize = 512 * 1024;

/// `just --dump --dump-format json` in the lane's worktree and environment: what
/// [`evaluate_once`] reads the variables from.
pub async fn dump(
    workspace: &Path,
    env: &super::spawner::Environment,
    on_group: &(dyn Fn(i32, super::scratch::Started) + Sync),
) -> Result<String, String> {
    Just { workspace, env, on_group }.run(&[], &["--dump", "--dump-format", "json"]).await
}

/// The overrides every node of the lane gets, `NAME=VALUE` each, or why there are none, from
/// the lane's [`dump`].
pub async fn evaluate_once(
    workspace: &Path,
    env: &super::spawner::Environment,
    on_group: &(dyn Fn(i32, super::scratch::Started) + Sync),
    dump: Result<String, String>,
) -> Result<Vec<String>, String> {
    let just = Just { workspace, env, on_group };
    let dump = dump?;
    let modules = just::variables_of(&dump)?;
    let mut overrides: Vec<String> = Vec::new();
    for module in &modules {
        evaluate_module(&just, module, &mut overrides).await?;
    }
    let total: usize = overrides.iter().map(String::len).sum();
    if total > MAX_TOTAL {
        return Err(format!("the variables' values total {total} bytes, too many for a node's command line"));
    }
    Ok(overrides)
}

async fn evaluate_module(
    just: &Just<'_>,
    module: &ModuleVariables,
    overrides: &mut Vec<String>,
) -> Result<(), String> {
    let fixed = |name: &str, value: String, overrides: &mut Vec<String>| {
        if value.len() > MAX_VALUE {
            return Err(format!(
                "variable {name} is {} bytes, too long for a node's command line",
                value.len()
            ));
        }
        if value.contains('\0') {
            return Err(format!("variable {name} holds a NUL byte, which no command line can carry"));
        }
        overrides.push(format!("{name}={value}"));
        Ok(())
    };
    for name in &module.one_by_one {
        let name = module.qualified(name);
        let value = just.run(overrides, &["--evaluate", &name]).await?;
        fixed(&name, value, overrides)?;
    }
    if module.together.is_empty() {
        return Ok(());
    }
    let mut args = vec!["--evaluate-format", "just", "--evaluate"];
    if !module.path.is_empty() {
        args.push(&module.path);
    }
    let printed = just.run(overrides, &args).await?;
    let mut values = just::parse_evaluate(&printed)?;
    for name in &module.together {
        let value = values
            .remove(name)
            .ok_or_else(|| format!("just --evaluate did not print variable {}", module.qualified(name)))?;
        fixed(&module.qualified(name), value, overrides)?;
    }
    Ok(())
}

/// Where and how the evaluating `just` runs: the nodes' directory and environment.
struct Just<'a> {
    workspace: &'a Path,
    env: &'a super::spawner::Environment,
    on_group: &'a (dyn Fn(i32, super::scratch::Started) + Sync),
}

impl Just<'_> {
    /// `just --color never [OPTIONS] [NAME=VALUE…] [ARGS]`: its stdout, exactly, or its
    /// complaint.
    async fn run(&self, overrides: &[String], args: &[&str]) -> Result<String, String> {
        let (options, rest) = match args.iter().position(|a| *a == "--evaluate") {
            Some(at) => args.split_at(at + 1),
            None => (args, &[][..]),
        };
        let mut command = std::process::Command::new(super::spawner::resolve_program("just"));
        self.env.apply(&mut command);
        let mut command = tokio::process::Command::from(command);
        command
            .arg("--color")
            .arg("never")
            .args(options)
            .args(overrides)
            .args(rest)
            .current_dir(self.workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let (child, started) = super::scratch::Started::around(|| crate::tool::spawn_async(&mut command));
        let child = child.map_err(|e| format!("cannot run just: {e}"))?;
        let group = child.id().map(|pid| pid as i32).map(Group);
        if let Some(Group(pgid)) = group {
            (self.on_group)(pgid, started);
        }
        let out = child.wait_with_output().await.map_err(|e| format!("cannot run just: {e}"));
        drop(group);
        let out = out?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
            return Err(format!("just {} failed: {said}", args.join(" ")));
        }
        String::from_utf8(out.stdout)
            .map_err(|_| format!("just {} printed bytes that are not UTF-8", args.join(" ")))
    }
}

/// An evaluating `just`'s process group: whatever is left in it when its `just` is done (or
/// the evaluation is dropped) is ended, as a node's strays are.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        if super::spawner::kill_group(self.0, libc::SIGTERM) && tokio::runtime::Handle::try_current().is_ok()
        {
            super::spawner::escalate_later(self.0);
        }
    }
}

/// A node's argv with the lane's overrides placed before its recipe
/// (`just --no-deps NAME=VALUE… recipe args`); any other shape is left alone.
pub fn with_overrides(argv: Arc<[String]>, overrides: &[String]) -> Arc<[String]> {
    if overrides.is_empty() || argv.len() < 3 || argv[1] != "--no-deps" {
        return argv;
    }
    let mut with = argv.to_vec();
    with.splice(2..2, overrides.iter().cloned());
    with.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_go_between_the_options_and_the_recipe() {
        let argv: Arc<[String]> = ["just", "--no-deps", "build", "x"].map(String::from).into();
        let overrides = vec!["a=1".to_string(), "m::b=-n".to_string()];
        assert_eq!(
            *with_overrides(argv.clone(), &overrides),
            ["just", "--no-deps", "a=1", "m::b=-n", "build", "x"]
        );
        // Without overrides the plan's own argv is passed on, not a copy of it.
        assert!(Arc::ptr_eq(&with_overrides(argv.clone(), &[]), &argv));
        let other: Arc<[String]> = ["sh", "-c", "true"].map(String::from).into();
        assert_eq!(with_overrides(other.clone(), &overrides), other);
    }
}
