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

# Benchmarks: ratios against baselines measured in the same run.
bench *args:
    cargo build --release
    python3 bench/run.py {{args}}
