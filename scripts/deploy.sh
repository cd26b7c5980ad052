#!/usr/bin/env bash
# Deploy one release to the app hosts, smoke-test it, roll back if unhealthy.
# What .github/workflows/deploy.yml runs, and what tests/cd runs against a
# local systemd machine: the same script, only the configuration differs.
#
#   scripts/deploy.sh [extra ansible-playbook args...]
#
# Configuration (environment):
#   RELEASE            git commit to deploy (default: HEAD). Its code is what is
#                      checked out here; the role names the release after it and
#                      writes RELEASE into the service's env file (Sentry's release).
#   DEPLOY_TRANSPORT   iap  (default with CI=true): find the VM with the gcp_compute
#                           inventory, SSH through an IAP tunnel as the OS Login
#                           user of the active gcloud account (the deployer SA);
#                      ssh  use DEPLOY_INVENTORY as it is (tests: a local machine).
#   DEPLOY_INVENTORY   inventory (default ansible/inventory/gcp.yml)
#   GCP_PROJECT        project (iap transport); rewrites the inventory's projects
#   BASE_URL           the service's public URL (default: ansible/.lb-url, else the
#                      load balancer's address as https://<ip>.nip.io/); exported,
#                      the GCP inventory's group_vars make it the app's PUBLIC_BASE_URL
#   SMOKE_SOURCE_URL   a known image the service can fetch (default on GitHub: this
#                      repository's tests/cd/fixtures/smoke.png at RELEASE)
#   SMOKE_WAIT         seconds the smoke test waits for readiness (default 120)
#   ANSIBLE_VENV       the controller venv (default .venv-ansible, built here from
#                      config/requirements-ansible.txt when missing or stale; an
#                      ansible-playbook on PATH is never used)
#   DEPLOY_ALLOW_OLDER 1: deploy RELEASE even when it is an ancestor of the live
#                      release (a deliberate rollback by hand; CI never sets it)
#   DEPLOY_LOOKUP_ATTEMPTS, DEPLOY_LOOKUP_DELAY
#                      asking the hosts which release is live: attempts (default 3)
#                      and seconds between them (default 10)
#   SENTRY_DSN         passed through to the role (never printed)
#   GITHUB_STEP_SUMMARY, GITHUB_OUTPUT  written when set (GitHub Actions)
# Exit status: 0 live and healthy, or skipped because a newer release is live;
# 1 failed (rolled back, or nothing to roll back to: the summary says what is
# live); 2 usage/setup error, or the hosts could not be asked which release is
# live (nothing was deployed); 3 smoke test inconclusive (the source image was
# unreachable; the new release stays, nothing was judged); 4 the smoke test
# itself broke (usage error, crash, killed): no verdict, the release stays.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# The app role's interface (ansible/roles/app/defaults/main.yml).
RELEASE_VAR="${DEPLOY_RELEASE_VAR:-app_release}"
CURRENT_LINK="${DEPLOY_CURRENT_LINK:-/opt/img2pdf/current}"
HOST_GROUP="${DEPLOY_HOST_GROUP:-img2pdf_app}"
LB_ADDRESS_NAME="${LB_ADDRESS_NAME:-img2pdf-ip}"

if [[ "${CI:-}" == true ]]; then default_transport=iap; else default_transport=ssh; fi
TRANSPORT="${DEPLOY_TRANSPORT:-$default_transport}"
INVENTORY="${DEPLOY_INVENTORY:-$ROOT/ansible/inventory/gcp.yml}"
SMOKE_WAIT="${SMOKE_WAIT:-120}"
EXTRA_ARGS=("$@")

WORK="$(mktemp -d)"
TREES=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local tree
  for tree in "${TREES[@]}"; do git worktree remove --force "$tree" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

started=$SECONDS
declare -a TIMINGS=()
phase_start=$SECONDS
phase() { # phase NAME: record how long the previous phase took
  TIMINGS+=("$1 $((SECONDS - phase_start))s")
  phase_start=$SECONDS
}

