#!/usr/bin/env python3
"""Benchmark harness for odu: how much does odu cost on top of plain `just`?

Each scenario builds its fixture in a temp dir, then times a baseline (the
cheapest way to get the same work done with `just` alone) and odu, N times each,
interleaved, and reports medians, the ratio odu/baseline and PASS/MISS against
a target.  The script exits 0 on MISS (it is a measurement, not a test) and
non-zero only when something failed to run or produced wrong output.

Latency and idle scenarios (logs_latency, status_latency, clients100, idle_cpu)
watch a live run through its server: the process owning `.ci/odu.sock`, found
in /proc (an `odu serve` whose cwd is the fixture, else the `odu run` itself).

Usage: python3 bench/run.py [--odu PATH] [--runs N] [--only NAME]... [--idle-seconds S]
Python 3 stdlib only (Linux /proc); needs `just` and `git` on PATH and a release
build of odu.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# The lane is pinned explicitly so the result does not depend on any hosts
# config of the person running the bench (HOME is a temp dir anyway).
PLATFORM = f"{platform.machine()}-linux"
HOST_FLAG = ["--host", f"{PLATFORM}=localhost"]

# log1g writes 1 GiB per run for both sides; cap its run count so a default
# --runs 5 does not spend most of the bench on disk writes and hashing.
LOG1G_MAX_RUNS = 3
LOG_SIZE = GIB
# The generator repeats a chunk file; 16 MiB x 64 = 1 GiB exactly.
CHUNK_SIZE = 16 * MIB
CHUNK_REPEAT = LOG_SIZE // CHUNK_SIZE

# Rows whose one run takes tens of milliseconds (start-up, dump1000) time this many times the
# runs asked for: a median of three such runs moves with a single hiccup of a shared machine
# (dump1000 read 1.31 to 1.49 over four series of 7 runs of the same binaries), and the extra
# runs cost well under a second.
SHORT_ROW_RUNS_FACTOR = 5

# idle_cpu runs one long node; by default it runs once whatever --runs says
# (an explicit --runs is honoured up to this cap).
IDLE_MAX_RUNS = 3
IDLE_SECONDS = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")
# How long to wait for `.ci/odu.sock` to appear after `odu run` starts.
SOCKET_DEADLINE_S = 30.0

RSS_COORD_RE = re.compile(r"odu: peak rss (\d+) KiB")
RSS_RUNNER_RE = re.compile(r"odu-runner: peak rss (\d+) KiB")
CPU_RUNNER_RE = re.compile(r"odu-runner: peak rss \d+ KiB, cpu (\d+) ms")
# The same CPU, parted: the runner's own code, and the kernel's work for it.
CPU_RUNNER_SPLIT_RE = re.compile(r"odu-runner: peak rss \d+ KiB, cpu \d+ ms, user (\d+) ms, system (\d+) ms")
# The runner names the `just` every node of its lane runs: `[odu] just 1.59.0 (/path/just)`.
JUST_USED_RE = re.compile(r"^\[odu\] just \S+ \((.+)\)$", re.M)
CPU_COORD_RE = re.compile(r"odu: peak rss \d+ KiB, cpu (\d+) ms")


class BenchError(Exception):
    """Something failed to run or produced wrong output (exit non-zero)."""


# --------------------------------------------------------------------------
# process helpers


def tail(text: str | bytes | None, lines: int = 20) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def timed(argv: list[str], *, cwd: Path, env: dict, what: str,
          stdin_data: bytes | None = None, stdout=subprocess.PIPE
          ) -> tuple[float, subprocess.CompletedProcess]:
    """Run argv, return (wall seconds, result); raise BenchError on failure.

    The clock wraps only subprocess.run so fixture work and output parsing
    never count; stderr is always captured so a failure can be explained.
    """
    t0 = time.perf_counter()
    # A session of its own, as `odu serve` has: with the scheduler's autogroups, a side left
    # in the bench's session would share one CPU slice with whatever else runs there, while
    # odu's nodes (under the daemonised server) get a slice of their own.
    proc = subprocess.run(argv, cwd=cwd, env=env, input=stdin_data,
                          stdout=stdout, stderr=subprocess.PIPE, start_new_session=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(
            f"{what} exited {proc.returncode}: {' '.join(argv)}\n"
            f"--- stderr (tail) ---\n{tail(proc.stderr)}\n"
            f"--- stdout (tail) ---\n{tail(proc.stdout) if stdout is subprocess.PIPE else ''}")
    return elapsed, proc


def children_cpu_s() -> float:
    """User and system CPU of this process's reaped children (and of what they reaped), in s."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def git(repo: Path, *args: str, env: dict) -> str:
    # Identity passed per command: HOME is a temp dir, so there is no global
    # git config to rely on.
    argv = ["git", "-c", "user.name=odu-bench", "-c", "user.email=bench@odu.invalid",
            "-c", "commit.gpgsign=false", *args]
    proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed in {repo}:\n{proc.stderr}")
    return proc.stdout.strip()


def make_repo(path: Path, justfile: str, env: dict) -> str:
    path.mkdir(parents=True)
    return make_repo_in(path, justfile, env)


def make_repo_in(path: Path, justfile: str, env: dict) -> str:
    """Create a git repo holding `justfile`, commit it, return HEAD's sha.

    odu's strict mode refuses a dirty tree and runs a snapshot of HEAD, so
    everything is committed and `.ci/` (where odu writes logs) is ignored.
    `path` exists (it may already hold other fixture files); make_repo makes it.
    """
    (path / "justfile").write_text(justfile)
    (path / ".gitignore").write_text(".ci/\n")
    git(path, "init", "-q", env=env)
    git(path, "add", "-A", env=env)
    git(path, "commit", "-q", "-m", "bench fixture", env=env)
    return git(path, "rev-parse", "HEAD", env=env)


# --------------------------------------------------------------------------
# results


@dataclass
class Check:
    """One extra figure with an optional target, e.g. peak RSS."""
    label: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = False
    digits: int = 1   # decimals printed

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


@dataclass
class Result:
    name: str
    title: str
    runs: int
    baseline_label: str
    odu_label: str
    baseline_times: list[float]
    odu_times: list[float]
    target_ratio: float | None  # None: ratio reported for context only
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # Latency scenarios report through `checks` and leave the time lists empty
    # (no baseline: an absolute target) or fill both with per-invocation times.
    show_times: bool = True
    times_in_ms: bool = False   # print the baseline/odu medians in ms
    fs: FsState | None = None   # fs_state before the scenario

    @property
    def baseline_median(self) -> float | None:
        return statistics.median(self.baseline_times) if self.baseline_times else None

    @property
    def odu_median(self) -> float | None:
        return statistics.median(self.odu_times) if self.odu_times else None

    @property
    def ratio(self) -> float | None:
        if self.baseline_median is None or self.odu_median is None:
            return None
        return self.odu_median / self.baseline_median

    @property
    def ratio_passed(self) -> bool | None:
        if self.target_ratio is None or self.ratio is None:
            return None
        return self.ratio <= self.target_ratio

    @property
    def passed(self) -> bool:
        return self.ratio_passed is not False and all(c.passed is not False for c in self.checks)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def print_table(r: Result) -> None:
    print(f"\n== {r.name}: {r.title} (median of {r.runs} runs) ==")
    w = 44
    scale, unit = (1000, "ms") if r.times_in_ms else (1, "s")
    if r.baseline_median is not None:
        print(f"  {'baseline: ' + r.baseline_label:<{w}} {r.baseline_median * scale:9.3f} {unit}")
    if r.odu_median is not None:
        print(f"  {'odu:      ' + r.odu_label:<{w}} {r.odu_median * scale:9.3f} {unit}")
    if r.ratio is not None:
        tgt = "" if r.target_ratio is None else f"target <= {r.target_ratio:g}"
        print(f"  {'ratio odu/baseline':<{w}} {r.ratio:9.3f} {'':<6} {tgt:<20} {verdict(r.ratio_passed)}".rstrip())
    for c in r.checks:
        tgt = "" if c.target is None else f"target {'>=' if c.higher_is_better else '<='} {c.target:g} {c.unit}"
        print(f"  {c.label:<{w}} {c.value:9.{c.digits}f} {c.unit:<6} {tgt:<20} {verdict(c.passed)}".rstrip())
    for n in r.notes:
        print(f"  note: {n}")
    if r.fs is not None:
        print(f"  file system before it: {r.fs}")
    if r.show_times and (r.baseline_times or r.odu_times):
        print(f"  runs (s): baseline {' '.join(f'{t:.3f}' for t in r.baseline_times)}"
              f" | odu {' '.join(f'{t:.3f}' for t in r.odu_times)}")


def summary(r: Result) -> dict:
    return {
        "scenario": r.name,
        "status": "PASS" if r.passed else "MISS",
        "runs": r.runs,
        "baseline_median_s": None if r.baseline_median is None else round(r.baseline_median, 4),
        "odu_median_s": None if r.odu_median is None else round(r.odu_median, 4),
        "ratio": None if r.ratio is None else round(r.ratio, 4),
        "target_ratio": r.target_ratio,
        "fs_create_us": None if r.fs is None else round(r.fs.median_us, 1),
        "fs_slow_folders": None if r.fs is None else r.fs.slow,
        "checks": {c.label: {"value": round(c.value, 2), "unit": c.unit, "target": c.target,
                             "status": verdict(c.passed) or None} for c in r.checks},
    }


# --------------------------------------------------------------------------
# measurement loop


def measure(baseline: Callable[[], float], odu: Callable[[], float], runs: int
            ) -> tuple[list[float], list[float]]:
    """Warm up each side once, then time `runs` pairs.

    The warm-up fills the page cache (just, odu, git, the fixture) so the first
    timed run is not an outlier.  Pairs alternate which side goes first so
    slow drift on a shared machine (other jobs, writeback, thermal) hits both
    sides alike instead of always penalising the second one.
    """
    baseline()
    odu()
    b_times, o_times = [], []
    for i in range(runs):
        if i % 2 == 0:
            b_times.append(baseline())
            o_times.append(odu())
        else:
            o_times.append(odu())
            b_times.append(baseline())
        print(f"    run {i + 1}/{runs}: baseline {b_times[-1]:.3f} s, odu {o_times[-1]:.3f} s",
              file=sys.stderr, flush=True)
    return b_times, o_times


# Where a fixture's `.ci/` goes between runs: moved aside (a rename), removed with the bench's
# temp dir at the end. Removing it right before the next run was not neutral: on ext4 without a
# journal the kernel will not reuse an inode freed in the last minute or more, so each file the
# next odu run created (one log per node) scanned past the thousands just freed, a cost that
# grew with the square of the node count (wide2000: the server's CPU 1.03 s instead of 0.25 s)
# and that the baseline, which creates no file, never paid.
def retire_trail(repo: Path, label: str | None = None) -> None:
    """Moves the fixture's `.ci/` aside, or only `.ci/<label>` (one commit's trail) when given."""
    ci = repo / ".ci" / label if label else repo / ".ci"
    if not ci.exists():
        return
    retire(ci, repo.parent, repo.name)


def retire(path: Path, tmp: Path, name: str) -> None:
    """Moves `path` into the bench's `.retired` folder under `tmp`, removed with the temp dir."""
    trash = tmp / ".retired"
    trash.mkdir(exist_ok=True)
    path.rename(trash / f"{name}-{time.monotonic_ns()}")


# How long making one file takes right now, in a folder laid out as a run's logs are (a fresh
# folder under one that spreads its subfolders, `chattr +T`, so each lands in a block group
# of its own): on ext4 without a journal it reads about 17 us in a rested group and several
# times that in a group where many files were removed in the last minutes (the kernel steps
# over each recently freed inode), and every per-node figure of odu's, which makes a log file
# per node, moves with it. Sampled in a few folders (a few groups) before each scenario, so
# its figures can be read against the state they were measured in; the probe's files are
# moved aside, never removed, so it does not disturb what it measures.
FS_PROBE_FILES = 100
FS_PROBE_FOLDERS = 5
FS_RESTED_US = 25.0
# The longest the kernel counts a removed inode as recent: 60 s, 360 s while its inode table
# block is unwritten.
FS_SETTLE_S = 360


