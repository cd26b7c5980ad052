"""scripts/build_native.sh, and scripts/entrypoint.sh's use of it, in a copy of the tree.

Each test builds into its own tree (the scripts, and the decoder source or a stand-in)
so the checkout's library is never touched. The library's properties are read from the
ELF file with binutils, as a loader would see them: nothing undefined (no libc), no
executable stack, BIND_NOW and RELRO, only `vp8l_*` exported. The binding
(app.engine.vp8l) is pointed at such trees to show it refuses a stale library.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "app" / "engine" / "native" / "vp8l.c"
LIBRARY = Path("app/engine/native/libvp8l.so")

# A decoder stand-in with a helper that is not static: -fvisibility=hidden must keep it private.
STAND_IN = """\
#include <stddef.h>
#include <stdint.h>
uint32_t twice(uint32_t x) { return 2u * x; }
__attribute__((visibility("default"))) const char *vp8l_source_id(void) {
  return VP8L_SOURCE_SHA256;
}
__attribute__((visibility("default"))) size_t vp8l_twice(size_t x) {
  return twice((uint32_t)x);
}
"""


def make_tree(root: Path, source: str | None = None) -> Path:
    (root / "scripts").mkdir(parents=True)
    for name in ("build_native.sh", "lib.sh", "entrypoint.sh"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    native = root / "app" / "engine" / "native"
    native.mkdir(parents=True)
    if source is None:
        shutil.copy2(SOURCE, native / "vp8l.c")
    else:
        (native / "vp8l.c").write_text(source)
    return root


def run(tree: Path, *args: str, cc: str | None = None, script: str = "build_native.sh", **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("CC", "PYTHON")}
    environ["PYTHON"] = sys.executable
    if cc is not None:
        environ["CC"] = cc
    environ.update(env)
    return subprocess.run(
        ["bash", str(tree / "scripts" / script), *args],
        cwd=tree,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tool(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def source_id(library: Path) -> bytes:
    fn = ctypes.CDLL(str(library)).vp8l_source_id
    fn.restype = ctypes.c_char_p
    return fn()


def leftovers(tree: Path) -> list[str]:
    """Temporary files of a build (.libvp8l.so.XXXXXX) still beside the library."""
    return sorted(p.name for p in (tree / LIBRARY).parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The real decoder source, built once."""
    tree = make_tree(tmp_path_factory.mktemp("native"))
    done = run(tree)
    assert done.returncode == 0, done.stderr
    return tree / LIBRARY


# --- the library -----------------------------------------------------------------------------


def test_library_needs_nothing_from_outside(built):
    assert tool("nm", "-D", "--undefined-only", str(built)).strip() == ""
    dynamic = tool("readelf", "-dW", str(built))
    assert "(NEEDED)" not in dynamic, dynamic  # not even libc: no ABI to be coupled to
    assert "TEXTREL" not in dynamic, dynamic


def test_library_stack_is_not_executable(built):
    stack = [line.split() for line in tool("readelf", "-lW", str(built)).splitlines()]
    flags = [fields[6:-1] for fields in stack if fields and fields[0] == "GNU_STACK"]
    assert flags == [["RW"]], flags


def test_library_binds_now_behind_relro(built):
    dynamic = tool("readelf", "-dW", str(built))
    assert re.search(r"\(FLAGS\)\s+BIND_NOW", dynamic), dynamic
    assert re.search(r"\(FLAGS_1\)\s+Flags:.*\bNOW\b", dynamic), dynamic
    assert "GNU_RELRO" in tool("readelf", "-lW", str(built))


def test_library_exports_only_vp8l_functions(built):
    names = [
        line.split()[-1]
        for line in tool("nm", "-D", "--defined-only", str(built)).split("\n")
        if line
    ]
    assert "vp8l_source_id" in names
    assert [n for n in names if not n.startswith("vp8l_")] == []


