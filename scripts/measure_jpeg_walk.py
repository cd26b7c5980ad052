#!/usr/bin/env python3
"""Time the plain-JPEG walk that runs in the web worker, on the worst headers
that fit the 20 MiB source cap (docs/security.md, "Plain JPEGs skip the child").

The worker has no kernel limit around `app.engine.direct.passthrough_jpeg`: its cost
must stay bounded by construction. Prints, per file, the walk alone (EOI check,
`jpeg_header.jpeg_header`, `structure.scan`) and the walk with the PDF written to
a memfd, best of 5 each.

    .venv/bin/python scripts/measure_jpeg_walk.py
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.engine import jpeg_header, structure
from app.engine.checks import _ends_with_eoi
from app.engine.direct import passthrough_jpeg
from app.errors import ApiError
from tests.support import images

CAP = 20 * 1024 * 1024


def segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def exif_with_1024_entries() -> bytes:
    ifd = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", 1024)
    ifd += b"".join(struct.pack("<HHI", 0x9000 + i, 3, 1) + b"\0" * 4 for i in range(1022))
    ifd += struct.pack("<HHII", 0x112, 3, 1, 6) + struct.pack("<HHII", 0x128, 3, 1, 2)
    return segment(0xE1, b"Exif\0\0" + ifd + b"\0" * 4)


def files() -> dict[str, bytes]:
    base = images.jpeg(64, 48)
    soi, rest = base[:2], base[2:]
    # Segments the walk accepts: 1,024 before the first scan in all (the base has 8).
    room = structure.JPEG_MAX_SEGMENTS - 1 - 9
    big = (CAP - len(base) - 20_000) // room - 4
    eoi = len(base) - 2
    dqt = segment(0xDB, (b"\x10" + b"\0\1" * 64) * 4)
    return {
        f"{room} APP segments of {big} B + 1,024-entry Exif": soi
        + exif_with_1024_entries()
        + b"".join(segment(0xE5, b"\0" * big) for _ in range(room))
        + rest,
        f"{room} empty APP segments + 1,024-entry Exif": soi
        + exif_with_1024_entries()
        + segment(0xE5, b"") * room
        + rest,
        f"{room} DQT segments of 4 16-bit tables": soi
        + exif_with_1024_entries()
        + dqt * room
        + rest,
        "20 MiB of FF 00 stuffing in the scan": base[:eoi]
        + b"\xff\x00" * ((CAP - len(base)) // 2)
        + b"\xff\xd9",
        "20 MiB of RST markers in the scan": base[:eoi]
        + b"\xff\xd0" * ((CAP - len(base)) // 2)
        + b"\xff\xd9",
        "20 MiB of SOS markers": base[:eoi] + b"\xff\xda" * ((CAP - len(base)) // 2) + b"\xff\xd9",
        "20 MiB of fill bytes before the frame": soi + b"\xff" * (CAP - len(base)) + rest,
    }


def best(fn, runs: int = 5) -> tuple[float, str]:
    times, outcome = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        try:
            outcome = fn()
        except ApiError as exc:
            outcome = type(exc).__name__
        times.append(time.perf_counter() - start)
    return min(times) * 1000, outcome


def main() -> None:
    fd = os.memfd_create("walk-pdf", os.MFD_CLOEXEC)
    try:
        for name, data in files().items():
            assert len(data) <= CAP, name

            def walk(data=data) -> str:
                _ends_with_eoi(data)
                head = jpeg_header.jpeg_header(data)
                if head is None:
                    return "to the sandbox"
                structure.scan(data, "jpeg")
                return "plain"

            def write(data=data) -> str:
                os.ftruncate(fd, 0)
                size = passthrough_jpeg(data, 10**9, fd)
                return "to the sandbox" if size is None else f"PDF {size:,} B"

            walk_ms, outcome = best(walk)
            write_ms, written = best(write)
            print(
                f"{name}: {len(data) / 2**20:.2f} MiB, {outcome}; walk {walk_ms:.1f} ms,"
                f" with the PDF written {write_ms:.1f} ms ({written})"
            )
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
