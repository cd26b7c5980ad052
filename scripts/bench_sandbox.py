"""CPU of one conversion child's fixed cost (app.sandbox), per phase.

Runs jobs of one image through `Sandbox` in this process and reads CPU from
the kernel: this process (the parent side: launch, messages, reap), the
zygote's own (the fork) and its reaped children's (`cutime`/`cstime` and
`cminflt` of /proc/<zygote>/stat: the child side, with its page faults).

Usage: .venv/bin/python scripts/bench_sandbox.py [--jobs N] [--rounds R] [--image tiny|alpha]
       [--source DIR]   (another checkout's app/, e.g. the revision before)
Prints per round: ms CPU per job (parent, zygote, children, total), the
children's minor faults per job, wall ms per job.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def zygote_cpu(pid: int) -> tuple[float, float, int]:
    """(own CPU s, reaped children's CPU s, reaped children's minor faults)."""
    f = _stat(pid)  # f[0] is field 3 (state)
    own = (int(f[11]) + int(f[12])) / TICK
    kids = (int(f[13]) + int(f[14])) / TICK
    return own, kids, int(f[8])


def my_children() -> set[int]:
    out: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def image(kind: str) -> bytes:
    """tiny: an 8x8 RGBA PNG; alpha: scripts/bench_cpu.py's 2 MP RGBA PNG."""
    from PIL import Image

    if kind == "tiny":
        buf = io.BytesIO()
        Image.new("RGBA", (8, 8), (200, 30, 30, 128)).save(buf, "PNG")
        return buf.getvalue()
    from tests.support.images import encode, noisy_gradient

    w = int((2e6 * 4 / 3) ** 0.5)
    return encode(noisy_gradient(w, int(w * 3 / 4), "RGBA"), "PNG", compress_level=6)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image", default="tiny", choices=["tiny", "alpha"])
    ap.add_argument("--source", help="checkout whose app/ to measure")
    args = ap.parse_args()
    root = Path(args.source).resolve() if args.source else Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support
    os.chdir(root)

    from app.engine.pricing import estimate_peak_bytes
    from app.sandbox import Limits, Sandbox

    before = my_children()
    box = Sandbox(Limits(timeout_s=60, max_memory=1024 * 1024 * 1024))
    box.start()
    (zygote,) = [
        pid
        for pid in my_children() - before
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    data = image(args.image)

    def one() -> None:
        with box.job(data) as job:
            info = job.inspect(10**9)
            job.convert_size(info, estimate_peak_bytes(info, len(data)))

    for _ in range(10):
        one()
    print(f"{root}: {args.image} ({len(data)} B), {args.jobs} jobs a round")
    print(f"{'ms/job':>8} {'parent':>7} {'zygote':>7} {'child':>7} {'total':>7} {'faults':>7}")
    totals = []
    for _ in range(args.rounds):
        z0, c0, f0 = zygote_cpu(zygote)
        p0, w0 = time.process_time(), time.perf_counter()
        for _ in range(args.jobs):
            one()
        p1, w1 = time.process_time(), time.perf_counter()
        z1, c1, f1 = zygote_cpu(zygote)
        n = args.jobs / 1000
        parent, zyg, kids = (p1 - p0) / n, (z1 - z0) / n, (c1 - c0) / n
        totals.append(parent + zyg + kids)
        print(
            f"{(w1 - w0) / n:>8.2f} {parent:>7.2f} {zyg:>7.2f} {kids:>7.2f}"
            f" {parent + zyg + kids:>7.2f} {(f1 - f0) / args.jobs:>7.0f}"
        )
    print(f"median total CPU {statistics.median(totals):.2f} ms/job")


if __name__ == "__main__":
    main()
