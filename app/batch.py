"""Several images (URLs or uploaded files) -> one PDF, one page per image, in order.

Each image takes exactly the single-URL path (`pipeline.image_to_pdf`: sniffing,
pixel limit, admission growth to its estimated peak, conversion); the pages
are then joined by `app.pages`. Nothing is stored unless every image converted.

Memory: one reservation covers the whole request (see app/admission.py). The
data pool holds the PDFs made so far plus the current image's source bytes; the
work pool holds the current conversion's estimated peak, then the join's. A
request whose pages can never fit the data pool, or whose join can never fit
the work pool, is refused with 413 (`batch_too_large`) naming the image where
it overflowed; a merely busy worker answers 503 as usual.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
from starlette.datastructures import UploadFile

from app.admission import Reservation
from app.errors import (
    ApiError,
    BatchTooLarge,
    ItemFailed,
    Retryable,
    SourceTooLarge,
    TooManyImages,
)
from app.fetch import ByteCounter, fetch_source
from app.pages import PageSize, join_pages, join_peak_bytes
from app.pipeline import Services, image_to_pdf, store_pdf

log = logging.getLogger("img2pdf.batch")


@dataclass
class Source:
    """One image to convert. `load` returns its bytes (fetching or reading)."""

    load: Callable[[ByteCounter], Awaitable[bytes]]  # reports bytes as they arrive
    reserve_bytes: int  # its largest possible size
    label: str = ""  # shown in errors (an upload's file name); URLs go by number
    name: str = ""  # what the PDF's download name is made from


def url_source(url: str, svc: Services) -> Source:
    async def load(count: ByteCounter) -> bytes:
        return (await fetch_source(url, svc.policy, on_bytes=count)).data

    return Source(load, svc.settings.max_source_bytes, name=url)


def safe_label(filename: str | None) -> str:
    """A client's file name, fit to quote in an error message."""
    text = re.sub(r"[^\w .,()+-]+", "_", filename or "").strip()
    return text[:60] + ("…" if len(text) > 60 else "")


def _hold_pages(held: Reservation, nbytes: int, svc: Services) -> None:
    """Hold `nbytes` in the data pool; more than the whole pool can never fit."""
    if nbytes > svc.admission.data_budget:
        raise BatchTooLarge()
    held.hold_data(nbytes)


async def _convert_one(source: Source, held: Reservation, base: int, svc: Services) -> bytes:
    """One page: `base` bytes of earlier pages stay held alongside this image."""
    data = await source.load(lambda n: _hold_pages(held, base + n, svc))
    if len(data) > svc.settings.max_source_bytes:
        raise SourceTooLarge()
    _hold_pages(held, base + len(data), svc)
    pdf = await image_to_pdf(data, held, svc)
    del data
    _hold_pages(held, base + len(pdf), svc)  # the page moves to the data pool
    await held.resize(0)
    return pdf


async def convert_many(sources: Sequence[Source], page_size: PageSize, svc: Services) -> str:
    """Convert every source in order into one stored PDF; returns its URL."""
    if not 1 <= len(sources) <= svc.settings.max_pages:
        raise TooManyImages(f"Send 1 to {svc.settings.max_pages} images in one request.")
    async with svc.admission.reserve() as held:
        pdfs: list[bytes] = []
        for index, source in enumerate(sources, start=1):
            try:
                pdfs.append(await _convert_one(source, held, sum(map(len, pdfs)), svc))
            except Retryable:
                raise  # about the service, not this image
            except ApiError as exc:
                if len(sources) == 1 and not isinstance(exc, BatchTooLarge):
                    raise
                raise ItemFailed(exc, index, source.label) from None
        sizes = [len(p) for p in pdfs]
        if join_peak_bytes(sizes) > svc.admission.budget:
            raise BatchTooLarge()
        await held.resize(join_peak_bytes(sizes))
        pdf = await anyio.to_thread.run_sync(
            join_pages, pdfs, page_size, limiter=svc.convert_limiter
        )
        del pdfs
        held.hold_data(0)
        await held.resize(len(pdf))
        return await store_pdf(pdf, sources[0].name or "converted", svc)


def upload_source(file: UploadFile, svc: Services) -> Source:
    """An uploaded file part; Starlette has spooled it (to disk past 1 MiB)."""
    size = file.size or 0
    cap = svc.settings.max_source_bytes

    async def load(count: ByteCounter) -> bytes:
        if size > cap:
            raise SourceTooLarge()
        count(size)
        await file.seek(0)
        return await file.read()

    return Source(load, min(size, cap), safe_label(file.filename), file.filename or "upload")
