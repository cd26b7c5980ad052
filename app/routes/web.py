"""The conversion page at / and its static files (app/web/)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.routes import also_head

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
# The page loads only its own files; previews of pasted URLs are plain <img> loads.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data: https: http:; object-src 'none';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)


also_head(router, "/", page)


def mount_static(app: FastAPI) -> None:
    """/static/*: the page's script and styles (a mount, which a router cannot carry)."""
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