def fs_probe_us(tmp: Path) -> float | None:
    top = tmp / ".fs-probe"
    try:
        if not top.exists():
            top.mkdir()
            subprocess.run(["chattr", "+T", str(top)], capture_output=True, check=False)
        run = top / str(time.monotonic_ns())
        run.mkdir()
        lane = run / "lane"
        lane.mkdir()
        start = time.perf_counter()
        for i in range(FS_PROBE_FILES):
            os.close(os.open(lane / f"n{i:04d}.log", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        elapsed = time.perf_counter() - start
        retire(run, tmp, "fs-probe")
        return elapsed / FS_PROBE_FILES * 1e6
    except OSError:
        return None


@dataclass
class FsState:
    median_us: float
    slow: int        # folders above FS_RESTED_US
    folders: int

    def __str__(self) -> str:
        return (f"{self.median_us:.0f} us to make a file (median of {self.folders} folders; "
                f"{self.slow} above {FS_RESTED_US:.0f} us)")


def fs_state(tmp: Path) -> FsState | None:
    samples = [us for us in (fs_probe_us(tmp) for _ in range(FS_PROBE_FOLDERS)) if us is not None]
    if not samples:
        return None
    return FsState(statistics.median(samples), sum(us > FS_RESTED_US for us in samples), len(samples))


def settle_fs(tmp: Path) -> None:
    """Waits (at most FS_SETTLE_S) until no probed folder reads slow: a bench started minutes
    after a clean-up measures that clean-up. Progress goes to stderr."""
    deadline = time.monotonic() + FS_SETTLE_S
    while True:
        state = fs_state(tmp)
        if state is None or state.slow == 0:
            if state is not None:
                print(f"  file system rested: {state}", file=sys.stderr, flush=True)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"  file system still not rested after {FS_SETTLE_S} s, measuring anyway: {state}",
                  file=sys.stderr, flush=True)
            return
        print(f"  waiting for the file system to rest ({left:.0f} s left at most): {state}",
              file=sys.stderr, flush=True)
        time.sleep(min(15.0, left))


def discard_trail(repo: Path) -> None:
    """Removes a fixture's `.ci/` outright: for logs too big to keep around (a few files)."""
    shutil.rmtree(repo / ".ci", ignore_errors=True)


class OduRepo:
    """A committed fixture repo plus the bits to run `odu run` in it."""

    def __init__(self, odu_bin: Path, repo: Path, sha: str, env: dict):
        self.odu_bin, self.repo, self.sha, self.env = odu_bin, repo, sha, env
        self.log_dir = repo / ".ci" / sha[:7] / PLATFORM
        self.coord_rss: list[int] = []   # KiB, one per odu run (warm-up included)
        self.runner_rss: list[int] = []
        # CPU seconds of odu's own processes per run (warm-up excluded by the caller's median):
        # the server (`odu serve`, planning included) and the runner, never their children.
        self.server_cpu: list[float] = []
        self.runner_cpu: list[float] = []
        self.runner_user: list[float] = []   # the runner's CPU parted, in seconds
        self.runner_system: list[float] = []
        self.keep_server = False   # start-up (warm): reuse the server the previous run left
        # With keep_server: move this commit's trail aside before each run (the server stays), so
        # every run starts from no history of the commit, as a cold run does.
        self.retire_label = False
        self.big_logs = False      # log1g: remove the trail between runs instead of keeping it
        self.keep_trail = False    # startup_history: every run starts a server, the trail stays

    def run(self, extra: list[str] = ()) -> tuple[float, subprocess.CompletedProcess]:
        # Start every run from an empty .ci/ so runs are alike (no growing run
        # history; the old one is moved aside, see retire_trail) and log1g does
        # not keep 1 GiB logs around; a server left
        # by the previous run (`odu serve` outlives its run) goes first, so
        # every run starts its own and none serves a deleted .ci/.
        cpu_before = 0.0
        if self.keep_server:
            # The server and its trail stay (retention bounds the trail), or only the server.
            if self.retire_label:
                retire_trail(self.repo, self.sha[:7])
            servers = find_servers(self.repo)
            cpu_before = (proc_cpu_s(servers[0]) or 0.0) if servers else 0.0
        else:
            stop_servers(self.repo)
            if self.big_logs:
                discard_trail(self.repo)
            elif not self.keep_trail:
                retire_trail(self.repo)
        elapsed, proc = timed([str(self.odu_bin), "run", "--no-post", *HOST_FLAG, *extra],
                              cwd=self.repo, env=self.env, what="odu run")
        # The server removes the run's worktree after its clients heard the end: its CPU is
        # read once that is done, so the run's whole cost is counted.
        self._wait_worktree_gone()
        # The coordinator lives in the server: an `odu serve` (still alive,
        # started by this run) when odu starts one, else `odu run` itself.
        servers = find_servers(self.repo)
        if servers:
            self.server_cpu.append(max(0.0, (proc_cpu_s(servers[0]) or 0.0) - cpu_before))
        serve_hwm = proc_status_kib(servers[0], "VmHWM") if servers else None
        if serve_hwm is not None:
            self.coord_rss.append(serve_hwm)
        else:
            self.coord_rss.append(self._parse(RSS_COORD_RE, proc.stderr.decode("utf-8", "replace"),
                                              "odu stderr"))
        setup_log = self.log_dir / "_ci-setup.log"
        if not setup_log.is_file():
            raise BenchError(f"odu run succeeded but {setup_log} is missing")
        setup = setup_log.read_text("utf-8", "replace")
        self.runner_rss.append(self._parse(RSS_RUNNER_RE, setup, str(setup_log)))
        self.runner_cpu.append(self._parse(CPU_RUNNER_RE, setup, str(setup_log)) / 1000)
        split = CPU_RUNNER_SPLIT_RE.search(setup)
        if split:
            self.runner_user.append(int(split.group(1)) / 1000)
            self.runner_system.append(int(split.group(2)) / 1000)
        check_just(setup, str(setup_log), self.env)
        return elapsed, proc

    def _wait_worktree_gone(self) -> None:
        """Waits (5 s at most) until no worktree of this commit is left in the server's TMPDIR."""
        tmp = Path(self.env.get("TMPDIR") or "/tmp")
        deadline = time.monotonic() + 5
        while any(tmp.glob(f"odu-{self.sha[:7]}-*")) and time.monotonic() < deadline:
            time.sleep(0.002)

    @staticmethod
    def _parse(rx: re.Pattern, text: str, where: str) -> int:
        m = rx.search(text)
        if not m:
            raise BenchError(f"no '{rx.pattern}' line in {where} (is ODU_REPORT_PEAK_RSS honoured?)\n"
                             f"{tail(text)}")
        return int(m.group(1))

    def cpu_checks(self, nodes: int, target_ms: float | None = 0.3) -> list[Check]:
        """odu's own CPU per node (server + runner, medians over the runs): what odu spends
        that `just` does not."""
        if not self.server_cpu or not self.runner_cpu:
            return []
        server = statistics.median(self.server_cpu) * 1000
        runner = statistics.median(self.runner_cpu) * 1000
        return [Check("odu CPU per node (server + runner)", (server + runner) / nodes, "ms", target_ms, digits=3),
                Check("  server CPU (median, whole run)", server, "ms", digits=0),
                # The runner reports its CPU as it answers lane.close: its exit is not in it.
                Check("  runner CPU (median, start to lane.close)", runner, "ms", digits=0),
                *self.runner_split_checks()]

    def runner_split_checks(self) -> list[Check]:
        """The runner's CPU parted into its own code (user) and the kernel's work for it
        (system: each node's clone, exec, pipe and reaping), medians."""
        if not self.runner_user:
            return []
        return [Check("    of which user (median)", statistics.median(self.runner_user) * 1000, "ms", digits=0),
                Check("    of which system (median)", statistics.median(self.runner_system) * 1000, "ms",
                      digits=0)]

    def rss_checks(self, coord_target_mib: float | None, runner_target_mib: float | None) -> list[Check]:
        # Peak RSS is reported as the max over all runs: a peak is a bound, the
        # worst run is the one that matters.
        return [Check("coordinator peak RSS (max)", max(self.coord_rss) / KIB, "MiB", coord_target_mib),
                Check("runner peak RSS (max)", max(self.runner_rss) / KIB, "MiB", runner_target_mib)]


# --------------------------------------------------------------------------
# live runs: the server behind .ci/odu.sock, read from /proc


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def proc_argv(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline") or b""
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]]


def proc_exe_name(pid: int) -> str | None:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # A binary rebuilt under a running process reads as "/path/odu (deleted)".
    return os.path.basename(exe.removesuffix(" (deleted)"))


def proc_cwd(pid: int) -> str | None:
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after `(comm)`: [0] is state (field 3)."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    return raw[raw.rindex(b")") + 2:].decode().split()


def proc_alive(pid: int) -> bool:
    f = _stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")


def proc_ppid(pid: int) -> int | None:
    f = _stat_fields(pid)
    return None if f is None else int(f[1])


def process_cpu_clock(pid: int) -> int:
    """The clock id of a process's CPU time (all its threads, the exited ones too), as
    clock_getcpuclockid(3) makes it: Linux encodes the pid with CPUCLOCK_SCHED (2)."""
    return ((~pid) << 3) | 2


def proc_cpu_s(pid: int) -> float | None:
    """CPU time of the process itself (not its children), in seconds: its CPU clock, to the
    nanosecond, or utime + stime from /proc (clock ticks, 10 ms here) where the clock is not
    readable. At chain200 a server spends 25-40 ms: ticks alone moved its figure per node by
    0.05 ms."""
    f = _stat_fields(pid)
    if f is None or f[0] in ("Z", "X"):
        return None
    try:
        return time.clock_gettime(process_cpu_clock(pid))
    except OSError:
        return (int(f[11]) + int(f[12])) / CLK_TCK   # fields 14 and 15 of stat


def proc_threads_cpu_s(pid: int) -> float:
    """CPU time of the process's live threads in seconds, to the nanosecond (schedstat), for
    processes whose CPU is too small for stat's 10 ms ticks; threads that exited are missing."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        raw = _read(f"/proc/{pid}/task/{tid}/schedstat")
        if raw:
            total += int(raw.split()[0])
    return total / 1e9


def proc_status_kib(pid: int, key: str) -> int | None:
    """`VmHWM`, `VmRSS`... from /proc/PID/status in KiB (None once it exited)."""
    raw = _read(f"/proc/{pid}/status")
    if raw is None:
        return None
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def find_servers(repo: Path, *, under: bool = False) -> list[int]:
    """Live `odu serve` processes whose cwd is `repo` (or, with `under`, inside it)."""
    root = os.path.realpath(repo)
    found = []
    for pid in all_pids():
        if proc_exe_name(pid) != "odu":
            continue
        argv = proc_argv(pid)
        if len(argv) < 2 or argv[1] != "serve" or not proc_alive(pid):
            continue
        cwd = proc_cwd(pid)
        if cwd == root or (under and cwd is not None and cwd.startswith(root + os.sep)):
            found.append(pid)
    return found


def find_descendants(ancestors: set[int], exe_name: str) -> list[int]:
    """Live processes named `exe_name` with one of `ancestors` up their parent chain."""
    found = []
    for pid in all_pids():
        if proc_exe_name(pid) != exe_name or not proc_alive(pid):
            continue
        p, hops = proc_ppid(pid), 0
        while p and p > 1 and hops < 32:
            if p in ancestors:
                found.append(pid)
                break
            p, hops = proc_ppid(p), hops + 1
    return found


def stop_servers(repo: Path, *, under: bool = False, grace_s: float = 5.0) -> int:
    """SIGTERM every `odu serve` of `repo` (SIGKILL after `grace_s`); how many there were."""
    pids = find_servers(repo, under=under)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while any(proc_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if proc_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return len(pids)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-len(s) * pct // 100) - 1))
    return s[int(k)]


class Sampler(threading.Thread):
    """Polls one process's VmHWM and CPU time until stopped or until it exits.

    The last sample stands in for the final figure when the process is a
    child that exits (a zombie has no Vm* lines); VmHWM is a high-water mark,
    so a late start loses nothing and the poll misses at most one interval
    (callers prefer odu's own exact `peak rss` line when the server is the
    `odu run` process). The interval is coarse so the bench's own CPU stays
    out of the way on a small machine.
    """

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.hwm_kib = 0
        self.cpu_s = 0.0
        self._stop_ev = threading.Event()

    def sample(self) -> bool:
        hwm, cpu = proc_status_kib(self.pid, "VmHWM"), proc_cpu_s(self.pid)
        if hwm is None or cpu is None:
            return False
        self.hwm_kib, self.cpu_s = max(self.hwm_kib, hwm), max(self.cpu_s, cpu)
        return True

    def run(self) -> None:
        while not self._stop_ev.is_set() and self.sample():
            self._stop_ev.wait(self.interval)

    def stop(self) -> None:
        self._stop_ev.set()
        self.join()
        self.sample()   # still alive (an `odu serve` outliving its run): exact


class LiveRun:
    """`odu run` started in the background, with its server found once it serves.

    The server is the process owning `.ci/odu.sock`: an `odu serve` whose cwd
    is the fixture repo when odu starts one, else the `odu run` process itself.
    """

    def __init__(self, repo: OduRepo, extra: list[str] = (), tag: str = "run"):
        self.repo = repo
        stop_servers(repo.repo)
        retire_trail(repo.repo)
        self.socket = repo.repo / ".ci" / "odu.sock"
        # stderr to a file: nobody reads it while the run goes, and a pipe
        # could fill; stdout (one line per transition) is not needed.
        self.stderr_path = repo.repo.parent / f"{repo.repo.name}.{tag}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.argv = [str(repo.odu_bin), "run", "--no-post", *HOST_FLAG, *extra]
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, cwd=repo.repo, env=repo.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr)
        self.server_pid: int | None = None
        self.elapsed: float | None = None
        # A thread reaps `odu run` the moment it exits, so the wall time is
        # right even while the bench itself is busy (spawning clients).
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        self.proc.wait()
        self.elapsed = time.perf_counter() - self.t0

    @property
    def server_is_run(self) -> bool:
        return self.server_pid == self.proc.pid

    def stderr_text(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text("utf-8", "replace")

    def fail(self, why: str) -> BenchError:
        return BenchError(f"{why}: {' '.join(self.argv)}\n--- stderr (tail) ---\n{tail(self.stderr_text())}")

    def wait_for_file(self, path: Path, deadline_s: float = SOCKET_DEADLINE_S) -> None:
        """Polls (under a deadline) until `path` exists, e.g. the socket or a node's log."""
        deadline = time.monotonic() + deadline_s
        while not path.exists():
            if self.proc.poll() is not None:
                raise self.fail(f"odu run exited {self.proc.returncode} before {path} appeared")
            if time.monotonic() > deadline:
                raise self.fail(f"{path} did not appear within {deadline_s:g} s")
            time.sleep(0.002)

    def wait_socket(self, deadline_s: float = SOCKET_DEADLINE_S) -> int:
        """Polls until `.ci/odu.sock` exists, then finds the server; returns its pid."""
        self.wait_for_file(self.socket, deadline_s)
        servers = find_servers(self.repo.repo)
        self.server_pid = servers[0] if servers else self.proc.pid
        return self.server_pid

    def wait_live(self, deadline_s: float = SOCKET_DEADLINE_S) -> int:
        """wait_socket, then polls `odu status -o json` until it reports the run live.

        An `odu serve` binds the socket before `odu run` has asked it to start
        the run; a client connecting in between would see no live run.
        """
        pid = self.wait_socket(deadline_s)
        deadline = time.monotonic() + deadline_s
        while True:
            proc = subprocess.run([str(self.repo.odu_bin), "status", "-o", "json"], cwd=self.repo.repo,
                                  env=self.repo.env, stdin=subprocess.DEVNULL, capture_output=True)
            try:
                if json.loads(proc.stdout).get("live"):
                    return pid
            except (json.JSONDecodeError, AttributeError):
                pass
            if self.proc.poll() is not None:
                raise self.fail(f"odu run exited {self.proc.returncode} before odu status saw it live")
            if time.monotonic() > deadline:
                raise self.fail(f"odu status did not report the run live within {deadline_s:g} s\n"
                                f"last status stderr: {tail(proc.stderr)}")
            time.sleep(0.005)

    def runner_pids(self) -> list[int]:
        roots = {self.proc.pid} | ({self.server_pid} if self.server_pid else set())
        return find_descendants(roots, "odu-runner")

    def wait(self, timeout: float = 600) -> float:
        """Waits for `odu run` to exit 0; returns its wall time (from the Popen)."""
        self._reaper.join(timeout)
        if self._reaper.is_alive():
            self.proc.kill()
            self._reaper.join()
            raise self.fail(f"odu run did not finish within {timeout:g} s")
        rc = self.proc.returncode
        self._stderr.close()
        if rc != 0:
            raise self.fail(f"odu run exited {rc}")
        return self.elapsed

    def reported_peak_kib(self) -> int | None:
        """The coordinator's own `peak rss` line (ODU_REPORT_PEAK_RSS), if printed."""
        m = RSS_COORD_RE.search(self.stderr_text())
        return int(m.group(1)) if m else None

    def reported_cpu_s(self) -> float | None:
        """The coordinator's own CPU time from the same line, if printed."""
        m = CPU_COORD_RE.search(self.stderr_text())
        return int(m.group(1)) / 1000 if m else None

    def close(self) -> None:
        """Leaves nothing behind: kills a still-running `odu run`, stops its server."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._reaper.join()
        if not self._stderr.closed:
            self._stderr.close()
        stop_servers(self.repo.repo)



# --------------------------------------------------------------------------
# the `just` both sides run


def baseline_just(env: dict) -> Path:
    """The `just` the baselines run: the first on the bench's PATH, symlinks resolved."""
    found = shutil.which("just", path=env.get("PATH"))
    if found is None:
        raise BenchError("`just` is not on PATH")
    return Path(found).resolve()