RELEASE="$(git rev-parse --verify "${RELEASE:-HEAD}^{commit}")" || die "RELEASE is not a commit here"
export RELEASE
SHORT="${RELEASE:0:12}"

summary() { # summary STATUS DETAIL [LIVE]: the job summary on GitHub, a plain block elsewhere
  local status="$1" detail="$2" live="${3:-}"
  {
    echo "### Deploy ${status}"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| URL | ${BASE_URL:-?} |"
    echo "| Release | \`${RELEASE}\` |"
    echo "| Previous release | \`${PREVIOUS:-none}\` |"
    if [[ -n "$live" ]]; then echo "| Live now | ${live} |"; fi
    echo "| Result | ${detail} |"
    echo "| Duration | $((SECONDS - started))s (${TIMINGS[*]:-}) |"
  } >"$WORK/summary.md"
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then cat "$WORK/summary.md" >>"$GITHUB_STEP_SUMMARY"; fi
  sed 's/^/  /' "$WORK/summary.md" >&2
}

# --- the controller ------------------------------------------------------------
# Always the pinned controller venv (ansible-core, google.cloud, PyYAML), never an
# ansible-playbook found on PATH: GitHub's runner ships a pipx ansible-core without
# google.cloud, whose interpreter has no PyYAML either.
ANSIBLE_VENV="${ANSIBLE_VENV:-$ROOT/.venv-ansible}"
if ! venv_current "$ANSIBLE_VENV" config/requirements-ansible.txt; then
  ensure_venv "$ANSIBLE_VENV" "$(find_controller_python)" config/requirements-ansible.txt
fi
export PATH="$ANSIBLE_VENV/bin:$PATH"
ANSIBLE_PLAYBOOK="$ANSIBLE_VENV/bin/ansible-playbook"
ANSIBLE_ADHOC="$ANSIBLE_VENV/bin/ansible"
PYTHON="$ANSIBLE_VENV/bin/python"
# The tests' inventories are plain YAML; ansible.cfg may enable only gcp_compute.
export ANSIBLE_INVENTORY_ENABLED="${ANSIBLE_INVENTORY_ENABLED:-google.cloud.gcp_compute,yaml,ini}"

# --- the transport ---------------------------------------------------------------
setup_iap() {
  command -v gcloud >/dev/null 2>&1 || die "the iap transport needs gcloud (google-github-actions/setup-gcloud)"
  [[ -n "${GCP_PROJECT:-}" ]] || die "the iap transport needs GCP_PROJECT"
  log "transport: IAP SSH as the OS Login user of $(gcloud config get-value account 2>/dev/null)"
  # The dynamic inventory cannot template its project: write a copy with ours.
  local inv_dir
  inv_dir="$(cd "$(dirname "$INVENTORY")" && pwd)"
  "$PYTHON" - "$INVENTORY" "$WORK/inventory.gcp.yml" "$GCP_PROJECT" <<'PY'
import sys, yaml
src, dst, project = sys.argv[1:]
inv = yaml.safe_load(open(src))
inv["projects"] = [project]
yaml.safe_dump(inv, open(dst, "w"))
PY
  INVENTORY="$WORK/inventory.gcp.yml"
  # A throwaway key registered with OS Login for one hour, and the POSIX user of
  # the run's credentials (ADC): ansible/oslogin.yml, the play deploy.yml imports.
  ansible-playbook -i "$INVENTORY" ansible/oslogin.yml -e "gcp_project=$GCP_PROJECT" \
    -e "oslogin_key_file=$WORK/id_deploy" -e "oslogin_env_file=$WORK/oslogin.env" >&2 ||
    die "OS Login key registration failed"
  local user
  user="$(sed -n 's/^ANSIBLE_REMOTE_USER=//p' "$WORK/oslogin.env" 2>/dev/null || true)"
  [[ -n "$user" ]] || die "no OS Login user for the credentials of this run"
  export ANSIBLE_REMOTE_USER="$user"
  export ANSIBLE_PRIVATE_KEY_FILE="$WORK/id_deploy"
  # The IAP ProxyCommand and the app settings are group_vars next to the
  # inventory (ansible/inventory/group_vars/img2pdf_app.yml): keep them beside the copy.
  if [[ -d "$inv_dir/group_vars" ]]; then ln -s "$inv_dir/group_vars" "$WORK/group_vars"; fi
  mkdir -p "$HOME/.ssh"
  if [[ -z "${BASE_URL:-}" && ! -s ansible/.lb-url ]]; then
    local ip
    ip="$(gcloud compute addresses describe "$LB_ADDRESS_NAME" --global --project "$GCP_PROJECT" \
      --format='value(address)')"
    [[ -n "$ip" ]] || die "no global address $LB_ADDRESS_NAME: run provision.yml first"
    BASE_URL="https://${ip}.nip.io/"
  fi
}

