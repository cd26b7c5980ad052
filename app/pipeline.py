"""One conversion, start to finish: admit, fetch, inspect, convert, store.

Plain functions over a `Services` bundle so tests and other entry points
(uploads, batches) reuse exactly the path the API takes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass, field

import anyio

from app.admission import Admission, Reservation
from app.engine.direct import passthrough_jpeg
from app.engine.facts import ImageInfo
from app.engine.pricing import estimate_peak_bytes
from app.engine.routes import low_memory_variant
from app.errors import ApiError, Busy, StorageUnavailable
from app.fetch import FetchPolicy, fetch_source
from app.sandbox import Job, Limits, Sandbox, inspect_reservation
from app.settings import Settings
from app.sniff import SNIFF_BYTES, sniff_image_type
from app.storage import Storage, download_filename, new_pdf_name

log = logging.getLogger("img2pdf.pipeline")


@dataclass
class Services:
    """What a request needs, built once per worker process at start."""

    settings: Settings
    policy: FetchPolicy
    admission: Admission
    storage: Storage
    convert_limiter: anyio.CapacityLimiter
    # The conversion zygote of this worker process; started with the services.
    sandbox: Sandbox = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.sandbox is None:
            self.sandbox = Sandbox(
                Limits(
                    timeout_s=self.settings.convert_timeout_s,
                    max_memory=self.settings.worker_memory_budget,
                )
            )
        self.sandbox.start()


async def image_to_pdf(data: bytes, held: Reservation, svc: Services) -> bytes:
    """Convert bytes already held (data pool) into PDF bytes (batches join these)."""
    out = await image_to_pdf_file(data, held, svc)
    try:
        return os.pread(out.fileno(), out.size, 0) if out.size else b""
    finally:
        out.close()


class PdfFile(io.FileIO):
    """The conversion's output file (a memfd), read from its start by the store."""

    size: int = 0


async def image_to_pdf_file(
    data: bytes, held: Reservation, svc: Services, *, passthrough: bool = True
) -> PdfFile:
    """Convert bytes already held (data pool) once the work pool has room for the peak.

    The image is only ever parsed in a child process (app.sandbox), which lives
    only while the job holds work-pool bytes and is limited by the kernel to
    them: first the inspection's share, then the estimated peak. A job never
    waits while holding work-pool bytes (app.admission): when the peak does not
    fit at once, the inspecting child is stopped, the share given back, and a
    fresh child converts once the peak is reserved. The PDF stays in the file
    the child wrote (the caller closes it); its bytes stay reserved meanwhile.
    `passthrough=False`: the caller already found the JPEG is not plain.
    """
    # A plain JPEG is embedded as it is, here: no decoder runs (app.engine.direct.passthrough_jpeg).
    # Its PDF is the source plus a few hundred bytes, reserved before it is written.
    # Other formats skip the reservation and the thread hop: they cannot take this route.
    if passthrough and sniff_image_type(data[:SNIFF_BYTES]) == "jpeg":
        await held.resize(len(data) + _PDF_AROUND_JPEG)
        out = await anyio.to_thread.run_sync(
            _passthrough, data, svc.settings.max_image_pixels, limiter=svc.convert_limiter
        )
        if out is not None:
            await held.resize(out.size)
            return out
    # The child's copy of the source and its header parsing count from its start.
    await held.resize(inspect_reservation(len(data)))
    job = await _start(data, svc)
    warned = 0
    out = None
    try:
        info: ImageInfo = await anyio.to_thread.run_sync(
            job.inspect, svc.settings.max_image_pixels, limiter=svc.convert_limiter
        )
        need = estimate_peak_bytes(info, len(data))
        cheaper = low_memory_variant(info) if need > svc.admission.budget else None
        if cheaper is not None:
            info, need = cheaper, estimate_peak_bytes(cheaper, len(data))
        if not held.try_resize(need):
            warned += await _close(job)
            await held.resize(0)
            await held.resize(need)  # may wait: nothing of the work pool is held
            job = await _start(data, svc)
        size = await anyio.to_thread.run_sync(
            job.convert_size, info, need, limiter=svc.convert_limiter
        )
        out = PdfFile(os.dup(job.output_fd), "rb")
        out.size = size
    finally:
        warned += await _close(job)
        if warned:
            log.info("decoder warnings: %d while converting one image", warned)
    await held.resize(out.size)  # the peak is over; only the PDF remains
    return out