def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def check_just(setup_log: str, where: str, env: dict) -> None:
    """Fails unless odu's nodes ran the very `just` binary the baselines run (the runner names
    it in the setup log), and that is a real binary, not a wrapper script (a shim's start-up
    would inflate the baselines and hide odu's own cost)."""
    m = JUST_USED_RE.search(setup_log)
    if not m:
        raise BenchError(f"no `[odu] just VERSION (PATH)` line in {where}: is the runner this build's?\n"
                         f"{tail(setup_log)}")
    odu_just = Path(m.group(1)).resolve()
    base = baseline_just(env)
    if odu_just != base:
        raise BenchError(f"odu ran {odu_just} but the baselines run {base}: the ratios would compare "
                         "different programs; put one `just` first on PATH")
    if not is_elf(base):
        raise BenchError(f"{base} is not a binary (a wrapper script?): its start-up would be in every "
                         "baseline figure; put a real `just` binary first on PATH")


def overhead_checks(r_base: list[float], r_odu: list[float], nodes: int,
                    target_ms: float | None) -> list[Check]:
    """Per-node overhead (odu - baseline) / N in ms: the median of the pairs' own differences
    (the two sides of a pair run back to back, see `measure`), judged; and, for reference, the
    difference of the two sides' medians. At 2,000 nodes the target (0.3 ms a node) is about 1 %
    of what `just` itself takes a node, while the same baseline ran from 44.6 to 51.6 s in one
    series of five as the shared machine's load changed: a difference of medians takes its two
    medians from different pairs, so that drift, not odu, decides it; a pair's two sides share
    the machine's state."""
    paired = statistics.median(o - b for b, o in zip(r_base, r_odu, strict=True)) / nodes * 1000
    medians = (statistics.median(r_odu) - statistics.median(r_base)) / nodes * 1000
    return [Check(f"per-node overhead (odu - baseline)/{nodes}, median of the pairs", paired, "ms",
                  target_ms, digits=3),
            Check("  from the two sides' medians", medians, "ms", digits=3)]


# --------------------------------------------------------------------------
# scenarios


def ci_justfile(names: list[str], deps: dict[str, list[str]], root_deps: list[str]) -> str:
    lines = ['[metadata("ci")]', f"ci: {' '.join(root_deps)}", ""]
    for n in names:
        lines += [f"{n}: {' '.join(deps.get(n, []))}".rstrip(), "    @true", ""]
    return "\n".join(lines)


def scenario_wide200(ctx: "Ctx") -> Result:
    return wide_scenario(ctx, 200)


def scenario_wide1000(ctx: "Ctx") -> Result:
    return wide_scenario(ctx, 1000)


def scenario_wide2000(ctx: "Ctx") -> Result:
    return wide_scenario(ctx, 2000)


def scenario_wide2000_jobs2(ctx: "Ctx") -> Result:
    """wide2000 with odu's lane capped at the baseline's two jobs: the same concurrency on both
    sides, so the per-node overhead is odu's own, not 2,000 `just` processes at once."""
    return wide_scenario(ctx, 2000, jobs=2)


def scenario_wide200_warm(ctx: "Ctx") -> Result:
    """wide200 with the server left up between runs, as after a session's first run: the
    cold rows pay a server's start (and its first, unremembered plan) in every run."""
    return wide_scenario(ctx, 200, warm=True)


def scenario_chain200(ctx: "Ctx") -> Result:
    return chain_scenario(ctx, 200)


def scenario_chain200_warm(ctx: "Ctx") -> Result:
    """chain200 with the server left up between runs (see wide200_warm)."""
    return chain_scenario(ctx, 200, warm=True)


def scenario_chain1000(ctx: "Ctx") -> Result:
    return chain_scenario(ctx, 1000)


def scenario_chain2000(ctx: "Ctx") -> Result:
    return chain_scenario(ctx, 2000)


def scenario_chain200_in1000(ctx: "Ctx") -> Result:
    """chain200's 200 nodes in a justfile of 1,000 recipes (800 outside the DAG): odu does the
    same work as in chain200, `just` the work of chain1000's justfile. Its CPU per node against
    chain200's and chain1000's tells odu's own growth with N from what a bigger justfile costs
    every process on the machine."""
    return chain_scenario(ctx, 200, padding=800)


def scenario_chain200_sleep10ms(ctx: "Ctx") -> Result:
    """chain200 whose nodes each sleep 10 ms: the same `just`, the same odu work and the same
    events, only 10 ms of idle machine between them. Its CPU per node against chain200's is
    what a wake-up from idle costs odu's processes on this machine, per node."""
    return chain_scenario(ctx, 200, body="@sleep 0.01")


# Per-node overhead targets: at most 0.3 ms at 2,000 nodes; smaller N is reported for the
# trend (it must not grow with N).
OVERHEAD_TARGET_MS = {2000: 0.3}
# wide200 and chain200 are held to 1.10; the larger ones are judged by their overhead.
SHAPE_RATIO_TARGET = {200: 1.10}


def wide_scenario(ctx: "Ctx", n: int, jobs: int | None = None, warm: bool = False) -> Result:
    names = [f"r{i:04d}" for i in range(n)] if n > 1000 else [f"r{i:03d}" for i in range(n)]
    scenario = f"wide{n}" + (f"_jobs{jobs}" if jobs else "") + ("_warm" if warm else "")
    repo = wide200_repo(ctx) if scenario == "wide200" else wide_repo(ctx, scenario, names)
    repo.keep_server = repo.retire_label = warm
    feed = ("\n".join(names) + "\n").encode()
    # odu starts every runnable node at once (the spec's default); the baseline runs two at a
    # time. For the large uncapped rows the same `just` calls are also timed all at once
    # (`xargs -P0`), in the same pairs, so the report can part what that shape costs `just`
    # itself from what odu adds to it.
    all_at_once: list[float] = []
    same_shape = jobs is None and not warm and n >= 1000
    # With both shapes timed, the CPU each took too (xargs reaps every `just`, so its children's
    # CPU is theirs): the same calls cost `just` more CPU started all at once on two cores, which
    # is what parts the two shapes' wall times.
    cpu_two: list[float] = []
    cpu_all: list[float] = []

    def baseline() -> float:
        if same_shape:
            before = children_cpu_s()
            all_at_once.append(timed(["xargs", "-P0", "-n1", "just", "--no-deps"], cwd=repo.repo,
                                     env=ctx.env, stdin_data=feed, what="xargs -P0 just")[0])
            cpu_all.append(children_cpu_s() - before)
        before = children_cpu_s()
        # Same as: printf '%s\n' r000..r199 | xargs -P2 -n1 just --no-deps
        elapsed = timed(["xargs", "-P2", "-n1", "just", "--no-deps"], cwd=repo.repo, env=ctx.env,
                        stdin_data=feed, what="baseline xargs just")[0]
        cpu_two.append(children_cpu_s() - before)
        return elapsed

    def odu() -> float:
        elapsed, _ = repo.run(["--jobs", str(jobs)] if jobs else [])
        missing = [n for n in names if not (repo.log_dir / f"{n}.log").exists()]
        if missing:
            raise BenchError(f"odu run left no log for {len(missing)} recipes, e.g. {missing[:3]}")
        return elapsed

    b, o = measure(baseline, odu, ctx.runs)
    if warm:
        stop_servers(repo.repo)
    shape: list[Check] = []
    if all_at_once:
        floor = statistics.median(all_at_once[1:])   # the first was the warm-up's
        shape = [Check("  same calls all at once (xargs -P0 -n1 just)", floor, "s", digits=3),
                 Check("  of the overhead, all at once, per node",
                       (floor - statistics.median(b)) / n * 1000, "ms", digits=3),
                 Check("  odu over all at once: (odu - xargs -P0)/N",
                       (statistics.median(o) - floor) / n * 1000, "ms", digits=3),
                 Check("  just's CPU, two at a time (xargs -P2, median)",
                       statistics.median(cpu_two[1:]), "s", digits=2),
                 Check("  just's CPU, all at once (xargs -P0, median)",
                       statistics.median(cpu_all[1:]), "s", digits=2),
                 Check("  all at once over two at a time, CPU",
                       statistics.median(cpu_all[1:]) / statistics.median(cpu_two[1:]), "x", digits=3)]
    return Result(scenario, f"{n} independent trivial recipes" + (", server up" if warm else ""),
                  ctx.runs, "xargs -P2 -n1 just --no-deps",
                  f"odu run --jobs {jobs}" if jobs else f"odu run (all {n} at once)", b, o,
                  SHAPE_RATIO_TARGET.get(n),
                  [*overhead_checks(b, o, n, OVERHEAD_TARGET_MS.get(n)), *shape, *repo.cpu_checks(n),
                   *repo.rss_checks(30, None)])


def wide_repo(ctx: "Ctx", folder: str, names: list[str]) -> OduRepo:
    path = ctx.tmp / folder
    sha = make_repo(path, ci_justfile(names, {}, names), ctx.env)
    return OduRepo(ctx.odu, path, sha, ctx.env)


def chain_scenario(ctx: "Ctx", n: int, warm: bool = False, padding: int = 0,
                   body: str = "@true") -> Result:
    names = [f"r{i:04d}" for i in range(n)] if n > 1000 else [f"r{i:03d}" for i in range(n)]
    deps = {x: [names[i - 1]] for i, x in enumerate(names) if i}
    scenario = f"chain{n}" + ("_warm" if warm else "") + (f"_in{n + padding}" if padding else "")
    scenario += "_sleep10ms" if body != "@true" else ""
    # Root lists only the tip: the closure is the whole chain either way.
    justfile = ci_justfile(names, deps, [names[-1]]).replace("    @true\n", f"    {body}\n")
    # Padding: recipes no node depends on, which `just` parses on every call.
    justfile += "".join(f"\np{i:04d}:\n    @true\n" for i in range(padding))
    sha = make_repo(ctx.tmp / scenario, justfile, ctx.env)
    repo = OduRepo(ctx.odu, ctx.tmp / scenario, sha, ctx.env)
    repo.keep_server = repo.retire_label = warm
    # One shell loop: the cheapest serial execution of the same 200 nodes. At its end the shell
    # reads its own time on a CPU (its forks and waits, none of `just`'s) with builtins alone,
    # so the baseline's spawner is measured in the same run as odu's, at no cost to its wall;
    # a kernel without schedstat fails neither the loop nor the row, only leaves the line out.
    loop_cpu = ctx.tmp / f"{scenario}.loop-cpu"
    loop = (f"for r in {' '.join(names)}; do just --no-deps \"$r\" || exit 1; done; "
            f"if read -r ns _ < /proc/$$/schedstat; then echo \"$ns\" > {shlex.quote(str(loop_cpu))}; fi 2>/dev/null")
    shell_cpu: list[float] = []

    def baseline() -> float:
        elapsed = timed(["sh", "-c", loop], cwd=repo.repo, env=ctx.env, what="baseline shell loop")[0]
        try:
            shell_cpu.append(int(loop_cpu.read_text()) / 1e9)
        except (OSError, ValueError):
            pass   # no schedstat here: the line is left out
        return elapsed

    def odu() -> float:
        return repo.run()[0]

    b, o = measure(baseline, odu, ctx.runs)
    if warm:
        stop_servers(repo.repo)
    what = f"{n} recipes in a dependency chain" + (", server up" if warm else "")
    what += f", in a justfile of {n + padding} recipes" if padding else ""
    what += f", each `{body}`" if body != "@true" else ""
    return Result(scenario, what, ctx.runs,
                  "sh loop of just --no-deps", "odu run", b, o, SHAPE_RATIO_TARGET.get(n),
                  [*overhead_checks(b, o, n, OVERHEAD_TARGET_MS.get(n)), *repo.cpu_checks(n),
                   *spawner_checks(shell_cpu[1:], n), *repo.rss_checks(None, None)])


