#!/usr/bin/env bash
# Installs what odu's pipeline and its tests need on a fresh machine: git, and just >= 1.57.
# Safe to run repeatedly: it only installs what is missing or too old.
set -euo pipefail

need_just() {
  command -v just >/dev/null 2>&1 || return 0
  local version
  version=$(just --version | awk '{print $2}')
  local major=${version%%.*} rest=${version#*.}
  local minor=${rest%%.*}
  [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 57 ]; }
}

if ! command -v git >/dev/null 2>&1; then
  echo "install-deps: installing git" >&2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq git >/dev/null
  else
    echo "install-deps: git is missing: install it with your package manager" >&2
    exit 1
  fi
fi

if need_just; then
  echo "install-deps: installing just >= 1.57" >&2
  if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
    "$(command -v pip3 || command -v pip)" install --quiet --disable-pip-version-check 'rust-just>=1.57' >&2 ||
      cargo install --locked just >&2
  else
    cargo install --locked just >&2
  fi
  hash -r
fi
# A version-manager shim (pyenv installs one for rust-just) costs tens of milliseconds per call,
# and every node of a run calls just: put the real binary first on PATH, beside cargo.
just_path=$(command -v just)
if head -c 2 "$just_path" | grep -q '#!' && command -v python3 >/dev/null 2>&1; then
  real=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/just
  cargo_dir=$(dirname "$(command -v cargo 2>/dev/null || echo /usr/local/bin/cargo)")
  if [ -x "$real" ] && [ -w "$cargo_dir" ] && ! head -c 2 "$real" | grep -q '#!'; then
    ln -sf "$real" "$cargo_dir/just"
    hash -r
  fi
fi
echo "install-deps: $(just --version) at $(command -v just)" >&2
