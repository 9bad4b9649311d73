#!/usr/bin/env bash
# Installs what odu's pipeline and its tests need on a fresh machine: git, just >= 1.57, and the
# ssh test lab's tools (ssh, ssh-keygen, sshd, ip), man, nix, tmux for the dashboard's tests, and
# xmllint for the JUnit XML tests.
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

apt_updated=
# apt_install PACKAGE: installs a Debian package as root (apt-get update runs at most once).
apt_install() {
  echo "install-deps: installing $1" >&2
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if [ -z "$apt_updated" ]; then
      apt-get update -qq
      apt_updated=1
    fi
    local out
    out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" 2>&1) || {
      echo "$out" >&2
      exit 1
    }
  else
    echo "install-deps: $1 is missing: install it with your package manager" >&2
    exit 1
  fi
}

command -v git >/dev/null 2>&1 || apt_install git
# The ssh test lab (tests/it/lab.rs): a user-level sshd on loopback and hosts in network namespaces.
{ command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; } || apt_install openssh-client
test -x /usr/sbin/sshd || apt_install openssh-server
command -v ip >/dev/null 2>&1 || apt_install iproute2
# `odu man`'s test renders the page with `man -l` (a page file renders even where the image's
# dpkg config excludes /usr/share/man).
command -v man >/dev/null 2>&1 || apt_install man-db
# The flake's test evaluates flake.nix against a stub nixpkgs (single-user, its own store).
command -v nix >/dev/null 2>&1 || apt_install nix-bin
# The dashboard's end-to-end tests (tests/it/monitor.rs) drive it in a real terminal.
command -v tmux >/dev/null 2>&1 || apt_install tmux
# The JUnit XML tests (tests/it/junit.rs) validate odu's reports against a schema with xmllint.
command -v xmllint >/dev/null 2>&1 || apt_install libxml2-utils

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