def spawner_checks(shell_cpu: list[float], nodes: int) -> list[Check]:
    """The baseline's shell loop's own CPU per node (median over the timed runs): what the
    plainest spawner (a fork, then a wait, per node) costs in the machine's state of the moment.
    Not judged; beside odu's own CPU per node it parts what any spawner pays here (more after
    idle: the chain200_sleep10ms row) from what odu adds."""
    if not shell_cpu:
        return []
    return [Check("baseline's shell, own CPU per node (fork, wait)", statistics.median(shell_cpu) / nodes * 1000,
                  "ms", digits=3)]


NOISY_LINES = 200_000


def scenario_noisy(ctx: "Ctx") -> Result:
    """Many short lines written slowly, as compilers and test runners do: a bash loop printing
    200,000 lines of 70 bytes, one write each."""
    # 8 digits, a space, 60 characters, a newline: 70 bytes a line.
    body = ("#!/usr/bin/env bash\n    for ((i = 0; i < %d; i++)); do printf '%%08d %%s\\n' \"$i\" "
            "\"%s\"; done" % (NOISY_LINES, "x" * 60))
    just = '[metadata("ci")]\nci: noisy\n\nnoisy:\n    ' + body + "\n"
    sha = make_repo(ctx.tmp / "noisy", just, ctx.env)
    repo = OduRepo(ctx.odu, ctx.tmp / "noisy", sha, ctx.env)
    out_file = ctx.tmp / "noisy.out"
    expected: list[tuple[int, str]] = []

    def baseline() -> float:
        with open(out_file, "wb") as f:
            elapsed = timed(["just", "--no-deps", "noisy"], cwd=repo.repo, env=ctx.env,
                            stdout=f, what="baseline just noisy")[0]
        got = file_digest(out_file)
        if got[0] != NOISY_LINES * 70:
            raise BenchError(f"baseline wrote {got[0]} bytes, expected {NOISY_LINES * 70}")
        expected[:] = [got]
        return elapsed

    def odu() -> float:
        elapsed, _ = repo.run()
        got = file_digest(repo.log_dir / "noisy.log")
        if expected and got != expected[0]:
            raise BenchError(f"odu log is {got[0]} bytes sha256 {got[1]}, the baseline's file "
                             f"{expected[0][0]} bytes sha256 {expected[0][1]}")
        return elapsed

    b, o = measure(baseline, odu, ctx.runs)
    return Result("noisy", f"one recipe printing {NOISY_LINES:,} lines of 70 bytes from a bash loop",
                  ctx.runs, "just --no-deps noisy > file", "odu run (log to .ci/)", b, o, 1.10,
                  [*repo.cpu_checks(1, None), *repo.rss_checks(64, 64)],
                  ["log verified byte-identical to the baseline's file on every run"])


STEP_RE = re.compile(r'start\{step="([^"]+)"\}.*close time\.busy=([\d.]+)(ns|µs|ms|s)\b')
RUNNER_READY_RE = re.compile(r"runner started, attached and configured.*elapsed_us=(\d+)")
UNIT_MS = {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1000.0}


def start_steps(serve_log: Path) -> list[str]:
    """The median cost of each start-up step, from the server's tracing spans (ODU_LOG)."""
    steps: dict[str, list[float]] = {}
    try:
        text = serve_log.read_text("utf-8", "replace")
    except OSError:
        return []
    for m in STEP_RE.finditer(text):
        steps.setdefault(m.group(1), []).append(float(m.group(2)) * UNIT_MS[m.group(3)])
    for m in RUNNER_READY_RE.finditer(text):
        steps.setdefault("runner start, handshake, configure", []).append(int(m.group(1)) / 1000)
    return [f"{name}: median {statistics.median(ms):.2f} ms over {len(ms)} runs"
            for name, ms in steps.items()]


def startup_scenario(ctx: "Ctx", warm: bool) -> Result:
    """One trivial node, whole `odu run`: with the checkout's server already up (warm), or
    started by the run (cold, every run from an empty .ci/)."""
    name = "startup_warm" if warm else "startup_cold"
    path = ctx.tmp / name
    # The server (started by the run, with its environment) times each start-up step in a
    # tracing span; the warm side reports them from .ci/odu.serve.log.
    env = dict(ctx.env)
    if warm:
        env["ODU_LOG"] = "odu::server::start=debug,odu::lane=debug"
    sha = make_repo(path, ci_justfile(["a"], {}, ["a"]), env)
    repo = OduRepo(ctx.odu, path, sha, env)
    repo.keep_server = warm
    runs, b, o, checks = time_one_node(ctx, repo, 15.0 if warm else 40.0)
    notes = ["start-up steps (server spans; steps overlap, so they need not add up to the wall):",
             *(f"  {line}" for line in start_steps(path / ".ci" / "odu.serve.log"))] if warm else []
    return Result(name, f"one trivial node, whole odu run, server {'up' if warm else 'started by the run'}",
                  runs, "just --no-deps a", "odu run", b, o, None, checks, notes, times_in_ms=True)


def time_one_node(ctx: "Ctx", repo: OduRepo, target_ms: float
                  ) -> tuple[int, list[float], list[float], list[Check]]:
    """The start-up rows' measurement: `just --no-deps a` against a whole `odu run` of the
    one-node fixture `repo`, 5 × N pairs; their count, times, and the wall (against
    `target_ms`), odu-minus-just and CPU checks."""
    def baseline() -> float:
        return timed(["just", "--no-deps", "a"], cwd=repo.repo, env=ctx.env, what="baseline just a")[0]

    def odu() -> float:
        return repo.run()[0]

    runs = ctx.runs * SHORT_ROW_RUNS_FACTOR
    b, o = measure(baseline, odu, runs)
    med = statistics.median(o)
    return runs, b, o, [Check("odu run wall (median)", med * 1000, "ms", target_ms),
                        Check("odu minus just (median)", (med - statistics.median(b)) * 1000, "ms"),
                        *repo.cpu_checks(1, None)]


# startup_history: a checkout's record of runs past, as a year of CI leaves it. Records stay
# when retention removes their logs, so their number only grows.
HISTORY_COMMITS = 100
HISTORY_RUNS_PER_COMMIT = 3
HISTORY_NODES = 500


def write_history(ci: Path, commits: int, runs_per_commit: int, nodes: int) -> int:
    """Writes the records of `commits` older commits' runs into `ci` (an odu-made `.ci/`), each
    of `nodes` nodes, as odu writes them (pretty JSON, version 2, logs pruned by retention).
    Returns the bytes written."""
    rng = random.Random(0x0D0)
    total = 0
    at = 1_700_000_000_000
    for c in range(commits):
        sha = "%040x" % rng.getrandbits(160)
        label = sha[:7]
        runs = ci / label / "runs"
        runs.mkdir(mode=0o700, parents=True)
        (ci / label).chmod(0o700)
        for seq in range(1, runs_per_commit + 1):
            at += 600_000
            node_list = [{"id": "_ci-setup@" + PLATFORM, "status": "ok", "exit_code": 0, "started_at": at,
                          "duration_ms": 40, "log": f".ci/{label}/{PLATFORM}/_ci-setup.log"}]
            node_list += [{"id": f"t{i:04d}@{PLATFORM}", "status": "ok", "exit_code": 0,
                           "started_at": at + 40 + i, "duration_ms": 900 + i % 97,
                           "log": f".ci/{label}/{PLATFORM}/t{i:04d}.log"} for i in range(nodes)]
            record = {"version": 2, "repo": "owner/repo", "sha": sha, "label": label, "seq": seq,
                      "dirty": False, "pipeline": "ci", "outcome": "passed" if seq % 3 else "failed",
                      "pid": None, "started_at": at, "finished_at": at + 120_000,
                      "lanes": [{"platform": PLATFORM, "host": "localhost"}], "nodes": node_list,
                      "unposted": [], "selectors": [], "flags": {},
                      "logs_pruned": {"at": at + 3_600_000, "keep": 20}}
            text = json.dumps(record, indent=2).encode()
            (runs / f"{seq}.json").write_bytes(text)
            total += len(text)
    return total


def scenario_startup_history(ctx: "Ctx") -> Result:
    """startup_cold in a checkout with a long record of runs past: a server's start lists every
    run, and must not cost the reading of every node ever recorded."""
    path = ctx.tmp / "startup_history"
    sha = make_repo(path, ci_justfile(["a"], {}, ["a"]), ctx.env)
    repo = OduRepo(ctx.odu, path, sha, ctx.env)
    # The first run makes `.ci/` as odu makes it; the history goes in beside its own records.
    repo.run()
    stop_servers(path)
    size = write_history(path / ".ci", HISTORY_COMMITS, HISTORY_RUNS_PER_COMMIT, HISTORY_NODES)
    repo.keep_trail = True
    runs, b, o, checks = time_one_node(ctx, repo, 40.0)
    # With the last run's server still up and idle: what a look at the checkout costs.
    status = [timed([str(ctx.odu), "status"], cwd=path, env=ctx.env, what="odu status")[0]
              for _ in range(runs)]
    listing = [timed([str(ctx.odu), "runs", "-o", "json"], cwd=path, env=ctx.env, what="odu runs")[0]
               for _ in range(runs)]
    stop_servers(path)
    records = HISTORY_COMMITS * HISTORY_RUNS_PER_COMMIT
    return Result("startup_history",
                  f"startup_cold with {records} runs of {HISTORY_NODES} nodes on record "
                  f"({size / MIB:.0f} MiB of records)",
                  runs, "just --no-deps a", "odu run", b, o, None,
                  [*checks,
                   Check("odu status, idle server (median)", statistics.median(status) * 1000, "ms"),
                   Check("odu runs -o json, idle server (median)", statistics.median(listing) * 1000, "ms")],
                  times_in_ms=True)


def scenario_startup_warm(ctx: "Ctx") -> Result:
    return startup_scenario(ctx, True)


def scenario_startup_cold(ctx: "Ctx") -> Result:
    return startup_scenario(ctx, False)


def write_chunk(path: Path) -> None:
    """Write CHUNK_SIZE bytes of deterministic, mixed-length text lines.

    Varied line lengths (short, long, empty) exercise odu's log path more
    honestly than `yes`; generating it once and `cat`-ing it keeps the
    producer itself far faster than the throughput being measured.
    """
    rng = random.Random(0x0D0)
    words = ["compiling", "odu", "v0.1.0", "warning:", "unused", "variable", "test", "ok",
             "finished", "release", "target(s)", "in", "0.42s", "error[E0308]:", "-->", "src/lib.rs:12:5",
             "|", "=", "note:", "running", "passed;", "failed;", "ignored;"]
    out = bytearray()
    n = 0
    while len(out) < CHUNK_SIZE:
        k = rng.choice((0, 1, 3, 6, 10, 20, 60))
        out += f"{n:08d} {' '.join(rng.choice(words) for _ in range(k))}\n".encode()
        n += 1
    del out[CHUNK_SIZE:]
    out[-1:] = b"\n"  # end on a line boundary
    path.write_bytes(out)


def file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def scenario_log1g(ctx: "Ctx") -> Result:
    runs = min(ctx.runs, LOG1G_MAX_RUNS)
    chunk = ctx.tmp / "chunk16m.txt"   # outside the repo: it is input, not fixture
    write_chunk(chunk)
    # Expected digest of the whole 1 GiB stream, without ever materialising it.
    chunk_bytes = chunk.read_bytes()
    h = hashlib.sha256()
    for _ in range(CHUNK_REPEAT):
        h.update(chunk_bytes)
    expected = (LOG_SIZE, h.hexdigest())
    del chunk_bytes

    # `@` keeps just from echoing the recipe line to stderr, which odu merges
    # into the log and which would break the byte-for-byte comparison.
    body = f"@for i in $(seq {CHUNK_REPEAT}); do cat '{chunk}'; done"
    just = '[metadata("ci")]\nci: big\n\nbig:\n    ' + body + "\n"
    sha = make_repo(ctx.tmp / "log1g", just, ctx.env)
    repo = OduRepo(ctx.odu, ctx.tmp / "log1g", sha, ctx.env)
    repo.big_logs = True
    out_file = ctx.tmp / "log1g.out"

    def check(path: Path, who: str) -> None:
        got = file_digest(path)
        if got != expected:
            raise BenchError(f"{who}: {path} is {got[0]} bytes sha256 {got[1]}, "
                             f"expected {expected[0]} bytes sha256 {expected[1]}")

    def baseline() -> float:
        # The producer alone writing to a file: what the bytes cost without odu.
        with open(out_file, "wb") as f:
            elapsed = timed(["just", "--no-deps", "big"], cwd=repo.repo, env=ctx.env,
                            stdout=f, what="baseline just big")[0]
        check(out_file, "baseline")
        out_file.unlink()
        return elapsed

    def odu() -> float:
        elapsed, _ = repo.run()
        check(repo.log_dir / "big.log", "odu log")
        return elapsed

    b, o = measure(baseline, odu, runs)
    med_odu = statistics.median(o)
    med_base = statistics.median(b)
    checks = [
        # Whole `odu run` wall time, setup and snapshot included: conservative.
        Check("odu throughput (1 GiB / odu wall)", LOG_SIZE / MIB / med_odu, "MiB/s", 300,
              higher_is_better=True),
        Check("baseline throughput (just > file)", LOG_SIZE / MIB / med_base, "MiB/s"),
        *repo.rss_checks(64, 64),
    ]
    notes = ["log verified byte-identical (size + sha256) on every run"]
    if runs < ctx.runs:
        notes.append(f"runs capped at {runs} (each run writes 1 GiB per side)")
    return Result("log1g", "one recipe printing 1 GiB", runs, "just --no-deps big > file",
                  "odu run (log to .ci/)", b, o, None, checks, notes)


