#!/usr/bin/env bash
# Builds the odu-runner that odu uploads to remote hosts: statically linked (glibc's crt-static
# on a gnu target, or musl), stripped, with the small `runner` profile, so it starts on any
# Linux host of its architecture whatever C library the host has. Prints its path.
#
#   bash scripts/build-runner.sh                 # for this machine's architecture
#   ODU_RUNNER_TARGET=x86_64-unknown-linux-musl bash scripts/build-runner.sh
#
# Install it beside odu (as odu-runner), or point ODU_RUNNER at it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${ODU_RUNNER_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}
# An explicit --target keeps the static flag off build scripts and proc-macros, which cannot be
# linked statically.
cargo build --locked --quiet --profile runner --bin odu-runner --target "$target" \
  --config "target.$target.rustflags = ['-C', 'target-feature=+crt-static']" >&2
echo "${CARGO_TARGET_DIR:-$PWD/target}/$target/runner/odu-runner"
