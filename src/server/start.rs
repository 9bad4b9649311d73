//! Preparing a run from `run.start`: the strict gate, the plan, the hosts and the lanes. The
//! server does this for every client (`odu run`, a rerun of a finished run, an agent), in the
//! environment the client sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use odu_core::plan::{Dropped, IngestError, Selector};
use odu_core::run::{LanePlan, RunMeta};
use odu_core::status::RunOutcome;
use odu_core::{Plan, Run, Task, TaskSpec};
use odu_proto::{LaneInfo, StartParams, Started};

use crate::clock::now_ms;
use crate::error::{CliError, CliResult};
use crate::hosts::{self, Hosts};
use crate::lane::LaneSpec;
use crate::server::coordinator::Coordinator;
use crate::server::github::api::{API_VAR, Remote, TOKEN_VARS, find_token};
use crate::server::github::{Target, queue::Pacer};
use crate::tool::Env;
use crate::trail::ledger::{self, LaneRecord, RunRecord};
use crate::{tool::git, tool::just};

/// Set in every node's environment; a nested `odu run` without explicit hosts is refused.
pub const RUN_ENV: &str = "ODU_RUN";

/// `run.start`'s params after they are understood.
#[derive(Debug)]
pub struct RunConfig {
    pub selectors: Vec<Selector>,
    pub platforms: Vec<String>,
    pub pins: Vec<(String, String)>,
    pub root: Option<String>,
    pub no_deps: bool,
    /// Refuse a dirty tree and run a pinned snapshot of HEAD.
    pub snapshot: bool,
    pub post: bool,
    pub jobs: Option<usize>,
    /// Answer yes for `[confirm]` recipes.
    pub yes: bool,
}

impl RunConfig {
    pub fn from_params(params: &StartParams) -> CliResult<RunConfig> {
        let flags = &params.flags;
        let pins = flags.host.iter().map(|p| hosts::parse_pin(p)).collect::<CliResult<Vec<_>>>()?;
        let snapshot = !flags.no_strict && !flags.no_snapshot;
        if flags.jobs == Some(0) {
            return Err(CliError::usage("--jobs must be at least 1"));
        }
        Ok(RunConfig {
            selectors: params.selectors.iter().map(|s| Selector::parse(s)).collect(),
            platforms: flags.platform.clone(),
            pins,
            root: flags.root.clone(),
            no_deps: flags.no_deps,
            snapshot,
            post: snapshot && !flags.no_post,
            jobs: flags.jobs,
            yes: flags.yes,
        })
    }
}

/// Holds `.ci/odu.run.lock` (an exclusive `flock`) for the life of a run: one run per checkout
/// at a time, even against another build's server. The lock dies with its holder, so a crash,
/// a reboot or a reused pid never leaves a stale one; the pid inside is only for the message.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(ci: &Path) -> CliResult<RunLock> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let path = ci.join("odu.run.lock");
        let mut file = crate::trail::ci::open_lock(&path)
            .map_err(|e| CliError::refused(format!("cannot open the run lock {}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = (&file).take(32).read_to_string(&mut holder);
            let holder =
                holder.trim().parse::<u32>().map(|pid| format!(" (odu pid {pid})")).unwrap_or_default();
            return Err(CliError::refused(format!(
                "a run is already in progress in this checkout{holder}: wait for it to finish, or stop it first"
            )));
        }
        // The holder's pid, rewritten only when it changed: a server writes the same line at
        // every run's start, and truncating a file frees (and on some disks discards) a block.
        let line = format!("{}\n", std::process::id());
        let mut held = String::new();
        if (&file).take(32).read_to_string(&mut held).is_err() || held != line {
            let _ =
                file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(line.as_bytes()));
        }
        Ok(RunLock { _file: file })
    }
}

