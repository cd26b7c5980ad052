#!/usr/bin/env bash
# Build the streaming VP8L decoder, app/engine/native/vp8l.c -> libvp8l.so, where it runs.
#   scripts/build_native.sh           # build when the library is missing or stale
#   scripts/build_native.sh --check   # exit 1 when it is missing or stale; build nothing
# The library reports the sha256 of the source it was built from (vp8l_source_id());
# app/engine/vp8l.py loads only a library whose id matches the source next to it, so a
# stale one is never used (lossless WebP then falls back to libwebp). The source is
# freestanding: no libc, no crt files, nothing left undefined; the linker proves it.
# CC names the compiler (default cc), PYTHON the interpreter that reads the id (python3).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NATIVE_DIR="$ROOT/app/engine/native"
SOURCE="$NATIVE_DIR/vp8l.c"
LIBRARY="$NATIVE_DIR/libvp8l.so"
# shellcheck disable=SC2054  # the commas belong to gcc's -Wl, (linker options)
CFLAGS=(
  -O2 -fPIC -shared -nostdlib -ffreestanding -fno-builtin -fno-stack-protector
  -fvisibility=hidden -Wall -Wextra -Werror
  -Wl,--no-undefined -Wl,-z,noexecstack -Wl,-z,relro -Wl,-z,now
)

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) die "usage: $0 [--check]" ;;
esac

[[ -f "$SOURCE" ]] || die "no decoder source at ${SOURCE#"$ROOT"/}"
want="$(sha256sum "$SOURCE" | cut -d' ' -f1)"

if native_current "$LIBRARY" "$want"; then exit 0; fi
if [[ $check -eq 1 ]]; then
  if [[ -e "$LIBRARY" ]]; then
    die "${LIBRARY#"$ROOT"/} is stale: not built from vp8l.c $want (run scripts/build_native.sh)"
  fi
  die "${LIBRARY#"$ROOT"/} is missing (run scripts/build_native.sh)"
fi

cc="$(native_compiler)" || die "no C compiler ('${CC:-cc}' is not on PATH): install gcc, \
or set CC; until then lossless WebP is decoded by libwebp"

# Into a temporary file beside the library, checked, then renamed over it: a reader never
# sees half a library, and a failed build leaves the old one as it was.
tmp="$(mktemp "$NATIVE_DIR/.libvp8l.so.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
"$cc" "${CFLAGS[@]}" "-DVP8L_SOURCE_SHA256=\"$want\"" -o "$tmp" "$SOURCE"
chmod 0644 "$tmp"
native_current "$tmp" "$want" || die "the library built from vp8l.c does not report its id $want"
mv -f "$tmp" "$LIBRARY"
trap - EXIT
log "built ${LIBRARY#"$ROOT"/} (vp8l.c ${want:0:12}, $("$cc" -dumpfullversion 2>/dev/null || echo "$cc"))"