def test_library_reports_the_sha256_of_its_source(built):
    want = hashlib.sha256((built.parent / "vp8l.c").read_bytes()).hexdigest()
    assert source_id(built) == want.encode()
    assert built.stat().st_mode & 0o777 == 0o644  # read and mapped, never run


def test_non_static_helpers_stay_private(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    assert run(tree).returncode == 0
    names = tool("nm", "-D", "--defined-only", str(tree / LIBRARY))
    assert re.findall(r"\s(\w+)$", names, re.M) == ["vp8l_source_id", "vp8l_twice"]


def test_an_executable_stack_note_in_the_source_is_overridden(tmp_path):
    note = '__asm__(".section .note.GNU-stack,\\"x\\",@progbits");\n'
    tree = make_tree(tmp_path, STAND_IN + note)
    done = run(tree)
    assert done.returncode == 0, done.stderr
    stack = [
        ln for ln in tool("readelf", "-lW", str(tree / LIBRARY)).splitlines() if "GNU_STACK" in ln
    ]
    assert len(stack) == 1 and " RW " in stack[0] and "RWE" not in stack[0], stack


@pytest.mark.parametrize("behind", [b"", b"\n"])
def test_the_binding_uses_only_a_library_of_its_very_source(tmp_path, monkeypatch, behind):
    """app.engine.vp8l next to the real source, the library built from that source or
    from one byte more: the first is used, the second (stale) and a missing one are not,
    so lossless WebP goes to libwebp."""
    from app.engine import vp8l

    tree = make_tree(tmp_path)
    source = tree / "app/engine/native/vp8l.c"
    real = source.read_bytes()
    source.write_bytes(real + behind)
    assert run(tree).returncode == 0
    source.write_bytes(real)
    monkeypatch.setattr(vp8l, "SOURCE", source)
    monkeypatch.setattr(vp8l, "LIBRARY", tree / LIBRARY)
    monkeypatch.setattr(vp8l, "_lib", None)
    assert vp8l.available() is (behind == b"")
    assert (run(tree, "--check").returncode == 0) is (behind == b"")  # the script agrees

    monkeypatch.setattr(vp8l, "LIBRARY", tree / "app/engine/native/libmissing.so")
    monkeypatch.setattr(vp8l, "_lib", None)
    assert not vp8l.available()


# --- building: atomic, idempotent, checked ------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        # libc is not there: the linker refuses what the library would need at load time
        (
            "void *memset(void *, int, size_t);\n"
            '__attribute__((visibility("default"))) void vp8l_z(char *p) { memset(p, 0, 8); }\n',
            "undefined reference to `memset'",
        ),
        ("int vp8l_unused(int x) { int y; return x; }\n", "unused variable"),  # warnings are errors
    ],
)
def test_a_failed_build_keeps_the_library_it_had(tmp_path, extra, why):
    tree = make_tree(tmp_path, STAND_IN)
    assert run(tree).returncode == 0
    before = (tree / LIBRARY).stat()
    old = (tree / LIBRARY).read_bytes()
    (tree / "app/engine/native/vp8l.c").write_text(STAND_IN + extra)

    done = run(tree)
    assert done.returncode != 0
    assert why in done.stderr, done.stderr
    after = (tree / LIBRARY).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (tree / LIBRARY).read_bytes() == old
    assert leftovers(tree) == []
    assert run(tree, "--check").returncode != 0  # and it is stale now


