//! Retention: `.ci` keeps the logs of the checkout's last runs (20 unless `ODU_KEEP_RUNS` says
//! otherwise) and removes older runs' log folders, `.ci/<label>/runs/<seq>/`, when a run starts
//! or ends and on `odu runs prune`. A run's record stays, marked as pruned, so asking for its
//! logs says they were pruned instead of showing another run's. A run still `running` is never
//! pruned, nor anything in `.ci` that is a symlink or not the user's.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use odu_core::status::RunOutcome;
use serde::Serialize;

use crate::trail::ledger::{self, LogsPruned, RECORD_VERSION, Unreadable};

/// How many runs' logs a checkout keeps unless told otherwise.
pub const DEFAULT_KEEP: usize = 20;

/// The environment variable that overrides [`DEFAULT_KEEP`] (a whole number, at least 1).
pub const KEEP_ENV: &str = "ODU_KEEP_RUNS";

/// How many runs' logs to keep: `$ODU_KEEP_RUNS` when it is a whole number of at least 1,
/// else [`DEFAULT_KEEP`].
pub fn keep_runs() -> usize {
    parse_keep(std::env::var(KEEP_ENV).ok().as_deref()).unwrap_or(DEFAULT_KEEP)
}

fn parse_keep(value: Option<&str>) -> Option<usize> {
    value?.trim().parse::<usize>().ok().filter(|&n| n >= 1)
}

/// One run whose logs were removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrunedRun {
    pub run: String,
    /// The size of the log files removed.
    pub bytes: u64,
}

/// What a prune removed, and what it left alone and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub keep: usize,
    pub runs: Vec<PrunedRun>,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Removes the logs of every run but the newest `keep` that still have logs (newest as
/// `odu runs` lists them), leaving alone a run still `running` and any folder that is a
/// symlink, not a folder, or not the user's. Each pruned run's record is rewritten to say so
/// (when that write fails, the missing folder still says it).
///
/// Only the records of runs that still have a log folder are read, and only their heads: a
/// prune runs twice a run, and reading every record of a long history, nodes and all, made a
/// run's start cost grow with the checkout's age.
pub fn prune(ci: &Path, keep: usize, now: u64) -> Result<Pruned, Unreadable> {
    let keep = keep.max(1);
    let heads = ledger::heads_with_logs(ci)?;
    let mut pruned = Pruned { keep, ..Pruned::default() };
    for record in heads.iter().skip(keep) {
        // Live (or a dead server's, not yet closed): never pruned under a coordinator.
        if record.outcome == RunOutcome::Running || record.version < RECORD_VERSION {
            continue;
        }
        let dir = ledger::run_logs_dir(ci, &record.label, record.seq);
        let removed = match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                pruned.notes.push(format!("leaving {}: cannot inspect it: {e}", dir.display()));
                continue;
            }
            Ok(meta) if meta.file_type().is_symlink() || !meta.is_dir() => {
                pruned.notes.push(format!(
                    "leaving {}: it is not a folder odu made (a symlink or a file): remove it yourself",
                    dir.display()
                ));
                continue;
            }
            Ok(meta) if meta.uid() != crate::private::euid() => {
                pruned.notes.push(format!(
                    "leaving {}: it belongs to uid {}, not you (uid {})",
                    dir.display(),
                    meta.uid(),
                    crate::private::euid()
                ));
                continue;
            }
            Ok(_) => {
                let bytes = size_of(&dir);
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => Some(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => {
                        pruned.notes.push(format!("cannot remove {}: {e}", dir.display()));
                        continue;
                    }
                }
            }
        };
        if record.logs_pruned.is_none() {
            let path = ledger::runs_dir(ci, &record.label).join(format!("{}.json", record.seq));
            if let Ok(mut marked) = ledger::load(&path, &record.label, record.seq) {
                marked.logs_pruned = Some(LogsPruned { at: now, keep });
                // A record that cannot be rewritten (a full disk) still reads as pruned: its
                // folder is gone.
                let _ = ledger::write(ci, &marked);
            }
        }
        if let Some(bytes) = removed {
            pruned.bytes += bytes;
            pruned.runs.push(PrunedRun { run: format!("{}#{}", record.label, record.seq), bytes });
        }
    }
    Ok(pruned)
}

