#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs every test
# of the workspace (unit, protocol and binary-level) with nextest when present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast
else
  exec cargo test --workspace --no-fail-fast
fi