/// The runner binary for local lanes: `$ODU_RUNNER`, else `odu-runner` beside this binary.
pub fn runner_path(env: &dyn Fn(&str) -> Option<String>) -> CliResult<PathBuf> {
    if let Some(path) = env("ODU_RUNNER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe =
        std::env::current_exe().map_err(|e| CliError::refused(format!("cannot locate odu itself: {e}")))?;
    let runner = exe.with_file_name("odu-runner");
    if !runner.exists() {
        return Err(CliError::refused(format!(
            "cannot find odu-runner next to odu (looked at {}): install both binaries together, or set ODU_RUNNER",
            runner.display()
        )));
    }
    Ok(runner)
}

/// One lane of a run as planned: its platform, its tasks in the order just runs them, and what
/// to say about it before the run.
pub struct PlannedLane {
    pub platform: String,
    pub tasks: Vec<Task>,
    pub notes: Vec<String>,
}

/// The lanes that run, with their tasks; lanes with nothing to do are dropped. A `[confirm]`
/// recipe is refused unless `--yes` answers for it, and a root that no lane can run is refused.
pub fn plan_lanes(plan: &Plan, config: &RunConfig, hosts: &Hosts) -> CliResult<Vec<PlannedLane>> {
    let mut fanout: Vec<String> = hosts.entries.keys().cloned().collect();
    if !config.platforms.is_empty() {
        for p in &config.platforms {
            if !hosts.entries.contains_key(p) {
                return Err(CliError::refused(format!(
                    "--platform {p} has no host: add it to the hosts config ({}) or pass --host {p}=ADDR",
                    hosts.source
                )));
            }
        }
        fanout.retain(|p| config.platforms.contains(p));
    }
    for selector in &config.selectors {
        if let Some(p) = &selector.platform
            && !fanout.contains(p)
        {
            return Err(CliError::refused(format!(
                "selector platform {p:?} is not in the fan-out ({}): configure a host for it or pass --host {p}=ADDR",
                fanout.join(", ")
            )));
        }
    }
    let resolved = plan.resolve(&config.selectors)?;
    let all: Vec<(String, Vec<Task>, Vec<Dropped>)> = fanout
        .into_iter()
        .map(|p| {
            let (tasks, dropped) = plan.lane(&p, &resolved, config.no_deps);
            (p, tasks, dropped)
        })
        .collect();
    if resolved.is_empty() {
        plan.check_root_runs(&all)?;
    }
    let lanes: Vec<PlannedLane> = all
        .into_iter()
        .map(|(platform, tasks, dropped)| {
            let notes = if dropped.is_empty() {
                vec![]
            } else {
                let listed: Vec<String> = dropped.iter().map(ToString::to_string).collect();
                vec![format!(
                    "lane {platform} leaves out {} its OS cannot run: {}",
                    plural(dropped.len(), "recipe"),
                    listed.join(", ")
                )]
            };
            PlannedLane { tasks: plan.in_run_order(tasks), platform, notes }
        })
        .filter(|lane| !lane.tasks.is_empty() || !lane.notes.is_empty())
        .collect();
    if !config.yes {
        let mut asking: Vec<String> = Vec::new();
        for lane in &lanes {
            for recipe in plan.asking(&lane.tasks) {
                if !asking.contains(&recipe) {
                    asking.push(recipe);
                }
            }
        }
        if let Some(first) = asking.first() {
            let names = asking.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
            return Err(CliError::refused(format!(
                "{} {names} {} for confirmation ([confirm]) and a run cannot answer: pass --yes to \
                 confirm for this run, or leave {} out of the selection",
                if asking.len() == 1 { "recipe" } else { "recipes" },
                if asking.len() == 1 { "asks" } else { "ask" },
                if asking.len() == 1 { first.as_str() } else { "them" },
            )));
        }
    }
    // A lane whose OS leaves everything out still said so above; it does not run.
    let notes: Vec<String> = lanes.iter().flat_map(|lane| lane.notes.clone()).collect();
    let lanes: Vec<PlannedLane> = lanes.into_iter().filter(|lane| !lane.tasks.is_empty()).collect();
    if lanes.is_empty() {
        if !notes.is_empty() {
            return Err(CliError::refused(format!(
                "nothing to run: {}; check the selectors and --platform",
                notes.join("; ")
            )));
        }
        return Err(CliError::refused(
            "nothing to run: no lane has a matching recipe (check the selectors and --platform)",
        ));
    }
    Ok(lanes)
}

/// A run ready to start: its coordinator, lanes, what `run.start` answers, and what must live as
/// long as the run (the pinned worktree, the run lock).
pub struct Prepared {
    pub coordinator: Coordinator,
    pub specs: Vec<LaneSpec>,
    pub started: Started,
    pub guards: (Option<git::Snapshot>, RunLock),
}

/// What planning takes from a dump: the plan for a root, whether the justfile has variables
/// for the lanes to evaluate, and the dotenv files it loads.
#[derive(Clone)]
struct Derived {
    plan: Plan,
    no_variables: bool,
    dotenv: Vec<just::DotenvUse>,
}

/// The last dump and root, with their [`Derived`]: a server plans the same justfile run after
/// run, and reading a dump of 200 recipes again costs about 0.3 ms. Only an unpinned run finds
/// it: a strict run's dump names its own worktree's files.
type LastDerived = (String, Option<String>, Derived);
static DERIVED: std::sync::Mutex<Option<LastDerived>> = std::sync::Mutex::new(None);

impl Derived {
    /// The last dump's when the dump and root are the same, else read afresh and kept.
    fn of(dump: &str, root: Option<&str>) -> Result<Derived, IngestError> {
        if let Ok(last) = DERIVED.lock()
            && let Some((_, _, derived)) =
                last.as_ref().filter(|(known, known_root, _)| known == dump && known_root.as_deref() == root)
        {
            return Ok(derived.clone());
        }
        let derived = Derived::from_dump(dump, root)?;
        if let Ok(mut last) = DERIVED.lock() {
            *last = Some((dump.to_string(), root.map(str::to_string), derived.clone()));
        }
        Ok(derived)
    }

    /// Reads it all from the dump, remembering nothing.
    fn from_dump(dump: &str, root: Option<&str>) -> Result<Derived, IngestError> {
        let plan = Plan::from_dump(dump, root)?;
        // One more read of the dump, skipping its recipes, for its variables and dotenv files.
        let parts = just::DumpParts::read(dump);
        Ok(Derived {
            plan,
            no_variables: parts.as_ref().is_ok_and(|parts| {
                parts.variables().is_ok_and(|modules| {
                    modules.iter().all(|m| m.one_by_one.is_empty() && m.together.is_empty())
                })
            }),
            dotenv: parts.map(|parts| parts.dotenv_uses()).unwrap_or_default(),
        })
    }
}

/// Runs one step of a run's start inside a `start` span, so `ODU_LOG=odu::server=debug` shows
/// what each step cost.
fn step<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let _span = tracing::debug_span!("start", step = name).entered();
    f()
}