def dump_justfile(n: int = 1000) -> str:
    """A deterministic ~realistic justfile: n-1 recipes in a random DAG plus a
    ci root that depends on every recipe nothing else depends on."""
    rng = random.Random(1000)
    names = [f"t{i:04d}" for i in range(n - 1)]
    deps: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        # Deps drawn from a window of recent recipes: gives depth and fan-in
        # without making everything depend on everything.
        pool = names[max(0, i - 40):i]
        deps[name] = sorted(rng.sample(pool, min(len(pool), rng.choice((0, 0, 1, 1, 2, 3, 5)))))
    depended = {d for ds in deps.values() for d in ds}
    tops = [x for x in names if x not in depended]
    out = ["# generated by bench/run.py", "", '[metadata("ci")]', f"ci: {' '.join(tops)}", ""]
    for name in names:
        i = int(name[1:])
        out.append(f"# recipe {name}")
        if i % 7 == 0:
            out.append("[no-exit-message]")
        out.append(f"{name}: {' '.join(deps[name])}".rstrip())
        out.append(f"    @echo {name}")
        if i % 3 == 0:
            out.append(f"    @echo second line of {name} >/dev/null")
        out.append("")
    return "\n".join(out)


def scenario_dump1000(ctx: "Ctx") -> Result:
    d = ctx.tmp / "dump1000"   # plain dir: `odu dump` needs no git
    d.mkdir()
    (d / "justfile").write_text(dump_justfile())

    def baseline() -> float:
        return timed(["just", "--dump", "--dump-format", "json"], cwd=d, env=ctx.env,
                     what="baseline just --dump")[0]

    def odu() -> float:
        elapsed, proc = timed([str(ctx.odu), "dump"], cwd=d, env=ctx.env, what="odu dump")
        try:
            plan = json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise BenchError(f"odu dump printed invalid JSON: {e}") from None
        if len(plan.get("tasks", [])) != 999:
            raise BenchError(f"odu dump planned {len(plan.get('tasks', []))} tasks, expected 999")
        return elapsed

    runs = ctx.runs * SHORT_ROW_RUNS_FACTOR
    b, o = measure(baseline, odu, runs)
    return Result("dump1000", "plan of a 1000-recipe justfile", runs,
                  "just --dump --dump-format json", "odu dump", b, o, 1.5)


# -- live-server scenarios ---------------------------------------------------


EMIT_PY = r"""import os, random, sys, time
go, n = sys.argv[1], int(sys.argv[2])
os.write(1, b"READY\n")
# Timed lines start once the bench's `odu logs -f` has seen READY (it then
# creates `go`): they measure following a live log, not connecting to it.
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.002)
rng = random.Random(5)
for i in range(n):
    os.write(1, b"T %d %d\n" % (i, time.time_ns()))
    time.sleep(rng.uniform(0.005, 0.010))
os.write(1, b"DONE\n")
"""

LOGS_LINES = 500


