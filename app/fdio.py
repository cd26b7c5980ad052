"""Writing a whole buffer to a file descriptor, in pieces a page cache digests well.

One multi-megabyte write() into an ext4 file had a heavy CPU tail: for a 5.8 MB
PDF, median 1.5 ms but p90 7-13 ms and p99 30-41 ms, against p99 3 ms for the
same bytes in 1 MiB writes (the kernel's work per call grows with the call:
the larger page-cache folios a big write asks for). Same run, 150 interleaved
rounds (docs/performance.md, "The store's write").
"""

from __future__ import annotations

import os

WRITE_PIECE = 1 << 20


def write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write every byte of `data` to `fd` (retrying short writes); its length."""
    with memoryview(data) as whole, whole.cast("B") as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done : done + WRITE_PIECE])
        return done
