//! The run ledger: `.ci/<label>/runs/<seq>.json`, one record per run, and beside it the run's
//! own logs, `.ci/<label>/runs/<seq>/<platform>/<stem>.log` (records of version 2 on; version 1
//! records kept only the latest run's log, at `.ci/<label>/<platform>/<stem>.log`, which now
//! names the latest run's log as a hard link to it).
//!
//! A seq is reserved by exclusive create (never reused, even when its run crashed). The record
//! is written at reservation (outcome `running`, with the coordinator's pid), and replaced
//! atomically (write a temporary file, rename) on every terminal path. A `running` record while
//! no server holds the checkout's lock belongs to a coordinator that died: readers report it
//! `incomplete`, and the next server (or a client, with none up) closes it.
//!
//! Nothing read from `.ci` is trusted: only `<label>/runs/<seq>.json` of a label odu makes is
//! read, a record whose label, seq or node ids are not its file's is left out, every trail path
//! is derived from validated ids ([`open_trail`]), and no symlink below `.ci` is followed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use odu_core::NodeView;
use odu_core::run::{Recorded, RecordedNode};
use odu_core::status::RunOutcome;
use odu_proto::{Header, LaneInfo, Phase};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneRecord {
    pub platform: String,
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub status: odu_core::NodeStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// When the node last started (ms since the Unix epoch, the lane's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    pub log: String,
}

impl From<&RecordedNode> for NodeRecord {
    fn from(node: &RecordedNode) -> NodeRecord {
        NodeRecord {
            id: node.id.to_string(),
            status: node.status,
            exit_code: node.exit_code,
            started_at: node.started_at,
            duration_ms: node.duration_ms,
            log: node.log.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub version: u32,
    /// `owner/repo` for a GitHub origin.
    #[serde(default)]
    pub repo: Option<String>,
    pub sha: String,
    /// `<sha7>` or `<sha7>+dirty`: the folder under `.ci`.
    pub label: String,
    pub seq: u64,
    pub dirty: bool,
    pub pipeline: String,
    /// As read: [`read`] already reads the `running` record of a server that is gone as
    /// `incomplete`.
    pub outcome: RunOutcome,
    #[serde(default)]
    pub pid: Option<u32>,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    pub lanes: Vec<LaneRecord>,
    pub nodes: Vec<NodeRecord>,
    /// The GitHub commit statuses that never got through (empty when all did, or the run
    /// posts none); rewritten while the server keeps posting after the run ended.
    #[serde(default)]
    pub unposted: Vec<odu_core::run::Unposted>,
    /// What the run was asked (selectors and flags, never the environment), so a rerun of a
    /// finished run can start the same run again.
    #[serde(default)]
    pub selectors: Vec<String>,
    #[serde(default)]
    pub flags: odu_proto::StartFlags,
    /// Why the record was closed by someone other than its coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The justfile's aliases of the run's recipes, by namepath, to their targets': a node can
    /// be named by an alias of its recipe.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub aliases: std::collections::BTreeMap<String, String>,
    /// When retention removed the run's logs (the record stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_pruned: Option<LogsPruned>,
    /// The private folder holding a strict run's snapshot while it runs: whoever closes the
    /// run after its server died removes it ([`crate::tool::git::remove_abandoned`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PathBuf>,
}

/// The version of the records odu writes: 2 keeps every run's logs under its own folder.
pub const RECORD_VERSION: u32 = 2;

/// Retention removed a run's logs: when, and how many runs it kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsPruned {
    pub at: u64,
    pub keep: usize,
}

impl RunRecord {
    /// `<sha7>#<seq>` (`<sha7>+dirty#<seq>` for a live-tree run: its seqs are its own).
    pub fn reference(&self) -> String {
        format!("{}#{}", self.label, self.seq)
    }

    pub fn summary(&self) -> odu_proto::RunSummary {
        self.head().into_summary()
    }

    /// The record without its nodes, as [`heads`] reads it from the record's file.
    fn head(&self) -> RecordHead {
        RecordHead {
            version: self.version,
            sha: self.sha.clone(),
            label: self.label.clone(),
            seq: self.seq,
            dirty: self.dirty,
            pipeline: self.pipeline.clone(),
            outcome: self.outcome,
            started_at: self.started_at,
            finished_at: self.finished_at,
            lanes: self.lanes.clone(),
            nodes_checked: None,
            logs_pruned: self.logs_pruned.clone(),
        }
    }

    /// Takes what the run decides: its outcome, finish time and nodes. A final record (one
    /// with a finish time) has no pid and names no snapshot.
    pub fn take(&mut self, recorded: &Recorded) {
        self.nodes = recorded.nodes.iter().map(NodeRecord::from).collect();
        self.take_end(recorded.outcome, recorded.finished_at);
    }

    /// The run's outcome and finish time; a final record has no pid and names no snapshot.
    fn take_end(&mut self, outcome: RunOutcome, finished_at: Option<u64>) {
        self.outcome = outcome;
        self.finished_at = finished_at;
        if finished_at.is_some() {
            self.pid = None;
            // Its server removes the snapshot now: nothing is left for another to remove.
            self.snapshot = None;
        }
    }

    /// [`RunRecord::take`] from the run itself, for every save after the first: while the
    /// record lists the run's nodes in the run's order (a run's nodes never change), each node
    /// keeps its id and log path and takes only its state. Each save rebuilt every node's id
    /// and log path, twice (the run's copy, then the record's), about half of a save's
    /// instructions at 200 nodes.
    pub fn take_run(&mut self, run: &odu_core::run::Run) {
        let listed = self.nodes.len() == run.nodes().count()
            && self.nodes.iter().zip(run.nodes()).all(|(node, (id, _))| id.is(&node.id));
        if !listed {
            self.take(&run.record());
            return;
        }
        for (node, (_, view)) in self.nodes.iter_mut().zip(run.nodes()) {
            node.status = view.status;
            node.exit_code = view.exit_code;
            node.started_at = view.started_at;
            node.duration_ms = view.duration_ms;
        }
        self.take_end(run.reported_outcome(), run.finished_at());
    }

    /// Closes a run its coordinator left `running`: the run `incomplete`, its running nodes
    /// `errored`, its pending ones `skipped`. Returns the ids of the nodes that were running.
    fn close_orphaned(&mut self, note: String) -> Vec<String> {
        let mut cut = Vec::new();
        for node in &mut self.nodes {
            match node.status {
                odu_core::NodeStatus::Running => {
                    node.status = odu_core::NodeStatus::Errored;
                    cut.push(node.id.clone());
                }
                odu_core::NodeStatus::Pending => node.status = odu_core::NodeStatus::Skipped,
                _ => {}
            }
        }
        self.outcome = RunOutcome::Incomplete;
        self.pid = None;
        self.note = Some(note);
        cut
    }

    /// Whether the record is the one its file names: its label and seq are the file's, and
    /// every platform and node id is one odu makes (so trail paths derive from them safely).
    fn check_ids(&self, label: &str, seq: u64) -> Result<(), String> {
        check_run_ids((&self.label, self.seq, &self.lanes), label, seq)?;
        for node in &self.nodes {
            trail_id(&node.id).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Whether a record's (or its head's) own label, seq and lanes are its file's: the label and
/// seq its path gives, and platforms for lanes.
fn check_run_ids(
    (own_label, own_seq, lanes): (&str, u64, &[LaneRecord]),
    label: &str,
    seq: u64,
) -> Result<(), String> {
    if own_label != label {
        return Err(format!("its label {own_label:?} is not its folder's ({label})"));
    }
    if own_seq != seq {
        return Err(format!("its seq {own_seq} is not its file's ({seq})"));
    }
    if let Some(lane) = lanes.iter().find(|l| !odu_core::platform::is_system_tuple(&l.platform)) {
        return Err(format!("its lane {:?} is not a platform", lane.platform));
    }
    Ok(())
}

/// Whether `pid` is a live process: a zombie (dead, not yet reaped) counts as dead.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which ends at the last ')'.
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The checkout's server lock under `.ci`: an exclusive `flock` for the server's whole life.
pub const SERVE_LOCK: &str = "odu.serve.lock";

/// Whether an odu server is alive in this checkout: whether something holds [`SERVE_LOCK`].
/// Unlike a pid, a lock dies with its holder, so neither a reboot nor a reused pid fakes one.
/// A lock that cannot be probed counts as held, so nothing live is ever closed.
pub fn served(ci: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(ci.join(SERVE_LOCK))
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(_) => return true,
    };
    // A shared lock for an instant (released when `file` closes) is refused only while a server
    // holds its exclusive one.
    // SAFETY: flock on a descriptor this function owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// Whether `label` is a run label odu makes: `<sha7>` or `<sha7>+dirty`, in lowercase hex.
pub fn valid_label(label: &str) -> bool {
    let sha7 = label.strip_suffix("+dirty").unwrap_or(label);
    sha7.len() == 7 && sha7.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a trail file is not opened.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("{0:?} is not a node id odu makes (task@platform): its trail is not read")]
    BadId(String),
    #[error("{0:?} is not a run label odu makes (<sha7> or <sha7>+dirty)")]
    BadLabel(String),
    #[error("{} is a symlink: odu never follows a link found in .ci (remove it)", .0.display())]
    Symlink(PathBuf),
    #[error("{} is not a regular file: odu reads only files it wrote (remove it)", .0.display())]
    Irregular(PathBuf),
    #[error("cannot open {}: {error}", .path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error(
        "the logs of run {run} were pruned; odu keeps the last {keep} runs (set ODU_KEEP_RUNS to keep more)"
    )]
    Pruned { run: String, keep: usize },
    #[error(
        "the log of run {run} is not kept: a later run of the same commit replaced {} (odu kept only the latest run's log then)",
        .path.display()
    )]
    Replaced { run: String, path: PathBuf },
}