def test_check_missing_then_fresh(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    done = run(tree, "--check")
    assert done.returncode != 0 and "missing" in done.stderr
    assert not (tree / LIBRARY).exists()  # --check never builds
    assert run(tree).returncode == 0
    assert run(tree, "--check").returncode == 0


def test_check_refuses_a_library_one_byte_of_source_behind(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    assert run(tree).returncode == 0
    built = (tree / LIBRARY).read_bytes()
    with (tree / "app/engine/native/vp8l.c").open("a") as f:
        f.write("\n")
    done = run(tree, "--check")
    assert done.returncode != 0 and "stale" in done.stderr, done.stderr
    assert (tree / LIBRARY).read_bytes() == built  # --check never builds

    assert run(tree).returncode == 0
    assert run(tree, "--check").returncode == 0
    want = hashlib.sha256((tree / "app/engine/native/vp8l.c").read_bytes()).hexdigest()
    assert source_id(tree / LIBRARY) == want.encode()


def test_a_library_that_does_not_load_is_stale_and_replaced(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    (tree / LIBRARY).write_bytes(b"\x7fELF not really")
    assert run(tree, "--check").returncode != 0
    assert run(tree).returncode == 0
    assert run(tree, "--check").returncode == 0


def test_an_up_to_date_library_is_left_alone_without_a_compiler(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    assert run(tree).returncode == 0
    before = (tree / LIBRARY).stat()
    done = run(tree, cc="no-such-compiler")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    after = (tree / LIBRARY).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_no_compiler_is_a_clear_error(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    done = run(tree, cc="no-such-compiler")
    assert done.returncode != 0
    assert "no C compiler" in done.stderr and "no-such-compiler" in done.stderr, done.stderr
    assert not (tree / LIBRARY).exists() and leftovers(tree) == []


def test_cc_names_the_compiler_and_gets_every_flag(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    wrapper = tmp_path / "bin" / "my-cc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/argv\nexec cc "$@"\n')
    wrapper.chmod(0o755)
    assert run(tree, cc=str(wrapper)).returncode == 0
    compiles = [
        line.split() for line in (tmp_path / "argv").read_text().splitlines() if "-o" in line
    ]
    assert len(compiles) == 1, compiles
    want = hashlib.sha256(STAND_IN.encode()).hexdigest()
    flags = (
        "-O2 -fPIC -shared -nostdlib -ffreestanding -fno-builtin -fno-stack-protector "
        "-fvisibility=hidden -Wall -Wextra -Werror -Wl,--no-undefined -Wl,-z,noexecstack "
        f'-Wl,-z,relro -Wl,-z,now -DVP8L_SOURCE_SHA256="{want}"'
    ).split()
    assert [arg for arg in compiles[0] if arg in flags] == flags


# --- scripts/entrypoint.sh ---------------------------------------------------------------------


def fake_venv(tree: Path) -> Path:
    """A venv whose gunicorn only says it ran: the entrypoint up to its exec."""
    venv = tree / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    gunicorn = venv / "bin" / "gunicorn"
    gunicorn.write_text("#!/bin/sh\necho gunicorn ran\n")
    gunicorn.chmod(0o755)
    return venv


def test_entrypoint_builds_a_missing_library(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    done = run(tree, "prod", script="entrypoint.sh", VENV=str(fake_venv(tree)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "gunicorn ran\n"
    assert run(tree, "--check").returncode == 0


def test_entrypoint_without_a_compiler_says_so_once_and_runs(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    done = run(
        tree, "prod", script="entrypoint.sh", cc="no-such-compiler", VENV=str(fake_venv(tree))
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "gunicorn ran\n"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "falls back to libwebp" in lines[0], lines
    assert not (tree / LIBRARY).exists()


def test_entrypoint_runs_when_the_build_fails(tmp_path):
    tree = make_tree(tmp_path, STAND_IN + "int vp8l_broken(void) { return }\n")
    done = run(tree, "prod", script="entrypoint.sh", VENV=str(fake_venv(tree)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "gunicorn ran\n"
    assert "falls back to libwebp" in done.stderr.splitlines()[-1]


def test_entrypoint_is_silent_when_the_library_is_current(tmp_path):
    tree = make_tree(tmp_path, STAND_IN)
    assert run(tree).returncode == 0
    done = run(
        tree, "prod", script="entrypoint.sh", cc="no-such-compiler", VENV=str(fake_venv(tree))
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