# Room for the objects around a passthrough JPEG (page, content, xref): ~700 bytes.
_PDF_AROUND_JPEG = 4096


def _passthrough(data: bytes, max_pixels: int) -> PdfFile | None:
    """The PDF of a plain JPEG in a fresh memfd, or None (the sandbox converts it)."""
    fd = os.memfd_create("img2pdf-pdf", os.MFD_CLOEXEC)
    try:
        size = passthrough_jpeg(data, max_pixels, fd)
    except BaseException:
        os.close(fd)
        raise
    if size is None:
        os.close(fd)
        return None
    out = PdfFile(fd, "rb")
    out.size = size
    return out


async def _start(data: bytes, svc: Services) -> Job:
    try:
        return await anyio.to_thread.run_sync(svc.sandbox.job, data)
    except OSError:  # no process could be started (TasksMax, fork failure)
        log.exception("starting a conversion process failed")
        raise Busy(svc.settings.retry_after_s) from None


async def _close(job: Job) -> int:
    """Kill and reap the child (also for a client that has gone); its warning count."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(job.close)
    count, job.warnings = job.warnings, 0
    return count


async def store_pdf(pdf: bytes | PdfFile, source_name: str, svc: Services) -> str:
    """Store under a fresh uuid name; an outage is a retryable 503, and reported.

    A PdfFile is uploaded from the file (GCS: resumable from the file object;
    local: copied by the kernel, then renamed), never read into memory.
    """
    name = new_pdf_name()
    filename = download_filename(source_name)
    with _storage_failures(svc, name):
        if isinstance(pdf, PdfFile):
            return await anyio.to_thread.run_sync(
                svc.storage.save_pdf_file, pdf, pdf.size, name, filename
            )
        return await anyio.to_thread.run_sync(svc.storage.save_pdf, pdf, name, filename)


async def convert_source_url(source_url: str, svc: Services) -> str:
    """The API's main path: returns the converted PDF's URL."""
    async with svc.admission.reserve() as held:
        fetched = await fetch_source(source_url, svc.policy, on_bytes=held.hold_data)
        held.hold_data(len(fetched.data))
        jpeg = sniff_image_type(fetched.data[:SNIFF_BYTES]) == "jpeg"
        if jpeg:
            url = await store_passthrough(fetched.data, held, source_url, svc)
            if url is not None:
                return url
        pdf = await image_to_pdf_file(fetched.data, held, svc, passthrough=not jpeg)
        with pdf:
            del fetched
            held.hold_data(0)
            return await store_pdf(pdf, source_url, svc)


class _NotStored(Exception):
    """What the writer raised, carried out of the store so it is not taken for an outage."""


async def store_passthrough(
    data: bytes, held: Reservation, source_name: str, svc: Services
) -> str | None:
    """A plain JPEG's PDF written and stored in one thread hop (it took two: the
    passthrough into a memfd, then the store).
    None: the JPEG is not plain, nothing is stored (the sandbox converts it).
    An error of the image is raised as it is; one of the store is a 503.
    """
    await held.resize(len(data) + _PDF_AROUND_JPEG)
    max_pixels = svc.settings.max_image_pixels

    def write(fd: int) -> int | None:
        try:
            return passthrough_jpeg(data, max_pixels, fd)
        except Exception as exc:
            raise _NotStored() from exc

    name = new_pdf_name()
    with _storage_failures(svc, name):
        try:
            return await anyio.to_thread.run_sync(
                svc.storage.save_pdf_written,
                write,
                name,
                download_filename(source_name),
                limiter=svc.convert_limiter,
            )
        except _NotStored as exc:
            raise exc.__cause__ from None  # type: ignore[misc]


@contextlib.contextmanager
def _storage_failures(svc: Services, name: str):
    """Any backend failure while storing `name` becomes a retryable 503 (logged and
    reported); the client's own errors (ApiError) pass through."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:  # any backend failure: the client may retry
        log.exception("storing %s failed", name)
        _report(exc)
        raise StorageUnavailable(svc.settings.retry_after_s) from None


def _report(exc: BaseException) -> None:
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover - sentry-sdk is a runtime dependency
        return
    sentry_sdk.capture_exception(exc)
