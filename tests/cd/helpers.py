"""Small loopback HTTP servers and images for the smoke-test tests."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
