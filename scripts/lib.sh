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

# --- the native decoder (scripts/build_native.sh) ---------------------------------------

# native_compiler: the C compiler named by CC (default cc), as a path; fails when there is none.
native_compiler() {
  command -v "${CC:-cc}" 2>/dev/null
}

# native_current LIBRARY SHA256: LIBRARY loads and its vp8l_source_id() is SHA256, the check
# app/engine/vp8l.py makes before using it (PYTHON, default python3, loads it).
native_current() {
  [[ -f "$1" ]] || return 1
  "${PYTHON:-python3}" - "$1" "$2" 2>/dev/null <<'PY'
import ctypes, sys
try:
    source_id = ctypes.CDLL(sys.argv[1]).vp8l_source_id
except (OSError, AttributeError):
    sys.exit(1)
source_id.restype = ctypes.c_char_p
sys.exit(source_id() != sys.argv[2].encode())
PY
}

# --- where the tests run: the host's answers, as key=value lines ------------------------
# Every function takes a filesystem root (default /), so the tests point them at fixture
# trees shaped like GitHub's ubuntu-24.04 runner, Debian 12, and a hybrid-cgroup box.

# env_os FSROOT: ID from os-release (debian, ubuntu, ...).
env_os() {
  local id
  id="$(sed -n 's/^ID=//p' "${1:-/}/etc/os-release" 2>/dev/null | tr -d '"' | head -n1)"
  echo "${id:-unknown}"
}

# env_cgroups FSROOT: "mode=v2 systemd=yes backend=systemd" (tests/support/cgroups.py decides).
env_cgroups() {
  python3 "$ROOT/tests/support/cgroups.py" detect --root "${1:-/}"
}

# env_debian_mirror FSROOT: the Debian mirror debootstrap uses for the test machine.
env_debian_mirror() {
  (cd "$ROOT" && python3 -m tests.support.machine mirror "${1:-/}")
}

# env_browser FSROOT: $CHROMIUM, else the first chromium, chromium-browser, google-chrome on
# PATH (GitHub's runner has Chrome at /usr/bin/chromium and google-chrome; no dpkg chromium).
env_browser() {
  local fsroot="${1:-/}" name dir dirs
  fsroot="${fsroot%/}"
  if [[ -n "${CHROMIUM:-}" ]]; then
    echo "$CHROMIUM"
    return 0
  fi
  IFS=: read -ra dirs <<<"$PATH"
  for name in chromium chromium-browser google-chrome; do
    for dir in "${dirs[@]}"; do
      if [[ -f "$fsroot$dir/$name" && -x "$fsroot$dir/$name" ]]; then
        echo "$dir/$name"
        return 0
      fi
    done
  done
  return 1
}

# env_git_depth DIR: how DIR was cloned: full, shallow, or none (not a git checkout).
# Only reported: the tests make their own history and need neither.
env_git_depth() {
  if ! git -C "$1" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    echo none
  elif [[ "$(git -C "$1" rev-parse --is-shallow-repository)" == true ]]; then
    echo shallow
  else
    echo full
  fi
}

# detect_environment FSROOT CHECKOUT: what scripts/test.sh acts on, one key=value a line.
#   apt_chromium=yes  only where no browser is there yet and Debian's chromium package
#                     exists (Debian); Ubuntu's "chromium" is a snap transitional package.
detect_environment() {
  local fsroot="${1:-/}" checkout="${2:-$ROOT}" os cg browser word
  os="$(env_os "$fsroot")"
  cg="$(env_cgroups "$fsroot")"
  echo "os=$os"
  for word in $cg; do echo "cgroup_$word"; done
  echo "debian_mirror=$(env_debian_mirror "$fsroot")"
  browser="$(env_browser "$fsroot" || true)"
  echo "browser=${browser:-none}"
  if [[ -z "$browser" && "$os" == debian ]]; then echo "apt_chromium=yes"; else echo "apt_chromium=no"; fi
  echo "git=$(env_git_depth "$checkout")"
}
