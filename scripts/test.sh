#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs every test
# of the workspace (unit, protocol and binary-level) with nextest when present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The statically linked runner odu uploads to hosts: its test starts it in an empty root.
bash scripts/build-runner.sh >/dev/null
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast
else
  exec cargo test --workspace --no-fail-fast
fi
