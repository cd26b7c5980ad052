"""POST /image_to_pdf/upload: uploaded image files -> one stored PDF."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.batch import convert_many
from app.routes import ChargeDep, ServicesDep
from app.schemas import ERROR_RESPONSES, UPLOAD_OPENAPI, UploadResponse
from app.uploads import read_upload

router = APIRouter()


@router.post(
    "/image_to_pdf/upload",
    response_model=UploadResponse,
    responses=ERROR_RESPONSES,
    summary="Convert uploaded image files into one PDF",
    openapi_extra=UPLOAD_OPENAPI,
)
async def upload(request: Request, svc: ServicesDep, charge: ChargeDep) -> UploadResponse:
    """`multipart/form-data` with one or more parts named `files` (one page each, in
    order) and an optional `page_size` field. Same limits and checks as URLs, plus a
    total size cap (MAX_UPLOAD_BYTES). Example:
    `curl -F files=@page-1.jpg -F files=@page-2.png -F page_size=A4 .../image_to_pdf/upload`
    """
    async with read_upload(request, svc) as (sources, page_size):
        charge(len(sources))
        url = await convert_many(sources, page_size, svc)
        names = [s.name for s in sources]
    return UploadResponse(source_files=names, converted_url=url)