/// Where a run's justfile is read while planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Where the run runs: a strict run's pinned snapshot of HEAD, else the checkout.
    AsRun,
    /// The checkout as it is, pinning nothing: the check `odu run` makes before it starts a
    /// server. A strict run's tree is clean by then, so the checkout holds HEAD's files (only
    /// ignored ones differ).
    Checkout,
}

/// A run as planned, before anything of it is taken or recorded.
pub struct Planned {
    pub config: RunConfig,
    pub hosts: Hosts,
    pub sha: String,
    pub dirty: bool,
    /// The pinned worktree of a strict run ([`Reading::AsRun`]).
    pub snapshot: Option<git::Snapshot>,
    pub workspace: PathBuf,
    /// Where in the worktree just starts (the package directory `odu run` was started in).
    pub subdir: PathBuf,
    /// Said to the client before the run starts.
    pub notes: Vec<String>,
    /// Said at the top of every lane's setup log too (they are among `notes`).
    pub setup_notes: Vec<String>,
    pub plan: Plan,
    pub lanes: Vec<PlannedLane>,
    /// The `origin` remote's URL, if any.
    pub origin: Option<String>,
    /// Where the run posts its GitHub statuses; `None` when it posts none.
    pub post: Option<Target>,
    /// The run's environment as the client sent it (the server's own when it sent none).
    pub env: Env,
    /// The same without a GitHub token: what odu hands on to tools and lanes.
    pub handed: Env,
    /// The justfile assigns no variable in any module (from the run's own dump).
    pub no_variables: bool,
    /// The `just` that dumped the justfile, with its version.
    pub known_just: Option<odu_proto::KnownJust>,
    /// git's listing of what it tracks under `.ci`, started early for whoever makes `.ci` next
    /// ([`prepare`], or the client starting a server).
    pub ci_listing: std::io::Result<crate::tool::Pending>,
    /// The local lane's runner, started early for [`prepare`] ([`Reading::AsRun`]).
    pub warm: Option<crate::lane::WarmRunner>,
}

