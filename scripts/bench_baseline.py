"""The naive baseline the benchmark compares against: Pillow decode + save(PDF).

Same server stack (gunicorn + uvicorn workers), same download client, same local
storage; only the conversion differs. Not part of the service.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import anyio
import httpx
from fastapi import FastAPI
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel

DATA = Path(os.environ.get("DATA_DIR", "data-baseline"))
BASE = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8080")


class Body(BaseModel):
    source_url: str


def _convert(data: bytes) -> bytes:
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode not in ("RGB", "L", "CMYK"):
        im = im.convert("RGB")
    out = io.BytesIO()
    im.save(out, format="PDF")
    return out.getvalue()


def _app() -> FastAPI:
    """What both baselines share with the service: /ping and the stored PDFs under /files."""
    app = FastAPI()
    DATA.mkdir(parents=True, exist_ok=True)

    @app.get("/ping")
    async def ping():
        return {"ping": "pong"}

    @app.get("/files/{name}")
    async def files(name: str):
        return FileResponse(DATA / Path(name).name, media_type="application/pdf")

    return app


def create_app() -> FastAPI:
    app = _app()

    @app.post("/image_to_pdf")
    async def convert(body: Body):
        async with httpx.AsyncClient(trust_env=False) as client:
            data = (await client.get(body.source_url)).content
        pdf = await anyio.to_thread.run_sync(_convert, data)
        name = f"{uuid.uuid4()}.pdf"
        (DATA / name).write_bytes(pdf)
        return {"source_url": body.source_url, "converted_url": f"{BASE}/files/{name}"}

    return app


def _copy(url: str, path: Path) -> None:
    """Stream the source into a temporary file in the folder, then rename it into
    place, readable by all: what the service's LocalStorage does with a PDF."""
    import shutil
    import tempfile
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with opener.open(url, timeout=60) as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create_copy_app() -> FastAPI:
    """The floor for any converter: stream the source to a file, answer its URL.

    No conversion at all; urllib in a thread, as plain as a server gets. Started
    by scripts/bench.py behind the same gunicorn config and worker count as the
    service, fetching from the same loopback origin.
    """
    app = _app()

    @app.post("/image_to_pdf")
    async def copy(body: Body):
        name = f"{uuid.uuid4()}.pdf"
        await anyio.to_thread.run_sync(_copy, body.source_url, DATA / name)
        return {"source_url": body.source_url, "converted_url": f"{BASE}/files/{name}"}

    return app
