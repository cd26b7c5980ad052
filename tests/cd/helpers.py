"""Small loopback HTTP servers and images for the smoke-test tests."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Handler = Callable[[BaseHTTPRequestHandler], None]


def png_bytes(size=(64, 48), color=(200, 40, 40)) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, color)
    ImageDraw.Draw(img).rectangle((8, 8, size[0] - 8, size[1] - 8), outline=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pdf_bytes(pages: int = 1) -> bytes:
    import img2pdf

    return img2pdf.convert([png_bytes(color=(10 * i, 80, 80)) for i in range(pages)])


@contextmanager
def serve(routes: dict[tuple[str, str], Handler]) -> Iterator[str]:
    """Serve `routes` {(method, path): handler} on 127.0.0.1; yields the base URL."""

    class H(BaseHTTPRequestHandler):
        def _dispatch(self, method: str) -> None:
            handler = routes.get((method, self.path.split("?")[0]))
            if handler is None:
                send(self, 404, b'{"detail":"no such route","code":"not_found"}')
            else:
                handler(self)

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype="application/json") -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def send_json(h: BaseHTTPRequestHandler, status: int, data: object) -> None:
    send(h, status, json.dumps(data).encode())


def read_json(h: BaseHTTPRequestHandler) -> dict:
    return json.loads(h.rfile.read(int(h.headers["Content-Length"])))


# --- a scratch history: tests never depend on how this checkout was cloned -------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "img2pdf tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "img2pdf tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    return out.stdout.strip()


def copy_tree(src: Path, dest: Path, names: tuple[str, ...]) -> Path:
    """Copy the named top-level folders/files of this checkout (no git needed)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".venv*", "data", ".lb-url")
    for name in names:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, ignore=ignore)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dest / name)
    return dest


def linear_history(repo: Path, count: int) -> list[str]:
    """`git init` the tree at `repo` and make `count` commits on it; oldest first."""
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for i in range(count):
        (repo / "HISTORY").write_text(f"commit {i}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"commit {i}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    return shas
