"""About the service itself: liveness and the limits a client should check first."""

from __future__ import annotations

from fastapi import APIRouter

from app.routes import ServicesDep, also_head
from app.schemas import Limits

router = APIRouter()


@router.get("/ping", summary="Liveness check")
async def ping() -> dict[str, str]:
    return {"ping": "pong"}


@router.get("/limits", response_model=Limits, summary="Limits a client should check first")
async def limits(svc: ServicesDep) -> Limits:
    s = svc.settings
    return Limits(
        max_pages=s.max_pages,
        max_upload_bytes=s.max_upload_bytes,
        max_source_bytes=s.max_source_bytes,
        max_image_pixels=s.max_image_pixels,
    )


also_head(router, "/ping", ping)
also_head(router, "/limits", limits)
