"""Reading a multipart upload of image files, with its limits enforced while it arrives.

Starlette's parser spools each file part to a temporary file past 1 MiB, so an
upload costs little memory; the images are read one at a time when converted.
The total size is capped twice: by Content-Length before anything is read, and
by counting the body as it streams (a chunked request has no length).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message

from app.batch import Source, upload_source
from app.errors import BadUpload, TooManyImages, UploadTooLarge
from app.pages import PageSize
from app.pipeline import Services
from app.schemas import parse_page_size

# Part headers and boundaries on top of the files themselves.
_FORM_OVERHEAD = 64 * 1024


def _too_large(svc: Services) -> UploadTooLarge:
    mib = svc.settings.max_upload_bytes / (1024 * 1024)
    return UploadTooLarge(f"The upload is too large: at most {mib:g} MiB of images in total.")


def _page_size(raw: object) -> PageSize:
    size = PageSize.image if raw is None else parse_page_size(raw)
    if size is None:
        raise BadUpload('page_size must be "image", "A4" or "Letter".')
    return size


@asynccontextmanager
async def read_upload(
    request: Request, svc: Services
) -> AsyncIterator[tuple[list[Source], PageSize]]:
    """Parse the form; yields the sources in order and the page size, then cleans up."""
    limit = svc.settings.max_upload_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(svc)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadUpload()

    received = 0

    async def counted_receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(svc)
        return message

    counted = Request(request.scope, counted_receive)
    try:
        form = await counted.form(max_files=svc.settings.max_pages, max_fields=16)
    except HTTPException as exc:  # Starlette's parser limits and syntax errors
        if "Too many files" in str(exc.detail):
            raise TooManyImages(
                f"Send 1 to {svc.settings.max_pages} images in one request."
            ) from None
        raise BadUpload() from None
    try:
        files = form.getlist("files")
        if not files or not all(isinstance(f, UploadFile) for f in files):
            raise BadUpload()
        if sum(f.size or 0 for f in files) > svc.settings.max_upload_bytes:  # type: ignore[union-attr]
            raise _too_large(svc)
        sources = [upload_source(f, svc) for f in files]  # type: ignore[arg-type]
        yield sources, _page_size(form.get("page_size"))
    finally:
        await form.close()
