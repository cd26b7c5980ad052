#!/usr/bin/env bash
# The one test command: installs everything the tests need (apt packages, the
# service venv, the ansible controller venv), lints, then runs every suite.
#   scripts/test.sh                 # everything (what CI runs)
#   scripts/test.sh unit service    # a subset, for quick local loops
# Suites: lint unit service web load provision deploy cd
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ALL_SUITES=(lint unit service web load provision deploy cd)
if [[ $# -gt 0 ]]; then SUITES=("$@"); else SUITES=("${ALL_SUITES[@]}"); fi

APT_PACKAGES=(
  poppler-utils qpdf shellcheck curl rsync openssh-client openssh-server
  debootstrap systemd-container iproute2 acl
  debian-archive-keyring
  gcc binutils
)

# What this host is (scripts/lib.sh: detect_environment), and what follows from it.
declare -A HOST_ENV=()
while IFS='=' read -r key value; do HOST_ENV[$key]="$value"; done < <(detect_environment / "$ROOT")
log "environment: ${HOST_ENV[os]:-?}, cgroup ${HOST_ENV[cgroup_mode]:-?} \
(backend ${HOST_ENV[cgroup_backend]:-none}), browser ${HOST_ENV[browser]:-none}, \
debootstrap mirror ${HOST_ENV[debian_mirror]:-?}, ${HOST_ENV[git]:-?} clone"
wants() { local s; for s in "${SUITES[@]}"; do [[ "$s" == "$1" ]] && return 0; done; return 1; }
# A browser that is already there is used as it is; Debian's chromium only where it exists.
if wants web && [[ "${HOST_ENV[apt_chromium]:-no}" == yes ]]; then APT_PACKAGES+=(chromium); fi

install_os_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "apt-get install ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then die "root (or sudo) is needed to install: ${missing[*]}"; fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_os_packages
if wants web; then
  if CHROMIUM="$(env_browser /)"; then
    export CHROMIUM
  else
    log "no browser for the web suite: set CHROMIUM, or install chromium or google-chrome"
  fi
fi
if [[ "${HOST_ENV[cgroup_backend]:-none}" == none ]] && { wants load || wants deploy; }; then
  log "no cgroup controllers to limit processes with: the load and deploy suites will fail"
fi
ensure_venv "$ROOT/.venv" "$(find_service_python)" config/requirements.txt config/requirements-dev.txt
ensure_venv "$ROOT/.venv-ansible" "$(find_controller_python)" config/requirements-ansible.txt
export PATH="$ROOT/.venv/bin:$ROOT/.venv-ansible/bin:$PATH"
export ANSIBLE_VENV="$ROOT/.venv-ansible"
# The streaming VP8L decoder, before any suite: the tests use it, so a failed build fails the run.
PYTHON="$ROOT/.venv/bin/python" scripts/build_native.sh || die "scripts/build_native.sh failed"

declare -A RESULT=()
failed=0

run_lint() {
  ruff check app tests scripts &&
    ruff format --check app tests scripts &&
    shellcheck scripts/*.sh .ci/run &&
    yamllint -s . &&
    (cd "$ROOT" && ansible-lint --profile production ansible/) &&
    if compgen -G ".github/workflows/*.yml" >/dev/null; then actionlint .github/workflows/*.yml; fi
}

TOTAL_PASSED=0
TOTAL_FAILED=0

run_pytest_suite() {
  local suite="$1" log rc=0 passed failed errors
  [[ -d "tests/$suite" ]] || { echo "no tests/$suite"; return 1; }
  log="$(mktemp)"
  local args=()
  # One test file per worker, each with its own fake GCP (tests/provision/fakegcp/README.md).
  if [[ "$suite" == provision ]]; then args=(-n 2 --dist loadfile --durations=15); fi
  python -m pytest -p no:cacheprovider "${args[@]}" "tests/$suite" 2>&1 | tee "$log" || rc=$?
  # pytest's closing line, e.g. "== 3 failed, 40 passed, 1 error in 9.1s ==".
  passed="$(tail -n 1 "$log" | grep -oE '[0-9]+ passed' | cut -d' ' -f1 || true)"
  failed="$(tail -n 1 "$log" | grep -oE '[0-9]+ failed' | cut -d' ' -f1 || true)"
  errors="$(tail -n 1 "$log" | grep -oE '[0-9]+ errors?' | cut -d' ' -f1 || true)"
  TOTAL_PASSED=$((TOTAL_PASSED + ${passed:-0}))
  TOTAL_FAILED=$((TOTAL_FAILED + ${failed:-0} + ${errors:-0}))
  rm -f "$log"
  return "$rc"
}

for suite in "${SUITES[@]}"; do
  log "suite: $suite"
  start=$SECONDS
  if [[ "$suite" == lint ]]; then
    if run_lint; then RESULT[$suite]="ok"; else RESULT[$suite]="FAILED"; failed=1; fi
  else
    if run_pytest_suite "$suite"; then RESULT[$suite]="ok"; else RESULT[$suite]="FAILED"; failed=1; fi
  fi
  RESULT[$suite]+=" ($((SECONDS - start))s)"
done

echo
echo "== summary =="
for suite in "${SUITES[@]}"; do printf '%-10s %s\n' "$suite" "${RESULT[$suite]}"; done
echo "total: ${TOTAL_PASSED} passed, ${TOTAL_FAILED} failed"
exit "$failed"