case "$TRANSPORT" in
  iap) setup_iap ;;
  ssh) log "transport: SSH with the inventory $INVENTORY" ;;
  *) die "DEPLOY_TRANSPORT must be iap or ssh, got $TRANSPORT" ;;
esac

if [[ -z "${BASE_URL:-}" && -s ansible/.lb-url ]]; then BASE_URL="$(<ansible/.lb-url)"; fi
[[ -n "${BASE_URL:-}" ]] || die "BASE_URL is unknown: set it, or run provision.yml (writes ansible/.lb-url)"
export BASE_URL
if [[ -z "${SMOKE_SOURCE_URL:-}" && -n "${GITHUB_REPOSITORY:-}" ]]; then
  SMOKE_SOURCE_URL="https://raw.githubusercontent.com/${GITHUB_REPOSITORY}/${RELEASE}/tests/cd/fixtures/smoke.png"
fi
[[ -n "${SMOKE_SOURCE_URL:-}" ]] || die "SMOKE_SOURCE_URL is unknown: a known image the service can fetch"
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then echo "url=${BASE_URL}" >>"$GITHUB_OUTPUT"; fi
phase setup

# --- what runs now ---------------------------------------------------------------
LOOKUP_ATTEMPTS="${DEPLOY_LOOKUP_ATTEMPTS:-3}"
LOOKUP_DELAY="${DEPLOY_LOOKUP_DELAY:-10}"
LOOKUP_ERROR=""

# Which release `current` points at on the hosts: sets LIVE to the release, or to
# "" when no host has a `current` link yet (a first deploy). Fails, with the reason
# in LOOKUP_ERROR, when any host could not be asked (unreachable, refused, no host
# in the inventory), so that a network error is never mistaken for a first deploy.
LIVE=""
live_release() {
  local out rc=0 answers
  LIVE=""
  out="$("$ANSIBLE_ADHOC" "$HOST_GROUP" -i "$INVENTORY" --playbook-dir "$ROOT/ansible" -o \
    -T 30 -m ansible.builtin.shell -a "if [ -e $CURRENT_LINK ]; then \
echo img2pdf-live=\$(basename \$(readlink -e $CURRENT_LINK)); \
elif [ -L $CURRENT_LINK ]; then echo img2pdf-live-dangling; else echo img2pdf-live-none; fi" \
    2>&1)" || rc=$?
  answers="$(grep -c 'img2pdf-live' <<<"$out" || true)"
  if [[ $rc -ne 0 || $answers -eq 0 ]] || grep -q 'img2pdf-live-dangling' <<<"$out"; then
    LOOKUP_ERROR="ansible exited ${rc}: $(grep -v '^\s*$' <<<"$out" | tail -n 3 | tr '\n' ' ' | cut -c1-400)"
    [[ $answers -gt 0 || $rc -ne 0 ]] || LOOKUP_ERROR="no host in group ${HOST_GROUP} answered"
    return 1
  fi
  LIVE="$(sed -n 's/.*img2pdf-live=\([A-Za-z0-9._-]*\).*/\1/p' <<<"$out" | head -n1)"
  LOOKUP_ERROR=""
}