/// The refusals a run can meet before anything is created (nested run, hosts, git, the strict
/// gate, just's dump, the plan, the lanes): each is one line that says what to do next.
/// `.ci` is neither made nor read here, and no server is involved, so `odu run` asks this
/// before it starts one: a refused run starts nothing and leaves nothing behind.
pub fn plan_run(
    repo: &Path,
    params: &StartParams,
    env: Option<&Env>,
    reading: Reading,
    spares: Option<&crate::lane::Spares>,
) -> CliResult<Planned> {
    let config = RunConfig::from_params(params)?;
    let subdir = invocation_subdir(params.flags.dir.as_deref())?;
    let env_map: Env = env.cloned().unwrap_or_else(|| std::env::vars().collect());
    let var = |k: &str| env_map.get(k).cloned();
    let handed = without_token(&env_map);
    let env = Some(&handed);
    if let Some(outer) = var(RUN_ENV).filter(|v| !v.is_empty())
        && config.pins.is_empty()
        && var("ODU_HOSTS").filter(|v| !v.is_empty()).is_none()
    {
        return Err(CliError::refused(format!(
            "refusing to start a run from inside a node of run {outer}: pass --host P=ADDR or set ODU_HOSTS to run a nested pipeline on purpose"
        )));
    }
    let hosts = step("hosts", || hosts::for_run(&config.pins, &var))?;
    // What needs neither HEAD nor the snapshot runs beside the git checks and the worktree:
    // each costs a process start, and a run's start waits on the slowest path, not the sum. On
    // two cores the processes queue for them, so the longest starts first: just's dump, then
    // the runner, git's status, just's version, and last git's remote and its listing of `.ci`
    // (both read in process where git's answer is plain).
    let just_file = just::locate(env);
    // A strict run pins HEAD in a worktree (below), and just reads that.
    let pin = config.snapshot && reading == Reading::AsRun;
    // Unpinned, just reads the checkout itself: its dump starts beside git's status check (and
    // is dropped, its process ended, if the run is refused or just starts elsewhere).
    let early_dump = (!pin)
        .then(|| repo.join(&subdir))
        .filter(|dir| dir.is_dir())
        .map(|dir| just::start_dump(just_file.as_ref(), &dir, env));
    // A run's local runner is the checkout's spare, or starts now, its process start
    // overlapping the worktree's checkout, git's status check, just's dump and the run's
    // records; its lane takes it once the run starts. A run refused from here on (a dirty
    // tree, say) drops it, and it exits as at the end of a lane.
    let warm = if reading == Reading::AsRun && hosts.entries.values().any(|entry| entry.is_local()) {
        runner_path(&var)
            .ok()
            .and_then(|runner| crate::lane::WarmRunner::start(&runner, Some(&handed), spares).ok())
    } else {
        None
    };
    let head_and_status = git::HeadAndStatus::start(repo);
    let version = just::start_version_of(just_file.clone(), repo, env);
    let origin_git = git::start_origin(repo);
    // `.ci` is made (and so checked) by the server's start as well as by the run's.
    let ci_listing = crate::trail::ci::start_tracked_listing(repo);
    // A strict run's worktree is checked out while git's status check runs: of HEAD as the
    // checkout's files name it, kept only if git's answer names the same commit and the tree
    // is clean (else it is removed, and a refused run leaves nothing behind).
    let early = pin
        .then(|| git::head_quick(repo))
        .flatten()
        .map(|guess| step("worktree", || (git::Snapshot::create(repo, &guess), guess)));
    let (sha, dirty_paths) = step("git head and status", || head_and_status.finish())?;
    let dirty = !dirty_paths.is_empty();
    if config.snapshot && dirty {
        let example = dirty_paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        return Err(CliError::refused(format!(
            "working tree is dirty ({} changed: {example}): commit or stash, or pass --no-strict for a dev iteration run",
            plural(dirty_paths.len(), "path")
        )));
    }
    let snapshot = match early {
        Some((Ok(snapshot), guess)) if guess == sha => Some(snapshot),
        _ if pin => Some(step("worktree", || git::Snapshot::create(repo, &sha))?),
        _ => None,
    };
    let workspace = snapshot.as_ref().map_or(repo.to_path_buf(), |s| s.dir.clone());
    let mut notes = Vec::new();
    let subdir = match committed_subdir(&workspace, repo, &subdir) {
        Ok(found) if found == subdir => subdir,
        Ok(found) => {
            notes.push(format!(
                "{} is not in the run's worktree (git does not track it): just starts from {} instead",
                subdir.display(),
                if found.as_os_str().is_empty() {
                    "the top of the checkout".into()
                } else {
                    found.display().to_string()
                }
            ));
            found
        }
        Err(missing) => {
            return Err(CliError::refused(format!(
                "the snapshot of {} has no {} (git does not track it): commit it, or pass --no-strict to run the live tree",
                &sha[..7],
                missing.display()
            )));
        }
    };
    let invocation = if subdir.as_os_str().is_empty() { workspace.clone() } else { workspace.join(&subdir) };
    let dumping = match early_dump {
        Some(dumping) if dumping.dir() == invocation => dumping,
        _ => just::start_dump(just_file.as_ref(), &invocation, env),
    };
    let (dump, just_version) = step("just --version and --dump", || just::finish_dump(version, dumping))?;
    // The just that answered, for a local runner to trust instead of asking it again.
    let path_var = handed.get("PATH").map(std::ffi::OsString::from);
    let known_just = crate::tool::find_on_path(path_var.as_deref(), "just").and_then(|path| {
        Some(odu_proto::KnownJust {
            file: crate::tool::file_stamp(&path)?,
            path: path.to_str()?.to_string(),
            version: just_version,
        })
    });
    let derived = match step("plan", || Derived::of(&dump, config.root.as_deref())) {
        Err(IngestError::RootCount { found }) if found.is_empty() => {
            return Err(left_out_root(&invocation, env, &hosts)
                .unwrap_or(IngestError::RootCount { found })
                .into());
        }
        derived => derived?,
    };
    let Derived { plan, no_variables, dotenv } = derived;
    let lanes = plan_lanes(&plan, &config, &hosts)?;
    notes.extend(lanes.iter().flat_map(|lane| lane.notes.iter().cloned()));
    // Said before the run, on the client's terminal and in every lane's setup log.
    let mut setup_notes = Vec::new();
    if snapshot.is_some() {
        setup_notes.extend(missing_dotenv(&dotenv, &workspace, repo));
    }
    notes.extend(setup_notes.iter().cloned());
    // Where the run posts (or why it cannot) is a refusal like any other: before anything runs.
    let origin = step("git origin", || git::origin_of(origin_git));
    let post = if config.post {
        step("github", || posting(repo, origin.as_deref(), &env_map, &sha, &mut notes))?
    } else {
        None
    };
    Ok(Planned {
        config,
        hosts,
        sha,
        dirty,
        snapshot,
        workspace,
        subdir,
        notes,
        setup_notes,
        plan,
        lanes,
        origin,
        post,
        env: env_map,
        handed,
        no_variables,
        ci_listing,
        known_just,
        warm,
    })
}

