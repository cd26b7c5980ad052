"""The command line: `scripts/loadtest.py` (or `python -m tests.load.harness`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from tests.load import harness
from tests.load.harness.plans import run
from tests.load.harness.report import markdown, plot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=harness.__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("short", "full"), default="short")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--markdown", type=Path, help="write the per-step tables here")
    ap.add_argument("--plots", type=Path, help="write PNG plots into this directory")
    ap.add_argument("--only", help="run only this variant (e.g. defaults)")
    ap.add_argument("--seed", type=int, default=20_240_601)
    ap.add_argument("--workdir", type=Path, help="logs and stored PDFs (default: a temp dir)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("root is needed to create cgroups", file=sys.stderr)
        return 2
    # A `kill` or `timeout` unwinds like ^C: the service stops and its cgroups go
    # (SIGTERM's default ended the process at once and left both behind).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        report = run(args.mode, workdir, args.seed, args.only)
        report["elapsed_s"] = time.monotonic() - started
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str))
        if args.markdown:
            args.markdown.write_text(markdown(report))
        if args.plots:
            for p in plot(report, args.plots):
                print(f"plot: {p}")
    steps = sum(len(r["steps"]) for r in report["runs"])
    print(f"elapsed {report['elapsed_s']:.0f} s, {steps} steps")
    for v in report["violations"]:
        print(f"VIOLATION: {v}")
    return 1 if report["violations"] else 0


def _exit_on_signal(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)