PREVIOUS=""
LOOKUP_ERROR="not asked (DEPLOY_LOOKUP_ATTEMPTS=${LOOKUP_ATTEMPTS})"
for attempt in $(seq 1 "$LOOKUP_ATTEMPTS"); do
  if live_release; then
    PREVIOUS="$LIVE"
    break
  fi
  log "cannot ask the hosts which release is live (attempt ${attempt}/${LOOKUP_ATTEMPTS}): ${LOOKUP_ERROR}"
  if [[ $attempt -lt $LOOKUP_ATTEMPTS ]]; then sleep "$LOOKUP_DELAY"; fi
done
phase inspect
if [[ -n "$LOOKUP_ERROR" ]]; then
  summary "aborted" "could not ask the hosts which release is live, so nothing was deployed \
(a failed deploy could not have been rolled back): ${LOOKUP_ERROR}" "unknown (unreachable)"
  echo "::error title=Deploy aborted::the hosts could not be asked which release is live" >&2
  exit 2
fi
log "release ${RELEASE} replaces ${PREVIOUS:-nothing}"

# Deploys run in the order CI finishes, and an old CI run can be re-run: never
# replace a newer release with one of its ancestors.
if [[ -n "$PREVIOUS" && "$PREVIOUS" != "$RELEASE" ]]; then
  if ! git cat-file -e "${PREVIOUS}^{commit}" 2>/dev/null; then
    summary "aborted" "the live release ${PREVIOUS} is not a commit in this clone, so it cannot \
be told whether ${SHORT} is newer; nothing was deployed" "\`${PREVIOUS}\`"
    echo "::error title=Deploy aborted::live release ${PREVIOUS} is unknown here" >&2
    exit 2
  fi
  if [[ "${DEPLOY_ALLOW_OLDER:-}" != 1 ]] && git merge-base --is-ancestor "$RELEASE" "$PREVIOUS"; then
    log "release ${RELEASE} is an ancestor of the live release ${PREVIOUS}: skipped"
    summary "skipped" "release ${SHORT} is older than the live release ${PREVIOUS:0:12} \
(an ancestor of it): a newer release is live, nothing was deployed" "\`${PREVIOUS}\`"
    echo "::notice title=Deploy skipped::${SHORT} is an ancestor of the live release ${PREVIOUS:0:12}" >&2
    exit 0
  fi
fi

# Each release ships from a clean checkout of its own commit (a worktree), never
# from this working tree: what is deployed is exactly the commit named, and a
# rollback runs the previous release's own playbook and code.
playbook() { # playbook RELEASE
  local release="$1" tree="$WORK/tree-${1:0:12}"
  if [[ ! -d "$tree" ]]; then
    git worktree add --detach "$tree" "$release" >/dev/null 2>&1 || {
      log "cannot check out $release"
      return 1
    }
    TREES+=("$tree")
  fi
  (cd "$tree" && RELEASE="$release" "$ANSIBLE_PLAYBOOK" -i "$INVENTORY" ansible/deploy.yml \
    -e "${RELEASE_VAR}=${release}" "${EXTRA_ARGS[@]}")
}

smoke() { # smoke RELEASE
  "$PYTHON" "$ROOT/scripts/smoke_test.py" "$BASE_URL" --source-url "$SMOKE_SOURCE_URL" \
    --expect-release "$1" --wait "$SMOKE_WAIT"
}

