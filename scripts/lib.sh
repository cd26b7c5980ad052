#!/usr/bin/env bash
# Shared helpers for scripts/*.sh: find interpreters and build venvs idempotently.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The service runs on the VM's python3 (Debian 12: 3.11); any 3.11+ works.
find_service_python() {
  local candidate
  for candidate in python3.11 python3 python3.12 python3.13; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  die "Python >= 3.11 is required to run the service"
}

# ansible-core 2.21 needs Python >= 3.12 on the controller.
find_controller_python() {
  local candidate
  for candidate in python3.13 python3.12 /root/.pyenv/versions/3.13.0/bin/python3.13 \
    /root/.pyenv/versions/3.12.1/bin/python3.12; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      if [[ "$candidate" == /* ]]; then echo "$candidate"; else command -v "$candidate"; fi
      return 0
    fi
  done
  die "Ansible needs Python >= 3.12 on the controller (install python3.12 or python3.13)"
}

# venv_current DIR REQUIREMENTS... : DIR was built from exactly these requirement files.
venv_current() {
  local dir="$1"; shift
  local stamp="$dir/.requirements.sha256" want
  want="$(cat "$@" | sha256sum | cut -d' ' -f1)"
  [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]
}

# ensure_venv DIR PYTHON REQUIREMENTS... : (re)build DIR when the requirement files changed.
ensure_venv() {
  local dir="$1" python="$2"; shift 2
  local stamp="$dir/.requirements.sha256" want
  if venv_current "$dir" "$@"; then return 0; fi
  want="$(cat "$@" | sha256sum | cut -d' ' -f1)"
  log "building $dir with $python"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --upgrade pip >/dev/null
  local args=()
  local req
  for req in "$@"; do args+=(-r "$req"); done
  "$dir/bin/pip" install --quiet "${args[@]}"
  echo "$want" >"$stamp"
}
