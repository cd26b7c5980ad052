#!/usr/bin/env python3
"""Benchmark the service against a naive Pillow baseline, both measured in this run.

Starts both behind the same gunicorn config on loopback, serves source images
from a local server, and prints req/s, p50/p95 latency and the ratio to the
baseline for a 12 MP JPEG, a 2 MP PNG and an alpha PNG at c=1 and c=4; then a
worst-case burst to compare each worker's peak RSS with idle RSS + budget.
It also prices the process boundary (app.sandbox): the same conversions in
process and in a forked child, with a loopback fetch of each file for scale;
runs a copy-only server (download to a file, no conversion: the floor any
converter pays) in the same run; compares deflate/inflate libraries on a photo
and a screenshot; and with --before DIR (a checkout of an older revision) runs
that revision's service too, so "before" and "after" share one run.
Usage: .venv/bin/python scripts/bench.py [--requests N] [--quick] [--boundary-only]
       [--before DIR [--before-venv VENV]] [--deflate-only] [--download-only]
       [--floor-only] [--repeats N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from tests.support.images import encode  # noqa: E402
from tests.support.images import noisy_gradient as photo  # noqa: E402
from tests.support.servers import Service, SourceServer, http, hwm_kib, rss_kib  # noqa: E402

MIB = 1024 * 1024
# An alpha PNG near the largest the default work pool admits (~23 B/px estimated): a burst of
# these is the worst memory case that is actually converted, not refused.
WORST_MP = 9


def run_case(base: str, url: str, concurrency: int, n: int) -> dict:
    def one(_):
        t0 = time.perf_counter()
        r = http("POST", base + "/image_to_pdf", {"source_url": url}, timeout=120)
        return r.status, time.perf_counter() - t0, r

    http("POST", base + "/image_to_pdf", {"source_url": url}, timeout=120)  # warm up
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat = sorted(d for s, d, _ in results if s == 200)
    ok = len(lat)
    return {
        "ok": ok,
        "errors": n - ok,
        "rps": ok / wall if wall else 0.0,
        "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
        "p95_ms": 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan"),
        "last": results[-1][2],
    }


def conversion_only(images: dict[str, bytes], repeats: int) -> None:
    """In-process: our inspect+convert vs the baseline's decode+save(PDF), no I/O."""
    from app.engine.convert import convert_to_pdf
    from app.engine.inspect import inspect_image
    from scripts.bench_baseline import _convert as baseline_convert

    print(f"\n{'conversion only':<16}{'ours ms':>9} {'base ms':>9} {'speed-up':>9}")
    for name, data in images.items():
        ours, base = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            convert_to_pdf(data, inspect_image(data, 10**9))
            t1 = time.perf_counter()
            baseline_convert(data)
            t2 = time.perf_counter()
            ours.append(t1 - t0)
            base.append(t2 - t1)
        o, b = statistics.median(ours), statistics.median(base)
        print(f"{name:<16}{1000 * o:>9.0f} {1000 * b:>9.0f} {b / o:>8.1f}x")


def process_boundary(images: dict[str, bytes], repeats: int) -> None:
    """Per-request cost of converting in a forked child instead of in process."""
    from app.engine.convert import convert_to_pdf
    from app.engine.inspect import inspect_image
    from app.engine.pricing import estimate_peak_bytes
    from app.sandbox import Limits, Sandbox

    box = Sandbox(Limits(timeout_s=60, max_memory=4096 * MIB))
    box.start()
    source = SourceServer()
    urls = {name: source.add_bytes(f"/b{i}", data) for i, (name, data) in enumerate(images.items())}

    def in_child(data: bytes) -> bytes:
        with box.job(data) as job:
            info = job.inspect(10**9)
            return job.convert(info, estimate_peak_bytes(info, len(data)))

    print(
        f"\n{'process boundary':<16}{'in-proc ms':>11} {'child ms':>9} {'overhead':>9}"
        f" {'fetch ms':>9}"
    )
    try:
        for name, data in images.items():
            in_child(data)  # warm the zygote's caches
            inproc, child, fetch = [], [], []
            for _ in range(repeats):  # interleaved, so both see the same machine
                t0 = time.perf_counter()
                convert_to_pdf(data, inspect_image(data, 10**9))
                t1 = time.perf_counter()
                in_child(data)
                t2 = time.perf_counter()
                http("GET", urls[name])
                t3 = time.perf_counter()
                inproc.append(t1 - t0)
                child.append(t2 - t1)
                fetch.append(t3 - t2)
            a, b, f = (1000 * statistics.median(x) for x in (inproc, child, fetch))
            print(f"{name:<16}{a:>11.1f} {b:>9.1f} {b - a:>+8.1f} {f:>9.1f}")
    finally:
        source.close()


