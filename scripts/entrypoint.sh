#!/usr/bin/env bash
# Start the service: `dev` (uvicorn, reload, PORT default 4321) or `prod` (gunicorn).
# On a fresh clone it builds .venv from config/requirements.txt first, so this one
# command is all a newcomer needs. Settings come from the environment (README).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode="${1:-dev}"
VENV="${VENV:-$ROOT/.venv}"
if [[ ! -x "$VENV/bin/gunicorn" ]]; then
  ensure_venv "$VENV" "$(find_service_python)" "$ROOT/config/requirements.txt"
fi
cd "$ROOT"

# The streaming VP8L decoder: built when missing or stale and a compiler is there (on the
# VM the deploy builds it into the read-only release). Without it lossless WebP is decoded
# by libwebp, so the service starts either way.
build_native() { PYTHON="$VENV/bin/python" scripts/build_native.sh "$@"; }
if native_compiler >/dev/null; then
  build_native || log "the VP8L decoder did not build: lossless WebP falls back to libwebp"
elif ! build_native --check 2>/dev/null; then
  log "no C compiler ('${CC:-cc}'): lossless WebP falls back to libwebp"
fi

# glibc keeps freed arenas: without these a worker's RSS climbs far above its live data.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-131072}"
export PYTHONUNBUFFERED=1

case "$mode" in
  dev)
    export PORT="${PORT:-4321}"
    # The same protocol as prod (header/body timeouts, connection cap, defaults)
    # and no X-Forwarded-For rewriting of the peer (the app reads it itself).
    exec "$VENV/bin/uvicorn" app.main:create_app --factory --reload --reload-dir app \
      --http app.server:GuardedH11Protocol --no-proxy-headers \
      --host "${HOST:-127.0.0.1}" --port "$PORT"
    ;;
  prod)
    export PORT="${PORT:-8080}"
    exec "$VENV/bin/gunicorn" -c config/gunicorn.py "${APP_MODULE:-app.main:create_app()}"
    ;;
  *)
    die "usage: $0 dev|prod"
    ;;
esac
