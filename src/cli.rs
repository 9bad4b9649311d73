//! The command line as typed (clap). Nothing below `main` sees these types: each command
//! resolves them into its own configuration first.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// How long an on-demand `odu serve` waits with nothing to do before it exits.
pub const DEFAULT_IDLE: &str = "10m";

#[derive(Debug, Parser)]
#[command(
    name = "odu",
    version,
    about = "A CI runner you attach to: runs a justfile's [metadata(\"ci\")] recipe DAG on local and remote lanes",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// odu's command line, saying this build's commit and protocol in `--version`.
pub fn command() -> clap::Command {
    Cli::command().version(crate::version::long())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline (or the selected recipes) and wait for the verdict.
    Run(RunArgs),
    /// Serve this checkout's runs on .ci/odu.sock (odu run starts one when none is up).
    Serve(ServeArgs),
    /// Probe every configured host (reachable, platform, runner, just, git) without running.
    Hosts(HostsArgs),
    /// Print the plan as JSON with a content digest.
    Dump(PlanArgs),
    /// Print the plan as a Mermaid flowchart.
    Graph(PlanArgs),
    /// List the runs recorded in this checkout, newest first.
    Runs(RunsArgs),
    /// Show the live run's nodes (or, with nothing running, the latest run's).
    Status(StatusArgs),
    /// Print a node's log; with -f, follow it until the node ends.
    Logs(LogsArgs),
    /// Rerun a node (or a recipe, or @platform's red nodes) and what needs it; in a finished
    /// run this starts a new run.
    Rerun(RerunArgs),
    /// Cancel the live run, one lane (@platform) or one node.
    Cancel(CancelArgs),
    /// Follow the live run until it ends: the dashboard on a terminal, NDJSON transitions
    /// otherwise (or the latest run with none live).
    Attach(AttachArgs),
    /// Watch this checkout's runs in a full-screen dashboard (NDJSON when not a terminal).
    Monitor(AttachArgs),
    /// Block until the live run goes red (or, with --settle, finishes); print a JSON verdict.
    Wait(WaitArgs),
    /// Serve this checkout's runs to a coding agent as MCP tools on stdio (run, wait, status,
    /// logs, rerun, cancel, runs).
    Mcp(McpArgs),
    /// Print the completion script for a shell (e.g. `odu completions bash > /etc/bash_completion.d/odu`).
    Completions(CompletionsArgs),
    /// Print odu's man page (roff); with --dir, write one page per command into that directory.
    Man(ManArgs),
    /// Make a branch require exactly the GitHub statuses odu posts (rulesets, else classic
    /// branch protection).
    Protect(ProtectArgs),
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The checkout to serve (default: the one the current directory is in).
    #[arg(long, value_name = "PATH")]
    pub dir: Option<std::path::PathBuf>,
    /// A server started for a run exits after this long idle (30s, 10m, 1h).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_IDLE)]
    pub idle_timeout: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete odu's commands and flags in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write odu.1 and one odu-COMMAND.1 per command into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProtectArgs {
    /// Print the contexts, one per line, and change nothing (no token needed).
    #[arg(long)]
    pub dry_run: bool,
    /// The branch to protect; default: the repository's default branch.
    #[arg(long, value_name = "B")]
    pub branch: Option<String>,
    /// Platforms whose contexts to require (repeatable); default: the hosts config's.
    #[arg(long = "platform", value_name = "P")]
    pub platforms: Vec<String>,
    /// Create a ruleset that requires the checks when none does.
    #[arg(long)]
    pub create: bool,
    /// Use this recipe as the root instead of the [metadata("ci")] one.
    #[arg(long, value_name = "NAMEPATH")]
    pub root: Option<String>,
}

/// Which run a client talks about.
#[derive(Debug, Args)]
pub struct RunRef {
    /// The run, as `<sha7>#<seq>` (see odu runs); default: the live run, else the latest.
    #[arg(long = "run", value_name = "SHA7#SEQ")]
    pub run: Option<String>,
}

