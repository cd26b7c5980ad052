#!/usr/bin/env python3
"""CPU per store of a plain JPEG's PDF in LocalStorage's folder, ways interleaved.

Compares the store as it is (`LocalStorage.save_pdf_written`: straight into the
folder in 1 MiB writes) with the memfd + `sendfile` path it replaced, the same
folder write as one `write()` call (the CPU tail that once made the direct write
look worse), and the copy-only server's write (scripts/bench_baseline.py).
Prints median, p90, p99 and mean CPU ms per store as a markdown table.
Usage: .venv/bin/python scripts/bench_store.py [--rounds N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.engine.direct import passthrough_jpeg  # noqa: E402
from app.storage import LocalStorage  # noqa: E402
from tests.support.images import encode  # noqa: E402
from tests.support.images import noisy_gradient as photo  # noqa: E402

EMPTY_EVERY = 40  # rounds between emptying the folder (the page cache it fills)


def ways(store: LocalStorage, folder: Path, data: bytes) -> dict:
    def memfd_sendfile() -> None:
        name = f"{uuid.uuid4()}.pdf"
        with io.FileIO(os.memfd_create("img2pdf-pdf", os.MFD_CLOEXEC), "rb") as pdf:
            size = passthrough_jpeg(data, 10**9, pdf.fileno())
            store._write_from(folder / name, pdf.fileno(), size, "a.pdf")

    def now() -> None:
        write = lambda fd: passthrough_jpeg(data, 10**9, fd)  # noqa: E731
        store.save_pdf_written(write, f"{uuid.uuid4()}.pdf", "a.pdf")

    def one_write() -> None:
        name = f"{uuid.uuid4()}.pdf"
        fd, tmp = store._create(name)
        os.write(fd, data)
        os.fchmod(fd, 0o644)
        os.close(fd)
        store._commit(tmp, folder / name, "a.pdf")

    def copy_only() -> None:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            for i in range(0, len(data), 1 << 20):
                f.write(data[i : i + (1 << 20)])
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / f"{uuid.uuid4()}.pdf")

    return {
        "memfd + `sendfile` (before)": memfd_sendfile,
        "folder, 1 MiB writes (now)": now,
        "folder, one `write()`": one_write,
        "the copy-only server's write": copy_only,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--dir", type=Path, default=None, help="a folder on the disk to test")
    args = ap.parse_args()
    data = encode(photo(4000, 3000), "JPEG", quality=90)  # 12 MP, ~5.8 MB
    base = Path(tempfile.mkdtemp(prefix="img2pdf-bench-store-", dir=args.dir))
    folder = base / "pdfs"
    try:
        store = LocalStorage(folder, "http://127.0.0.1:1")
        tried = ways(store, folder, data)
        cpu: dict[str, list[float]] = {k: [] for k in tried}
        for r in range(args.rounds):
            order = list(tried.items())
            for name, way in order if r % 2 else order[::-1]:
                t0 = time.process_time()
                way()
                cpu[name].append(1000 * (time.process_time() - t0))
            if r % EMPTY_EVERY == EMPTY_EVERY - 1:
                shutil.rmtree(folder)
                folder.mkdir()
        head = f"store of a {len(data) / 1e6:.1f} MB JPEG's PDF, CPU ms"
        print(f"| {head} | median | p90 | p99 | mean |")
        print("|---|---:|---:|---:|---:|")
        for name, v in cpu.items():
            v.sort()
            p90, p99 = v[9 * len(v) // 10], v[99 * len(v) // 100]
            print(
                f"| {name} | {statistics.median(v):.2f} | {p90:.2f} | {p99:.2f} "
                f"| {statistics.mean(v):.2f} |"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
