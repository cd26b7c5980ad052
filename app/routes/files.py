"""GET /files/{name}: a stored PDF, when the storage backend leaves serving it to us."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from app.handlers import error_response
from app.routes import ServicesDep, also_head
from app.storage import content_disposition, download_filename

router = APIRouter()


class PdfFile(FileResponse):
    """A stored PDF. Starlette answered a Range it could not read with a plain-text
    400 and one past the end with an empty 416; a malformed Range is now ignored
    (the whole file, as RFC 9110 allows) and the 416 is checked by `download`."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


@router.get("/files/{name}", summary="Download a converted PDF (local storage only)")
async def download(name: str, request: Request, svc: ServicesDep):
    path = svc.storage.local_path(name)
    if path is None:
        return error_response(404, "not_found", "No such file.")
    filename = svc.storage.filename_for(name) or download_filename(name)
    try:
        stat = path.stat()  # once, here: a file deleted since `local_path` is a 404
    except OSError:
        return error_response(404, "not_found", "No such file.")
    size = stat.st_size
    http_range = request.headers.get("range")
    if http_range is not None and "if-range" not in request.headers:
        try:
            PdfFile._parse_range_header(http_range, size)
        except RangeNotSatisfiable:
            return error_response(
                416,
                "range_not_satisfiable",
                "The requested range starts past the end of the file.",
                {"Content-Range": f"bytes */{size}"},
            )
    return PdfFile(
        path,
        stat_result=stat,
        media_type="application/pdf",
        headers={
            "Content-Disposition": content_disposition(filename),
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        },
    )


also_head(router, "/files/{name}", download)
