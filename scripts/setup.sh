#!/usr/bin/env bash
# Installs what Cutover, its lab and its tests need, and nothing that is already there:
# the Debian packages of the lab's servers (as root; otherwise it prints the apt-get line)
# and a .venv with the pinned Python packages of requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(postgresql pgbouncer haproxy nginx-light prometheus pgcopydb systemd python3-venv)
# A package counts as present when dpkg has it installed; python3-venv only matters for the
# system python, so a python with a working venv module passes it.
missing=()
for p in "${packages[@]}"; do
  if [ "$p" = python3-venv ] && python3 -c 'import ensurepip, venv' 2>/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  # Keep apt from starting the packages' own system services: the lab runs its own.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  trap '[ -n "$guard" ] && rm -f "$guard"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Distribution packages may have started default instances of the servers before the
# guard existed (not on a policy-rc.d system); the lab never uses them.

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  echo "preparing .venv (pinned: requirements.lock)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # Every file pip fetches must match a hash in the lock, the build backend's included: the
  # project builds without isolation, so nothing unpinned is downloaded to build it.
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$stamp"
fi
