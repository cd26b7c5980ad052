"""The C libraries the banded decoders call through ctypes (libwebp, libopenjp2).

The pinned Pillow wheel ships its own copies (`pillow.libs/lib<name>-<hash>.so`):
those are the versions Pillow's own decoders use, so they come first. The
system's copy is the fallback. `ctypes.util.find_library` runs `ldconfig -p`
in a subprocess, so it is only asked when no wheel copy is accepted (the first
lookup may happen in a conversion process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from collections.abc import Callable, Iterator


def load(wheel_stem: str, system_name: str, accept: Callable[[ctypes.CDLL], bool]):
    """The first of `lib<wheel_stem>-*.so*` in the Pillow wheel, then the system's
    `lib<system_name>`, that loads and that `accept` takes (it checks the version
    and declares the functions); None when none does."""
    for path in _candidates(wheel_stem, system_name):
        try:
            lib = ctypes.CDLL(path)
            if accept(lib):
                return lib
        except (OSError, AttributeError):  # not loadable, or a symbol missing
            continue
    return None


def _candidates(wheel_stem: str, system_name: str) -> Iterator[str]:
    import PIL

    wheel_libs = os.path.join(os.path.dirname(PIL.__file__), os.pardir, "pillow.libs")
    found = sorted(glob.glob(os.path.join(wheel_libs, f"lib{wheel_stem}-*")))
    yield from (path for path in found if ".so" in path)
    name = ctypes.util.find_library(system_name)
    if name:
        yield name
