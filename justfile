# odu's own recipes. The CI pipeline lives in ci/mod.just; `odu run` finds its
# [metadata("ci")] root there.

mod ci

# Run odu's own CI pipeline with odu, on a localhost lane.
dogfood:
    cargo build --release
    ./target/release/odu run --no-post

# The whole test suite (what CI runs).
test:
    bash scripts/test.sh

# Benchmarks: ratios against baselines measured in the same run (bench/run.py, then the
# remote lanes over ssh, which need root). Arguments go to bench/run.py.
bench *args: (bench-local args) bench-remote

# The localhost-lane benchmarks (bench/run.py).
bench-local *args:
    cargo build --release
    python3 bench/run.py {{args}}

# Remote lanes over ssh against a network-namespace host (root only): wide200, 256 MiB log,
# warm lane setup. `just bench-remote --runs 3 --only setup_ssh`
bench-remote *args:
    cargo bench --bench remote -- {{args}}
