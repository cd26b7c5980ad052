"""What a run prints and writes: a line per step, markdown tables, PNG plots."""

from __future__ import annotations

import math
from pathlib import Path

from tests.load.harness.limits import MIB
from tests.load.harness.service import DEFAULTS


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def print_step(variant: str, s: dict) -> None:
    print(
        f"[{variant:>18} {s['label']:>12}] offered {s['offered_per_s']:>5.1f}/s  "
        f"ok {s['ok_per_s']:5.2f}/s  p50 {_fmt_ms(s['p50_s']):>6} p95 {_fmt_ms(s['p95_s']):>6} "
        f"p99 {_fmt_ms(s['p99_s']):>6} ms  503 {s['share_503']:5.1%}  "
        f"cpu {s['cpu_share']:.2f}  rss {s['peak_rss'] / MIB:5.0f} MiB  "
        f"max_usage {s['max_usage'] / MIB:5.0f} MiB  oom {s['oom_kills']}  {s['statuses']}",
        flush=True,
    )


def markdown(report: dict) -> str:
    lines = []
    for run_ in report["runs"]:
        lines += [
            f"\n#### {run_['variant']}\n",
            "| load | offered/s | 200/s | p50 ms | p95 ms | p99 ms | 503 % | statuses | "
            "CPU used | peak RSS MiB | peak usage MiB | OOM |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for s in run_["steps"]:
            mix = ", ".join(f"{k}: {n}" for k, n in s["statuses"].items())
            lines.append(
                f"| {s['label']} | {s['offered_per_s']:g} | {s['ok_per_s']:.2f} | "
                f"{_fmt_ms(s['p50_s'])} | {_fmt_ms(s['p95_s'])} | {_fmt_ms(s['p99_s'])} | "
                f"{s['share_503'] * 100:.1f} | {mix} | {s['cpu_share']:.2f} | "
                f"{s['peak_rss'] / MIB:.0f} | {s['max_usage'] / MIB:.0f} | {s['oom_kills']} |"
            )
    return "\n".join(lines) + "\n"


def _values(steps: list[dict], key: str) -> list[float]:
    return [s[key] if s[key] is not None else math.nan for s in steps]


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5), dpi=110)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot(report: dict, outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    runs = [(r["variant"], [s for s in r["steps"] if s["label"] == "mix"]) for r in report["runs"]]
    runs = [(v, steps) for v, steps in runs if steps]

    fig, ax = _figure()
    for variant, steps in runs:
        x = [s["offered_per_s"] for s in steps]
        ax.plot(x, [s["ok_per_s"] for s in steps], marker="o", label=f"{variant}: 200/s")
        if variant == DEFAULTS.name:
            ax.plot(
                x,
                [s["answers_per_s"] * s["share_503"] for s in steps],
                marker="x",
                linestyle="--",
                label=f"{variant}: 503/s",
            )
    top = max((s["offered_per_s"] for _, st in runs for s in st), default=1)
    ax.plot([0, top], [0, top * 0.9], color="grey", linewidth=0.8, label="90 % of offered (ideal)")
    ax.set_xlabel("offered load (requests/s, Poisson, 90 % valid images)")
    ax.set_ylabel("answers per second")
    ax.set_title("Throughput of one e2-micro (0.5 CPU, 1 GiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written = [_save(fig, outdir / "capacity-throughput.png")]

    fig, ax = _figure()
    for variant, steps in runs:
        if variant != DEFAULTS.name:
            continue
        x = [s["offered_per_s"] for s in steps]
        for key, style in (("p50_s", "-"), ("p95_s", "--"), ("p99_s", ":")):
            ax.plot(x, _values(steps, key), marker="o", linestyle=style, label=f"200s: {key[:-2]}")
        ax.plot(x, _values(steps, "p95_503_s"), marker="x", linestyle="-.", label="503s: p95")
        ax2 = ax.twinx()
        ax2.bar(x, [s["share_503"] * 100 for s in steps], width=0.6, alpha=0.2, color="red")
        ax2.set_ylabel("503 share (%)", color="red")
        ax2.set_ylim(0, 100)
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (s, log)")
    ax.set_title("Latency vs offered load, defaults (bars: share of 503s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    written.append(_save(fig, outdir / "capacity-latency.png"))

    fig, ax = _figure()
    for variant, steps in runs:
        ax.plot(
            [s["offered_per_s"] for s in steps], _values(steps, "p95_s"), marker="o", label=variant
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("p95 latency of 200s (s, log)")
    ax.set_title("Tuning variants, same run")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    written.append(_save(fig, outdir / "capacity-variants.png"))
    return written