/// The environment odu hands on (tools, lanes): never a GitHub token, which only the poster
/// holds.
fn without_token(env: &Env) -> Env {
    env.iter()
        .filter(|(k, _)| !TOKEN_VARS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Everything `odu run` used to do before its first lane: each refusal is one line that says
/// what to do next, and leaves no ledger record.
///
/// `commit` is asked once the slow work (git, config, just) is done and before anything is
/// taken or recorded: `false` means the run was abandoned meanwhile, and nothing happens.
pub fn prepare(
    repo: &Path,
    params: &StartParams,
    env: Option<&Env>,
    spares: &Arc<crate::lane::Spares>,
    commit: &dyn Fn() -> bool,
) -> CliResult<Prepared> {
    let Planned {
        config,
        hosts,
        sha,
        dirty,
        snapshot,
        workspace,
        subdir,
        mut notes,
        setup_notes,
        plan,
        lanes,
        origin,
        post,
        env: env_map,
        handed,
        no_variables,
        ci_listing,
        known_just,
        warm,
    } = plan_run(repo, params, env, Reading::AsRun, Some(spares))?;
    let var = |k: &str| env_map.get(k).cloned();
    let env = Some(&handed);
    let ci = step(".ci", || crate::trail::ci::ensure_ci_dir_listed(repo, ci_listing))?;
    if hosts.defaulted {
        notes.push(format!(
            "no hosts configured: running one localhost lane for {} (configure ~/.config/odu/hosts.json or pass --host P=ADDR)",
            hosts::local_platform()
        ));
    }
    let runner = runner_path(&var)?;
    let any_remote = lanes.iter().any(|lane| !hosts.entries[&lane.platform].is_local());
    // A live-tree run ships its dirty state to remote lanes as a commit no ref names.
    let remote_sha =
        if any_remote && !config.snapshot && dirty { git::stash_commit(repo)? } else { sha.clone() };
    let ssh_config = var("ODU_SSH_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
    let sha7 = &sha[..7];
    let label = if !config.snapshot && dirty { format!("{sha7}+dirty") } else { sha7.to_string() };
    let started_at = now_ms();
    let mut record = RunRecord {
        version: ledger::RECORD_VERSION,
        repo: origin.as_deref().and_then(git::github_repo),
        sha: sha.clone(),
        label: label.clone(),
        seq: 0,
        dirty: !config.snapshot && dirty,
        pipeline: plan.root.clone(),
        outcome: RunOutcome::Running,
        pid: Some(std::process::id()),
        started_at,
        finished_at: None,
        lanes: lanes
            .iter()
            .map(|lane| LaneRecord {
                platform: lane.platform.clone(),
                host: hosts.entries[&lane.platform].host.clone(),
            })
            .collect(),
        nodes: vec![],
        unposted: vec![],
        selectors: params.selectors.clone(),
        flags: odu_proto::StartFlags { supersede: false, ..params.flags.clone() },
        note: None,
        aliases: run_aliases(&plan),
        logs_pruned: None,
        snapshot: snapshot.as_ref().and_then(|s| s.scratch_path()).map(Path::to_path_buf),
    };
    if !commit() {
        return Err(CliError::refused("the run was abandoned before it started"));
    }
    let lock = RunLock::acquire(&ci)?;
    // A lane that cannot have its log folder is refused here, where the client hears why.
    for PlannedLane { platform, .. } in &lanes {
        let dir = ci.join(&label).join(platform);
        ledger::make_lane_dir(&dir).map_err(|e| {
            CliError::refused(format!(
                "cannot create the log folder {} of lane {platform}: {e}: remove what is in its way, then rerun",
                dir.display()
            ))
        })?;
    }
    let plans: Vec<LanePlan> = lanes
        .iter()
        .map(|PlannedLane { platform, tasks, .. }| LanePlan {
            platform: platform.clone(),
            host: hosts.entries[platform].host.clone(),
            tasks: tasks
                .iter()
                .map(|t| TaskSpec {
                    id: t.id.clone(),
                    argv: plan.argv(t, config.yes),
                    needs: t.needs.clone(),
                })
                .collect(),
        })
        .collect();
    // The run exists before its number: the record it reserves lists every node from the
    // start (so clients find each log's path), written once.
    let meta = RunMeta {
        run: String::new(),
        sha: record.sha.clone(),
        label: label.clone(),
        pipeline: plan.root.clone(),
        started_at,
    };
    let run = Run::new(meta, &plans);
    record.take(&run.record());
    let seq = ledger::reserve(&ci, &mut record)
        .map_err(|e| CliError::refused(format!("cannot reserve a run number under {}: {e}", ci.display())))?;
    let run = run.numbered(record.reference());
    let specs: Vec<LaneSpec> = lanes
        .iter()
        .zip(&plans)
        .map(|(PlannedLane { platform, notes: lane_notes, .. }, lane_plan)| LaneSpec {
            platform: platform.clone(),
            host: hosts.entries[platform].host.clone(),
            name: plan.root.clone(),
            workspace: workspace.clone(),
            subdir: subdir.clone(),
            notes: setup_notes.iter().chain(lane_notes).cloned().collect(),
            tasks: lane_plan.tasks.clone(),
            jobs: config.jobs.or(hosts.entries[platform].jobs),
            env: BTreeMap::from([(RUN_ENV.to_string(), format!("{label}#{seq}"))]),
            log_dir: ledger::run_logs_dir(&ci, &label, seq).join(platform),
            latest_dir: ci.join(&label).join(platform),
            runner: runner.clone(),
            base_env: env.cloned(),
            remote: (!hosts.entries[platform].is_local()).then(|| crate::lane::RemoteSource {
                entry: hosts.entries[platform].clone(),
                ssh_config: ssh_config.clone(),
                repo: repo.to_path_buf(),
                origin: origin.clone(),
                sha: remote_sha.clone(),
                slug: crate::lane::remote::slug(origin.as_deref(), repo),
                expect_platform: hosts.entries[platform].platform.clone().unwrap_or_else(|| platform.clone()),
                run_name: format!("{}-{seq}", label.replace('+', "-")),
                flake: var("ODU_FLAKE").filter(|v| !v.is_empty()),
            }),
            no_variables,
            known_just: known_just.clone(),
            warm: warm.clone().filter(|_| hosts.entries[platform].is_local()),
            spares: hosts.entries[platform].is_local().then(|| spares.clone()),
        })
        .collect();
    let started = Started {
        run: record.reference(),
        label: label.clone(),
        pipeline: plan.root.clone(),
        lanes: specs
            .iter()
            .map(|s| LaneInfo { platform: s.platform.clone(), host: s.host.clone() })
            .collect(),
        hosts_source: hosts.source.clone(),
        notes,
    };
    let coordinator = Coordinator { run, ci_dir: ci, record, post };
    Ok(Prepared { coordinator, specs, started, guards: (snapshot, lock) })
}

/// What a strict run's snapshot lacks that the justfile would load from the checkout: a
/// dotenv file git does not track. One note per file, saying what to do.
fn missing_dotenv(uses: &[just::DotenvUse], snapshot: &Path, repo: &Path) -> Vec<String> {
    // just names its files by the real path of the directory it ran in.
    let dumped_in = std::fs::canonicalize(snapshot).unwrap_or_else(|_| snapshot.to_path_buf());
    let mut notes: Vec<String> = Vec::new();
    for dotenv in uses {
        if dotenv.found_in(&dumped_in, snapshot).is_some() {
            continue;
        }
        let Some(file) = dotenv.found_in(&dumped_in, repo) else { continue };
        let note = format!(
            "the snapshot lacks {}, which this checkout has but git does not track: a strict run tests what is committed, so its recipes load no dotenv file; commit a template (and load it with set dotenv-filename), or pass --no-strict to run the live tree",
            file.display()
        );
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    notes
}

/// The directory of the run's worktree the run's `just` starts in: `subdir`, or, when the
/// worktree lacks it (an untracked or ignored directory of the checkout), the nearest
/// directory above it that the worktree has — which is where `just` would find the same
/// justfile. `Err` names a justfile the checkout has in a directory the worktree lacks: that
/// justfile is not committed, and starting above it would run another one.
fn committed_subdir(worktree: &Path, checkout: &Path, subdir: &Path) -> Result<PathBuf, PathBuf> {
    let mut found = subdir.to_path_buf();
    while !found.as_os_str().is_empty() && !worktree.join(&found).is_dir() {
        if let Some(justfile) = justfile_in(&checkout.join(&found)) {
            return Err(found.join(justfile));
        }
        found = found.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    Ok(found)
}

/// The justfile in `dir`, by just's names (`justfile`, `.justfile`, in any case).
fn justfile_in(dir: &Path) -> Option<std::ffi::OsString> {
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).map(|e| e.file_name()).find(|name| {
        name.to_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("justfile") || n.eq_ignore_ascii_case(".justfile"))
    })
}

/// `run.start`'s `dir`, checked: a path inside the checkout (`pkg/sub`), never absolute and
/// never climbing out with `..`.
fn invocation_subdir(dir: Option<&str>) -> CliResult<PathBuf> {
    let Some(dir) = dir.filter(|d| !d.is_empty()) else { return Ok(PathBuf::new()) };
    let path = Path::new(dir);
    let mut subdir = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::Normal(part) => subdir.push(part),
            std::path::Component::CurDir => {}
            _ => {
                return Err(CliError::refused(format!(
                    "run.start's dir {dir:?} is not a directory inside the checkout: give a relative path such as pkg/sub"
                )));
            }
        }
    }
    Ok(subdir)
}

/// The aliases whose targets are recipes of the plan's tasks.
fn run_aliases(plan: &Plan) -> BTreeMap<String, String> {
    let recipes: std::collections::BTreeSet<&str> = plan.tasks.iter().map(|t| t.recipe.as_str()).collect();
    let aliases = plan.context.aliases.iter().filter(|(_, target)| recipes.contains(target.as_str()));
    aliases.map(|(alias, target)| (alias.clone(), target.clone())).collect()
}

/// A `[metadata("ci")]` root that just left out of its JSON dump because its OS attributes rule
/// out this machine, found in the text dump; `None` when there is none.
fn left_out_root(workspace: &Path, env: Option<&Env>, hosts: &Hosts) -> Option<IngestError> {
    let text = just::text_dump(workspace, env)?;
    let (root, os) = odu_core::plan::os_gated_roots(&text).into_iter().next()?;
    let here = hosts::local_platform();
    Some(IngestError::RootLeftOut {
        root,
        os,
        here: odu_core::platform::os_of(&here).to_string(),
        platforms: hosts.entries.keys().cloned().collect(),
    })
}

/// Where a strict run posts its statuses: the origin's GitHub repository with the client's
/// token. No origin posts nothing (and says so); an origin that is not GitHub's, or no token,
/// is refused before anything runs.
fn posting(
    repo: &Path,
    origin: Option<&str>,
    env: &Env,
    sha: &str,
    notes: &mut Vec<String>,
) -> CliResult<Option<Target>> {
    let Some(url) = origin else {
        notes.push(
            "no origin remote: this run posts no GitHub commit statuses (pass --no-post to say so)".into(),
        );
        return Ok(None);
    };
    let remote = Remote::parse(url).ok_or_else(|| {
        CliError::refused(format!(
            "posting commit statuses needs a GitHub origin, and origin is {url}: pass --no-post for a strict run that posts nothing"
        ))
    })?;
    let token = find_token(env, repo).ok_or_else(|| {
        CliError::refused(format!(
            "posting commit statuses to {} needs a GitHub token: set GH_TOKEN or GITHUB_TOKEN, or log in with gh auth login, or pass --no-post",
            remote.slug()
        ))
    })?;
    let override_base = env.get(API_VAR).map(String::as_str);
    let base = remote.api_base(override_base);
    if http::Uri::try_from(base.as_str()).map_or(true, |u| u.scheme().is_none() || u.host().is_none()) {
        return Err(CliError::refused(format!(
            "{API_VAR}={base} is not an http(s) URL: set it to the API's base, e.g. https://ghe.example.com/api/v3"
        )));
    }
    // Pacing below GitHub's content-creation limits is lifted only against another API (a fake).
    let unpaced = override_base.is_some() && env.get("ODU_GITHUB_PACE").is_some_and(|v| v == "off");
    let pacer = if unpaced { Pacer::new(0, 0) } else { Pacer::default() };
    Ok(Some(Target { base, remote, token, sha: sha.to_string(), pacer }))
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_directory_stays_inside_the_checkout() {
        assert_eq!(invocation_subdir(None).unwrap(), PathBuf::new());
        assert_eq!(invocation_subdir(Some("")).unwrap(), PathBuf::new());
        assert_eq!(invocation_subdir(Some("pkg/./sub")).unwrap(), PathBuf::from("pkg/sub"));
        for outside in ["/etc", "../elsewhere", "pkg/../../x"] {
            assert!(invocation_subdir(Some(outside)).is_err(), "{outside}");
        }
    }

    fn dump_of(justfile: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("justfile"), justfile).unwrap();
        just::dump(dir.path()).unwrap()
    }

    #[test]
    fn a_dump_seen_again_is_planned_as_the_first_time_and_another_afresh() {
        let first =
            dump_of("set dotenv-load\nx := `echo 1`\n[metadata(\"ci\")]\nci: a\na:\n    echo {{x}}\n");
        let second = dump_of("[metadata(\"ci\")]\nci: b\nb:\n    true\n");
        let fresh = |dump: &str| Derived::from_dump(dump, None).unwrap();
        for dump in [&first, &first, &second, &first] {
            let (derived, expected) = (Derived::of(dump, None).unwrap(), fresh(dump));
            assert_eq!(derived.plan, expected.plan);
            assert_eq!(derived.no_variables, expected.no_variables);
            assert_eq!(derived.dotenv, expected.dotenv);
        }
        assert!(
            !Derived::of(&first, None).unwrap().no_variables
                && Derived::of(&second, None).unwrap().no_variables
        );
        assert_eq!(Derived::of(&first, None).unwrap().dotenv.len(), 1);
        // Another root of the same dump is another plan.
        assert!(matches!(Derived::of(&first, Some("a")), Ok(d) if d.plan != fresh(&first).plan));
    }
}