/// The lane folder and file name of node `id`'s trail, from the id alone: its platform (a
/// system tuple) and `<task stem>.log`, one plain name each.
fn trail_name(id: &str) -> Result<(String, String), TrailError> {
    let (task, platform) = trail_id(id)?;
    Ok((platform.to_string(), format!("{}.log", odu_core::node_id::log_file_stem(task))))
}

/// Node `id` as its trail is named from it: its task and its platform (a system tuple), or why
/// it names no trail. Checking an id makes no name.
fn trail_id(id: &str) -> Result<(&str, &str), TrailError> {
    odu_core::platform::split_platform(id).ok_or_else(|| TrailError::BadId(id.into()))
}

/// How a trail file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Append,
}

/// Checks that `path` is a real directory (a symlink is refused, never followed).
fn real_dir(path: &Path) -> Result<(), TrailError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(TrailError::Symlink(path.into())),
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(TrailError::Irregular(path.into())),
        Err(error) => Err(TrailError::Io { path: path.into(), error }),
    }
}

/// Opens a file under `.ci` that must be a regular file odu wrote: never through a symlink
/// (in its last component) and never a FIFO or device (which could block or never end).
fn open_plain(path: &Path, access: Access) -> Result<std::fs::File, TrailError> {
    let mut options = std::fs::OpenOptions::new();
    match access {
        Access::Read => options.read(true),
        Access::Append => options.append(true),
    };
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => TrailError::Symlink(path.into()),
            _ => TrailError::Io { path: path.into(), error },
        })?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(file),
        Ok(_) => Err(TrailError::Irregular(path.into())),
        Err(error) => Err(TrailError::Io { path: path.into(), error }),
    }
}

/// Opens node `id`'s trail file of run `label`: `<ci>/<label>/<platform>/<stem>.log`, derived
/// from the ids alone (a record's `log` string is for people, never a path), through real
/// directories only and without following a symlink.
pub fn open_trail(ci: &Path, label: &str, id: &str, access: Access) -> Result<std::fs::File, TrailError> {
    if !valid_label(label) {
        return Err(TrailError::BadLabel(label.into()));
    }
    let (platform, file) = trail_name(id)?;
    let label_dir = ci.join(label);
    let lane_dir = label_dir.join(&platform);
    let path = lane_dir.join(file);
    for dir in [ci, &label_dir, &lane_dir] {
        real_dir(dir).map_err(|e| match e {
            // A folder on the way that is missing means the file is.
            TrailError::Io { error, .. } => TrailError::Io { path: path.clone(), error },
            other => other,
        })?;
    }
    open_plain(&path, access)
}

/// Opens node `id`'s log of the run `record` is: its own file
/// `<ci>/<label>/runs/<seq>/<platform>/<stem>.log` (derived from validated ids, through real
/// directories only, never through a symlink). A run whose logs retention removed says so
/// ([`TrailError::Pruned`]); a version 1 record (from before every run kept its logs) reads the
/// latest log of its label only while no later run of that label replaced it.
pub fn open_run_log(
    ci: &Path,
    record: &RunRecord,
    id: &str,
    access: Access,
) -> Result<std::fs::File, TrailError> {
    let label = &record.label;
    if !valid_label(label) {
        return Err(TrailError::BadLabel(label.clone()));
    }
    let (platform, file) = trail_name(id)?;
    if record.version < RECORD_VERSION {
        let runs = runs_dir(ci, label);
        if real_dir(&runs).is_ok() && highest_seq(&runs) > record.seq {
            let path = ci.join(label).join(&platform).join(&file);
            return Err(TrailError::Replaced { run: record.reference(), path });
        }
        return open_trail(ci, label, id, access);
    }
    let pruned = || TrailError::Pruned {
        run: record.reference(),
        keep: record.logs_pruned.as_ref().map_or_else(crate::trail::retention::keep_runs, |p| p.keep),
    };
    if record.logs_pruned.is_some() {
        return Err(pruned());
    }
    let run_dir = run_logs_dir(ci, label, record.seq);
    let lane_dir = run_dir.join(&platform);
    let path = lane_dir.join(file);
    let (label_dir, runs) = (ci.join(label), runs_dir(ci, label));
    for dir in [ci, &label_dir, &runs, &run_dir, &lane_dir] {
        match real_dir(dir) {
            Ok(()) => {}
            // The run's own folder gone: retention removed it.
            Err(TrailError::Io { error, .. })
                if *dir == run_dir && error.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(pruned());
            }
            Err(TrailError::Io { error, .. }) => return Err(TrailError::Io { path: path.clone(), error }),
            Err(other) => return Err(other),
        }
    }
    open_plain(&path, access)
}

/// Why the logs of run `reference` cannot be shown, when retention removed them (a run whose
/// record is marked so); `None` for a run that keeps its logs, or one not in the ledger.
pub fn pruned_logs(ci: &Path, reference: &str) -> Option<TrailError> {
    let record = find(ci, Some(reference)).ok()?;
    let pruned = record.logs_pruned.as_ref()?;
    Some(TrailError::Pruned { run: record.reference(), keep: pruned.keep })
}

/// `.ci/<label>/runs/<seq>`: the folder of run `<label>#<seq>`'s logs, one folder per lane.
pub fn run_logs_dir(ci: &Path, label: &str, seq: u64) -> PathBuf {
    runs_dir(ci, label).join(seq.to_string())
}

/// Removes node `id`'s log of run `<label>#<seq>` (its own file under the run's folder) if it is
/// empty: a node that never started leaves no log behind. Only a regular file odu could have
/// written is removed, through real directories; anything else (a symlink, a file with bytes) is
/// left alone.
pub fn remove_empty_trail(ci: &Path, label: &str, seq: u64, id: &str) -> Result<bool, TrailError> {
    if !valid_label(label) {
        return Err(TrailError::BadLabel(label.into()));
    }
    let (platform, file) = trail_name(id)?;
    let (label_dir, runs, run_dir) = (ci.join(label), runs_dir(ci, label), run_logs_dir(ci, label, seq));
    let lane_dir = run_dir.join(&platform);
    for dir in [ci, &label_dir, &runs, &run_dir, &lane_dir] {
        real_dir(dir)?;
    }
    let path = lane_dir.join(file);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() == 0 => {
            std::fs::remove_file(&path).map_err(|error| TrailError::Io { path, error })?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(TrailError::Io { path, error }),
    }
}

pub(crate) fn runs_dir(ci: &Path, label: &str) -> PathBuf {
    ci.join(label).join("runs")
}

/// Creates `dir`, or checks that the one there is a real directory (never a symlink).
fn make_real_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            real_dir(dir).map_err(|e| std::io::Error::other(e.to_string()))
        }
        other => other,
    }
}

/// Creates `.ci/<label>/runs`, refusing a label odu does not make and a folder on the way that
/// is a symlink (a committed `.ci/<label>` link would take the ledger elsewhere).
fn make_runs_dir(ci: &Path, label: &str) -> std::io::Result<PathBuf> {
    if !valid_label(label) {
        let e = TrailError::BadLabel(label.into());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()));
    }
    let label_dir = ci.join(label);
    let runs = label_dir.join("runs");
    make_real_dir(&label_dir)?;
    make_real_dir(&runs)?;
    // Each run's log folder (`runs/<seq>`) in a block group of its own: its logs do not scan
    // past the files of the older runs that retention just removed.
    crate::private::spread_subfolders(&runs);
    Ok(runs)
}

/// Creates a lane's trail folder `.ci/<label>/<platform>` (and its label folder), refusing
/// either when it is a symlink: a lane never writes its logs through a link.
pub fn make_lane_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(label_dir) = dir.parent() {
        if let Some(ci) = label_dir.parent() {
            std::fs::create_dir_all(ci)?;
        }
        make_real_dir(label_dir)?;
    }
    make_real_dir(dir)
}

/// Creates a run's lane log folder `.ci/<label>/runs/<seq>/<platform>` and every folder on
/// the way below `.ci` (which must exist), refusing any that is a symlink.
pub fn make_run_lane_dir(dir: &Path) -> std::io::Result<()> {
    let seq_dir =
        dir.parent().ok_or_else(|| std::io::Error::other("a run's lane folder has no run folder"))?;
    let runs = seq_dir.parent().ok_or_else(|| std::io::Error::other("a run folder has no runs folder"))?;
    let label_dir =
        runs.parent().ok_or_else(|| std::io::Error::other("a runs folder has no label folder"))?;
    for d in [label_dir, runs, seq_dir, dir] {
        make_real_dir(d)?;
    }
    Ok(())
}

