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
#   SENTRY_DSN         passed through to the role (never printed)
#   GITHUB_STEP_SUMMARY, GITHUB_OUTPUT  written when set (GitHub Actions)
# Exit status: 0 live and healthy; 1 failed (the previous release serves again,
# or there was none); 2 usage/setup error; 3 smoke test inconclusive (the
# source image was unreachable; the new release stays, nothing was judged).
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

summary() { # summary STATUS DETAIL: the job summary on GitHub, a plain block elsewhere
  local status="$1" detail="$2"
  {
    echo "### Deploy ${status}"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| URL | ${BASE_URL:-?} |"
    echo "| Release | \`${RELEASE}\` |"
    echo "| Previous release | \`${PREVIOUS:-none}\` |"
    echo "| Result | ${detail} |"
    echo "| Duration | $((SECONDS - started))s (${TIMINGS[*]:-}) |"
  } >"$WORK/summary.md"
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then cat "$WORK/summary.md" >>"$GITHUB_STEP_SUMMARY"; fi
  sed 's/^/  /' "$WORK/summary.md" >&2
}

# --- the controller ------------------------------------------------------------
if ! command -v ansible-playbook >/dev/null 2>&1; then
  ensure_venv "$ROOT/.venv-ansible" "$(find_controller_python)" config/requirements-ansible.txt
  export PATH="$ROOT/.venv-ansible/bin:$PATH"
fi
PYTHON="$(command -v python3)"
if [[ -x "$ROOT/.venv-ansible/bin/python" ]]; then PYTHON="$ROOT/.venv-ansible/bin/python"; fi
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
# The release the hosts serve before this deploy: the one to go back to.
current_release() {
  ansible "$HOST_GROUP" -i "$INVENTORY" --playbook-dir "$ROOT/ansible" -o -m ansible.builtin.command \
    -a "readlink -e $CURRENT_LINK" 2>/dev/null |
    sed -n 's/.*(stdout) \(.*\)$/\1/p' | head -n1 | xargs -r basename
}
PREVIOUS="$(current_release || true)"
log "release ${RELEASE} replaces ${PREVIOUS:-nothing}"
phase inspect

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
  (cd "$tree" && RELEASE="$release" ansible-playbook -i "$INVENTORY" ansible/deploy.yml \
    -e "${RELEASE_VAR}=${release}" "${EXTRA_ARGS[@]}")
}

smoke() { # smoke RELEASE
  "$PYTHON" "$ROOT/scripts/smoke_test.py" "$BASE_URL" --source-url "$SMOKE_SOURCE_URL" \
    --expect-release "$1" --wait "$SMOKE_WAIT"
}

rollback() { # back to PREVIOUS, with PREVIOUS's own code and playbook
  if [[ -z "${PREVIOUS:-}" || "$PREVIOUS" == "$RELEASE" ]]; then
    log "no previous release to roll back to"
    return 1
  fi
  if ! git cat-file -e "${PREVIOUS}^{commit}" 2>/dev/null; then
    log "previous release $PREVIOUS is not a commit in this clone (fetch-depth: 0?)"
    return 1
  fi
  log "rolling back to $PREVIOUS"
  playbook "$PREVIOUS" && smoke "$PREVIOUS"
}

# --- deploy, check, and go back if unhealthy ---------------------------------------
log "deploying $RELEASE"
if ! playbook "$RELEASE"; then
  phase deploy
  # The role switches back by itself when the new release fails its health check.
  summary "failed" "ansible-playbook failed; the app role keeps or restores ${PREVIOUS:-the previous release}"
  exit 1
fi
phase deploy

log "smoke test against $BASE_URL"
set +e
smoke "$RELEASE"
smoke_rc=$?
set -e
phase smoke

case "$smoke_rc" in
  0)
    summary "succeeded" "release ${SHORT} is live and passed the smoke test"
    exit 0
    ;;
  3)
    summary "inconclusive" "release ${SHORT} is live; the smoke test's source image was unreachable"
    exit 3
    ;;
esac

log "smoke test FAILED for $RELEASE"
if rollback; then
  phase rollback
  summary "rolled back" "release ${SHORT} failed the smoke test; ${PREVIOUS:0:12} serves again"
else
  phase rollback
  summary "failed" "release ${SHORT} failed the smoke test and could not be rolled back"
fi
exit 1
