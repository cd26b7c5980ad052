"""What a run offers (plans per mode and variant), the run itself, and its verdict."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.load.harness.corpus import MIX, WORST_MIX, Kind, build_corpus, corpus_dir
from tests.load.harness.limits import CPU_PERIOD_US, CPU_QUOTA_US, MEMORY_LIMIT, MIB, ClientBoost
from tests.load.harness.load import CLIENT_TIMEOUT_S, run_step
from tests.load.harness.origin import SOURCE_DELAY_S, SourceProcess
from tests.load.harness.report import print_step
from tests.load.harness.service import DEFAULTS, LimitedService, Variant, keepalive_probe

MAX_REQUESTS = 20_000  # hard cap across a whole run, whatever the steps say


@dataclass
class Plan:
    variant: Variant
    rates: list[float]
    duration: float
    mix: tuple[Kind, ...] = MIX
    label: str = "mix"


def plans_for(mode: str) -> list[Plan]:
    if mode == "short":
        # Under, near and well past one VM's capacity (25-35/s for this mix under
        # 0.5 CPU; 120/s is 3-5x that, so 503s are certain), then the worst inputs.
        return [
            Plan(DEFAULTS, [2, 6, 120], 10),
            Plan(DEFAULTS, [3], 8, WORST_MIX, "worst-memory"),
        ]
    knee = [4, 6, 8, 12]
    return [
        Plan(DEFAULTS, [1, 2, 4, 6, 7, 8, 10, 12, 16, 24, 32, 48], 20),
        Plan(DEFAULTS, [1, 3], 20, WORST_MIX, "worst-memory"),
        Plan(Variant("workers=1", {"WEB_CONCURRENCY": "1"}), knee, 20),
        Plan(Variant("workers=3", {"WEB_CONCURRENCY": "3"}), knee, 20),
        Plan(Variant("workers=3", {"WEB_CONCURRENCY": "3"}), [1, 3], 20, WORST_MIX, "worst-memory"),
        Plan(Variant("convert_threads=1", {"CONVERT_THREADS": "1"}), knee, 20),
        Plan(Variant("convert_threads=4", {"CONVERT_THREADS": "4"}), knee, 20),
        Plan(Variant("budget=448MiB", {"WORKER_MEMORY_BUDGET": str(448 * MIB)}), knee, 20),
        Plan(
            Variant("budget=448MiB", {"WORKER_MEMORY_BUDGET": str(448 * MIB)}),
            [1, 3],
            20,
            WORST_MIX,
            "worst-memory",
        ),
        # The defaults again, last: the spread between the two is the run's noise.
        Plan(Variant("defaults-repeat", {}), knee, 20),
    ]


def run(mode: str, workdir: Path, seed: int, only: str | None) -> dict[str, object]:
    files = build_corpus(corpus_dir())
    boost = ClientBoost(f"img2pdf-loadclient-{os.getpid()}")
    try:
        return _run(mode, workdir, seed, only, files)
    finally:
        boost.close()


def _run(mode: str, workdir: Path, seed: int, only: str | None, files) -> dict[str, object]:
    sources = SourceProcess(files)
    rng = random.Random(seed)
    budget = [MAX_REQUESTS]
    report: dict[str, object] = {
        "mode": mode,
        "limits": {
            "cpu_quota_us": CPU_QUOTA_US,
            "cpu_period_us": CPU_PERIOD_US,
            "memory_limit": MEMORY_LIMIT,
            "client_timeout_s": CLIENT_TIMEOUT_S,
            "source_delay_s": SOURCE_DELAY_S,
        },
        "corpus": {p: f.stat().st_size for p, f in files.items()},
        "mix": [asdict(k) for k in MIX],
        "runs": [],
    }
    plans = plans_for(mode)
    if only:
        plans = [p for p in plans if p.variant.name == only]
    try:
        # One service per variant, reused for its plans (a fresh one per variant).
        by_variant: dict[str, list[Plan]] = {}
        for plan in plans:
            by_variant.setdefault(plan.variant.name, []).append(plan)
        for plans_of_variant in by_variant.values():
            report["runs"].append(_run_variant(plans_of_variant, sources, workdir, rng, budget))
    finally:
        sources.close()
    report["violations"] = violations(report)
    return report


def _run_variant(plans: list[Plan], sources, workdir: Path, rng, budget) -> dict[str, object]:
    variant = plans[0].variant
    svc = LimitedService(variant, workdir)
    entry: dict[str, object] = {"variant": variant.name, "env": variant.env, "steps": []}
    try:
        svc.start()
        entry["cgroup_backend"] = svc.cg.backend
        entry["limits_read_back"] = svc.cg.read_back()
        entry["confinement"] = svc.check_confinement()
        entry["keepalive"] = keepalive_probe(svc.port, 7.0)
        for plan in plans:
            for rate in plan.rates:
                step = run_step(
                    svc, sources, plan.mix, rate, plan.duration, rng, budget, plan.label
                )
                entry["steps"].append(step)
                print_step(variant.name, step)
        mem = svc.cg.stats()
        entry["oom_kills_total"] = mem["oom_kill"]
        entry["failcnt_total"] = mem["limit_hits"]
        entry["confinement_end"] = svc.check_confinement()
    finally:
        svc.stop()
        entry["sigkill_log_lines"] = svc.kills()[:10]
        entry["log_errors"] = [
            ln[:300] for ln in svc.log().splitlines() if '"level":"error"' in ln
        ][:10]
        entry["log"] = str(svc.log_path)
        entry["cgroups_removed"] = svc.remove_cgroups()
    return entry


def violations(report: dict) -> list[str]:
    out = []
    for run_ in report["runs"]:
        v = run_["variant"]
        if not run_.get("cgroups_removed"):
            out.append(f"{v}: cgroups were not removed")
        conf = run_.get("confinement", {})
        if conf.get("outside_cpu") or conf.get("outside_memory"):
            out.append(f"{v}: service processes outside the limited cgroups: {conf}")
        if run_.get("oom_kills_total"):
            out.append(f"{v}: {run_['oom_kills_total']} OOM kill(s) in the memory cgroup")
        if run_.get("sigkill_log_lines"):
            out.append(f"{v}: workers killed: {run_['sigkill_log_lines'][:3]}")
        ka = run_.get("keepalive", {})
        if not ka.get("reused"):
            out.append(f"{v}: an idle keep-alive connection was not kept: {ka}")
        for s in run_.get("steps", []):
            where = f"{v} {s['label']} @{s['offered_per_s']}/s"
            if s["client_failures"]:
                bad = {k: n for k, n in s["statuses"].items() if not k.isdigit()}
                out.append(f"{where}: requests without an HTTP answer: {bad}")
            if s["unexpected_count"]:
                out.append(f"{where}: answers the contract does not allow: {s['unexpected']}")
            if s["busy_without_retry_after"]:
                out.append(f"{where}: 503 without Retry-After: {s['busy_without_retry_after']}")
            if s["oom_kills"]:
                out.append(f"{where}: {s['oom_kills']} OOM kill(s)")
    return out