def request_path_profile(images: dict[str, bytes], repeats: int) -> None:
    """Where one request's time goes: the API's own path (app.pipeline), in process,
    each stage timed (median of `repeats`), against a loopback source server."""
    import anyio

    import app.pipeline as pipeline
    from app.main import build_services
    from app.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="img2pdf-profile-"))
    env = {**os.environ, "ALLOW_PRIVATE_SOURCE_URLS": "1", "DATA_DIR": str(tmp)}
    env.update({"PUBLIC_BASE_URL": "http://127.0.0.1:1", "STORAGE_BACKEND": "local"})
    svc = build_services(Settings.from_env(env))
    source = SourceServer()
    urls = {name: source.add_bytes(f"/p{i}", data) for i, (name, data) in enumerate(images.items())}
    times: dict[str, list[float]] = {}
    originals = {}

    def timed(module, name: str, label: str) -> None:
        original = getattr(module, name)
        originals[(module, name)] = original

        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                times.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(module, name, wrapper)

    def timed_sync(obj, name: str, label: str) -> None:
        original = getattr(obj, name)
        originals[(obj, name)] = original

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                times.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(obj, name, wrapper)

    from app import sandbox

    timed(pipeline, "fetch_source", "download")
    timed(pipeline, "image_to_pdf_file", "convert total")
    timed(pipeline, "store_pdf", "store")
    timed(pipeline, "store_passthrough", "plain jpeg: convert + store")
    timed_sync(sandbox, "_write_all", "  source -> memfd")
    timed_sync(sandbox._zygote, "launch", "  fork (zygote)")
    timed_sync(sandbox.Job, "inspect", "  inspect round trip")
    timed_sync(sandbox.Job, "convert_size", "  convert round trip")
    timed_sync(sandbox.Job, "close", "  kill + reap")

    async def one(url: str) -> None:
        await pipeline.convert_source_url(url, svc)

    print(f"\n{'request path (in process, median ms)':<40}")
    try:
        for name, url in urls.items():
            anyio.run(one, url)  # warm
            times.clear()
            total = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                anyio.run(one, url)
                total.append(time.perf_counter() - t0)
            print(f"{name}: whole path {1000 * statistics.median(total):.1f} ms")
            for label, values in times.items():
                print(f"  {label:<30}{1000 * statistics.median(values):>8.1f}")
        # The same JPEG with the in-worker passthrough and through the child, interleaved.
        passthrough = pipeline.passthrough_jpeg
        jpeg_url = next(iter(urls.values()))
        ab: dict[str, list[float]] = {"in the worker": [], "in a child": []}
        for _ in range(repeats):
            for label, values in ab.items():
                pipeline.passthrough_jpeg = passthrough if label == "in the worker" else _never
                t0 = time.perf_counter()
                anyio.run(one, jpeg_url)
                values.append(time.perf_counter() - t0)
        pipeline.passthrough_jpeg = passthrough
        print(
            "jpeg passthrough, whole path: "
            + ", ".join(f"{k} {1000 * statistics.median(v):.1f} ms" for k, v in ab.items())
        )
    finally:
        for (obj, name), original in originals.items():
            setattr(obj, name, original)
        source.close()
        shutil.rmtree(tmp, ignore_errors=True)


