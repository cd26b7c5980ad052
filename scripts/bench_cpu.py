#!/usr/bin/env python3
"""CPU per request of the service and the naive baseline, same run, interleaved.

Throughput ratios on a shared 2-core box swing with whatever else runs; the CPU
a request costs (utime + stime of the gunicorn process tree, conversion children
included: the zygote reaps them) moves much less. Prints, per round and
concurrency, req/s, p50 and CPU ms per request, ours split into web workers,
zygote and conversion children. With --before DIR the same for an older
checkout (its own service, this venv).
Usage: .venv/bin/python scripts/bench_cpu.py [--case alpha|png|jpeg] [--rounds N]
       [--requests N] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench import run_case  # noqa: E402
from tests.support.images import encode  # noqa: E402
from tests.support.images import noisy_gradient as photo  # noqa: E402
from tests.support.servers import Service, SourceServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of `root`'s process tree: workers (and the master), zygote (its
    own), children (what the zygote reaped: the conversion processes)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            parents.setdefault(int(st[1]), []).append(int(name))
    out = {"workers": 0.0, "zygote": 0.0, "children": 0.0}
    stack = [root]
    while stack:
        pid = stack.pop()
        st = _stat(pid)
        if st is None:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        own, reaped = (int(st[11]) + int(st[12])) / TICK, (int(st[13]) + int(st[14])) / TICK
        if b"forkserver" in cmd or b"app.zygote" in cmd:  # before and after the own zygote
            out["zygote"] += own
            out["children"] += reaped
        elif b"resource_tracker" not in cmd:
            out["workers"] += own + (reaped if pid != root else 0.0)
        stack += parents.get(pid, [])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=["alpha", "png", "jpeg"], default="alpha")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--before", type=Path, help="a checkout of an older revision")
    args = ap.parse_args()
    w = int((2e6 * 4 / 3) ** 0.5) if args.case != "jpeg" else int((12e6 * 4 / 3) ** 0.5)
    size = (w, int(w * 3 / 4))
    data = {
        "alpha": lambda: encode(photo(*size, "RGBA"), "PNG", compress_level=6),
        "png": lambda: encode(photo(*size), "PNG", compress_level=6),
        "jpeg": lambda: encode(photo(*size), "JPEG", quality=85),
    }[args.case]()
    source = SourceServer()
    url = source.add_bytes("/source", data)
    tmp = Path(tempfile.mkdtemp(prefix="img2pdf-bench-cpu-"))
    services: dict[str, Service] = {}
    for name, tree in (("ours", ROOT), ("before", args.before), ("baseline", ROOT)):
        if tree is None:
            continue
        (tmp / name).mkdir()
        env = {
            "WEB_CONCURRENCY": "2",
            "ADMISSION_WAIT": "30",
            "DATA_DIR": str(tmp / f"{name}-data"),
        }
        services[name] = Service(tmp / name, env=env, tree=tree.resolve())
    services["baseline"].env["APP_MODULE"] = "scripts.bench_baseline:create_app()"
    print(f"{args.case}: {len(data) / 1e6:.2f} MB, {args.requests} requests a round")
    try:
        for svc in services.values():
            svc.start()
        for r in range(args.rounds):
            for c in (1, 4):
                line = []
                for name, svc in services.items():
                    assert svc.proc is not None
                    start = tree_cpu(svc.proc.pid)
                    got = run_case(svc.base, url, c, args.requests)
                    end = tree_cpu(svc.proc.pid)
                    per = {k: 1000 * (end[k] - start[k]) / (args.requests + 1) for k in end}
                    parts = (
                        ""
                        if name == "baseline"
                        else (
                            " (workers {workers:.0f}, zygote {zygote:.1f}, children {children:.0f})"
                        ).format(**per)
                    )
                    line.append(
                        f"{name} {got['rps']:.1f} req/s p50 {got['p50_ms']:.0f} ms"
                        f" cpu {sum(per.values()):.0f} ms{parts}"
                        + (f" errors {got['errors']}" if got["errors"] else "")
                    )
                print(f"round {r} c={c}: " + "; ".join(line), flush=True)
    finally:
        for svc in services.values():
            svc.stop()
        source.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
