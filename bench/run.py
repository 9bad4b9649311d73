#!/usr/bin/env python3
"""Benchmark harness for odu: how much does odu cost on top of plain `just`?

Each scenario builds its fixture in a temp dir, then times a baseline (the
cheapest way to get the same work done with `just` alone) and odu, N times each,
interleaved, and reports medians, the ratio odu/baseline and PASS/MISS against
a target.  The script exits 0 on MISS (it is a measurement, not a test) and
non-zero only when something failed to run or produced wrong output.

Usage: python3 bench/run.py [--odu PATH] [--runs N] [--only NAME]
Python 3 stdlib only; needs `just` and `git` on PATH and a release build of odu.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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

RSS_COORD_RE = re.compile(r"odu: peak rss (\d+) KiB")
RSS_RUNNER_RE = re.compile(r"odu-runner: peak rss (\d+) KiB")


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
    proc = subprocess.run(argv, cwd=cwd, env=env, input=stdin_data,
                          stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(
            f"{what} exited {proc.returncode}: {' '.join(argv)}\n"
            f"--- stderr (tail) ---\n{tail(proc.stderr)}\n"
            f"--- stdout (tail) ---\n{tail(proc.stdout) if stdout is subprocess.PIPE else ''}")
    return elapsed, proc


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
    """Create a git repo holding `justfile`, commit it, return HEAD's sha.

    odu's strict mode refuses a dirty tree and runs a snapshot of HEAD, so
    everything is committed and `.ci/` (where odu writes logs) is ignored.
    """
    path.mkdir(parents=True)
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

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_times)

    @property
    def odu_median(self) -> float:
        return statistics.median(self.odu_times)

    @property
    def ratio(self) -> float:
        return self.odu_median / self.baseline_median

    @property
    def ratio_passed(self) -> bool | None:
        return None if self.target_ratio is None else self.ratio <= self.target_ratio

    @property
    def passed(self) -> bool:
        return self.ratio_passed is not False and all(c.passed is not False for c in self.checks)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def print_table(r: Result) -> None:
    print(f"\n== {r.name}: {r.title} (median of {r.runs} runs) ==")
    w = 44
    print(f"  {'baseline: ' + r.baseline_label:<{w}} {r.baseline_median:9.3f} s")
    print(f"  {'odu:      ' + r.odu_label:<{w}} {r.odu_median:9.3f} s")
    tgt = "" if r.target_ratio is None else f"target <= {r.target_ratio:g}"
    print(f"  {'ratio odu/baseline':<{w}} {r.ratio:9.3f} {'':<6} {tgt:<20} {verdict(r.ratio_passed)}".rstrip())
    for c in r.checks:
        tgt = "" if c.target is None else f"target {'>=' if c.higher_is_better else '<='} {c.target:g} {c.unit}"
        print(f"  {c.label:<{w}} {c.value:9.1f} {c.unit:<6} {tgt:<20} {verdict(c.passed)}".rstrip())
    for n in r.notes:
        print(f"  note: {n}")
    print(f"  runs (s): baseline {' '.join(f'{t:.3f}' for t in r.baseline_times)}"
          f" | odu {' '.join(f'{t:.3f}' for t in r.odu_times)}")


def summary(r: Result) -> dict:
    return {
        "scenario": r.name,
        "status": "PASS" if r.passed else "MISS",
        "runs": r.runs,
        "baseline_median_s": round(r.baseline_median, 4),
        "odu_median_s": round(r.odu_median, 4),
        "ratio": round(r.ratio, 4),
        "target_ratio": r.target_ratio,
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


class OduRepo:
    """A committed fixture repo plus the bits to run `odu run` in it."""

    def __init__(self, odu_bin: Path, repo: Path, sha: str, env: dict):
        self.odu_bin, self.repo, self.sha, self.env = odu_bin, repo, sha, env
        self.log_dir = repo / ".ci" / sha[:7] / PLATFORM
        self.coord_rss: list[int] = []   # KiB, one per odu run (warm-up included)
        self.runner_rss: list[int] = []

    def run(self, extra: list[str] = ()) -> tuple[float, subprocess.CompletedProcess]:
        # Start every run from an empty .ci/ so runs are alike (no growing run
        # history) and log1g does not keep 1 GiB logs around.
        shutil.rmtree(self.repo / ".ci", ignore_errors=True)
        elapsed, proc = timed([str(self.odu_bin), "run", "--no-post", *HOST_FLAG, *extra],
                              cwd=self.repo, env=self.env, what="odu run")
        self.coord_rss.append(self._parse(RSS_COORD_RE, proc.stderr.decode("utf-8", "replace"),
                                          "odu stderr"))
        setup_log = self.log_dir / "_ci-setup.log"
        if not setup_log.is_file():
            raise BenchError(f"odu run succeeded but {setup_log} is missing")
        self.runner_rss.append(self._parse(RSS_RUNNER_RE, setup_log.read_text("utf-8", "replace"),
                                           str(setup_log)))
        return elapsed, proc

    @staticmethod
    def _parse(rx: re.Pattern, text: str, where: str) -> int:
        m = rx.search(text)
        if not m:
            raise BenchError(f"no '{rx.pattern}' line in {where} (is ODU_REPORT_PEAK_RSS honoured?)\n"
                             f"{tail(text)}")
        return int(m.group(1))

    def rss_checks(self, coord_target_mib: float | None, runner_target_mib: float | None) -> list[Check]:
        # Peak RSS is reported as the max over all runs: a peak is a bound, the
        # worst run is the one that matters.
        return [Check("coordinator peak RSS (max)", max(self.coord_rss) / KIB, "MiB", coord_target_mib),
                Check("runner peak RSS (max)", max(self.runner_rss) / KIB, "MiB", runner_target_mib)]


# --------------------------------------------------------------------------
# scenarios


def ci_justfile(names: list[str], deps: dict[str, list[str]], root_deps: list[str]) -> str:
    lines = ['[metadata("ci")]', f"ci: {' '.join(root_deps)}", ""]
    for n in names:
        lines += [f"{n}: {' '.join(deps.get(n, []))}".rstrip(), "    @true", ""]
    return "\n".join(lines)


def scenario_wide200(ctx: "Ctx") -> Result:
    names = [f"r{i:03d}" for i in range(200)]
    sha = make_repo(ctx.tmp / "wide200", ci_justfile(names, {}, names), ctx.env)
    repo = OduRepo(ctx.odu, ctx.tmp / "wide200", sha, ctx.env)
    feed = ("\n".join(names) + "\n").encode()

    def baseline() -> float:
        # Same as: printf '%s\n' r000..r199 | xargs -P2 -n1 just --no-deps
        return timed(["xargs", "-P2", "-n1", "just", "--no-deps"], cwd=repo.repo, env=ctx.env,
                     stdin_data=feed, what="baseline xargs just")[0]

    def odu() -> float:
        elapsed, _ = repo.run()
        missing = [n for n in names if not (repo.log_dir / f"{n}.log").exists()]
        if missing:
            raise BenchError(f"odu run left no log for {len(missing)} recipes, e.g. {missing[:3]}")
        return elapsed

    b, o = measure(baseline, odu, ctx.runs)
    return Result("wide200", "200 independent trivial recipes", ctx.runs,
                  "xargs -P2 -n1 just --no-deps", "odu run (all 200 at once)", b, o, 1.15,
                  repo.rss_checks(30, None))


def scenario_chain200(ctx: "Ctx") -> Result:
    names = [f"r{i:03d}" for i in range(200)]
    deps = {n: [names[i - 1]] for i, n in enumerate(names) if i}
    # Root lists only the tip: the closure is the whole chain either way.
    sha = make_repo(ctx.tmp / "chain200", ci_justfile(names, deps, [names[-1]]), ctx.env)
    repo = OduRepo(ctx.odu, ctx.tmp / "chain200", sha, ctx.env)
    # One shell loop: the cheapest serial execution of the same 200 nodes.
    loop = f"for r in {' '.join(names)}; do just --no-deps \"$r\" || exit 1; done"

    def baseline() -> float:
        return timed(["sh", "-c", loop], cwd=repo.repo, env=ctx.env, what="baseline shell loop")[0]

    def odu() -> float:
        return repo.run()[0]

    b, o = measure(baseline, odu, ctx.runs)
    return Result("chain200", "200 recipes in a dependency chain", ctx.runs,
                  "sh loop of just --no-deps", "odu run", b, o, 1.15, repo.rss_checks(None, None))


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

    b, o = measure(baseline, odu, ctx.runs)
    return Result("dump1000", "plan of a 1000-recipe justfile", ctx.runs,
                  "just --dump --dump-format json", "odu dump", b, o, 1.5)


SCENARIOS: dict[str, Callable[["Ctx"], Result]] = {
    "wide200": scenario_wide200,
    "chain200": scenario_chain200,
    "log1g": scenario_log1g,
    "dump1000": scenario_dump1000,
}


# --------------------------------------------------------------------------
# main


@dataclass
class Ctx:
    odu: Path
    runs: int
    tmp: Path
    env: dict


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
    with open(just, "rb") as f:
        wrapper = f.read(2) == b"#!"
    return f"{just}{' (a wrapper script: its startup cost is in every figure)' if wrapper else ''}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--odu", type=Path, default=REPO_ROOT / "target" / "release" / "odu",
                    help="odu binary (default: target/release/odu of this repo)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per side (default 5)")
    ap.add_argument("--only", choices=list(SCENARIOS), help="run only this scenario")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    odu = args.odu if args.odu.is_absolute() else (Path.cwd() / args.odu)
    odu = odu.resolve()
    just_desc = preflight(odu)

    names = [args.only] if args.only else list(SCENARIOS)
    results: list[Result] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="odu-bench-") as tmp_s:
        tmp = Path(tmp_s)
        home = tmp / "home"
        home.mkdir()
        ctx = Ctx(odu, args.runs, tmp, clean_env(home))
        print(f"odu bench: {odu}, {args.runs} runs, lane {PLATFORM}=localhost, "
              f"{os.cpu_count()} cpus, fixtures in {tmp}\n  just: {just_desc}", file=sys.stderr)
        for name in names:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            try:
                results.append(SCENARIOS[name](ctx))
            except BenchError as e:
                failed[name] = str(e)
                print(f"  {name} FAILED: {e}", file=sys.stderr)

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