def scenario_logs_latency(ctx: "Ctx") -> Result:
    d = ctx.tmp / "logs_latency"
    go = ctx.tmp / "logs_latency.go"
    # The interpreter's real path, not a shim: the node's startup stays out of
    # the way (it is not timed anyway).
    just = ('[metadata("ci")]\nci: ticker\n\nticker:\n'
            f"    @'{sys.executable}' emit.py '{go}' {LOGS_LINES}\n")
    d.mkdir()
    (d / "emit.py").write_text(EMIT_PY)
    sha = make_repo_in(d, just, ctx.env)
    repo = OduRepo(ctx.odu, d, sha, ctx.env)

    def once() -> tuple[list[float], float]:
        """One run: latencies (ms) of every timed line, and ms from socket to READY."""
        go.unlink(missing_ok=True)
        live = LiveRun(repo, tag="logs")
        client = None
        try:
            live.wait_live()
            t_live = time.perf_counter()
            client = subprocess.Popen([str(ctx.odu), "logs", "-f", "ticker"], cwd=d, env=ctx.env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
            fd = client.stdout.fileno()
            buf, lat, ready_ms, done = b"", [], None, False
            deadline = time.monotonic() + 120
            while True:
                if time.monotonic() > deadline:
                    raise BenchError("odu logs -f ticker: no end of log within 120 s")
                r, _, _ = select.select([fd], [], [], 1.0)
                if not r:
                    continue
                chunk = os.read(fd, 65536)
                arrival = time.time_ns()   # one stamp per read: every line in it arrived now
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line == b"READY":
                        ready_ms = (time.perf_counter() - t_live) * 1000
                        go.touch()
                    elif line.startswith(b"T "):
                        lat.append((arrival - int(line.split()[2])) / 1e6)
                    elif line == b"DONE":
                        done = True
            err = client.stderr.read().decode("utf-8", "replace")
            if client.wait() != 0:
                raise BenchError(f"odu logs -f ticker exited {client.returncode}\n{tail(err)}")
            live.wait()
            if len(lat) != LOGS_LINES or not done or ready_ms is None:
                raise BenchError(f"odu logs -f ticker delivered {len(lat)}/{LOGS_LINES} timed lines "
                                 f"(READY {'seen' if ready_ms is not None else 'missing'}, "
                                 f"DONE {'seen' if done else 'missing'})\n{tail(err)}")
            return lat, ready_ms
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
            live.close()

    try:
        once()   # warm-up, discarded
        per_run, readies, everything = [], [], []
        for i in range(ctx.runs):
            lat, ready_ms = once()
            per_run.append(statistics.median(lat))
            readies.append(ready_ms)
            everything += lat
            print(f"    run {i + 1}/{ctx.runs}: median {per_run[-1]:.2f} ms, "
                  f"p99 {percentile(lat, 99):.2f} ms, max {max(lat):.2f} ms", file=sys.stderr, flush=True)
    finally:
        stop_servers(d)
    checks = [
        Check("line latency median", statistics.median(everything), "ms", 5, digits=2),
        Check("line latency p99", percentile(everything, 99), "ms", 20, digits=2),
        Check("line latency p90", percentile(everything, 90), "ms", digits=2),
        Check("line latency max", max(everything), "ms", digits=2),
    ]
    notes = [f"{len(everything)} lines ({LOGS_LINES} per run, one every 5-10 ms); latency = arrival on "
             "the client's stdout - the node's time.time_ns() in the line",
             f"per-run medians (ms): {' '.join(f'{m:.2f}' for m in per_run)}",
             f"run live -> READY through logs -f (process start, connect, replay), "
             f"median {statistics.median(readies):.1f} ms"]
    return Result("logs_latency", "odu logs -f line latency on a live node", ctx.runs,
                  "", "", [], [], None, checks, notes)


STATUS_CALLS = 50
STATUS_JOBS = 50       # 200 nodes x sleep 2 s / 50 jobs: a run live for ~8 s


def scenario_status_latency(ctx: "Ctx") -> Result:
    names = [f"s{i:03d}" for i in range(200)]
    lines = ['[metadata("ci")]', f"ci: {' '.join(names)}", ""]
    for n in names:
        lines += [f"{n}:", "    @sleep 2", ""]
    d = ctx.tmp / "status_latency"
    sha = make_repo(d, "\n".join(lines), ctx.env)
    repo = OduRepo(ctx.odu, d, sha, ctx.env)
    status_argv = [str(ctx.odu), "status", "-o", "json"]
    version_argv = [str(ctx.odu), "--version"]

    def status_once() -> tuple[float, dict]:
        elapsed, proc = timed(status_argv, cwd=d, env=ctx.env, what="odu status -o json")
        try:
            return elapsed, json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise BenchError(f"odu status -o json printed invalid JSON: {e}\n{tail(proc.stdout)}") from None

    def once() -> tuple[list[float], list[float]]:
        live = LiveRun(repo, ["--jobs", str(STATUS_JOBS)], tag="status")
        try:
            live.wait_live()   # its status calls are untimed warm-ups
            timed(version_argv, cwd=d, env=ctx.env, what="odu --version")
            s_times, v_times = [], []
            for i in range(STATUS_CALLS):
                # Alternate which goes first, as measure() does.
                if i % 2:
                    v_times.append(timed(version_argv, cwd=d, env=ctx.env, what="odu --version")[0])
                elapsed, doc = status_once()
                if not doc.get("live"):
                    raise BenchError(f"the run ended after {i} of {STATUS_CALLS} status calls: "
                                     "lengthen the fixture (STATUS_JOBS)")
                if len(doc.get("nodes", [])) < 200:
                    raise BenchError(f"odu status listed {len(doc.get('nodes', []))} nodes, expected >= 200")
                s_times.append(elapsed)
                if not i % 2:
                    v_times.append(timed(version_argv, cwd=d, env=ctx.env, what="odu --version")[0])
            live.wait()
            return s_times, v_times
        finally:
            live.close()

    try:
        all_s, all_v, per_run = [], [], []
        for i in range(ctx.runs):
            s_t, v_t = once()
            all_s += s_t
            all_v += v_t
            per_run.append(statistics.median(s_t) * 1000)
            print(f"    run {i + 1}/{ctx.runs}: status median {per_run[-1]:.2f} ms, "
                  f"--version median {statistics.median(v_t) * 1000:.2f} ms", file=sys.stderr, flush=True)
    finally:
        stop_servers(d)
    ms = [t * 1000 for t in all_s]
    checks = [
        Check("odu status -o json median (whole process)", statistics.median(ms), "ms", 15, digits=2),
        Check("odu status -o json p90", percentile(ms, 90), "ms", digits=2),
        # The same percentile of the process floor: how much of the tail is the
        # machine (50 nodes spawning at once, other jobs) rather than odu.
        Check("odu --version p90", percentile([t * 1000 for t in all_v], 90), "ms", digits=2),
    ]
    notes = [f"{len(ms)} status calls ({STATUS_CALLS} per run) during a live 200-node run "
             f"(sleep 2 each, --jobs {STATUS_JOBS}), each checked live with >= 200 nodes",
             f"per-run status medians (ms): {' '.join(f'{m:.2f}' for m in per_run)}"]
    return Result("status_latency", "odu status -o json against a live 200-node run", ctx.runs,
                  "odu --version", "odu status -o json", all_v, all_s, None, checks, notes,
                  show_times=False, times_in_ms=True)


CLIENTS = 100
CLIENT_EXIT_DEADLINE_S = 30.0


def wide200_repo(ctx: "Ctx") -> OduRepo:
    """wide200's fixture, built once and shared (clients100 runs the same DAG)."""
    names = [f"r{i:03d}" for i in range(200)]
    d = ctx.tmp / "wide200"
    if (d / ".git").is_dir():
        sha = git(d, "rev-parse", "HEAD", env=ctx.env)
    else:
        sha = make_repo(d, ci_justfile(names, {}, names), ctx.env)
    return OduRepo(ctx.odu, d, sha, ctx.env)


def set_pipe_size(fd: int, size: int) -> None:
    import fcntl
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        pass


class Clients:
    """CLIENTS `odu attach -o json` processes on one run, in three kinds:

    - stalled (half): stdout is a 4 KiB pipe nobody reads until the run has
      ended, so they block on stdout and stop reading the socket;
    - slow (a quarter): a 4 KiB pipe drained 1 KiB per client every 20 ms;
    - fast (a quarter): a 4 KiB pipe drained as fast as it fills.
    After the run, every pipe is drained so they can all finish.
    """

    def __init__(self, ctx: "Ctx", repo: Path, n: int = CLIENTS):
        self.ctx, self.repo, self.n = ctx, repo, n
        self.procs: list[subprocess.Popen] = []
        self.kinds: list[str] = []
        self.err_paths: list[Path] = []
        self._slow_stop = threading.Event()
        self._slow_thread: threading.Thread | None = None
        self.cpu_s = 0.0          # the clients' own CPU (user + sys), summed, from wait4
        self.spawn_cpu_s = 0.0    # the bench's CPU spent spawning them

    def start(self) -> None:
        cpu0 = time.process_time()
        for i in range(self.n):
            kind = ("stalled", "stalled", "slow", "fast")[i % 4]
            err_path = self.repo.parent / f"client{i:03d}.stderr"
            with open(err_path, "wb") as err:
                p = subprocess.Popen([str(self.ctx.odu), "attach", "-o", "json"], cwd=self.repo,
                                     env=self.ctx.env, stdin=subprocess.DEVNULL, stderr=err,
                                     stdout=subprocess.PIPE)
            set_pipe_size(p.stdout.fileno(), 4096)
            os.set_blocking(p.stdout.fileno(), False)
            self.procs.append(p)
            self.kinds.append(kind)
            self.err_paths.append(err_path)
        self.spawn_cpu_s = time.process_time() - cpu0

    def wait_attached(self, marker: bytes, deadline_s: float = SOCKET_DEADLINE_S) -> None:
        """Reads each client's first lines until `marker` shows: the client has its snapshot."""
        seen = {p.stdout.fileno(): b"" for p in self.procs}
        by_fd = {p.stdout.fileno(): p for p in self.procs}
        deadline = time.monotonic() + deadline_s
        while seen:
            if time.monotonic() > deadline:
                fd = next(iter(seen))
                raise BenchError(f"{len(seen)} of {self.n} clients printed no {marker!r} within "
                                 f"{deadline_s:g} s, e.g. one with stderr "
                                 f"{tail(self.err_paths[self.procs.index(by_fd[fd])].read_text())!r}")
            r, _, _ = select.select(list(seen), [], [], 0.5)
            for fd in r:
                try:
                    chunk = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise BenchError("an attach client exited before it printed its snapshot")
                seen[fd] += chunk
                if marker in seen[fd]:
                    del seen[fd]

    def follow(self) -> None:
        """Starts reading: slow clients 1 KiB per 20 ms, fast ones all; stalled ones not at all."""
        self._slow_thread = threading.Thread(target=self._read_slowly, daemon=True)
        self._slow_thread.start()

    def _read_slowly(self) -> None:
        slow = [p.stdout.fileno() for p, k in zip(self.procs, self.kinds) if k == "slow"]
        fast = [p.stdout.fileno() for p, k in zip(self.procs, self.kinds) if k == "fast"]
        next_slow = time.monotonic()
        while not self._slow_stop.is_set():
            if time.monotonic() >= next_slow:
                for fd in slow:
                    try:
                        os.read(fd, 1024)
                    except (BlockingIOError, OSError):
                        pass
                next_slow += 0.02
            r, _, _ = select.select(fast, [], [], max(0.0, min(0.02, next_slow - time.monotonic())))
            for fd in r:
                try:
                    if not os.read(fd, 65536):
                        fast.remove(fd)
                except (BlockingIOError, OSError):
                    pass

    def finish(self) -> tuple[int, dict[str, int]]:
        """Drains every pipe until every client exits.

        Returns how many attached to the live run (the rest started after it
        ended and answered from the ledger) and, by kind, how many exited 1
        ("did not pass": the link closed before they saw every node settle)
        although the run passed. Raises BenchError (after killing them) if a
        client outlives the deadline or exits with anything but 0 or 1.
        """
        self._slow_stop.set()
        if self._slow_thread:
            self._slow_thread.join()
        open_pipes = {p.stdout.fileno(): p for p in self.procs if p.stdout is not None}
        deadline = time.monotonic() + CLIENT_EXIT_DEADLINE_S
        while open_pipes and time.monotonic() < deadline:
            r, _, _ = select.select(list(open_pipes), [], [], 0.5)
            for fd in r:
                try:
                    if not os.read(fd, 65536):
                        open_pipes.pop(fd).stdout.close()
                except BlockingIOError:
                    pass
        # Reaped with wait4 (not Popen.wait) for each client's CPU usage.
        pending = {p.pid: p for p in self.procs}
        while pending and time.monotonic() < deadline:
            for pid, p in list(pending.items()):
                done, status, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    p.returncode = os.waitstatus_to_exitcode(status)
                    self.cpu_s += usage.ru_utime + usage.ru_stime
                    del pending[pid]
            if pending:
                time.sleep(0.01)
        stuck = list(pending.values())
        for p in stuck:
            p.kill()
            p.wait()
        for p in self.procs:
            if p.stdout is not None and not p.stdout.closed:
                p.stdout.close()
        if stuck:
            raise BenchError(f"{len(stuck)} of {self.n} odu attach clients were still running "
                             f"{CLIENT_EXIT_DEADLINE_S:g} s after the run ended (killed)")
        bad = [(i, p.returncode) for i, p in enumerate(self.procs) if p.returncode not in (0, 1)]
        if bad:
            i, rc = bad[0]
            raise BenchError(f"{len(bad)} odu attach clients exited neither 0 nor 1, e.g. client {i} "
                             f"({self.kinds[i]}) exited {rc}:\n{tail(self.err_paths[i].read_text())}")
        idle = sum("no run in progress" in e.read_text("utf-8", "replace") for e in self.err_paths)
        short = {k: 0 for k in ("stalled", "slow", "fast")}
        for p, kind in zip(self.procs, self.kinds):
            short[kind] += p.returncode == 1
        return self.n - idle, short

    def kill(self) -> None:
        self._slow_stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def latest_record(repo: Path) -> dict:
    """The newest ledger record of the checkout (`.ci/<label>/runs/<seq>.json`)."""
    records = sorted((repo / ".ci").glob("*/runs/*.json"), key=lambda p: p.stat().st_mtime)
    if not records:
        raise BenchError(f"no ledger record under {repo / '.ci'}")
    return json.loads(records[-1].read_text())


def gated200_repo(ctx: "Ctx") -> tuple[OduRepo, Path]:
    """wide200 behind a `gate` node that waits for a file: clients attach while it waits."""
    names = [f"r{i:03d}" for i in range(200)]
    d = ctx.tmp / "gated200"
    gate = ctx.tmp / "gated200.open"
    if (d / ".git").is_dir():
        sha = git(d, "rev-parse", "HEAD", env=ctx.env)
    else:
        # The gate polls: it is the workload, the same on both sides.
        just = ci_justfile(names, {n: ["gate"] for n in names}, names)
        just += f"\ngate:\n    @while [ ! -e '{gate}' ]; do sleep 0.005; done\n"
        sha = make_repo(d, just, ctx.env)
    return OduRepo(ctx.odu, d, sha, ctx.env), gate


def scenario_clients100(ctx: "Ctx") -> Result:
    """100 clients attached before the 200 nodes start: the run's wall time from the gate."""
    return clients_scenario(ctx, gated=True)


def scenario_clients100_cold(ctx: "Ctx") -> Result:
    """100 clients started while the run goes: their start-up shares the 2 cores with it."""
    return clients_scenario(ctx, gated=False)


def clients_scenario(ctx: "Ctx", gated: bool) -> Result:
    if gated:
        repo, gate = gated200_repo(ctx)
    else:
        repo, gate = wide200_repo(ctx), None
    hwm = {0: [], CLIENTS: []}      # server VmHWM, KiB, per timed run
    cpu = {0: [], CLIENTS: []}      # server CPU s, per timed run
    live_counts: list[int] = []
    short_counts: list[dict[str, int]] = []   # clients that exited 1 on a green run, by kind
    client_cpu: list[float] = []              # the clients' own CPU, summed, per run
    spawn_cpu: list[float] = []               # the bench's CPU spawning them, per run
    # Gated: CPU from the gate opening to the end (clients: to their exit), per timed run.
    window_server = {0: [], CLIENTS: []}
    window_clients: list[float] = []
    # Gated: from the gate opening to the run's `finished_at` in its ledger record.
    recorded = {0: [], CLIENTS: []}
    servers: set[str] = set()

    def once(n_clients: int, record: bool = True) -> float:
        live = LiveRun(repo, tag=f"clients{n_clients}")
        clients = Clients(ctx, repo.repo, n_clients) if n_clients else None
        try:
            # Both sides wait alike: the clients start once the run is live.
            pid = live.wait_live()
            servers.add("odu run (the server itself)" if live.server_is_run else "odu serve")
            if gate:
                gate.unlink(missing_ok=True)
                live.wait_for_file(repo.log_dir / "gate.log")
                if clients:
                    clients.start()
                    clients.wait_attached(b'"node":"gate@')
                    clients.follow()
            sampler = Sampler(pid)
            sampler.start()
            if gate:
                server0 = proc_cpu_s(pid) or 0.0
                clients0 = sum(proc_threads_cpu_s(p.pid) for p in clients.procs) if clients else 0.0
                t_open, t_open_wall = time.perf_counter(), time.time()
                gate.touch()
                live.wait()
                elapsed = live.t0 + live.elapsed - t_open
                if record:
                    window_server[n_clients].append((proc_cpu_s(pid) or 0.0) - server0)
                    recorded[n_clients].append(latest_record(repo.repo)["finished_at"] / 1000 - t_open_wall)
            else:
                if clients:
                    clients.start()
                    clients.follow()
                elapsed = live.wait()
            sampler.stop()
            if clients:
                n_live, short = clients.finish()
                if record:
                    live_counts.append(n_live)
                    short_counts.append(short)
                    client_cpu.append(clients.cpu_s)
                    if gate:
                        window_clients.append(clients.cpu_s - clients0)
                    spawn_cpu.append(clients.spawn_cpu_s)
            peak, cpu_s = sampler.hwm_kib, sampler.cpu_s
            if live.server_is_run:
                # It exited: its own report is exact, the last sample may be late.
                peak = max(peak, live.reported_peak_kib() or 0)
                cpu_s = max(cpu_s, live.reported_cpu_s() or 0)
            if gate:
                gate.unlink(missing_ok=True)
            missing = [n for n in (f"r{i:03d}" for i in range(200))
                       if not (repo.log_dir / f"{n}.log").exists()]
            if missing:
                raise BenchError(f"odu run left no log for {len(missing)} recipes, e.g. {missing[:3]}")
            if record:
                hwm[n_clients].append(peak)
                cpu[n_clients].append(cpu_s)
            return elapsed
        finally:
            if clients:
                clients.kill()
            live.close()

    try:
        once(0, record=False)
        once(CLIENTS, record=False)
        b, o = [], []
        for i in range(ctx.runs):
            if i % 2 == 0:
                b.append(once(0))
                o.append(once(CLIENTS))
            else:
                o.append(once(CLIENTS))
                b.append(once(0))
            print(f"    run {i + 1}/{ctx.runs}: 0 clients {b[-1]:.3f} s, {CLIENTS} clients {o[-1]:.3f} s "
                  f"({live_counts[-1]} attached live, {sum(short_counts[-1].values())} missed the end), "
                  f"server peak RSS {hwm[0][-1] / KIB:.1f} / "
                  f"{hwm[CLIENTS][-1] / KIB:.1f} MiB", file=sys.stderr, flush=True)
    finally:
        stop_servers(repo.repo)
    short_total = [sum(c.values()) for c in short_counts]
    added = (max(hwm[CLIENTS]) - max(hwm[0])) / KIB
    checks = [
        Check(f"server peak RSS added by {CLIENTS} clients", added, "MiB", 20),
        Check("server peak RSS, 0 clients (max)", max(hwm[0]) / KIB, "MiB"),
        Check(f"server peak RSS, {CLIENTS} clients (max)", max(hwm[CLIENTS]) / KIB, "MiB"),
        Check("server CPU, 0 clients (median)", statistics.median(cpu[0]), "s", digits=2),
        Check(f"server CPU, {CLIENTS} clients (median)", statistics.median(cpu[CLIENTS]), "s", digits=2),
        Check(f"{CLIENTS} clients' own CPU, summed (median)", statistics.median(client_cpu), "s", digits=2),
        Check("bench CPU spawning them (median)", statistics.median(spawn_cpu), "s", digits=2),
    ]
    if gated:
        run_ratio = statistics.median(recorded[CLIENTS]) / statistics.median(recorded[0])
        checks += [
            Check("the run itself (gate to the record's finished_at), 0 clients (median)",
                  statistics.median(recorded[0]), "s", digits=3),
            Check(f"the same, {CLIENTS} clients (median)", statistics.median(recorded[CLIENTS]), "s", digits=3),
            Check("the same: ratio", run_ratio, "x", 1.05, digits=3),
            Check("server CPU after the gate, 0 clients (median)", statistics.median(window_server[0]),
                  "s", digits=3),
            Check(f"server CPU after the gate, {CLIENTS} clients (median)",
                  statistics.median(window_server[CLIENTS]), "s", digits=3),
            Check(f"{CLIENTS} clients' CPU after the gate, summed (median)",
                  statistics.median(window_clients), "s", digits=3),
        ]
    checks += [
        # Not an issue target: a correctness figure. 0 when every client saw
        # the run settle; a client that did not prints "did not pass" and
        # exits 1 although the run passed.
        Check("clients that missed the end (median/run)", statistics.median(short_total), "of 100"),
    ]
    notes = [f"server: {', '.join(sorted(servers))}; peak RSS is its VmHWM (max over runs; "
             f"median added {(statistics.median(hwm[CLIENTS]) - statistics.median(hwm[0])) / KIB:.1f} MiB)",
             f"clients: {CLIENTS // 2} stalled (4 KiB stdout pipe unread until the run ends), "
             f"{CLIENTS // 4} slow (1 KiB / 20 ms), {CLIENTS // 4} fast (drained at once); all exited every run",
             "clients that missed the end (exit 1, 'did not pass', on a green run) per run, "
             "stalled/slow/fast: " + " ".join(f"{c['stalled']}/{c['slow']}/{c['fast']}" for c in short_counts),
             f"clients that attached to the live run (the rest started after it ended): "
             f"{' '.join(map(str, live_counts))} of {CLIENTS}",
             ("timed from the gate opening to `odu run` exiting: every client had printed its "
              "snapshot (the gate node running) before the gate opened" if gated else
              "timed from `odu run` starting; the clients start once the run is live, and their "
              "start-up CPU shares the machine with the run")]
    name = "clients100" if gated else "clients100_cold"
    title = (f"wide200 with {CLIENTS} attached clients" if gated
             else f"wide200 with {CLIENTS} clients starting during the run")
    return Result(name, title, ctx.runs, "odu run, 0 clients", f"odu run, {CLIENTS} odu attach clients",
                  b, o, 1.05 if gated else None, checks, notes)


def scenario_idle_cpu(ctx: "Ctx") -> Result:
    secs = ctx.idle_seconds
    runs = min(ctx.runs, IDLE_MAX_RUNS) if ctx.runs_explicit else 1
    d = ctx.tmp / "idle_cpu"
    just = ('[metadata("ci")]\nci: idle\n\nidle:\n'
            f"    @echo idle-node-started && sleep {secs}\n")
    sha = make_repo(d, just, ctx.env)
    repo = OduRepo(ctx.odu, d, sha, ctx.env)
    log = repo.log_dir / "idle.log"
    settle_s, end_margin_s = 1.0, 1.5

    def once() -> dict[str, float]:
        live = LiveRun(repo, tag="idle")
        try:
            server = live.wait_socket()
            deadline = time.monotonic() + SOCKET_DEADLINE_S
            while b"idle-node-started" not in (_read(str(log)) or b""):
                if live.proc.poll() is not None or time.monotonic() > deadline:
                    raise live.fail(f"the idle node never started (no marker in {log})")
                time.sleep(0.05)
            started = time.monotonic()
            time.sleep(settle_s)
            runners = live.runner_pids()
            watched = {"server": server, "runner": runners[0] if runners else None}
            if not live.server_is_run:
                watched["odu run"] = live.proc.pid
            t_a = time.monotonic()
            a = {k: proc_cpu_s(p) if p else None for k, p in watched.items()}
            time.sleep(max(0.0, started + secs - end_margin_s - time.monotonic()))
            t_b = time.monotonic()
            b = {k: proc_cpu_s(p) if p else None for k, p in watched.items()}
            live.wait(secs + 60)
            out = {"window": t_b - t_a}
            for k in watched:
                if a[k] is None or b[k] is None:
                    if k == "server":
                        raise live.fail("the server exited before the idle window ended")
                    continue
                out[k] = (b[k] - a[k]) / (t_b - t_a) * 100
                out[k + " ms"] = (b[k] - a[k]) * 1000
            return out
        finally:
            live.close()

    try:
        results = []
        for i in range(runs):
            results.append(once())
            r = results[-1]
            print(f"    run {i + 1}/{runs}: window {r['window']:.1f} s, " + ", ".join(
                f"{k} {r[k]:.3f}% ({r[k + ' ms']:.0f} ms)" for k in r if k + " ms" in r),
                file=sys.stderr, flush=True)
    finally:
        stop_servers(d)

    def med(k: str) -> float | None:
        vals = [r[k] for r in results if k in r]
        return statistics.median(vals) if vals else None

    checks = [Check("server CPU while a node sleeps", med("server"), "% core", 1, digits=2)]
    for k in ("runner", "odu run"):
        if med(k) is not None:
            checks.append(Check(f"{k} CPU while a node sleeps", med(k), "% core", digits=2))
    notes = [f"node: sleep {secs}; CPU = the CPU time's delta over a {med('window'):.1f} s window "
             f"({settle_s:g} s after the node started to {end_margin_s:g} s before it ends), "
             "read from the processes' CPU clocks",
             "CPU ms in the window per run: " + "; ".join(
                 ", ".join(f"{k} {r[k + ' ms']:.0f}" for k in r if k + " ms" in r) for r in results)]
    if not ctx.runs_explicit:
        notes.append("1 run by default (pass --runs N for up to "
                     f"{IDLE_MAX_RUNS}); --idle-seconds sets the node's sleep")
    return Result("idle_cpu", f"server CPU during a {secs} s idle node", runs,
                  "", "", [], [], None, checks, notes)


# --------------------------------------------------------------------------
# the dashboard: `odu monitor` in a tmux terminal of its own, watching a run


class Dashboard:
    """`odu monitor` in a 120x40 tmux pane (a tmux server of its own), in `repo`."""

    def __init__(self, repo: OduRepo, tag: str):
        if shutil.which("tmux") is None:
            raise BenchError("tmux is needed for the dashboard scenarios (scripts/install-deps.sh)")
        # A socket of its own each time: `kill-server` returns before the previous dashboard's
        # tmux server has gone, and a new session on its socket then failed now and then.
        self.socket = str(repo.repo.parent / f"{repo.repo.name}.{tag}.{time.monotonic_ns()}.tmux")
        cmd = f"cd '{repo.repo}' && exec '{repo.odu_bin}' monitor"
        started = subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", "new-session", "-d", "-s",
                                  "main", "-x", "120", "-y", "40", cmd],
                                 env={**repo.env, "TERM": "xterm-256color"}, capture_output=True, text=True)
        if started.returncode != 0:
            raise BenchError(f"tmux could not start the dashboard ({started.returncode}): "
                             f"{started.stderr.strip() or started.stdout.strip()}")
        out = subprocess.run(["tmux", "-S", self.socket, "display-message", "-p", "-t", "main",
                              "#{pane_pid}"], check=True, capture_output=True, text=True)
        self.pid = int(out.stdout.strip())

    def screen(self) -> str:
        return subprocess.run(["tmux", "-S", self.socket, "capture-pane", "-p", "-t", "main"],
                              capture_output=True, text=True).stdout

    def wait_screen(self, needle: str, deadline_s: float = SOCKET_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while needle not in self.screen():
            if time.monotonic() > deadline:
                raise BenchError(f"the dashboard never showed {needle!r}:\n{self.screen()}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def frames_written(pid: int, action: Callable[[], None]) -> int:
    """Frames the dashboard wrote while `action` ran: its writes to stdout (one a frame), as
    strace sees them; -1 without strace."""
    if shutil.which("strace") is None:
        action()
        return -1
    with tempfile.NamedTemporaryFile(prefix="odu-bench-strace-") as trace:
        tracer = subprocess.Popen(["strace", "-f", "-e", "trace=write", "-e", "signal=none",
                                   "-o", trace.name, "-p", str(pid)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)   # strace attaches
        try:
            action()
        finally:
            tracer.terminate()
            tracer.wait()
        return sum(1 for line in open(trace.name, errors="replace") if re.search(r"write\(1,", line))


def scenario_monitor_idle(ctx: "Ctx") -> Result:
    """The dashboard's CPU while the run's only node sleeps."""
    secs = max(ctx.idle_seconds // 3, 10)
    d = ctx.tmp / "monitor_idle"
    sha = make_repo(d, f'[metadata("ci")]\nci: nap\n\nnap:\n    @echo nap-started && sleep {secs}\n', ctx.env)
    repo = OduRepo(ctx.odu, d, sha, ctx.env)
    live = LiveRun(repo, tag="monitor_idle")
    try:
        live.wait_socket()
        dash = Dashboard(repo, "idle")
        try:
            dash.wait_screen("nap-started")
            time.sleep(1.0)
            t_a, a = time.monotonic(), proc_cpu_s(dash.pid)
            time.sleep(secs - 4)
            t_b, b = time.monotonic(), proc_cpu_s(dash.pid)
            rss = proc_status_kib(dash.pid, "VmHWM") or 0
        finally:
            dash.close()
        live.wait(secs + 60)
    finally:
        live.close()
        stop_servers(d)
    cpu = (b - a) / (t_b - t_a) * 100
    return Result("monitor_idle", f"odu monitor CPU while a node sleeps {secs} s", 1, "", "", [], [], None,
                  [Check("dashboard CPU", cpu, "% core", 1, digits=2),
                   Check("dashboard peak RSS", rss / KIB, "MiB", 64)],
                  [f"CPU = utime+stime over {t_b - t_a:.1f} s of the sleep"])


def scenario_monitor_fast200(ctx: "Ctx") -> Result:
    """The dashboard's CPU and frame rate with 200 nodes changing as fast as they can."""
    d = ctx.tmp / "monitor_fast200"
    gate = ctx.tmp / "monitor_fast200.open"
    names = [f"r{i:03}" for i in range(198)]
    # The nodes wait behind a gate, opened once the dashboard shows the run: a run of 0.5 s
    # could otherwise end before a dashboard waiting with no run has found its server.
    just = ('[metadata("ci")]\nci: ' + " ".join(names) + "\n"
            + "".join(f"\n{n}: gate\n    @true\n" for n in names)
            + f"\ngate:\n    @while [ ! -e '{gate}' ]; do sleep 0.005; done\n")
    sha = make_repo(d, just, ctx.env)
    repo = OduRepo(ctx.odu, d, sha, ctx.env)
    cpus, rates, walls = [], [], []
    try:
        for _ in range(ctx.runs):
            # The dashboard waits with no run; it finds the run's server within a second.
            stop_servers(repo.repo)
            retire_trail(repo.repo)
            gate.unlink(missing_ok=True)
            dash = Dashboard(repo, "fast")
            live = None
            try:
                dash.wait_screen("no runs recorded")
                live = LiveRun(repo, extra=["--jobs", "50"], tag="monitor_fast200")
                dash.wait_screen("gate")
                box: dict[str, float] = {}

                def measured() -> None:
                    box["a"], box["t_a"] = proc_cpu_s(dash.pid), time.monotonic()
                    gate.touch()
                    live.wait()
                    box["b"], box["t_b"] = proc_cpu_s(dash.pid), time.monotonic()

                frames = frames_written(dash.pid, measured)
                wall = box["t_b"] - box["t_a"]
                walls.append(wall)
                cpus.append((box["b"] - box["a"]) / wall * 100)
                rates.append(frames / wall if frames >= 0 else float("nan"))
            finally:
                if live:
                    live.close()
                gate.unlink(missing_ok=True)
                dash.close()
    finally:
        stop_servers(d)
    return Result("monitor_fast200", "odu monitor on a 200-node run changing fast", ctx.runs, "", "", [], [],
                  None, [Check("dashboard CPU (median)", statistics.median(cpus), "% core", 15),
                         Check("frames a second (max)", max(rates), "/s", 30)],
                  [f"run wall times {', '.join(f'{w:.2f}' for w in walls)} s; frames counted as the "
                   "dashboard's writes to stdout under strace (which slows it: CPU is taken from "
                   "/proc over the same window)"])


def tty_run(repo: OduRepo, rows: int = 40, cols: int = 120) -> float:
    """One `odu run` on a terminal of its own (a pty of `rows` x `cols`), as a person starts
    it: the live matrix. Its output is read and dropped; returns the client's own CPU (its
    rusage, user + system), in seconds."""
    import fcntl
    import pty
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.chdir(repo.repo)
            os.execve(str(repo.odu_bin), [str(repo.odu_bin), "run", "--no-post", *HOST_FLAG],
                      {**repo.env, "TERM": "xterm-256color"})
        finally:
            os._exit(127)
    try:
        while True:
            try:
                if not os.read(fd, 1 << 16):
                    break
            except OSError:   # EIO: the run closed its terminal
                break
    finally:
        os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise BenchError(f"odu run on a terminal exited {os.waitstatus_to_exitcode(status)} in {repo.repo}")
    return usage.ru_utime + usage.ru_stime


# The faces' own cost must not grow with the run's size. Both redraw on a clock (the spinner,
# the running durations) as well as at every change, so over a run they cost in proportion to
# its length, which grows with its size: their CPU as a share of a core over the run is what
# stays flat when a redraw costs the same whatever the run's size. A redraw step that looks at
# every node for each node (a task's row found in the list of rows) makes it grow with N.
FACES_SIZES = (200, 2000)
FACES_GROWTH_MAX = 1.5


def scenario_faces2000(ctx: "Ctx") -> Result:
    """The live matrix (`odu run` on a terminal) and the dashboard (`odu monitor`, watching the
    same run) over a wide run of 200 and of 2,000 nodes: each face's CPU, as a share of a core
    over the run and per node."""
    shares: dict[tuple[str, int], list[float]] = {}
    per_node: dict[tuple[str, int], list[float]] = {}
    notes = []
    for n in FACES_SIZES:
        d = ctx.tmp / f"faces{n}"
        names = [f"w{i:04}" for i in range(n)]
        sha = make_repo(d, ci_justfile(names, {}, names), ctx.env)
        repo = OduRepo(ctx.odu, d, sha, ctx.env)
        try:
            for _ in range(ctx.runs):
                stop_servers(repo.repo)
                retire_trail(repo.repo)
                serve_in(repo)
                dash = Dashboard(repo, f"faces{n}")
                try:
                    dash.wait_screen("no runs recorded")
                    before, t0 = proc_cpu_s(dash.pid), time.monotonic()
                    client = tty_run(repo)
                    t_client = time.monotonic()
                    # The run's end reaches the dashboard after the client's: its counts line.
                    dash.wait_screen(f"{n + 1} ok")
                    after, t_dash = proc_cpu_s(dash.pid), time.monotonic()
                finally:
                    dash.close()
                if before is None or after is None:
                    raise BenchError(f"the dashboard of faces{n} exited before its CPU was read")
                for face, cpu, wall in (("matrix", client, t_client - t0), ("dashboard", after - before, t_dash - t0)):
                    shares.setdefault((face, n), []).append(cpu / wall * 100)
                    per_node.setdefault((face, n), []).append(cpu / n * 1000)
                notes.append(f"{n} nodes: run {t_client - t0:.2f} s; CPU: live matrix {client * 1000:.0f} ms, "
                             f"dashboard {(after - before) * 1000:.0f} ms")
        finally:
            stop_servers(d)
    small, big = FACES_SIZES
    checks = []
    for face, label in (("matrix", "live matrix (odu run on a terminal)"), ("dashboard", "dashboard (odu monitor)")):
        a, b = statistics.median(shares[(face, small)]), statistics.median(shares[(face, big)])
        checks += [Check(f"{label} at {small}", a, "% core", digits=2),
                   Check(f"{label} at {big}", b, "% core", digits=2),
                   Check(f"  {face}: at {big} over at {small}", b / a if a > 0 else float("inf"), "x",
                         FACES_GROWTH_MAX, digits=2),
                   Check(f"  {face}: CPU per node at {small}", statistics.median(per_node[(face, small)]),
                         "ms", digits=3),
                   Check(f"  {face}: CPU per node at {big}", statistics.median(per_node[(face, big)]),
                         "ms", digits=3)]
    return Result("faces2000", "the live matrix and the dashboard on wide runs of 200 and 2,000 nodes",
                  ctx.runs, "", "", [], [], None, checks, notes)


def serve_in(repo: OduRepo, deadline_s: float = SOCKET_DEADLINE_S) -> None:
    """Starts the checkout's `odu serve` (if none is up) in a session of its own, as `odu run`
    would, and returns once its socket exists."""
    socket = repo.repo / ".ci" / "odu.sock"
    if socket.exists() and find_servers(repo.repo):
        return
    subprocess.Popen([str(repo.odu_bin), "serve", "--idle-timeout", "5m", "--quiet"], cwd=repo.repo,
                     env=repo.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + deadline_s
    while not socket.exists():
        if time.monotonic() > deadline:
            raise BenchError(f"odu serve did not bind {socket} within {deadline_s:g} s")
        time.sleep(0.005)


def scenario_monitor_log256m(ctx: "Ctx") -> Result:
    """The dashboard following a node that prints 256 MiB: its RSS, and the run's wall time
    against the same run with no dashboard."""
    d = ctx.tmp / "monitor_log256m"
    line = "0123456789 abcdefghij klmnopqrstuvwxyz 0123456789 ABCDEFGHIJ KLMNOPQRST"
    sha = make_repo(d, f'[metadata("ci")]\nci: big\n\nbig:\n    @yes "{line}" | head -c {256 * MIB}\n', ctx.env)
    repo = OduRepo(ctx.odu, d, sha, ctx.env)
    alone, watched, rss = [], [], []
    try:
        for _ in range(ctx.runs):
            # Both legs run against a server already up, so neither pays its start. The
            # dashboard attaches to that server before the run and follows `big` (the
            # first running node) from its first byte.
            serve_in(repo)
            alone.append(repo.run()[0])
            stop_servers(repo.repo)
            discard_trail(repo.repo)
            serve_in(repo)
            dash = Dashboard(repo, "big")
            try:
                dash.wait_screen("no runs recorded")
                t0 = time.perf_counter()
                subprocess.run([str(repo.odu_bin), "run", "--no-post", *HOST_FLAG], cwd=repo.repo,
                               env=repo.env, capture_output=True, check=True)
                watched.append(time.perf_counter() - t0)
                rss.append(proc_status_kib(dash.pid, "VmHWM") or 0)
            finally:
                dash.close()
    finally:
        stop_servers(d)
    return Result("monitor_log256m", "odu monitor following a 256 MiB log", ctx.runs,
                  "no dashboard", "dashboard following", alone, watched, 1.05,
                  [Check("dashboard peak RSS (max)", max(rss) / KIB, "MiB", 64)])


# --------------------------------------------------------------------------
# post200: GitHub commit statuses against a fake GitHub


FAKE_TOKEN = "ghp_bench_fake_token"


class FakeGitHub:
    """A fake GitHub REST API on 127.0.0.1 for commit statuses, on its own thread.

    It checks the token, lists the statuses it holds (newest first), records
    every status post with its wall-clock time, and, when `throttle_at` is set,
    answers that post with a secondary limit (403, `retry-after: 1`) and refuses
    every request that arrives before that second has passed (counted in
    `refused_early`).
    """

    def __init__(self, throttle_at: int | None = None):
        import http.server

        fake = self
        self.lock = threading.Lock()
        self.posts = 0
        self.landed: list[tuple[float, str, str]] = []   # (time, context, state)
        self.throttle_at = throttle_at
        self.throttled_until: float | None = None
        self.throttles = 0
        self.refused_early = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def answer(self, code: int, body, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def limited(self) -> bool:
                now = time.time()
                with fake.lock:
                    if fake.throttled_until is not None and now < fake.throttled_until:
                        fake.refused_early += 1
                        left = max(1, int(fake.throttled_until - now + 0.999))
                        self.answer(403, {"message": "You have exceeded a secondary rate limit"},
                                    {"retry-after": str(left)})
                        return True
                return False

            def do_GET(self):
                if self.headers.get("authorization") != f"Bearer {FAKE_TOKEN}":
                    return self.answer(401, {"message": "Bad credentials"})
                if self.limited():
                    return
                self.answer(200, [])

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.headers.get("authorization") != f"Bearer {FAKE_TOKEN}":
                    return self.answer(401, {"message": "Bad credentials"})
                if self.limited():
                    return
                with fake.lock:
                    fake.posts += 1
                    if fake.throttle_at is not None and fake.posts == fake.throttle_at:
                        fake.throttles += 1
                        fake.throttled_until = time.time() + 1
                        throttle = True
                    else:
                        throttle = False
                        if len(body.get("description", "")) > 140 or "context" not in body:
                            return self.answer(422, {"message": "Validation Failed"})
                        fake.landed.append((time.time(), body["context"], body["state"]))
                if throttle:
                    return self.answer(403, {"message": "You have exceeded a secondary rate limit"},
                                       {"retry-after": "1"})
                self.answer(201, {"state": body["state"], "context": body["context"]})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def scenario_post200(ctx: "Ctx") -> Result:
    """wide200 posting its statuses to a fake GitHub.

    A localhost lane must be this machine's platform, so the 200 nodes run on
    the one localhost lane (201 contexts with `_ci-setup`).  Pacing below
    GitHub's 80/min is lifted (`ODU_GITHUB_PACE=off`, honoured only with
    `ODU_GITHUB_API`): the figures are odu's own costs, not GitHub's quota.
    """
    names = [f"r{i:03d}" for i in range(200)]
    d = ctx.tmp / "post200"
    sha = make_repo(d, ci_justfile(names, {}, names), ctx.env)
    git(d, "remote", "add", "origin", "https://github.com/acme/app.git", env=ctx.env)

    def one(throttle_at: int | None) -> dict:
        fake = FakeGitHub(throttle_at)
        stop_servers(d)
        retire_trail(d)
        env = dict(ctx.env, GH_TOKEN=FAKE_TOKEN, ODU_GITHUB_API=fake.base, ODU_GITHUB_PACE="off")
        env.pop("GITHUB_TOKEN", None)
        try:
            elapsed, _ = timed([str(ctx.odu), "run", *HOST_FLAG, "--post-wait", "120s"], cwd=d, env=env,
                               what="odu run (posting)")
            record = json.loads((d / ".ci" / sha[:7] / "runs" / "1.json").read_text())
        finally:
            stop_servers(d)
            fake.close()
        last_end = max((n["started_at"] + (n.get("duration_ms") or 0)) / 1000
                       for n in record["nodes"] if n.get("started_at"))
        by_ctx: dict[str, list[str]] = {}
        for _, c, state in fake.landed:
            by_ctx.setdefault(c, []).append(state)
        if len(by_ctx) != len(names) + 1 or record["unposted"]:
            raise BenchError(f"{len(by_ctx)} contexts landed, unposted {record['unposted'][:3]}")
        return {
            "elapsed": elapsed,
            "posts": fake.posts,
            "contexts": len(by_ctx),
            "one_post": sum(1 for v in by_ctx.values() if v == ["success"]),
            "over_two": sum(1 for v in by_ctx.values() if len(v) > 2),
            "tail_s": max(t for t, _, _ in fake.landed) - last_end,
            "refused_early": fake.refused_early,
            "throttles": fake.throttles,
        }

    plain = [one(None) for _ in range(ctx.runs)]
    throttled = one(100)
    med = lambda k: statistics.median(r[k] for r in plain)  # noqa: E731
    checks = [
        Check("status posts per context", med("posts") / med("contexts"), "", 2, digits=2),
        Check("contexts posted more than pending + terminal", max(r["over_two"] for r in plain), "", 0, digits=0),
        Check("last node end to last status landing", med("tail_s") * 1000, "ms", 1000, digits=0),
        Check("requests refused after the first throttle", throttled["refused_early"], "", 0, digits=0),
        Check("last status landing with one throttle (retry-after 1)", throttled["tail_s"] * 1000, "ms", digits=0),
    ]
    notes = [f"posts per run: {[r['posts'] for r in plain]}; contexts whose pending was dropped "
             f"(one post): {[r['one_post'] for r in plain]}; odu run wall: "
             f"{[round(r['elapsed'], 2) for r in plain]} s",
             "one localhost lane (a localhost lane must be this machine's platform): 201 contexts"]
    return Result("post200", "wide200 posting GitHub statuses to a fake", ctx.runs,
                  "", "", [], [], None, checks, notes)


SCENARIOS: dict[str, Callable[["Ctx"], Result]] = {
    "wide200": scenario_wide200,
    "chain200": scenario_chain200,
    "wide200_warm": scenario_wide200_warm,
    "chain200_warm": scenario_chain200_warm,
    "log1g": scenario_log1g,
    "dump1000": scenario_dump1000,
    "wide1000": scenario_wide1000,
    "wide2000": scenario_wide2000,
    "wide2000_jobs2": scenario_wide2000_jobs2,
    "chain1000": scenario_chain1000,
    "chain2000": scenario_chain2000,
    "chain200_in1000": scenario_chain200_in1000,
    "chain200_sleep10ms": scenario_chain200_sleep10ms,
    "noisy": scenario_noisy,
    "startup_warm": scenario_startup_warm,
    "startup_cold": scenario_startup_cold,
    "startup_history": scenario_startup_history,
    "logs_latency": scenario_logs_latency,
    "status_latency": scenario_status_latency,
    "clients100": scenario_clients100,
    "clients100_cold": scenario_clients100_cold,
    "idle_cpu": scenario_idle_cpu,
    "monitor_idle": scenario_monitor_idle,
    "monitor_fast200": scenario_monitor_fast200,
    "monitor_log256m": scenario_monitor_log256m,
    "faces2000": scenario_faces2000,
    "post200": scenario_post200,
}


# --------------------------------------------------------------------------
# main


@dataclass
class Ctx:
    odu: Path
    runs: int
    tmp: Path
    env: dict
    runs_explicit: bool = False   # --runs given (idle_cpu runs once unless it is)
    idle_seconds: int = IDLE_SECONDS


def clean_env(home: Path) -> dict:
    env = dict(os.environ)
    # odu refuses a nested run when ODU_RUN is set without explicit hosts, and
    # ODU_HOSTS would override the lane; a temp HOME hides any user hosts file.
    for var in ("ODU_RUN", "ODU_HOSTS"):
        env.pop(var, None)
    env["HOME"] = str(home)
    env["ODU_REPORT_PEAK_RSS"] = "1"
    return env


def preflight(odu: Path) -> str:
    """Check the tools are there; return a description of the `just` in use."""
    for tool in ("just", "git"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: `{tool}` is not on PATH; it is needed to run the fixtures")
    if not (odu.is_file() and os.access(odu, os.X_OK)):
        sys.exit(f"bench: odu binary not found at {odu}; build it with cargo build --release")
    runner = odu.parent / "odu-runner"
    if not runner.is_file():
        sys.exit(f"bench: {runner} not found next to odu; build it with cargo build --release")
    # A wrapper script (e.g. a pyenv shim) adds tens of ms per `just` call and
    # odu makes a few more calls than the baselines (`just --version`), so
    # say which `just` the figures were taken with.
    just = shutil.which("just")
    real = Path(just).resolve()
    if not is_elf(real):
        sys.exit(f"bench: {just} ({real}) is not a binary (a wrapper script or shim?): its start-up "
                 "would be in every baseline; put a real `just` binary first on PATH")
    return (f"baselines run {just} ({real}); odu's runner names the one its nodes run in every "
            "setup log, and each run fails unless it is the same binary")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--odu", type=Path, default=REPO_ROOT / "target" / "release" / "odu",
                    help="odu binary (default: target/release/odu of this repo)")
    ap.add_argument("--runs", type=int, default=None,
                    help=f"timed runs per side (default 5; log1g at most {LOG1G_MAX_RUNS}, "
                         f"idle_cpu 1 unless given, at most {IDLE_MAX_RUNS})")
    ap.add_argument("--only", choices=list(SCENARIOS), action="append",
                    help="run only this scenario (repeat for several, run in the order given)")
    ap.add_argument("--idle-seconds", type=int, default=IDLE_SECONDS,
                    help=f"idle_cpu: how long its node sleeps (default {IDLE_SECONDS}, >= 5)")
    ap.add_argument("--no-settle", action="store_true",
                    help="start at once, without first waiting (at most 6 min) for the file system "
                         "to rest from recent removals")
    args = ap.parse_args()
    runs_explicit = args.runs is not None
    if not runs_explicit:
        args.runs = 5
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if args.idle_seconds < 5:
        ap.error("--idle-seconds must be >= 5")
    odu = args.odu if args.odu.is_absolute() else (Path.cwd() / args.odu)
    odu = odu.resolve()
    just_desc = preflight(odu)

    names = args.only if args.only else list(SCENARIOS)
    results: list[Result] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="odu-bench-") as tmp_s:
        tmp = Path(tmp_s)
        home = tmp / "home"
        home.mkdir()
        ctx = Ctx(odu, args.runs, tmp, clean_env(home), runs_explicit, args.idle_seconds)
        print(f"odu bench: {odu}, {args.runs} runs, lane {PLATFORM}=localhost, "
              f"{os.cpu_count()} cpus, fixtures in {tmp}\n  just: {just_desc}", file=sys.stderr)
        if not args.no_settle:
            settle_fs(tmp)
        for name in names:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            try:
                probe = fs_state(tmp)
                results.append(SCENARIOS[name](ctx))
                results[-1].fs = probe
            except BenchError as e:
                failed[name] = str(e)
                print(f"  {name} FAILED: {e}", file=sys.stderr)
            except Exception as e:  # a bug in one scenario must not lose the others' figures
                traceback.print_exc(file=sys.stderr)
                failed[name] = f"{type(e).__name__}: {e}"
                print(f"  {name} CRASHED: {failed[name]}", file=sys.stderr)
            finally:
                # An `odu serve` outlives its run: none may serve into the
                # next scenario (or outlive the bench).
                stop_servers(tmp, under=True)

    for r in results:
        print_table(r)
    for name, err in failed.items():
        print(f"\n== {name}: ERROR ==\n  {err.splitlines()[0]}")
    print()
    for r in results:
        print("BENCH " + json.dumps(summary(r), sort_keys=False))
    for name, err in failed.items():
        print("BENCH " + json.dumps({"scenario": name, "status": "ERROR", "error": err.splitlines()[0]}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
