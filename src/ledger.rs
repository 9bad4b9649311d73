//! The run ledger: `.ci/<label>/runs/<seq>.json`, one record per run.
//!
//! A seq is reserved by exclusive create (never reused, even when its run crashed). The record
//! is written at reservation (outcome `running`, with the coordinator's pid), and replaced
//! atomically (write a temporary file, rename) on every terminal path. A `running` record whose
//! pid is gone belongs to a coordinator that died: readers report it `incomplete`.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// `running`, `passed`, `failed` or `incomplete`.
    pub outcome: String,
    #[serde(default)]
    pub pid: Option<u32>,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    pub lanes: Vec<LaneRecord>,
    pub nodes: Vec<NodeRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unposted: Vec<serde_json::Value>,
    /// What the run was asked (selectors and flags, never the environment), so a rerun of a
    /// finished run can start the same run again.
    #[serde(default)]
    pub selectors: Vec<String>,
    #[serde(default)]
    pub flags: odu_proto::StartFlags,
    /// Why the record was closed by someone other than its coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl RunRecord {
    /// `<sha7>#<seq>` (`<sha7>+dirty#<seq>` for a live-tree run: its seqs are its own).
    pub fn reference(&self) -> String {
        format!("{}#{}", self.label, self.seq)
    }

    pub fn summary(&self) -> odu_proto::RunSummary {
        odu_proto::RunSummary {
            run: self.reference(),
            sha: self.sha.clone(),
            label: self.label.clone(),
            seq: self.seq,
            dirty: self.dirty,
            pipeline: self.pipeline.clone(),
            outcome: self.effective_outcome().to_string(),
            lanes: self.lanes.iter().map(|l| l.platform.clone()).collect(),
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }

    /// The outcome, with a `running` record of a dead coordinator read as `incomplete`.
    pub fn effective_outcome(&self) -> &str {
        if self.outcome == "running" && !self.pid.is_some_and(pid_alive) {
            "incomplete"
        } else {
            &self.outcome
        }
    }
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

fn runs_dir(ci: &Path, label: &str) -> PathBuf {
    ci.join(label).join("runs")
}

/// Reserves the next seq for `label` by exclusive create, writing `record` (its seq filled in).
pub fn reserve(ci: &Path, record: &mut RunRecord) -> std::io::Result<u64> {
    let dir = runs_dir(ci, &record.label);
    std::fs::create_dir_all(&dir)?;
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
    use std::os::unix::fs::OpenOptionsExt;
    let dir = runs_dir(ci, &record.label);
    let tmp = dir.join(format!(".{}.json.tmp-{}", record.seq, std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut file| file.write_all(&to_pretty(record)))
        .and_then(|()| std::fs::rename(&tmp, dir.join(format!("{}.json", record.seq))));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Rewrites the record in the room its old copy holds, for when [`write`] finds none for a
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

/// Closes the records of runs whose coordinator died mid-run (a `running` record whose pid is
/// gone): the run is `incomplete`, its running nodes `errored` (their logs end with a
/// `[odu] log truncated` line), its pending ones `skipped`. Returns the runs it closed.
pub fn recover(ci: &Path, repo: &Path, now: u64) -> Vec<String> {
    let mut closed = Vec::new();
    for mut record in list(ci) {
        if record.outcome != "running" || record.pid.is_some_and(pid_alive) {
            continue;
        }
        let pid = record.pid.map_or("?".to_string(), |p| p.to_string());
        for node in &mut record.nodes {
            match node.status {
                odu_core::NodeStatus::Running => {
                    node.status = odu_core::NodeStatus::Errored;
                    let line = format!(
                        "\n[odu] log truncated: the odu server (pid {pid}) died while this node ran\n"
                    );
                    let _ = std::fs::OpenOptions::new()
                        .append(true)
                        .open(repo.join(&node.log))
                        .and_then(|mut f| f.write_all(line.as_bytes()));
                }
                odu_core::NodeStatus::Pending => node.status = odu_core::NodeStatus::Skipped,
                _ => {}
            }
        }
        record.outcome = "incomplete".into();
        record.finished_at = Some(now);
        record.pid = None;
        record.note = Some(format!("the odu server (pid {pid}) died mid-run; closed by the next server"));
        if write(ci, &record).is_ok() {
            closed.push(record.reference());
        }
    }
    closed
}

/// The record `run` names (`<sha7>#<seq>`), or the latest; the error says what to do.
pub fn find(ci: &Path, run: Option<&str>) -> Result<RunRecord, String> {
    let records = list(ci);
    let Some(run) = run else {
        return records
            .into_iter()
            .next()
            .ok_or_else(|| "no run in this checkout yet: start one with odu run".into());
    };
    let known: Vec<String> = records.iter().take(10).map(RunRecord::reference).collect();
    records.into_iter().find(|rec| rec.reference() == run).ok_or_else(|| {
        format!(
            "no run {run:?} in this checkout (latest: {}): list them with odu runs",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )
    })
}

/// Every record under `.ci`, newest first; unreadable files are skipped.
pub fn list(ci: &Path) -> Vec<RunRecord> {
    let mut records: Vec<RunRecord> = std::fs::read_dir(ci)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path().join("runs")).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json") && !n.starts_with('.')))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    records.sort_by(|a, b| {
        let key = |r: &RunRecord| r.finished_at.unwrap_or(r.started_at);
        key(b).cmp(&key(a)).then(b.seq.cmp(&a.seq))
    });
    records
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
            outcome: "running".into(),
            pid: Some(std::process::id()),
            started_at: 1,
            finished_at: None,
            lanes: vec![],
            nodes: vec![],
            unposted: vec![],
            selectors: vec![],
            flags: Default::default(),
            note: None,
        }
    }

    #[test]
    fn seqs_are_reserved_once_and_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (record("0123456"), record("0123456"));
        assert_eq!(reserve(dir.path(), &mut a).unwrap(), 1);
        assert_eq!(reserve(dir.path(), &mut b).unwrap(), 2);
        a.outcome = "passed".into();
        a.finished_at = Some(5);
        write(dir.path(), &a).unwrap();
        let listed = list(dir.path());
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].seq, 1, "newest finished first");
        assert_eq!(listed[0].reference(), "0123456#1");
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
        a.outcome = "passed".into();
        a.finished_at = Some(9);
        a.pid = None;
        overwrite(dir.path(), &a).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        assert_eq!(list(dir.path()), vec![a.clone()]);
        // A record that no longer fits its old copy is refused, and the old copy is untouched.
        a.selectors = vec!["x".repeat(before as usize)];
        assert!(overwrite(dir.path(), &a).is_err());
        assert_eq!(list(dir.path())[0].outcome, "passed");
    }

    #[test]
    fn a_running_record_of_a_dead_coordinator_reads_incomplete() {
        let mut r = record("x");
        r.pid = Some(999_999_999);
        assert_eq!(r.effective_outcome(), "incomplete");
    }

    #[test]
    fn ages_read_like_a_person_would_say_them() {
        assert_eq!(format_ago(5_000), "just now");
        assert_eq!(format_ago(120_000), "2m ago");
        assert_eq!(format_ago(7_200_000), "2h ago");
        assert_eq!(format_ago(2 * 86_400_000), "2d ago");
    }
}