/// Fails when `latest` (the path that names the latest run's log of a node) cannot be pointed
/// at a new log: a folder is in its way. Anything else there (an older run's log, a link) is
/// replaced by [`link_latest`], never followed.
/// Says what is there when it is free: nothing, or an older log (or a link) to replace.
pub fn latest_is_free(latest: &Path) -> std::io::Result<LatestName> {
    match std::fs::symlink_metadata(latest) {
        Ok(meta) if meta.is_dir() => {
            Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "a folder is in its way (remove it)"))
        }
        Ok(_) => Ok(LatestName::Taken),
        Err(_) => Ok(LatestName::Vacant),
    }
}

/// What a lane's latest folder holds, read in one listing: [`LatestNames::of`] answers as
/// [`latest_is_free`] does for each of its names, without a `stat` (and a walk of the whole
/// path) per node. The listing's file types come from the directory itself; a name whose type
/// it does not give, or every name if the folder cannot be listed, is asked on its own.
pub struct LatestNames {
    dir: PathBuf,
    /// Each name found, and whether it is a folder (`None`: the listing did not say).
    found: Option<std::collections::HashMap<std::ffi::OsString, Option<bool>>>,
}

impl LatestNames {
    /// Lists `dir` (a lane's latest folder, already made by [`make_lane_dir`]).
    pub fn read(dir: &Path) -> LatestNames {
        let list = || -> std::io::Result<_> {
            let mut found = std::collections::HashMap::new();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let is_dir = entry.file_type().ok().map(|kind| kind.is_dir());
                found.insert(entry.file_name(), is_dir);
            }
            Ok(found)
        };
        LatestNames { dir: dir.to_path_buf(), found: list().ok() }
    }

    /// What is at `name` in the folder, as [`latest_is_free`] says it.
    pub fn of(&self, name: &str) -> std::io::Result<LatestName> {
        match self.found.as_ref().map(|found| found.get(std::ffi::OsStr::new(name))) {
            Some(None) => Ok(LatestName::Vacant),
            Some(Some(Some(false))) => Ok(LatestName::Taken),
            Some(Some(Some(true) | None)) | None => latest_is_free(&self.dir.join(name)),
        }
    }
}

/// What [`latest_is_free`] found at a node's latest name before the run's log of it existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatestName {
    /// Nothing: the first run of the commit on this lane, or a node new to it.
    Vacant,
    /// Something that is not this run's log (it did not exist yet): [`replace_latest`] it.
    Taken,
}

/// Points `latest` at `log`, atomically: where nothing is at `latest` yet, a hard link made
/// there; else a hard link to `log` made under a temporary name in `via`, then renamed over
/// `latest` ([`replace_latest`]). Both name the same file, so a reader of `latest` sees `log`
/// grow. Whatever was at `latest` (an older run's log, a symlink planted there) is replaced,
/// never followed. When the link cannot be made, an older run's log is removed from `latest`
/// rather than left there to pass for this run's.
pub fn link_latest(log: &Path, latest: &Path, via: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // The first run of a commit finds no latest name: one link makes it (a single step, so
    // atomic too), instead of two checks, a link under a temporary name and a rename.
    if std::fs::hard_link(log, latest).is_ok() {
        return Ok(());
    }
    let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| (a.dev(), a.ino()) == (b.dev(), b.ino());
    if let (Ok(a), Ok(b)) = (std::fs::symlink_metadata(log), std::fs::symlink_metadata(latest))
        && same(&a, &b)
    {
        return Ok(());
    }
    replace_latest(log, latest, via)
}

/// Points `latest` at `log` where something else is there: a hard link to `log` under a
/// temporary name, renamed over `latest`. This is [`link_latest`] without its first link and
/// its check, for a name found [`LatestName::Taken`] before `log` existed, so it cannot name
/// `log` (a rename of one name of a file over another does nothing, and would leave the
/// temporary name).
///
/// The temporary name goes in `via`, a folder of the run's that holds a few names (its
/// `runs/<seq>`), rather than beside `latest`: a folder of the lane's every node has each new
/// name searched for and added among all of theirs, twice per node. Where `via` will not do
/// (not on `latest`'s file system, not writable), `latest`'s own folder is used.
pub fn replace_latest(log: &Path, latest: &Path, via: &Path) -> std::io::Result<()> {
    let dir = latest.parent().ok_or_else(|| std::io::Error::other("a log path has no folder"))?;
    let replaced = match link_then_rename(log, latest, via) {
        Err(_) if via != dir => link_then_rename(log, latest, dir),
        replaced => replaced,
    };
    // Only the run holding the checkout's run lock names its logs the latest.
    if replaced.is_err() && std::fs::symlink_metadata(latest).is_ok_and(|meta| !meta.is_dir()) {
        let _ = std::fs::remove_file(latest);
    }
    replaced
}

/// A hard link to `log` under a fresh temporary name in `dir`, renamed over `latest`; on
/// failure nothing is left under the temporary name.
fn link_then_rename(log: &Path, latest: &Path, dir: &Path) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let tmp = dir.join(format!(".odu-link.tmp-{pid}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    // linkat without AT_SYMLINK_FOLLOW: `log` itself is linked, never what a link there names.
    let linked = match std::fs::hard_link(log, &tmp) {
        // A leftover of a server that died between the two steps (unlinking never follows a
        // link): removed only when met, which spares every node two failing unlinks.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            std::fs::hard_link(log, &tmp)
        }
        linked => linked,
    };
    linked.and_then(|()| {
        std::fs::rename(&tmp, latest).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    })
}

/// Reserves the next seq for `label` by exclusive create, writing `record` (its seq filled in).
pub fn reserve(ci: &Path, record: &mut RunRecord) -> std::io::Result<u64> {
    let dir = make_runs_dir(ci, &record.label)?;
    let mut seq = highest_seq(&dir) + 1;
    for _ in 0..1024 {
        let path = dir.join(format!("{seq}.json"));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                record.seq = seq;
                if let Err(e) = file.write_all(&to_pretty(record)) {
                    // No run starts under this seq: leave no half-written record behind.
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                return Ok(seq);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => seq += 1,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not reserve a run number after 1024 tries"))
}

fn highest_seq(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

fn to_pretty(record: &RunRecord) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(record).expect("records serialize");
    bytes.push(b'\n');
    bytes
}

/// Replaces the record atomically (a temporary copy renamed over it); on any failure the
/// temporary copy is removed and the old record stays.
pub fn write(ci: &Path, record: &RunRecord) -> std::io::Result<()> {
    replace_file(&runs_dir(ci, &record.label), &format!("{}.json", record.seq), &to_pretty(record))
}

/// Makes `dir/name` hold `bytes`, atomically: a temporary copy (`.<name>.tmp-<pid>`, never
/// followed if something is there) renamed over it, removed on any failure.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Rewrites the record in the room its old copy holds, for when [`write()`] finds none for a
/// temporary copy (a full disk): compact, padded with spaces to the old length, so the file
/// neither grows nor shrinks. Refused when it would not fit. Not atomic: a reader that comes
/// in the middle skips the record as unreadable for that moment.
pub fn overwrite(ci: &Path, record: &RunRecord) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = runs_dir(ci, &record.label).join(format!("{}.json", record.seq));
    let mut file = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&path)?;
    let room = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let mut bytes = serde_json::to_vec(record).expect("records serialize");
    if bytes.len() >= room {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("the record needs {} bytes in place, its old copy holds {room}", bytes.len() + 1),
        ));
    }
    bytes.resize(room - 1, b' ');
    bytes.push(b'\n');
    file.write_all(&bytes)
}

/// Closes the records of runs whose server died mid-run, for the server that now holds the
/// checkout's lock: every `running` record is an orphan. The run is `incomplete`, its running
/// nodes `errored` (their logs end with a `[odu] log truncated` line), its pending ones
/// `skipped`. Returns the runs it closed.
pub fn recover(ci: &Path, now: u64) -> Vec<String> {
    let Ok((heads, _)) = heads(ci) else { return vec![] };
    running_records(ci, &heads).iter_mut().filter_map(|record| close_orphan(ci, record, now)).collect()
}

/// The whole records of the `running` runs among `heads` (the only ones a recovery rewrites),
/// each read as [`load`] reads it; one that cannot be is left alone.
fn running_records(ci: &Path, heads: &[RecordHead]) -> Vec<RunRecord> {
    heads
        .iter()
        .filter(|head| head.outcome == RunOutcome::Running)
        .filter_map(|head| {
            let path = runs_dir(ci, &head.label).join(format!("{}.json", head.seq));
            load(&path, &head.label, head.seq).ok()
        })
        .collect()
}

/// Every run of the checkout as `odu runs` lists it, newest first, read from the records'
/// [`heads`], and a note for each record that was not trusted. A `running` record reads as
/// [`read`] reads it (`incomplete` when no server holds the checkout's lock); with
/// `recover_at` (a reader with no server answering, and the time now) such a record is also
/// closed on disk, as [`recover`] closes it. Probing the lock only after listing means every
/// record closed was written by a server that has since gone; one that cannot be rewritten
/// (another user's checkout, a full disk) still reads as [`read`] reads it.
pub fn summaries(
    ci: &Path,
    recover_at: Option<u64>,
) -> Result<(Vec<odu_proto::RunSummary>, Vec<String>), Unreadable> {
    let (heads, rejected) = heads(ci)?;
    let mut runs: Vec<odu_proto::RunSummary> = heads.into_iter().map(RecordHead::into_summary).collect();
    if runs.iter().any(|r| r.outcome == RunOutcome::Running) && !served(ci) {
        for run in runs.iter_mut().filter(|r| r.outcome == RunOutcome::Running) {
            let path = runs_dir(ci, &run.label).join(format!("{}.json", run.seq));
            match load(&path, &run.label, run.seq) {
                Ok(mut record) => {
                    if recover_at.is_none_or(|now| close_orphan(ci, &mut record, now).is_none()) {
                        record.close_orphaned(ORPHANED.into());
                    }
                    *run = record.summary();
                }
                // Its server is gone all the same: it is not running, closed or not.
                Err(_) => run.outcome = RunOutcome::Incomplete,
            }
        }
    }
    Ok((runs, rejected))
}