def download_paths(data: bytes, repeats: int, before: Path | None = None) -> None:
    """The source download alone, interleaved in one event loop: urllib in a thread
    (what the copy-only server does), app.fetch, and with --before that revision's
    app.fetch (loaded from its tree, run in this process)."""
    import importlib.util
    import urllib.request

    import anyio

    from app.fetch import FetchPolicy, fetch_source

    source = SourceServer()
    url = source.add_bytes("/d", data)
    fetchers = {"app.fetch": fetch_source}
    if before is not None:
        spec = importlib.util.spec_from_file_location("before_fetch", before / "app/fetch.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["before_fetch"] = module
        spec.loader.exec_module(module)
        fetchers["before"] = module.fetch_source

    def by_urllib() -> bytes:
        with urllib.request.urlopen(url) as r:  # noqa: S310 (our loopback server)
            return r.read()

    async def run() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {}
        for _ in range(repeats):
            for label in ("urllib", *fetchers):
                t0 = time.perf_counter()
                if label == "urllib":
                    body = await anyio.to_thread.run_sync(by_urllib)
                else:
                    body = (await fetchers[label](url, FetchPolicy(allow_private=True))).data
                times.setdefault(label, []).append(time.perf_counter() - t0)
                assert body == data
        return times

    try:
        times = anyio.run(run)
    finally:
        source.close()
    print(
        f"\ndownload of {len(data) / MIB:.1f} MiB (median ms of {repeats}, interleaved): "
        + ", ".join(f"{k} {1000 * statistics.median(v):.1f}" for k, v in times.items())
    )


def _never(data: bytes, max_pixels: int, fd: int) -> None:
    """Stands in for app.pipeline.passthrough_jpeg: every JPEG goes to the sandbox."""
    return None


def deflate_libraries() -> None:
    """zlib vs ISA-L (isal) vs zlib-ng (when installed) on PNG-Up-filtered samples."""
    import zlib

    import numpy as np
    from isal import isal_zlib
    from PIL import ImageDraw

    libs = [("zlib", zlib, (1, 6)), ("isal", isal_zlib, (0, 1, 2))]
    try:
        from zlib_ng import zlib_ng

        libs.append(("zlib-ng", zlib_ng, (1, 2, 6)))
    except ImportError:
        print("(zlib-ng not installed: pip install zlib-ng to compare it too)")
    shot = Image.new("RGB", (1633, 1224), (245, 245, 245))
    draw = ImageDraw.Draw(shot)
    for y in range(0, 1224, 18):
        draw.text((10, y), "The quick brown fox jumps over the lazy dog 0123456789 " * 3, (20,) * 3)
    for x in range(0, 1633, 200):
        draw.rectangle((x, 100, x + 150, 300), fill=(40, 90, 200))

    def up(im: Image.Image) -> bytes:
        rows = np.asarray(im.convert("RGB")).reshape(im.height, -1)
        out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        out[:, 0] = 2
        out[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
        return out.tobytes()

    print(f"\n{'deflate (2 MP, Up filter)':<28}{'ms':>7} {'size':>7} {'inflate ms':>11}")
    for name, raw in (("photo", up(photo(1633, 1224))), ("screenshot", up(shot))):
        for lib, mod, levels in libs:
            for level in levels:
                packed, times = b"", []
                for _ in range(5):
                    t0 = time.perf_counter()
                    packed = mod.compress(raw, level)
                    times.append(time.perf_counter() - t0)
                inflate = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    mod.decompress(packed)
                    inflate.append(time.perf_counter() - t0)
                label = f"{name} {lib} {level}"
                print(
                    f"{label:<28}{1000 * min(times):>7.1f} {100 * len(packed) / len(raw):>6.1f}%"
                    f" {1000 * min(inflate):>11.1f}"
                )


_CONVERT_IN_TREE = r"""
import statistics, sys, time
tree, root = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
from tests.support.images import encode, noisy_gradient as photo
sys.path[0] = tree
try:  # app/engine/ since the engine became a package; app/convert.py before
    from app.engine.convert import convert_to_pdf
    from app.engine.inspect import inspect_image
except ImportError:
    from app.convert import convert_to_pdf, inspect_image
where = sys.modules[convert_to_pdf.__module__].__file__
assert where.startswith(tree), where
try:
    from app.engine import vips as streaming
except ImportError:
    try:
        from app import pdfstream as streaming
    except ImportError:
        streaming = None
if streaming is not None:
    streaming.configure()  # as the conversion zygote does
row = []
for data in (encode(photo(1633, 1224), "PNG", compress_level=6),
             encode(photo(1633, 1224, "RGBA"), "PNG", compress_level=6)):
    for _ in range(2):
        convert_to_pdf(data, inspect_image(data, 10**9))
    times = []
    for _ in range(9):
        t0 = time.perf_counter()
        convert_to_pdf(data, inspect_image(data, 10**9))
        times.append(time.perf_counter() - t0)
    row.append(1000 * statistics.median(times))
print(*row)
"""


def conversion_before_after(before: Path, rounds: int = 3) -> None:
    """Check + conversion in process, previous revision vs this one, interleaved."""
    import subprocess

    head = f"{'png before':>11} {'after':>6} {'alpha before':>13} {'after':>6}"
    print(f"\n{'in process, 2 MP (ms)':<24}{head}")
    for _ in range(rounds):
        got = []
        for tree in (before.resolve(), ROOT):
            out = subprocess.run(
                [sys.executable, "-c", _CONVERT_IN_TREE, str(tree), str(ROOT)],
                capture_output=True,
                text=True,
                check=True,
            )
            got.append([float(x) for x in out.stdout.split()])
        (pb, ab), (pa, aa) = got
        print(f"{'':<24}{pb:>11.0f} {pa:>6.0f} {ab:>13.0f} {aa:>6.0f}")


def service_cpu_s(svc: Service) -> float:
    """CPU seconds used so far by the service's processes and the children they reaped
    (conversion children): user + system, from /proc."""
    from tests.support.processes import CLOCK_TICKS, _stat, tree

    total = 0
    for pid in tree(svc.proc.pid) if svc.proc else []:
        fields = _stat(pid)
        if fields:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def sweep_stored(svc: Service) -> None:
    """Delete the PDFs a server stored (between cases, nothing in flight): left in
    place, a run's gigabytes of dirty pages reach writeback, and every server's
    CPU per request then tripled for the rest of the run."""
    folder = Path(svc.env["DATA_DIR"])
    for pattern in ("*.pdf", "*.pdf.filename"):
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)


def copy_floor(
    ours: Service, copier: Service, before: Service | None, url: str, n: int, repeats: int
) -> None:
    """The 12 MP JPEG against the copy-only server (the floor: download to a file,
    renamed into place, no conversion), `repeats` rounds, servers interleaved in
    each (in turn first); the ratio's range over the rounds at c=1 and c=4, and
    each server's CPU per request (less sensitive than req/s to what else runs on
    the machine)."""
    servers = {"copy": copier, "ours": ours, **({"before": before} if before else {})}
    print(
        f"\n{'copy-only floor':<16}{'c':>3}"
        + "".join(f" {k + ' rps':>11} {'cpu ms':>7}" for k in servers)
        + "".join(f" {k + '/copy':>12}" for k in servers if k != "copy")
    )
    for svc in servers.values():
        run_case(svc.base, url, 4, n)  # warm every worker before the first round
    ratios: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    names = list(servers)
    for r in range(repeats):
        for c in (1, 4):
            # Each round starts with another server: the one that runs right after
            # a burst of writes pays for the page cache it left (reclaim, writeback).
            order = names[r % len(names) :] + names[: r % len(names)]
            got = {}
            for name in order:
                svc = servers[name]
                cpu0 = service_cpu_s(svc)
                got[name] = run_case(svc.base, url, c, n)
                cpu = 1000 * (service_cpu_s(svc) - cpu0) / (n + 1)  # + the warm-up request
                cpus.setdefault((name, c), []).append(cpu)
                sweep_stored(svc)
            rps = {name: got[name]["rps"] for name in names}
            line = f"{'jpeg 12MP':<16}{c:>3}"
            for name in names:
                line += f" {rps[name]:>11.2f} {cpus[(name, c)][-1]:>7.1f}"
            for name in servers:
                if name != "copy":
                    ratios.setdefault((name, c), []).append(rps[name] / rps["copy"])
                    line += f" {rps[name] / rps['copy']:>12.0%}"
            print(line)
    summary = ", ".join(
        f"{who} c={c} {min(v):.0%}-{max(v):.0%}" for (who, c), v in sorted(ratios.items())
    )
    print(f"of the copy-only server's req/s over {repeats} rounds: {summary}")
    summary = ", ".join(
        f"{who} c={c} {min(v):.1f}-{max(v):.1f}" for (who, c), v in sorted(cpus.items())
    )
    print(f"service CPU ms per request: {summary}")


def worker_pids(svc: Service) -> list[int]:
    """The gunicorn workers (not their conversion zygotes or resource trackers).

    Conversions run in children of the zygotes, limited by the kernel to their
    work-pool reservation (app/sandbox.py); a worker's own peak no longer
    includes them.
    """
    from tests.support.processes import workers

    return workers(svc.proc.pid) if svc.proc else []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=12, help="requests per case and concurrency")
    ap.add_argument("--quick", action="store_true", help="smaller images, fewer requests")
    ap.add_argument(
        "--boundary-only", action="store_true", help="only the process-boundary overhead"
    )
    ap.add_argument(
        "--profile-only", action="store_true", help="only the request path's stage timings"
    )
    ap.add_argument("--deflate-only", action="store_true", help="only the deflate comparison")
    ap.add_argument("--download-only", action="store_true", help="only the download comparison")
    ap.add_argument(
        "--floor-only", action="store_true", help="only the JPEG against the copy-only server"
    )
    ap.add_argument("--repeats", type=int, default=1, help="rounds of the copy-only comparison")
    ap.add_argument("--before", type=Path, help="a checkout of an older revision to compare")
    ap.add_argument(
        "--before-venv", type=Path, help="the venv the older revision runs on (its requirements)"
    )
    args = ap.parse_args()
    if args.deflate_only:
        deflate_libraries()
        return 0
    scale = 0.25 if args.quick else 1.0
    n = 4 if args.quick else args.requests

    def dims(mp: float) -> tuple[int, int]:
        w = int((mp * 1e6 * scale * 4 / 3) ** 0.5)
        return w, int(w * 3 / 4)

    print("generating images…", file=sys.stderr)
    jpeg12 = encode(photo(*dims(12)), "JPEG", quality=85)
    png2 = encode(photo(*dims(2)), "PNG", compress_level=6)
    alpha2 = encode(photo(*dims(2), "RGBA"), "PNG", compress_level=6)
    worst = encode(photo(*dims(WORST_MP), "RGBA"), "PNG", compress_level=1)

    three = {"jpeg 12MP": jpeg12, "png 2MP": png2, "alpha png 2MP": alpha2}
    if not args.floor_only:
        download_paths(jpeg12, 10 if args.quick else 40, args.before)
        if args.download_only:
            return 0
        request_path_profile(three, 5 if args.quick else 15)
        if args.profile_only:
            return 0
        process_boundary(three, 5 if args.quick else 15)
        if args.boundary_only:
            return 0
        conversion_only(three, 3 if args.quick else 5)
        if args.before:
            conversion_before_after(args.before)
        deflate_libraries()
    source = SourceServer()
    urls = {
        "jpeg 12MP": source.add_bytes("/j.jpg", jpeg12),
        "png 2MP": source.add_bytes("/p.png", png2),
        "alpha png 2MP": source.add_bytes("/a.png", alpha2),
    }
    tmp = Path(tempfile.mkdtemp(prefix="img2pdf-bench-"))
    from app.settings import Settings

    defaults = Settings.from_env(dict(os.environ))
    # Both pools count: conversion peaks (work) and source bytes / pages (data).
    budget = defaults.worker_memory_budget + defaults.download_budget
    env = {"WEB_CONCURRENCY": "2", "ADMISSION_WAIT": "30"}
    ours = Service(tmp / "ours", env=env)
    (tmp / "ours").mkdir()
    base_env = {**env, "DATA_DIR": str(tmp / "baseline-data")}
    baseline = Service(tmp / "baseline", env=base_env)
    (tmp / "baseline").mkdir()
    baseline.env["APP_MODULE"] = "scripts.bench_baseline:create_app()"
    copy_env = {**env, "DATA_DIR": str(tmp / "copy-data")}
    (tmp / "copy").mkdir()
    copier = Service(tmp / "copy", env=copy_env)
    copier.env["APP_MODULE"] = "scripts.bench_baseline:create_copy_app()"
    before = None
    if args.before:
        (tmp / "before").mkdir()
        before = Service(tmp / "before", env=env, tree=args.before.resolve())
        if args.before_venv:
            before.env["VENV"] = str(args.before_venv.resolve())
    rows = []
    try:
        ours.start()
        copier.start()
        if before:
            before.start()
        if args.floor_only:
            copy_floor(ours, copier, before, urls["jpeg 12MP"], n, args.repeats)
            return 0
        baseline.start()
        idle = {p: rss_kib(p) for p in worker_pids(ours)}
        print(
            f"\n{'case':<16}{'c':>3} {'ours rps':>9} {'p50':>7} {'p95':>7}"
            f" {'base rps':>9} {'p50':>7} {'p95':>7} {'ratio':>7}"
        )
        for name, url in urls.items():
            for c in (1, 4):
                a = run_case(ours.base, url, c, n)
                b = run_case(baseline.base, url, c, n)
                sweep_stored(ours)
                sweep_stored(baseline)
                ratio = a["rps"] / b["rps"] if b["rps"] else float("inf")
                rows.append({"case": name, "c": c, "ours": a, "baseline": b, "ratio": ratio})
                print(
                    f"{name:<16}{c:>3} {a['rps']:>9.2f} {a['p50_ms']:>7.0f} {a['p95_ms']:>7.0f}"
                    f" {b['rps']:>9.2f} {b['p50_ms']:>7.0f} {b['p95_ms']:>7.0f} {ratio:>6.1f}x"
                    + ("" if a["errors"] == 0 else f"  ours errors={a['errors']}")
                )
                if before:
                    o = run_case(before.base, url, c, n)
                    sweep_stored(before)
                    ratio_o = o["rps"] / b["rps"] if b["rps"] else float("inf")
                    rows[-1]["before"] = round(ratio_o, 2)
                    print(
                        f"{'  before':<16}{c:>3} {o['rps']:>9.2f} {o['p50_ms']:>7.0f}"
                        f" {o['p95_ms']:>7.0f} {'':>25} {ratio_o:>6.1f}x"
                    )
        copy_floor(ours, copier, before, urls["jpeg 12MP"], n, args.repeats)
        # Lossless check: the JPEG's bytes appear unchanged in our PDF.
        pdf = http(
            "GET", run_case(ours.base, urls["jpeg 12MP"], 1, 1)["last"].json()["converted_url"]
        ).body
        print(f"\nJPEG embedded byte for byte: {jpeg12 in pdf}")
        # Worst case burst: many large alpha PNGs at once.
        worst_url = source.add_bytes("/worst.png", worst)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(
                    lambda _: (
                        http(
                            "POST",
                            ours.base + "/image_to_pdf",
                            {"source_url": worst_url},
                            timeout=300,
                        ).status
                    ),
                    range(8),
                )
            )
        print(
            f"worst-case burst (8 x {len(worst) // MIB} MiB alpha PNG,"
            f" {dims(WORST_MP)[0]}x{dims(WORST_MP)[1]}): statuses {sorted(statuses)}"
        )
        for pid, idle_kib in idle.items():
            peak = hwm_kib(pid)
            limit = idle_kib + budget // 1024
            verdict = "OK" if peak <= limit else "OVER"
            print(
                f"worker {pid}: idle {idle_kib / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB,"
                f" idle+budget {limit / 1024:.0f} MiB -> {verdict}"
            )
    finally:
        ours.stop()
        baseline.stop()
        copier.stop()
        if before:
            before.stop()
        source.close()
        # Every request stored a PDF: a few runs of 12 MP JPEGs are gigabytes.
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {r["case"] + f" c={r['c']}": round(r["ratio"], 2) for r in rows}
    print("\nthroughput ratio ours/baseline:", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