smoke_meaning() { # smoke_meaning RC: what an exit status of smoke_test.py says
  case "$1" in
    0) echo "passed" ;;
    1) echo "failed (the service answered wrongly)" ;;
    2) echo "usage error of the smoke test (exit 2)" ;;
    3) echo "inconclusive (the source image was unreachable)" ;;
    4) echo "the smoke test crashed (exit 4)" ;;
    126 | 127) echo "the smoke test could not be run (exit $1)" ;;
    *) if [[ $1 -gt 128 ]]; then echo "the smoke test was killed (signal $(($1 - 128)))"; else echo "exit $1"; fi ;;
  esac
}

# After a rollback attempt, what do the hosts serve? Asked once more, never assumed.
live_now() {
  if live_release; then echo "\`${LIVE:-none}\`"; else echo "unknown (${LOOKUP_ERROR})"; fi
}

# --- deploy, check, and go back if unhealthy ---------------------------------------
log "deploying $RELEASE"
if ! playbook "$RELEASE"; then
  phase deploy
  # The role switches back by itself when the new release fails its health check.
  summary "failed" "ansible-playbook failed; the app role keeps or restores ${PREVIOUS:-the previous release}" "$(live_now)"
  exit 1
fi
phase deploy

log "smoke test against $BASE_URL"
set +e
smoke "$RELEASE"
smoke_rc=$?
set -e
phase smoke

# Every exit of the smoke test is classified: only 1 is proof the release is bad.
case "$smoke_rc" in
  0)
    summary "succeeded" "release ${SHORT} is live and passed the smoke test" "\`${RELEASE}\`"
    exit 0
    ;;
  1) ;;
  3)
    summary "inconclusive" "release ${SHORT} is live; the smoke test's source image was unreachable" "\`${RELEASE}\`"
    exit 3
    ;;
  *)
    summary "unverified" "release ${SHORT} is live but was NOT judged: $(smoke_meaning "$smoke_rc"). \
That is no proof the release is bad, so it was not rolled back; check it by hand" "\`${RELEASE}\`"
    echo "::error title=Smoke test broke::$(smoke_meaning "$smoke_rc"); release ${SHORT} stays live, unverified" >&2
    exit 4
    ;;
esac

log "smoke test FAILED for $RELEASE"
if [[ -z "${PREVIOUS:-}" || "$PREVIOUS" == "$RELEASE" ]]; then
  log "no previous release to roll back to"
  phase rollback
  summary "failed" "release ${SHORT} failed the smoke test and could not be rolled back: \
there is no previous release" "$(live_now)"
  exit 1
fi
if ! git cat-file -e "${PREVIOUS}^{commit}" 2>/dev/null; then
  log "previous release $PREVIOUS is not a commit in this clone (fetch-depth: 0?)"
  phase rollback
  summary "failed" "release ${SHORT} failed the smoke test and could not be rolled back: \
${PREVIOUS:0:12} is not a commit in this clone" "$(live_now)"
  exit 1
fi
# Back to PREVIOUS, with PREVIOUS's own code and playbook, then judge it the same way.
log "rolling back to $PREVIOUS"
if ! playbook "$PREVIOUS"; then
  phase rollback
  summary "failed" "release ${SHORT} failed the smoke test; the rollback to ${PREVIOUS:0:12} \
failed too (ansible-playbook)" "$(live_now)"
  exit 1
fi
set +e
smoke "$PREVIOUS"
rollback_rc=$?
set -e
phase rollback
if [[ $rollback_rc -eq 0 ]]; then
  summary "rolled back" "release ${SHORT} failed the smoke test; ${PREVIOUS:0:12} serves again \
and passed its smoke test" "$(live_now)"
else
  summary "failed" "release ${SHORT} failed the smoke test and was rolled back to ${PREVIOUS:0:12}, \
whose own smoke test then $(smoke_meaning "$rollback_rc"): the service may be unhealthy with \
either release" "$(live_now)"
  echo "::error title=Rollback unhealthy::${PREVIOUS:0:12} is live again but its smoke test $(smoke_meaning "$rollback_rc")" >&2
fi
exit 1
