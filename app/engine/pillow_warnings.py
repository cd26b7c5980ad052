"""Counting Pillow's decoder warnings, reported with each conversion."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from PIL import Image

# Decoder warnings (Pillow warns per corrupt Exif tag: one file printed 32,397
# lines) are counted here and reported as one number by the caller.
_warning_count = 0


def take_warning_count() -> int:
    """Warnings counted since the last call."""
    global _warning_count
    count, _warning_count = _warning_count, 0
    return count


@contextlib.contextmanager
def counted_warnings() -> Iterator[None]:
    global _warning_count
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            _warning_count += len(caught)
            caught.clear()
