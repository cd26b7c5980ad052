"""All configuration comes from the environment, parsed and validated once at start.

A typo in a limit must stop the process at boot, not surface as a 500 later.

Each setting is declared once, as a field of `Settings` made by `setting(...)`:
its environment variable, default, bounds or choices and a one-line meaning; its
type is the field's annotation. `Settings.from_env` parses every field from that
spec, and README.md's settings table is `markdown_table()` (`python -m
app.settings` prints it; tests/unit/test_settings_spec.py checks they match).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

MIB = 1024 * 1024
KIB = 1024
# Google's front ends reach backends from these (the LB's health checks too).
LB_SOURCE_RANGES = ("130.211.0.0/22", "35.191.0.0/16")
DATA_DIR = Path("data")


class SettingsError(ValueError):
    """A setting is present but unusable."""


@dataclass(frozen=True)
class Spec:
    """One environment variable: what it sets, its bounds, what it means."""

    env: str
    meaning: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    shown: str = ""  # the default as README.md shows it, where the value alone would not do
    unit: str = ""  # appended to the default in README.md
    # Computes the default from the settings parsed before it (when the variable is unset).
    fallback: Callable[[dict[str, Any]], Any] | None = None


def setting(env: str, default: Any, meaning: str, **spec: Any) -> Any:
    """A `Settings` field read from `env`; `spec` takes the other `Spec` fields."""
    return field(default=default, metadata={"spec": Spec(env, meaning, **spec)})


def _number(kind: type, word: str) -> Callable[[str, str, Spec], Any]:
    def parse(name: str, raw: str, spec: Spec) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(f"{name} must be {word}, got {raw!r}") from None
        if spec.minimum is not None and value < spec.minimum:
            raise SettingsError(f"{name} must be >= {kind(spec.minimum)}, got {value}")
        return value

    return parse


def _bool(name: str, raw: str, spec: Spec) -> bool:
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw.lower()!r}")


def _text(name: str, raw: str, spec: Spec) -> str:
    if spec.choices and raw.lower() not in spec.choices:
        allowed = ", ".join(spec.choices)
        raise SettingsError(f"{name} must be one of {allowed}, got {raw.lower()!r}")
    return raw.lower() if spec.choices else raw


def _networks(name: str, raw: str, spec: Spec) -> tuple[str, ...]:
    nets = tuple(n.strip() for n in raw.split(",") if n.strip())
    for net in nets:
        try:
            ipaddress.ip_network(net)
        except ValueError:
            raise SettingsError(f"{name} must be comma-separated networks, got {net!r}") from None
    return nets


# By the field's annotation. A variable set to blanks counts as unset, except a
# network list, where an empty value means "none".
_PARSERS: dict[Any, Callable[[str, str, Spec], Any]] = {
    int: _number(int, "an integer"),
    float: _number(float, "a number"),
    bool: _bool,
    str: _text,
    str | None: _text,
    Path: lambda name, raw, spec: Path(raw),
    tuple[str, ...]: _networks,
}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment. Defaults are the safe ones."""

    port: int = setting(
        "PORT", 4321, "listen port; `scripts/entrypoint.sh prod` sets 8080 when unset", minimum=1
    )
    project_id: str | None = setting(
        "PROJECT_ID", None, "GCP project for the storage client (optional on GCE)"
    )
    pdf_bucket: str | None = setting(
        "PDF_BUCKET", None, "GCS bucket; unset = local storage (the embedded default)"
    )
    url_mode: str = setting(
        "URL_MODE",
        "public",
        "`public` (bucket IAM grants read) or `signed` (V4 signed URLs)",
        choices=("public", "signed"),
    )
    signed_url_ttl_s: int = setting(
        "SIGNED_URL_TTL", 3600, "lifetime of signed URLs", minimum=60, unit="s"
    )
    storage_timeout_s: float = setting(
        "STORAGE_TIMEOUT", 10.0, "whole GCS upload including retries", minimum=1.0, unit="s"
    )
    data_dir: Path = setting("DATA_DIR", DATA_DIR, "local storage folder")  # noqa: RUF009 (immutable)
    public_base_url: str = setting(
        "PUBLIC_BASE_URL",
        "http://localhost:4321",
        "base of `converted_url` with local storage",
        shown="`http://localhost:<PORT>`",
        fallback=lambda parsed: f"http://localhost:{parsed['port']}",
    )
    sentry_dsn: str | None = setting("SENTRY_DSN", None, "report bugs to Sentry")
    sentry_traces_sample_rate: float = setting(
        "SENTRY_TRACES_SAMPLE_RATE", 0.0, "performance tracing sample rate", minimum=0.0
    )
    environment: str = setting("ENVIRONMENT", "development", "Sentry environment")
    release: str | None = setting(
        "RELEASE",
        None,
        "Sentry release",
        shown="git SHA of the checkout",
        fallback=lambda parsed: _git_sha(),
    )
    allow_private_source_urls: bool = setting(
        "ALLOW_PRIVATE_SOURCE_URLS",
        False,
        "1 lifts the address and port checks (local demos/tests only)",
    )
    max_source_bytes: int = setting(
        "MAX_SOURCE_BYTES", 20 * MIB, "largest source download", minimum=1024
    )
    max_image_pixels: int = setting(
        "MAX_IMAGE_PIXELS",
        40_000_000,
        "largest image, checked from the header before decoding",
        minimum=1,
    )
    max_redirects: int = setting(
        "MAX_REDIRECTS", 3, "redirects followed, each re-checked", minimum=0
    )
    connect_timeout_s: float = setting(
        "SOURCE_CONNECT_TIMEOUT", 3.0, "connecting to a source", minimum=0.1, unit="s"
    )
    read_timeout_s: float = setting(
        "SOURCE_READ_TIMEOUT", 5.0, "between two reads from a source", minimum=0.1, unit="s"
    )
    total_timeout_s: float = setting(
        "SOURCE_TOTAL_TIMEOUT",
        10.0,
        "a whole source download (stays well inside the LB's 30 s)",
        minimum=0.1,
        unit="s",
    )
    worker_memory_budget: int = setting(
        "WORKER_MEMORY_BUDGET",
        224 * MIB,
        "work pool: estimated conversion peaks one worker may run at once"
        " (a job may wait `ADMISSION_WAIT` for it)",
        minimum=16 * MIB,
    )
    download_budget: int = setting(
        "DOWNLOAD_BUDGET",
        64 * MIB,
        "data pool: source bytes and finished pages one worker may hold"
        " (never waits: full means 503); at least `MAX_SOURCE_BYTES`",
        minimum=1 * MIB,
    )
    retry_after_s: int = setting("RETRY_AFTER", 2, "`Retry-After` on 503", minimum=1, unit="s")
    admission_wait_s: float = setting(
        "ADMISSION_WAIT",
        1.0,
        "how long a job waits for budget before 503",
        minimum=0.0,
        unit="s",
    )
    convert_threads: int = setting(
        "CONVERT_THREADS", 2, "conversions running at once per worker", minimum=1
    )
    rate_limit_per_minute: float = setting(
        "RATE_LIMIT_PER_MINUTE",
        0.0,
        "conversions per client per minute (token bucket, per worker); 0 turns it off;"
        " the VM deploy sets 30",
        minimum=0.0,
    )
    rate_limit_burst: int = setting("RATE_LIMIT_BURST", 10, "bucket size", minimum=1)
    client_ip_source: str = setting(
        "CLIENT_IP_SOURCE",
        "peer",
        "`peer` (TCP peer) or `gclb` (second-to-last `X-Forwarded-For` entry, as the"
        " Google LB writes it, read only when the peer is in `LB_SOURCE_RANGES`)",
        choices=("peer", "gclb"),
    )
    max_pages: int = setting(
        "MAX_PAGES", 20, "images per request (`source_urls` lists and uploads)", minimum=1
    )
    max_upload_bytes: int = setting(
        "MAX_UPLOAD_BYTES", 50 * MIB, "total size of one multipart upload", minimum=1024
    )
    # Not a setting: the ports a source URL may name (ALLOW_PRIVATE_SOURCE_URLS lifts it).
    allowed_ports: tuple[int, ...] = field(default=(80, 443))
    max_json_body_bytes: int = setting(
        "MAX_JSON_BODY_BYTES",
        64 * KIB,
        "largest `POST /image_to_pdf` body, refused before parsing"
        " (20 URLs of 2048 characters fit)",
        minimum=1024,
    )
    source_min_rate: int = setting(
        "SOURCE_MIN_RATE",
        64 * KIB,
        "bytes/s a source must keep up over every 2 s window, else 504; 0 turns it off",
        minimum=0,
    )
    header_timeout_s: float = setting(
        "HTTP_HEADER_TIMEOUT",
        10.0,
        "time for a request's headers (from its first byte, or a new connection);"
        " idle keep-alive is not limited by it",
        minimum=0.1,
        unit="s",
    )
    body_timeout_s: float = setting(
        "HTTP_BODY_TIMEOUT",
        30.0,
        "time from a request's last header to its last body byte",
        minimum=0.1,
        unit="s",
    )
    max_connections: int = setting(
        "MAX_CONNECTIONS_PER_WORKER",
        1000,
        "open connections per worker; over it the oldest still waiting for headers"
        " is dropped, else 503",
        minimum=1,
    )
    lb_source_ranges: tuple[str, ...] = setting(
        "LB_SOURCE_RANGES",
        LB_SOURCE_RANGES,
        "peers whose `X-Forwarded-For` is trusted in `gclb` mode (the Google LB's front ends)",
    )
    convert_timeout_s: float = setting(
        "CONVERT_TIMEOUT",
        15.0,
        "wall clock of one image's conversion process; then it is killed"
        " (422 `conversion_timeout`)",
        minimum=1.0,
        unit="s",
    )

    @property
    def storage_backend(self) -> str:
        return "gcs" if self.pdf_bucket else "local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        types = get_type_hints(cls)
        parsed: dict[str, Any] = {}
        for f, spec in specs():
            raw = env.get(spec.env)
            kind = types[f.name]
            if raw is not None and (raw.strip() or kind == tuple[str, ...]):
                parsed[f.name] = _PARSERS[kind](spec.env, raw.strip(), spec)
            elif spec.fallback is not None:
                parsed[f.name] = spec.fallback(parsed)
            else:
                parsed[f.name] = f.default
        parsed["public_base_url"] = parsed["public_base_url"].rstrip("/")
        if parsed["max_source_bytes"] > parsed["download_budget"]:
            raise SettingsError("DOWNLOAD_BUDGET must be at least MAX_SOURCE_BYTES")
        return cls(**parsed)


@cache
def specs() -> tuple[tuple[Field, Spec], ...]:
    """Every setting: its `Settings` field and its spec, in declaration order."""
    return tuple((f, f.metadata["spec"]) for f in fields(Settings) if "spec" in f.metadata)


def _shown(value: Any, spec: Spec) -> str:
    if spec.shown:
        return spec.shown
    if value is None:
        text = "unset"
    elif isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, int) and value >= KIB and value % KIB == 0:
        mib, kib = divmod(value, MIB)
        text = f"{value} ({mib} MiB)" if mib and not kib else f"{value} ({value // KIB} KiB)"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, tuple):
        text = f"`{','.join(value)}`"
    elif isinstance(value, str | Path):
        text = f"`{value}`"
    else:
        text = str(value)
    return f"{text} {spec.unit}" if spec.unit else text


def markdown_table() -> str:
    """README.md's settings table: one row per setting, from the specs."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.env}` | {_shown(f.default, s)} | {s.meaning} |" for f, s in specs()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