#[derive(Debug, Args)]
pub struct HostsArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Exit after this long with no run and no client (30s, 10m, 1h); default: never.
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Print nothing about runs starting and ending.
    #[arg(long)]
    pub quiet: bool,
    /// A pipe's write end to close, with one byte written, once the socket takes clients (how
    /// `odu run` learns that the server it started is ready without polling the socket).
    #[arg(long, value_name = "FD", hide = true)]
    pub ready_fd: Option<i32>,
    /// A file holding what the starting client learned from its tools (git's answers, just's
    /// version and dump), read and closed as the server starts.
    #[arg(long, value_name = "FD", hide = true)]
    pub found_fd: Option<i32>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Output format: `json` is the NDJSON transition stream of `run --progress json`, `text`
    /// one line per transition; default: the dashboard on a terminal, else `json`.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<OutputFormat>,
    #[command(flatten)]
    pub run: RunRef,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait for every node to finish instead of returning at the first red node.
    #[arg(long)]
    pub settle: bool,
    /// Give up after this long (30s, 5m, 1h, 250ms).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    #[command(flatten)]
    pub run: RunRef,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub run: RunRef,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing until the node's log ends.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// The node: a full id (ci::e2e@x86_64-linux) or a unique suffix (e2e@x86_64-linux, e2e).
    pub node: String,
    #[command(flatten)]
    pub run: RunRef,
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    /// A node (full id or unique suffix), a recipe (every platform), or @platform.
    pub target: String,
    #[command(flatten)]
    pub run: RunRef,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// A node id, or @platform for a lane; nothing cancels the whole run.
    pub target: Option<String>,
    #[command(flatten)]
    pub run: RunRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressFormat {
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    Short,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Recipes to run, as `recipe` (every platform) or `recipe@platform` (one lane).
    #[arg(value_name = "RECIPE[@PLATFORM]")]
    pub selectors: Vec<String>,
    /// Only run these platforms (repeatable).
    #[arg(long = "platform", value_name = "P")]
    pub platforms: Vec<String>,
    /// Run platform P on ADDR for this run only (repeatable), e.g. x86_64-linux=localhost.
    #[arg(long = "host", value_name = "P=ADDR")]
    pub hosts: Vec<String>,
    /// Use this recipe as the root instead of the [metadata("ci")] one.
    #[arg(long, value_name = "NAMEPATH")]
    pub root: Option<String>,
    /// Run the selected recipes without their dependencies.
    #[arg(long)]
    pub no_deps: bool,
    /// Strict run, but post no GitHub statuses.
    #[arg(long)]
    pub no_post: bool,
    /// Run the live working tree instead of a snapshot of HEAD (implies --no-post).
    #[arg(long)]
    pub no_snapshot: bool,
    /// Shorthand for --no-snapshot --no-post: a dev iteration on a dirty tree.
    #[arg(long)]
    pub no_strict: bool,
    /// Print one JSON line per node transition on stdout.
    #[arg(long, value_name = "FORMAT")]
    pub progress: Option<ProgressFormat>,
    /// Which nodes the summary at the end lists: `all`, or `short` (only those not ok);
    /// default: short under the live matrix on a terminal, all otherwise.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub summary: Option<SummaryFormat>,
    /// Cap concurrently running nodes per lane.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Cancel the run in progress in this checkout first, instead of refusing.
    #[arg(long)]
    pub supersede: bool,
    /// Answer yes for the run's [confirm] recipes (just --yes), which odu refuses otherwise.
    // The brackets are just's attribute, shown as written in --help, not a link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long)]
    pub yes: bool,
    /// When the run ends, write it as JUnit XML to PATH (for Jenkins, GitLab, Buildkite).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<std::path::PathBuf>,
    /// When this starts a server, it exits after this long with nothing to do.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_IDLE)]
    pub idle_timeout: String,
    /// After the verdict, wait this long for GitHub to take the run's statuses; the server
    /// keeps posting what is still owed.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub post_wait: String,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Use this recipe as the root instead of the [metadata("ci")] one.
    #[arg(long, value_name = "NAMEPATH")]
    pub root: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Write one ended run (default: the latest) as JUnit XML to stdout instead.
    #[arg(long, value_name = "SHA7#SEQ", num_args = 0..=1, default_missing_value = "")]
    pub junit: Option<String>,
    #[command(subcommand)]
    pub action: Option<RunsAction>,
}

#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// Remove the logs of all but the last runs now (odu also does when a run starts or ends);
    /// their records stay, marked pruned.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// How many of the latest runs keep their logs [default: $ODU_KEEP_RUNS, else 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: OutputFormat,
}
