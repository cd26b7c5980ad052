"""All configuration comes from the environment, parsed and validated once at start.

A typo in a limit must stop the process at boot, not surface as a 500 later.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
# Google's front ends reach backends from these (the LB's health checks too).
LB_SOURCE_RANGES = ("130.211.0.0/22", "35.191.0.0/16")


class SettingsError(ValueError):
    """A setting is present but unusable."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool(env: dict[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _networks(env: dict[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    nets = tuple(n.strip() for n in raw.split(",") if n.strip())
    for net in nets:
        try:
            ipaddress.ip_network(net)
        except ValueError:
            raise SettingsError(f"{name} must be comma-separated networks, got {net!r}") from None
    return nets


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

    port: int = 4321
    project_id: str | None = None
    pdf_bucket: str | None = None
    url_mode: str = "public"  # "public" or "signed"
    signed_url_ttl_s: int = 3600
    storage_timeout_s: float = 10.0
    data_dir: Path = Path("data")
    public_base_url: str = "http://localhost:4321"
    sentry_dsn: str | None = None
    sentry_traces_sample_rate: float = 0.0
    environment: str = "development"
    release: str | None = None
    allow_private_source_urls: bool = False
    max_source_bytes: int = 20 * MIB
    max_image_pixels: int = 40_000_000
    max_redirects: int = 3
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    total_timeout_s: float = 10.0
    worker_memory_budget: int = 224 * MIB  # work pool: conversions' estimated peaks
    download_budget: int = 64 * MIB  # data pool: source bytes and finished pages
    retry_after_s: int = 2
    admission_wait_s: float = 1.0
    convert_threads: int = 2
    rate_limit_per_minute: float = 0.0  # off locally; the app role turns it on
    rate_limit_burst: int = 10
    client_ip_source: str = "peer"  # "peer" or "gclb" (behind the Google LB)
    max_pages: int = 20  # images per request (URL lists and uploads)
    max_upload_bytes: int = 50 * MIB  # total size of one multipart upload
    allowed_ports: tuple[int, ...] = field(default=(80, 443))
    max_json_body_bytes: int = 64 * 1024  # a POST /image_to_pdf body, counted as it arrives
    source_min_rate: int = 64 * 1024  # bytes/s a source must keep up (each 2 s window)
    header_timeout_s: float = 10.0  # from a request's first byte to its last header
    body_timeout_s: float = 30.0  # from the last header to the last body byte
    max_connections: int = 1000  # open connections per worker
    lb_source_ranges: tuple[str, ...] = field(default=LB_SOURCE_RANGES)
    convert_timeout_s: float = 15.0  # wall clock of one conversion's child process

    @property
    def storage_backend(self) -> str:
        return "gcs" if self.pdf_bucket else "local"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        port = _int(env, "PORT", 4321, minimum=1)
        url_mode = env.get("URL_MODE", "public").strip().lower() or "public"
        if url_mode not in {"public", "signed"}:
            raise SettingsError(f"URL_MODE must be 'public' or 'signed', got {url_mode!r}")
        base = env.get("PUBLIC_BASE_URL", "").strip().rstrip("/") or f"http://localhost:{port}"
        max_source = _int(env, "MAX_SOURCE_BYTES", 20 * MIB, minimum=1024)
        if max_source > _int(env, "DOWNLOAD_BUDGET", 64 * MIB, minimum=1 * MIB):
            raise SettingsError("DOWNLOAD_BUDGET must be at least MAX_SOURCE_BYTES")
        return cls(
            port=port,
            project_id=env.get("PROJECT_ID", "").strip() or None,
            pdf_bucket=env.get("PDF_BUCKET", "").strip() or None,
            url_mode=url_mode,
            signed_url_ttl_s=_int(env, "SIGNED_URL_TTL", 3600, minimum=60),
            storage_timeout_s=_float(env, "STORAGE_TIMEOUT", 10.0, minimum=1.0),
            data_dir=Path(env.get("DATA_DIR", "").strip() or "data"),
            public_base_url=base,
            sentry_dsn=env.get("SENTRY_DSN", "").strip() or None,
            sentry_traces_sample_rate=_float(env, "SENTRY_TRACES_SAMPLE_RATE", 0.0),
            environment=env.get("ENVIRONMENT", "").strip() or "development",
            release=env.get("RELEASE", "").strip() or _git_sha(),
            allow_private_source_urls=_bool(env, "ALLOW_PRIVATE_SOURCE_URLS"),
            max_source_bytes=_int(env, "MAX_SOURCE_BYTES", 20 * MIB, minimum=1024),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 40_000_000, minimum=1),
            max_redirects=_int(env, "MAX_REDIRECTS", 3),
            connect_timeout_s=_float(env, "SOURCE_CONNECT_TIMEOUT", 3.0, minimum=0.1),
            read_timeout_s=_float(env, "SOURCE_READ_TIMEOUT", 5.0, minimum=0.1),
            total_timeout_s=_float(env, "SOURCE_TOTAL_TIMEOUT", 10.0, minimum=0.1),
            worker_memory_budget=_int(env, "WORKER_MEMORY_BUDGET", 224 * MIB, minimum=16 * MIB),
            download_budget=_int(env, "DOWNLOAD_BUDGET", 64 * MIB, minimum=1 * MIB),
            retry_after_s=_int(env, "RETRY_AFTER", 2, minimum=1),
            admission_wait_s=_float(env, "ADMISSION_WAIT", 1.0),
            convert_threads=_int(env, "CONVERT_THREADS", 2, minimum=1),
            rate_limit_per_minute=_float(env, "RATE_LIMIT_PER_MINUTE", 0.0),
            rate_limit_burst=_int(env, "RATE_LIMIT_BURST", 10, minimum=1),
            client_ip_source=_choice(env, "CLIENT_IP_SOURCE", "peer", ("peer", "gclb")),
            max_pages=_int(env, "MAX_PAGES", 20, minimum=1),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 50 * MIB, minimum=1024),
            max_json_body_bytes=_int(env, "MAX_JSON_BODY_BYTES", 64 * 1024, minimum=1024),
            source_min_rate=_int(env, "SOURCE_MIN_RATE", 64 * 1024),
            header_timeout_s=_float(env, "HTTP_HEADER_TIMEOUT", 10.0, minimum=0.1),
            body_timeout_s=_float(env, "HTTP_BODY_TIMEOUT", 30.0, minimum=0.1),
            max_connections=_int(env, "MAX_CONNECTIONS_PER_WORKER", 1000, minimum=1),
            lb_source_ranges=_networks(env, "LB_SOURCE_RANGES", LB_SOURCE_RANGES),
            convert_timeout_s=_float(env, "CONVERT_TIMEOUT", 15.0, minimum=1.0),
        )