/// Closes and rewrites one record a dead server left `running`; its reference when written.
fn close_orphan(ci: &Path, record: &mut RunRecord, now: u64) -> Option<String> {
    if record.outcome != RunOutcome::Running {
        return None;
    }
    let pid = record.pid.map_or("?".to_string(), |p| p.to_string());
    let cut =
        record.close_orphaned(format!("the odu server (pid {pid}) died mid-run; closed by the next server"));
    for id in cut {
        let line = format!("\n[odu] log truncated: the odu server (pid {pid}) died while this node ran\n");
        if let Ok(mut file) = open_run_log(ci, record, &id, Access::Append) {
            let _ = file.write_all(line.as_bytes());
        }
    }
    record.finished_at = Some(now);
    // The dead server's snapshot is removed once, by whoever closes its run (a dashboard
    // too, so nothing is printed); what is not odu's to remove stays.
    if let Some(scratch) = record.snapshot.take()
        && let Some(repo) = ci.parent()
        && let Err(e) = crate::tool::git::remove_abandoned(repo, &scratch, &record.sha)
    {
        tracing::warn!(run = %record.reference(), error = %e, "the dead server's snapshot was left in place");
    }
    write(ci, record).is_ok().then(|| record.reference())
}

/// The runs of a checkout as read from its ledger, newest first, and a note for each record
/// that was not trusted (so not listed).
#[derive(Debug, Default)]
pub struct Ledger {
    pub records: Vec<RunRecord>,
    pub rejected: Vec<String>,
}

impl Ledger {
    /// The record `run` names (`<sha7>#<seq>`), or the latest; the error says what to do.
    pub fn find(&self, run: Option<&str>) -> Result<&RunRecord, String> {
        let Some(run) = run else {
            return self
                .records
                .first()
                .ok_or_else(|| "no run in this checkout yet: start one with odu run".into());
        };
        self.records.iter().find(|rec| rec.reference() == run).ok_or_else(|| {
            let known: Vec<String> = self.records.iter().take(10).map(RunRecord::reference).collect();
            format!(
                "no run {run:?} in this checkout (latest: {}): list them with odu runs",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        })
    }
}

/// Why the ledger cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error(
        "permission denied: {} belongs to another user (uid {owner}; you are uid {me}): run odu as that user to see its runs",
        .path.display()
    )]
    Foreign { path: PathBuf, owner: u32, me: u32 },
    #[error("{} is a symlink: odu never follows a link found in .ci (remove it)", .0.display())]
    Symlink(PathBuf),
    #[error("cannot read {}: {error}", .path.display())]
    Io { path: PathBuf, error: std::io::Error },
}

fn unreadable(path: &Path, error: std::io::Error) -> Unreadable {
    use std::os::unix::fs::MetadataExt;
    if error.kind() == std::io::ErrorKind::PermissionDenied
        && let Ok(meta) = std::fs::metadata(path)
        && meta.uid() != crate::private::euid()
    {
        return Unreadable::Foreign { path: path.into(), owner: meta.uid(), me: crate::private::euid() };
    }
    Unreadable::Io { path: path.into(), error }
}

/// The largest record read: a record of thousands of nodes is well under it.
const RECORD_LIMIT: u64 = 16 << 20;

/// Every record under `.ci` as written, newest first. Only `.ci/<label>/runs/<seq>.json` of a
/// label odu makes is read, through real directories and without following a symlink; a record
/// whose ids are not its file's is left out with a note.
pub(crate) fn scan(ci: &Path) -> Result<Ledger, Unreadable> {
    let (mut records, rejected) = walk(ci, |_, _, _| true, load)?;
    newest_first(&mut records, |r| (r.finished_at.unwrap_or(r.started_at), r.seq));
    Ok(Ledger { records, rejected })
}

/// A record without its nodes, which make up most of it: which run it is, how it ended, when
/// it ran, on which lanes, and whether its logs were pruned. What a listing of runs, retention
/// and a server's start need; read with the nodes' ids checked, nothing of them built.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RecordHead {
    pub version: u32,
    pub sha: String,
    pub label: String,
    pub seq: u64,
    pub dirty: bool,
    pub pipeline: String,
    pub outcome: RunOutcome,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    pub lanes: Vec<LaneRecord>,
    /// Only checked, as a record is read (a record with a node whose id names no trail is no
    /// run's, listed or not); never kept ([`HEADS_FILE`] holds heads of checked records).
    #[serde(rename = "nodes", default, skip_serializing)]
    nodes_checked: Option<CheckedIds>,
    #[serde(default)]
    pub logs_pruned: Option<LogsPruned>,
}

/// A record's nodes as its head reads them: each one's id checked as [`load`] checks it, and
/// nothing kept (an id is borrowed from the record's bytes where it can be).
#[derive(Clone, Copy, Debug)]
struct CheckedIds;

impl<'de> Deserialize<'de> for CheckedIds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CheckedIds, D::Error> {
        #[derive(Deserialize)]
        struct Node<'a> {
            #[serde(borrow)]
            id: std::borrow::Cow<'a, str>,
        }
        struct Nodes;
        impl<'de> serde::de::Visitor<'de> for Nodes {
            type Value = CheckedIds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of nodes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut nodes: A) -> Result<CheckedIds, A::Error> {
                while let Some(node) = nodes.next_element::<Node<'de>>()? {
                    trail_id(&node.id).map_err(serde::de::Error::custom)?;
                }
                Ok(CheckedIds)
            }
        }
        deserializer.deserialize_seq(Nodes)
    }
}

impl RecordHead {
    /// `<sha7>#<seq>`, as [`RunRecord::reference`].
    pub fn reference(&self) -> String {
        format!("{}#{}", self.label, self.seq)
    }