/// The size of the regular files under `dir`, never following a symlink.
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        if meta.is_dir() {
            total += size_of(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// `512 B`, `3.4 KiB`, `12.0 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trail::ledger::RunRecord;

    fn record(seq_hint: u64, outcome: RunOutcome) -> RunRecord {
        RunRecord {
            version: RECORD_VERSION,
            repo: None,
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            label: "0123456".into(),
            seq: 0,
            dirty: false,
            pipeline: "ci".into(),
            outcome,
            pid: None,
            started_at: seq_hint,
            finished_at: (outcome != RunOutcome::Running).then_some(seq_hint),
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

    /// Reserves a run, writes `bytes` into one of its logs, and returns its seq.
    fn run_with_log(ci: &Path, at: u64, outcome: RunOutcome, bytes: usize) -> u64 {
        let mut r = record(at, outcome);
        let seq = ledger::reserve(ci, &mut r).unwrap();
        let lane = ledger::run_logs_dir(ci, "0123456", seq).join("x86_64-linux");
        ledger::make_run_lane_dir(&lane).unwrap();
        std::fs::write(lane.join("a.log"), vec![b'x'; bytes]).unwrap();
        seq
    }

    #[test]
    fn only_runs_past_the_newest_few_lose_their_logs_and_a_running_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let running = run_with_log(ci, 1, RunOutcome::Running, 7);
        let old = run_with_log(ci, 2, RunOutcome::Failed, 10);
        let newer = run_with_log(ci, 3, RunOutcome::Passed, 20);
        let newest = run_with_log(ci, 4, RunOutcome::Passed, 30);
        let pruned = prune(ci, 2, 99).unwrap();
        assert_eq!(pruned.runs, vec![PrunedRun { run: format!("0123456#{old}"), bytes: 10 }]);
        assert_eq!(pruned.bytes, 10);
        for (seq, kept) in [(running, true), (old, false), (newer, true), (newest, true)] {
            assert_eq!(ledger::run_logs_dir(ci, "0123456", seq).exists(), kept, "run {seq}");
        }
        let records = ledger::scan(ci).unwrap().records;
        let marked = records.iter().find(|r| r.seq == old).unwrap();
        assert_eq!(marked.logs_pruned, Some(LogsPruned { at: 99, keep: 2 }));
        let error = ledger::open_run_log(ci, marked, "a@x86_64-linux", ledger::Access::Read).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the logs of run 0123456#{old} were pruned; odu keeps the last 2 runs (set ODU_KEEP_RUNS to keep more)"
            )
        );
        assert_eq!(prune(ci, 2, 100).unwrap().runs, vec![], "a second prune has nothing left to do");
    }

    #[test]
    fn records_of_runs_whose_logs_are_gone_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let gone = run_with_log(ci, 1, RunOutcome::Passed, 1);
        std::fs::remove_dir_all(ledger::run_logs_dir(ci, "0123456", gone)).unwrap();
        // A record no prune could parse: read, it would be rejected; it is not even read.
        let record = ledger::runs_dir(ci, "0123456").join(format!("{gone}.json"));
        std::fs::write(&record, "not json").unwrap();
        let old = run_with_log(ci, 2, RunOutcome::Failed, 3);
        run_with_log(ci, 3, RunOutcome::Passed, 4);
        let pruned = prune(ci, 1, 9).unwrap();
        assert_eq!(pruned.runs, vec![PrunedRun { run: format!("0123456#{old}"), bytes: 3 }]);
        assert_eq!(std::fs::read_to_string(&record).unwrap(), "not json");
        let heads = ledger::heads_with_logs(ci).unwrap();
        assert_eq!(heads.len(), 1, "only the kept run still has logs");
    }

    #[test]
    fn a_record_rewritten_since_the_last_prune_is_read_again_and_a_symlink_never() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path();
        let live = run_with_log(ci, 1, RunOutcome::Running, 5);
        run_with_log(ci, 2, RunOutcome::Passed, 1);
        assert!(prune(ci, 1, 9).unwrap().runs.is_empty(), "a running run is never pruned");
        // The run ends: its record is written again, and the next prune reads it again.
        let path = ledger::runs_dir(ci, "0123456").join(format!("{live}.json"));
        let mut ended = ledger::load(&path, "0123456", live).unwrap();
        (ended.outcome, ended.finished_at) = (RunOutcome::Failed, Some(1));
        ledger::write(ci, &ended).unwrap();
        let heads = ledger::heads_with_logs(ci).unwrap();
        assert_eq!(heads.iter().find(|h| h.seq == live).map(|h| h.outcome), Some(RunOutcome::Failed));
        // A record replaced by a link to a copy of itself is no record, whatever was read before.
        let copy = dir.path().join("copy.json");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&copy, &path).unwrap();
        assert!(ledger::heads_with_logs(ci).unwrap().iter().all(|h| h.seq != live));
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&copy, &path).unwrap();
        assert_eq!(
            prune(ci, 1, 10).unwrap().runs,
            vec![PrunedRun { run: format!("0123456#{live}"), bytes: 5 }]
        );
    }

    #[test]
    fn a_run_folder_that_is_a_symlink_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep.txt"), "mine").unwrap();
        let ci = dir.path();
        let mut r = record(1, RunOutcome::Passed);
        let seq = ledger::reserve(ci, &mut r).unwrap();
        std::os::unix::fs::symlink(outside.path(), ledger::run_logs_dir(ci, "0123456", seq)).unwrap();
        run_with_log(ci, 2, RunOutcome::Passed, 1);
        let pruned = prune(ci, 1, 5).unwrap();
        assert!(pruned.runs.is_empty(), "{pruned:?}");
        assert!(pruned.notes[0].contains("not a folder odu made"), "{pruned:?}");
        assert!(outside.path().join("keep.txt").exists());
    }

    #[test]
    fn the_keep_count_comes_from_a_whole_number_of_at_least_one() {
        assert_eq!(parse_keep(Some("3")), Some(3));
        assert_eq!(parse_keep(Some(" 5 ")), Some(5));
        for bad in [None, Some(""), Some("0"), Some("-1"), Some("many")] {
            assert_eq!(parse_keep(bad), None, "{bad:?}");
        }
        assert_eq!(format_bytes(10), "10 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 << 20), "3.0 MiB");
    }
}
