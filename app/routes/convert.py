"""POST /image_to_pdf: images at URLs -> one stored PDF."""

from __future__ import annotations

from fastapi import APIRouter

from app.batch import convert_many, url_source
from app.pages import PageSize
from app.pipeline import convert_source_url
from app.routes import ChargeDep, ServicesDep
from app.schemas import ERROR_RESPONSES, ConvertRequest, ConvertResponse

router = APIRouter()


@router.post(
    "/image_to_pdf",
    response_model=ConvertResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    summary="Convert the image at source_url (or several at source_urls) into a PDF",
)
async def image_to_pdf(
    body: ConvertRequest, svc: ServicesDep, charge: ChargeDep
) -> ConvertResponse:
    """One image: `{"source_url"}`, answered `{"source_url", "converted_url"}`.

    Several: `{"source_urls": [...]}` makes one PDF with a page per image, in order,
    answered with the list too. If any image fails, nothing is stored and the
    error's `item` (and its `detail`) says which one (1-based).
    """
    if body.source_url is not None:
        charge(1)
        if body.page_size == PageSize.image:
            url = await convert_source_url(body.source_url, svc)
        else:
            url = await convert_many([url_source(body.source_url, svc)], body.page_size, svc)
        return ConvertResponse(source_url=body.source_url, converted_url=url)
    urls = body.source_urls or []
    charge(len(urls))
    url = await convert_many([url_source(u, svc) for u in urls], body.page_size, svc)
    return ConvertResponse(source_url=urls[0], source_urls=urls, converted_url=url)