    /// The run as `odu runs` and the `runs` cell list it.
    pub fn into_summary(self) -> odu_proto::RunSummary {
        odu_proto::RunSummary {
            run: self.reference(),
            lanes: self.lanes.into_iter().map(|l| l.platform).collect(),
            sha: self.sha,
            label: self.label,
            seq: self.seq,
            dirty: self.dirty,
            pipeline: self.pipeline,
            outcome: self.outcome,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }

    /// The checks [`load`] makes of a record's ids (its nodes' were made as they were read).
    fn check_ids(&self, label: &str, seq: u64) -> Result<(), String> {
        check_run_ids((&self.label, self.seq, &self.lanes), label, seq)
    }
}

/// Newest first, as `odu runs` lists runs: by when each ended (else started), then by seq.
fn newest_first<T>(records: &mut [T], key: impl Fn(&T) -> (u64, u64)) {
    records.sort_by_key(|record| std::cmp::Reverse(key(record)));
}

/// Heads already read, by record path, with the stamp of the file they were read from: a
/// server prunes after every run, and read each kept record again each time (the last twenty
/// runs' whole records, megabytes of nodes for a large graph). A record rewritten is another
/// file (a temporary copy renamed over it), so its stamp differs and it is read again.
/// A head is forgotten once a walk finds its record gone.
static KNOWN_HEADS: std::sync::Mutex<
    std::collections::BTreeMap<PathBuf, (odu_proto::FileStamp, RecordHead)>,
> = std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Where the heads a process read ([`KNOWN_HEADS`]) are kept for the next one, `.ci/` beside
/// the checkout's runs: a server's start read every record's head (tens of milliseconds for a
/// few hundred runs of a large graph: the nodes' ids are checked, so every node is read), and
/// now reads those whose file changed since. A head kept there is used only while its record's
/// file has the stamp it had when read; the file is never followed, and one that will not read
/// is as good as none.
pub const HEADS_FILE: &str = "odu.heads.json";

/// The `.ci` folders whose [`HEADS_FILE`] this process read.
static HEADS_FILES_READ: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// [`HEADS_FILE`]'s contents.
#[derive(Serialize, Deserialize)]
struct KeptHeads {
    heads: Vec<KeptHead>,
}

#[derive(Serialize, Deserialize)]
struct KeptHead {
    stamp: odu_proto::FileStamp,
    head: RecordHead,
}

/// Adds the heads kept in `ci`'s [`HEADS_FILE`] to [`KNOWN_HEADS`], once a process: each
/// checked against the record it stands for as a head read from that record is.
fn read_kept_heads(ci: &Path) {
    if !HEADS_FILES_READ.lock().is_ok_and(|mut read| read.insert(ci.to_path_buf())) {
        return;
    }
    let Ok(bytes) = read_record(&ci.join(HEADS_FILE)) else { return };
    let Ok(kept) = serde_json::from_slice::<KeptHeads>(&bytes) else { return };
    let Ok(mut known) = KNOWN_HEADS.lock() else { return };
    for KeptHead { stamp, head } in kept.heads {
        if !valid_label(&head.label) || head.check_ids(&head.label, head.seq).is_err() {
            continue;
        }
        let path = runs_dir(ci, &head.label).join(format!("{}.json", head.seq));
        known.entry(path).or_insert((stamp, head));
    }
}

/// Writes the heads known of `ci`'s records to its [`HEADS_FILE`] (atomically); a failure
/// (a full disk) only leaves the next process to read more.
fn keep_heads(ci: &Path) {
    let Ok(known) = KNOWN_HEADS.lock() else { return };
    let heads: Vec<KeptHead> = known
        .iter()
        .filter(|(path, _)| path.starts_with(ci))
        .map(|(_, (stamp, head))| KeptHead { stamp: *stamp, head: head.clone() })
        .collect();
    drop(known);
    let bytes = serde_json::to_vec(&KeptHeads { heads }).expect("heads serialize");
    let _ = replace_file(ci, HEADS_FILE, &bytes);
}

/// The stamp of a regular file at `path` itself (a symlink is no record's file).
fn regular_file_stamp(path: &Path) -> Option<odu_proto::FileStamp> {
    let meta = std::fs::symlink_metadata(path).ok().filter(std::fs::Metadata::is_file)?;
    Some(crate::tool::stamp_of(&meta))
}

/// The heads of the records whose run still has something at its log folder's path, newest
/// first as [`scan`] orders records. The records of runs whose logs are gone (most of a long
/// history) are not read at all.
pub(crate) fn heads_with_logs(ci: &Path) -> Result<Vec<RecordHead>, Unreadable> {
    let (heads, _) = walk_heads(ci, |beside, seq| beside.contains(&seq))?;
    Ok(heads)
}

/// The head of every record under `.ci`, newest first as [`scan`] orders records, and a note
/// for each record that was not trusted: what [`scan`] reads, without the nodes. A server's
/// start and a listing of runs read these: reading every record whole made both cost the
/// parse of every node of the checkout's history (a second and more for a few hundred runs
/// of a large graph).
pub(crate) fn heads(ci: &Path) -> Result<(Vec<RecordHead>, Vec<String>), Unreadable> {
    walk_heads(ci, |_, _| true)
}

/// The heads of the records `wanted` asks for ([`walk`]), newest first; a head read before
/// from the same file is not read again ([`KNOWN_HEADS`]).
fn walk_heads(
    ci: &Path,
    wanted: impl Fn(&std::collections::HashSet<u64>, u64) -> bool,
) -> Result<(Vec<RecordHead>, Vec<String>), Unreadable> {
    read_kept_heads(ci);
    let listed = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let read_anew = std::cell::Cell::new(false);
    let wanted = |beside: &std::collections::HashSet<u64>, seq: u64, path: &Path| {
        listed.borrow_mut().insert(path.to_path_buf());
        wanted(beside, seq)
    };
    let (mut heads, rejected) = walk(ci, wanted, |path, label, seq| {
        let stamp = regular_file_stamp(path);
        let known = |stamp| {
            let known = KNOWN_HEADS.lock().ok()?;
            let (known_stamp, head) = known.get(path)?;
            (*known_stamp == stamp).then(|| head.clone())
        };
        if let Some(head) = stamp.and_then(known) {
            return Ok(head);
        }
        let head: RecordHead =
            serde_json::from_slice(&read_record(path)?).map_err(|e| format!("not a run record: {e}"))?;
        if head.nodes_checked.is_none() {
            return Err("not a run record: it has no nodes".into());
        }
        head.check_ids(label, seq)?;
        if let (Some(stamp), Ok(mut known)) = (stamp, KNOWN_HEADS.lock()) {
            known.insert(path.to_path_buf(), (stamp, head.clone()));
            read_anew.set(true);
        }
        Ok(head)
    })?;
    // A record gone from its folder is forgotten; one only left unread this time is kept.
    let forgot = KNOWN_HEADS.lock().is_ok_and(|mut known| {
        let (listed, before) = (listed.into_inner(), known.len());
        known.retain(|path, _| !path.starts_with(ci) || listed.contains(path));
        known.len() != before
    });
    if read_anew.get() || forgot {
        keep_heads(ci);
    }
    newest_first(&mut heads, |h| (h.finished_at.unwrap_or(h.started_at), h.seq));
    Ok((heads, rejected))
}

/// Loads every record file under `.ci` that `wanted` asks for, with `load`; what cannot be
/// loaded is rejected with the reason. `wanted` is given the seqs that have something else (a
/// log folder) beside their record in the same `runs` folder, read from that folder's one
/// listing (a long history costs no call per record), the record's seq and its path.
fn walk<T>(
    ci: &Path,
    wanted: impl Fn(&std::collections::HashSet<u64>, u64, &Path) -> bool,
    load: impl Fn(&Path, &str, u64) -> Result<T, String>,
) -> Result<(Vec<T>, Vec<String>), Unreadable> {
    let (mut loaded, mut rejected) = (Vec::new(), Vec::new());
    match std::fs::symlink_metadata(ci) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(Unreadable::Symlink(ci.into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((loaded, rejected)),
        Err(e) => return Err(unreadable(ci, e)),
    }
    let entries = std::fs::read_dir(ci).map_err(|e| unreadable(ci, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(ci, e))?;
        let Some(label) = entry.file_name().to_str().filter(|l| valid_label(l)).map(str::to_string) else {
            continue;
        };
        let runs = match real_runs_dir(ci, &label) {
            Ok(runs) => runs,
            Err(TrailError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(TrailError::Io { path, error }) => return Err(unreadable(&path, error)),
            Err(other) => {
                rejected.push(format!("ignoring the runs of {label}: {other}"));
                continue;
            }
        };
        let mut records = Vec::new();
        let mut beside = std::collections::HashSet::new();
        for file in std::fs::read_dir(&runs).map_err(|e| unreadable(&runs, e))? {
            let file = file.map_err(|e| unreadable(&runs, e))?;
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            match name.strip_suffix(".json") {
                Some(seq) => {
                    if let Ok(seq) = seq.parse::<u64>() {
                        records.push((seq, file.path()));
                    }
                }
                None => {
                    if let Ok(seq) = name.parse::<u64>() {
                        beside.insert(seq);
                    }
                }
            }
        }
        for (seq, path) in records {
            if !wanted(&beside, seq, &path) {
                continue;
            }
            match load(&path, &label, seq) {
                Ok(record) => loaded.push(record),
                Err(why) => rejected.push(format!("ignoring {}: {why}", path.display())),
            }
        }
    }
    Ok((loaded, rejected))
}

/// `.ci/<label>/runs`, where the label's folder and its `runs` are real directories.
fn real_runs_dir(ci: &Path, label: &str) -> Result<PathBuf, TrailError> {
    let runs = runs_dir(ci, label);
    real_dir(&ci.join(label)).and_then(|()| real_dir(&runs))?;
    Ok(runs)
}

/// A record file's bytes, refused past [`RECORD_LIMIT`].
fn read_record(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = open_plain(path, Access::Read).map_err(|e| e.to_string())?;
    // Sized once: grown from nothing, a large record took a dozen reads and copies.
    let size = file.metadata().map_or(0, |m| m.len().min(RECORD_LIMIT));
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    file.take(RECORD_LIMIT + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > RECORD_LIMIT {
        return Err(format!("it is over {} MiB, no record odu writes", RECORD_LIMIT >> 20));
    }
    Ok(bytes)
}

/// One record file, checked against the label and seq its path gives.
pub(crate) fn load(path: &Path, label: &str, seq: u64) -> Result<RunRecord, String> {
    let record: RunRecord =
        serde_json::from_slice(&read_record(path)?).map_err(|e| format!("not a run record: {e}"))?;
    record.check_ids(label, seq)?;
    Ok(record)
}

/// Every trusted record under `.ci`, newest first, with each `running` record of a server that
/// is gone (nothing holds the checkout's lock) read as `incomplete`, even where the reader
/// cannot close it on disk.
pub fn read(ci: &Path) -> Result<Ledger, Unreadable> {
    let mut ledger = scan(ci)?;
    close_orphans(ci, &mut ledger.records);
    Ok(ledger)
}

/// Reads each `running` record among `records` as `incomplete` when no server holds the
/// checkout's lock (asked only when there is one).
fn close_orphans<'a>(ci: &Path, records: impl IntoIterator<Item = &'a mut RunRecord>) {
    let mut running = records.into_iter().filter(|r| r.outcome == RunOutcome::Running).peekable();
    if running.peek().is_some() && !served(ci) {
        for record in running {
            record.close_orphaned(ORPHANED.into());
        }
    }
}

/// What a `running` record of a server that is gone reads as.
const ORPHANED: &str = "its odu server is gone: the run never finished";

/// The record `run` names (`<sha7>#<seq>`), or the latest; the error says what to do.
///
/// A named run's record is read alone, and so is the latest (found from the records' heads): every client that follows a run to its end asks for
/// it, and reading the whole ledger to find it cost each of them the parse of every record
/// kept (tens of kilobytes each for a graph of a few hundred nodes). Where that record cannot
/// be read alone, the whole ledger is, and says why.
pub fn find(ci: &Path, run: Option<&str>) -> Result<RunRecord, String> {
    // The latest is the newest head's: that record alone is read whole.
    let latest = || Some(heads(ci).ok()?.0.first()?.reference());
    let reference = run.map(str::to_string).or_else(latest);
    if let Some(record) = reference.and_then(|run| find_alone(ci, &run)) {
        return Ok(record);
    }
    read(ci).map_err(|e| e.to_string())?.find(run).cloned()
}

/// Run `reference`'s record read alone, through the checks [`walk`] makes on the way to it (a
/// label odu makes, `.ci`, the label's folder and its `runs` real directories, the record a
/// regular file naming the run its path names), read as [`read`] reads it; `None` when any
/// of that fails.
fn find_alone(ci: &Path, reference: &str) -> Option<RunRecord> {
    let (label, seq) = reference.split_once('#')?;
    // Only the reference's own spelling: `+2` or `02` names no run.
    let seq: u64 = seq.parse().ok().filter(|n: &u64| n.to_string() == seq)?;
    if !valid_label(label) || std::fs::symlink_metadata(ci).ok()?.file_type().is_symlink() {
        return None;
    }
    let runs = real_runs_dir(ci, label).ok()?;
    let mut record = load(&runs.join(format!("{seq}.json")), label, seq).ok()?;
    close_orphans(ci, [&mut record]);
    Some(record)
}

/// `just now`, `5m ago`, `3h ago`, `2d ago`.
pub fn format_ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// The node views of a finished run, from its record.
pub fn stored_views(record: &RunRecord) -> Vec<NodeView> {
    record
        .nodes
        .iter()
        .map(|n| {
            let mut view = NodeView::pending(&n.id, String::new(), vec![]);
            view.status = n.status;
            view.exit_code = n.exit_code;
            view.started_at = n.started_at;
            view.duration_ms = n.duration_ms;
            view
        })
        .collect()
}

/// The header of a finished run, from its record.
pub fn stored_header(record: &RunRecord) -> Header {
    Header {
        run: record.reference(),
        sha: record.sha.clone(),
        label: record.label.clone(),
        pipeline: record.pipeline.clone(),
        lanes: record
            .lanes
            .iter()
            .map(|l| LaneInfo { platform: l.platform.clone(), host: l.host.clone() })
            .collect(),
        phase: Phase::Ended,
        outcome: record.outcome,
        interrupted: record.outcome == RunOutcome::Incomplete && record.note.is_none(),
        started_at: record.started_at,
        finished_at: record.finished_at,
        truncated_logs: Vec::new(),
        record_error: None,
        posting: (!record.unposted.is_empty()).then(|| odu_core::run::Posting {
            owed: record.unposted.len(),
            trying: false,
            last_error: record.unposted.iter().find_map(|u| u.last_error.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: &str) -> RunRecord {
        RunRecord {
            version: 1,
            repo: None,
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            label: label.into(),
            seq: 0,
            dirty: false,
            pipeline: "ci::default".into(),
            outcome: RunOutcome::Running,
            pid: Some(std::process::id()),
            started_at: 1,
            finished_at: None,
            lanes: vec![],
            nodes: vec![],
            unposted: vec![],
            selectors: vec![],
            flags: Default::default(),
            note: None,
            aliases: Default::default(),
            logs_pruned: None,
            snapshot: None,
        }
    }

    /// A save after the first takes each node's state in place ([`RunRecord::take_run`]):
    /// the record is the one a save that built every node afresh would write, and a record
    /// that does not list the run's nodes is built afresh.
    #[test]
    fn a_save_takes_the_nodes_state_in_place_and_equals_a_record_built_afresh() {
        use odu_core::run::{LanePlan, Run, RunEvent, RunMeta};
        let platform = "x86_64-linux";
        let tasks: Vec<odu_core::lane::TaskSpec> = ["a", "b"]
            .iter()
            .map(|t| odu_core::lane::TaskSpec {
                id: t.to_string(),
                argv: vec!["just".into(), t.to_string()],
                needs: vec![],
            })
            .collect();
        let plans = [LanePlan { platform: platform.into(), host: "localhost".into(), tasks }];
        let meta = RunMeta {
            run: "0123456#1".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            label: "0123456".into(),
            pipeline: "ci".into(),
            started_at: 1,
        };
        let mut run = Run::new(meta, &plans);
        let fresh = |run: &Run| {
            let mut built = record("0123456");
            built.take(&run.record());
            built
        };
        let mut kept = fresh(&run);
        assert_eq!(kept.nodes.len(), 3, "the setup node and two recipes");
        let mut a = NodeView::pending("a", "just a", Vec::new());
        let mut steps = vec![];
        a.status = odu_core::NodeStatus::Running;
        a.started_at = Some(5);
        steps.push(RunEvent::LaneReported { platform: platform.into(), nodes: vec![(&a).into()] });
        a.status = odu_core::NodeStatus::Failed;
        a.exit_code = Some(3);
        a.duration_ms = Some(7);
        steps.push(RunEvent::LaneReported { platform: platform.into(), nodes: vec![(&a).into()] });
        steps.push(RunEvent::LaneDied { platform: platform.into(), reason: "gone".into(), at: 20 });
        steps.push(RunEvent::LaneClosed { platform: platform.into(), at: 21 });
        for step in steps {
            let _ = run.apply(step);
            kept.take_run(&run);
            assert_eq!(kept, fresh(&run));
        }
        assert_eq!(kept.nodes[1].exit_code, Some(3), "{kept:?}");
        // A record that lists other nodes (none, here) takes the run's whole.
        let mut other = record("0123456");
        other.take_run(&run);
        assert_eq!(other, fresh(&run));
    }

    /// Every trusted record under `.ci`, newest first, read whole ([`read`]).
    fn list(ci: &Path) -> Vec<RunRecord> {
        read(ci).map(|ledger| ledger.records).unwrap_or_default()
    }

    /// A record's text with its nodes replaced by `nodes`.
    fn with_nodes(ci: &Path, label: &str, seq: u64, nodes: &str) {
        let path = runs_dir(ci, label).join(format!("{seq}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"nodes\": []"), "{text}");
        std::fs::write(&path, text.replace("\"nodes\": []", &format!("\"nodes\": {nodes}"))).unwrap();
    }

    /// Runs are listed (by `odu runs` and a server's start) and the latest found from the
    /// records' heads: the same runs in the same order as the whole records say. A record's
    /// nodes are not built, only their ids checked: a record with a node whose id names no trail
    /// is no run either way. Only the record asked for is read whole.
    #[test]
    fn runs_are_listed_from_the_heads_of_their_records_without_building_a_node() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let (mut a, mut b, mut c) = (record("0123456"), record("0123456"), record("89abcde"));
        for r in [&mut a, &mut b, &mut c] {
            reserve(ci, r).unwrap();
        }
        b.outcome = RunOutcome::Passed;
        b.finished_at = Some(5);
        write(ci, &b).unwrap();
        c.outcome = RunOutcome::Failed;
        c.finished_at = Some(7);
        c.lanes = vec![LaneRecord { platform: "x86_64-linux".into(), host: "localhost".into() }];
        write(ci, &c).unwrap();
        // `a` is still running, of a server that is gone: it reads incomplete either way.
        let whole: Vec<odu_proto::RunSummary> = list(ci).iter().map(RunRecord::summary).collect();
        let order: Vec<&str> = whole.iter().map(|r| r.run.as_str()).collect();
        assert_eq!(order, ["89abcde#1", "0123456#2", "0123456#1"]);
        assert_eq!(whole[2].outcome, RunOutcome::Incomplete);
        let (listed, rejected) = summaries(ci, None).unwrap();
        assert_eq!(listed, whole);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(find(ci, None).unwrap().reference(), "89abcde#1");

        // A node that is no node (no status, no log) but has a good id: not built, so listed.
        with_nodes(ci, "0123456", 2, r#"[{"id": "x@x86_64-linux"}]"#);
        assert_eq!(summaries(ci, None).unwrap().0, whole, "listed from its head alone");
        assert!(list(ci).iter().all(|r| r.reference() != "0123456#2"), "read whole, it is no run");
        // A node whose id names no trail: no run, listed or read whole.
        with_nodes(ci, "89abcde", 1, r#"[{"id": "x@../../etc", "status": "ok", "log": "x"}]"#);
        let (listed, rejected) = summaries(ci, None).unwrap();
        assert_eq!(listed, whole[1..]);
        assert!(rejected.iter().any(|note| note.contains("89abcde/runs/1.json")), "{rejected:?}");
        assert!(list(ci).iter().all(|r| r.reference() != "89abcde#1"));
        assert_eq!(
            find(ci, None).unwrap().reference(),
            "0123456#1",
            "the newest run whose record reads whole (0123456#2's does not)"
        );
        // Running, of a gone server, and not readable whole: not running either.
        with_nodes(ci, "0123456", 1, r#"[{"id": "x@x86_64-linux"}]"#);
        let (listed, _) = summaries(ci, Some(9)).unwrap();
        assert_eq!((listed[1].run.as_str(), listed[1].outcome), ("0123456#1", RunOutcome::Incomplete));
    }

    /// What a new process knows of `ci`'s heads: nothing it did not read from disk.
    fn forget_heads(ci: &Path) {
        KNOWN_HEADS.lock().unwrap().retain(|path, _| !path.starts_with(ci));
        HEADS_FILES_READ.lock().unwrap().remove(ci);
    }

    /// `path` rewritten in place (the same file, the same size) with `from` replaced by `to`,
    /// its modification time put back: to its stamp, it is the file it was.
    fn rewrite_unseen(path: &Path, from: &str, to: &str) {
        assert_eq!(from.len(), to.len());
        let modified = std::fs::metadata(path).unwrap().modified().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(path, text.replace(from, to)).unwrap();
        std::fs::File::options().write(true).open(path).unwrap().set_modified(modified).unwrap();
    }

    /// The heads a process read are kept in `.ci` for the next, which reads a record again only
    /// when its file changed: a server's start then costs a look at each record's file, not a
    /// read of every node of the checkout's history.
    #[test]
    fn heads_are_kept_for_the_next_process_while_their_records_stay_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let (mut a, mut b) = (record("0123456"), record("0123456"));
        for r in [&mut a, &mut b] {
            reserve(ci, r).unwrap();
            r.outcome = RunOutcome::Passed;
            r.finished_at = Some(r.seq + 4);
            write(ci, r).unwrap();
        }
        let pipelines =
            || -> Vec<String> { summaries(ci, None).unwrap().0.into_iter().map(|r| r.pipeline).collect() };
        assert_eq!(pipelines(), ["ci::default", "ci::default"]);
        assert!(ci.join(HEADS_FILE).is_file(), "the heads read are kept");

        let b_path = runs_dir(ci, "0123456").join("2.json");
        rewrite_unseen(&b_path, "\"ci::default\"", "\"ci::changed\"");
        forget_heads(ci);
        assert_eq!(pipelines(), ["ci::default", "ci::default"], "the kept head stands for the same file");
        std::fs::File::options()
            .write(true)
            .open(&b_path)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        forget_heads(ci);
        assert_eq!(pipelines(), ["ci::changed", "ci::default"], "a record whose file changed is read again");
        forget_heads(ci);
        assert_eq!(pipelines(), ["ci::changed", "ci::default"], "and kept as read");
    }

    /// A heads file that will not read is as good as none, and one that is a symlink is never
    /// followed: neither what it names is read, nor is it written through.
    #[test]
    fn a_heads_file_that_is_garbage_or_a_symlink_is_ignored_and_replaced() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let mut a = record("0123456");
        reserve(ci, &mut a).unwrap();
        a.outcome = RunOutcome::Passed;
        a.finished_at = Some(5);
        write(ci, &a).unwrap();
        let whole = summaries(ci, None).unwrap().0;
        let kept = std::fs::read(ci.join(HEADS_FILE)).unwrap();

        std::fs::write(ci.join(HEADS_FILE), b"{not json").unwrap();
        forget_heads(ci);
        assert_eq!(summaries(ci, None).unwrap().0, whole);

        // A symlink to heads that lie (a forged pipeline, with the record's true stamp).
        let outside = tempfile::tempdir().unwrap();
        let forged = String::from_utf8(kept).unwrap().replace("ci::default", "ci::forged!");
        std::fs::write(outside.path().join("heads"), &forged).unwrap();
        std::fs::remove_file(ci.join(HEADS_FILE)).unwrap();
        symlink(outside.path().join("heads"), ci.join(HEADS_FILE)).unwrap();
        forget_heads(ci);
        assert_eq!(summaries(ci, None).unwrap().0, whole, "what a symlink names is not read");
        assert_eq!(std::fs::read_to_string(outside.path().join("heads")).unwrap(), forged);
        let meta = std::fs::symlink_metadata(ci.join(HEADS_FILE)).unwrap();
        assert!(meta.is_file(), "the symlink was replaced by the heads read, not written through");
    }

    /// A new server closes the records its dead predecessor left running, and reads whole only
    /// those: a finished run's record is left as it is, its nodes never built (here they could
    /// not be).
    #[test]
    fn recovery_rewrites_only_the_running_records() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let (mut a, mut b) = (record("0123456"), record("0123456"));
        reserve(ci, &mut a).unwrap();
        reserve(ci, &mut b).unwrap();
        b.outcome = RunOutcome::Passed;
        b.finished_at = Some(5);
        write(ci, &b).unwrap();
        with_nodes(ci, "0123456", 2, r#"[{"id": "x@x86_64-linux"}]"#);
        let finished = std::fs::read(runs_dir(ci, "0123456").join("2.json")).unwrap();
        assert_eq!(recover(ci, 9), ["0123456#1"]);
        let closed = find(ci, Some("0123456#1")).unwrap();
        assert_eq!((closed.outcome, closed.finished_at), (RunOutcome::Incomplete, Some(9)));
        assert_eq!(std::fs::read(runs_dir(ci, "0123456").join("2.json")).unwrap(), finished);
        assert!(recover(ci, 10).is_empty(), "closed once");
    }

    #[test]
    fn seqs_are_reserved_once_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (record("0123456"), record("0123456"));
        assert_eq!(reserve(dir.path(), &mut a).unwrap(), 1);
        assert_eq!(reserve(dir.path(), &mut b).unwrap(), 2);
        a.outcome = RunOutcome::Passed;
        a.finished_at = Some(5);
        write(dir.path(), &a).unwrap();
        let listed = list(dir.path());
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].seq, 1, "newest finished first");
        assert_eq!(listed[0].reference(), "0123456#1");
    }

    #[test]
    fn a_running_record_reads_incomplete_unless_a_server_holds_the_lock() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let mut r = record("0123456");
        reserve(dir.path(), &mut r).unwrap();
        // Our own pid is alive, and still no server holds the lock.
        assert_eq!(list(dir.path())[0].outcome, RunOutcome::Incomplete);
        let lock = std::fs::File::create(dir.path().join(SERVE_LOCK)).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert!(served(dir.path()));
        assert_eq!(list(dir.path())[0].outcome, RunOutcome::Running);
        drop(lock);
        assert!(!served(dir.path()));
    }

    /// A named run is read alone, and reads as the whole ledger reads it: a running record of
    /// a server that is gone is incomplete, a record in the wrong file or behind a symlink is
    /// no run's, and another record that cannot be read at all does not stand in the way.
    #[test]
    fn a_named_run_reads_alone_as_the_whole_ledger_reads_it() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let (mut a, mut b) = (record("0123456"), record("0123456"));
        reserve(ci, &mut a).unwrap();
        reserve(ci, &mut b).unwrap();
        b.outcome = RunOutcome::Passed;
        b.finished_at = Some(5);
        write(ci, &b).unwrap();
        let whole =
            |run: &str| read(ci).unwrap().find(Some(run)).cloned().map(|r| (r.reference(), r.outcome));
        for run in ["0123456#1", "0123456#2"] {
            let alone = find(ci, Some(run)).map(|r| (r.reference(), r.outcome));
            assert_eq!(alone, whole(run), "{run}");
        }
        assert_eq!(find(ci, Some("0123456#1")).unwrap().outcome, RunOutcome::Incomplete);
        // Another record that is no record: the named one still reads, alone or not.
        std::fs::write(runs_dir(ci, "0123456").join("3.json"), b"{").unwrap();
        assert_eq!(find(ci, Some("0123456#2")).unwrap().outcome, RunOutcome::Passed);
        // A record naming another run, a symlink for a record, a label odu never makes.
        std::fs::copy(runs_dir(ci, "0123456").join("2.json"), runs_dir(ci, "0123456").join("4.json"))
            .unwrap();
        symlink(runs_dir(ci, "0123456").join("2.json"), runs_dir(ci, "0123456").join("5.json")).unwrap();
        let unknown =
            ["0123456#3", "0123456#4", "0123456#5", "0123456#9", "0123456#x", "0123456#+2", "0123456#02"];
        for run in unknown.into_iter().chain(["../0123456#2", "0123456", "0123456#2#2"]) {
            let err = find(ci, Some(run)).expect_err(run);
            assert!(err.contains("latest: 0123456#2, 0123456#1"), "{run}: {err}");
        }
        // The label's folder behind a symlink: no run of it is read, alone or not.
        let moved = dir.path().join("elsewhere");
        std::fs::rename(ci.join("0123456"), &moved).unwrap();
        symlink(&moved, ci.join("0123456")).unwrap();
        assert!(find(ci, Some("0123456#2")).is_err());
    }

    #[test]
    fn only_labels_odu_makes_are_labels() {
        assert!(valid_label("0123abc"));
        assert!(valid_label("0123abc+dirty"));
        for bad in ["", "0123ab", "0123abcd", "0123ABC", "../1234", "0123abc+", "0123abc/..", "odu.sock"] {
            assert!(!valid_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn trail_names_come_from_ids_and_stay_one_file_in_the_lane_folder() {
        assert_eq!(
            trail_name("ci::e2e@x86_64-linux").unwrap(),
            ("x86_64-linux".to_string(), "ci::e2e.log".to_string())
        );
        assert_eq!(trail_name("../x@x86_64-linux").unwrap().1, "..%2Fx.log");
        for bad in ["x", "@x86_64-linux", "x@", "x@../..", "x@/etc", "x@linux", "x@a-b/c"] {
            assert!(trail_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_record_is_checked_against_its_file() {
        let mut r = record("0123456");
        r.seq = 3;
        r.nodes.push(NodeRecord {
            id: "x@x86_64-linux".into(),
            status: odu_core::NodeStatus::Ok,
            exit_code: Some(0),
            started_at: None,
            duration_ms: None,
            log: "/etc/shadow".into(),
        });
        assert!(r.check_ids("0123456", 3).is_ok(), "the log string is not checked: it is never a path");
        assert!(r.check_ids("0123457", 3).is_err());
        assert!(r.check_ids("0123456", 4).is_err());
        r.nodes[0].id = "x@../../etc".into();
        assert!(r.check_ids("0123456", 3).is_err());
    }

    #[test]
    fn a_write_that_fails_leaves_no_temporary_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = record("0123456");
        a.seq = 1;
        // The record's name is taken by a directory: the temporary copy is written, the
        // rename over it fails.
        let runs = dir.path().join("0123456").join("runs");
        std::fs::create_dir_all(runs.join("1.json")).unwrap();
        std::fs::write(runs.join("1.json").join("x"), "").unwrap();
        assert!(write(dir.path(), &a).is_err());
        let names: Vec<_> = std::fs::read_dir(&runs).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("1.json")], "a temporary copy stayed");
    }

    #[test]
    fn a_record_rewritten_in_place_reads_back_whole_and_never_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = record("0123456");
        reserve(dir.path(), &mut a).unwrap();
        let path = dir.path().join("0123456/runs/1.json");
        let before = std::fs::metadata(&path).unwrap().len();
        a.outcome = RunOutcome::Passed;
        a.finished_at = Some(9);
        a.pid = None;
        overwrite(dir.path(), &a).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        assert_eq!(list(dir.path()), vec![a.clone()]);
        // A record that no longer fits its old copy is refused, and the old copy is untouched.
        a.selectors = vec!["x".repeat(before as usize)];
        assert!(overwrite(dir.path(), &a).is_err());
        assert_eq!(list(dir.path())[0].outcome, RunOutcome::Passed);
    }

    #[test]
    fn the_latest_name_becomes_the_same_file_replacing_a_link_without_following_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "theirs").unwrap();
        let (log, latest) = (dir.path().join("run.log"), dir.path().join("latest.log"));
        std::fs::write(&log, "ours").unwrap();
        std::os::unix::fs::symlink(&victim, &latest).unwrap();
        latest_is_free(&latest).unwrap();
        link_latest(&log, &latest, dir.path()).unwrap();
        // Twice: naming the same file again leaves no temporary name behind.
        link_latest(&log, &latest, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "theirs");
        let (a, b) = (std::fs::symlink_metadata(&log).unwrap(), std::fs::symlink_metadata(&latest).unwrap());
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["latest.log", "run.log", "victim"]);
        std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b" and more").unwrap();
        assert_eq!(std::fs::read_to_string(&latest).unwrap(), "ours and more", "appends show through");
        let folder = dir.path().join("folder.log");
        std::fs::create_dir(&folder).unwrap();
        assert!(latest_is_free(&folder).is_err());
        assert!(link_latest(&log, &folder, dir.path()).is_err());
        assert!(folder.is_dir(), "a folder in the way is left alone");
    }

    #[test]
    fn one_listing_of_the_latest_folder_says_what_each_name_holds() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "theirs").unwrap();
        std::fs::write(dir.path().join("older.log"), "older").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link.log")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("dirlink.log")).unwrap();
        std::fs::create_dir(dir.path().join("folder.log")).unwrap();
        let names = LatestNames::read(dir.path());
        let unlisted = LatestNames::read(&dir.path().join("missing"));
        for name in ["older.log", "link.log", "dirlink.log", "vacant.log", "folder.log"] {
            let one = latest_is_free(&dir.path().join(name));
            let listed = names.of(name);
            match (one, listed) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}"),
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{name}"),
                (a, b) => panic!("{name}: one by one {a:?}, listed {b:?}"),
            }
        }
        assert_eq!(names.of("vacant.log").unwrap(), LatestName::Vacant);
        // A folder that cannot be listed is asked name by name.
        assert_eq!(unlisted.of("older.log").unwrap(), LatestName::Vacant);
        assert_eq!(names.of("dirlink.log").unwrap(), LatestName::Taken, "a link to a folder is replaced");
        assert!(names.of("folder.log").is_err(), "a folder is in the way");
    }

    #[test]
    fn a_temporary_name_left_by_a_dead_server_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "theirs").unwrap();
        // Names this process could pick next, each a link to someone else's file.
        let pid = std::process::id();
        for n in 0..256 {
            std::os::unix::fs::symlink(&victim, dir.path().join(format!(".odu-link.tmp-{pid}-{n}"))).unwrap();
        }
        let (log, latest) = (dir.path().join("run.log"), dir.path().join("latest.log"));
        std::fs::write(&log, "ours").unwrap();
        // An older run's log is there, so the link goes through a temporary name.
        std::fs::write(&latest, "older").unwrap();
        link_latest(&log, &latest, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&latest).unwrap(), "ours");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "theirs");
        assert!(std::fs::symlink_metadata(&latest).unwrap().is_file());
    }

    #[test]
    fn a_name_found_taken_is_replaced_by_the_runs_log_without_following_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "theirs").unwrap();
        let (log, latest, older) =
            (dir.path().join("run.log"), dir.path().join("latest.log"), dir.path().join("older.log"));
        assert_eq!(latest_is_free(&latest).unwrap(), LatestName::Vacant);
        std::os::unix::fs::symlink(&victim, &latest).unwrap();
        std::fs::write(&older, "older").unwrap();
        assert_eq!(latest_is_free(&latest).unwrap(), LatestName::Taken, "a link is taken");
        assert_eq!(latest_is_free(&older).unwrap(), LatestName::Taken, "an older log is taken");
        std::fs::write(&log, "ours").unwrap();
        replace_latest(&log, &latest, dir.path()).unwrap();
        replace_latest(&log, &older, dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "theirs");
        for name in [&latest, &older] {
            let (a, b) = (std::fs::symlink_metadata(&log).unwrap(), std::fs::symlink_metadata(name).unwrap());
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        }
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["latest.log", "older.log", "run.log", "victim"], "no temporary name is left");
    }

    #[test]
    fn a_taken_name_is_replaced_through_the_runs_folder_else_its_own() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (lane, run) = (dir.path().join("lane"), dir.path().join("run"));
        std::fs::create_dir(&lane).unwrap();
        std::fs::create_dir(&run).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "theirs").unwrap();
        // A dead server's leftovers where this process could name its next temporary link.
        let pid = std::process::id();
        for n in 0..256 {
            std::os::unix::fs::symlink(&victim, run.join(format!(".odu-link.tmp-{pid}-{n}"))).unwrap();
        }
        let log = run.join("run.log");
        std::fs::write(&log, "ours").unwrap();
        let names = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let same = |a: &Path, b: &Path| {
            let (a, b) = (std::fs::symlink_metadata(a).unwrap(), std::fs::symlink_metadata(b).unwrap());
            (a.dev(), a.ino()) == (b.dev(), b.ino())
        };
        std::fs::write(lane.join("a.log"), "older").unwrap();
        replace_latest(&log, &lane.join("a.log"), &run).unwrap();
        assert!(same(&log, &lane.join("a.log")));
        assert_eq!(names(&lane), ["a.log"], "nothing new in the lane's folder");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "theirs", "a leftover is never followed");
        let files: Vec<_> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !e.file_type().unwrap().is_symlink())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(files, ["run.log"], "the temporary name was renamed away");
        // A run folder that will not do: the lane's own folder serves, and keeps nothing.
        std::fs::write(lane.join("b.log"), "older").unwrap();
        replace_latest(&log, &lane.join("b.log"), &dir.path().join("missing")).unwrap();
        assert!(same(&log, &lane.join("b.log")));
        assert_eq!(names(&lane), ["a.log", "b.log"]);
        // A log that is not there names nothing, and an older log is not left to pass for it.
        std::fs::write(lane.join("c.log"), "older").unwrap();
        assert!(replace_latest(&run.join("missing.log"), &lane.join("c.log"), &run).is_err());
        assert_eq!(names(&lane), ["a.log", "b.log"]);
    }

    #[test]
    fn a_first_latest_name_is_one_link_and_leaves_no_temporary_name() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (log, latest) = (dir.path().join("run.log"), dir.path().join("latest.log"));
        std::fs::write(&log, "ours").unwrap();
        link_latest(&log, &latest, dir.path()).unwrap();
        let (a, b) = (std::fs::symlink_metadata(&log).unwrap(), std::fs::symlink_metadata(&latest).unwrap());
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        let mut names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["latest.log", "run.log"]);
        // A log that is not there yet makes no name at all.
        assert!(
            link_latest(&dir.path().join("missing.log"), &dir.path().join("other.log"), dir.path()).is_err()
        );
        assert!(!dir.path().join("other.log").exists());
    }

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        assert_eq!(format_ago(5_000), "just now");
        assert_eq!(format_ago(120_000), "2m ago");
        assert_eq!(format_ago(7_200_000), "2h ago");
        assert_eq!(format_ago(2 * 86_400_000), "2d ago");
    }
}
