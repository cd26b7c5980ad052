"""The origin of the load: tests/support/servers.py's SourceServer in a process of its own."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from tests.load.harness.corpus import Kind
from tests.load.harness.limits import MIB
from tests.support.servers import SourceServer, free_port

SOURCE_DELAY_S = (0.05, 0.2)
TOO_LARGE_BYTES = 24 * MIB  # over MAX_SOURCE_BYTES (20 MiB)


def _serve_sources(files: dict[str, str], conn) -> None:
    server = SourceServer(latency_s=SOURCE_DELAY_S)
    for path, file in files.items():
        server.add_bytes(path, Path(file).read_bytes())
    server.add_too_large("/too-large.jpg", TOO_LARGE_BYTES)
    conn.send(server.port)
    server.serve_forever()


class SourceProcess:
    """The origin servers, in their own process so they never compete for the client's GIL."""

    def __init__(self, files: dict[str, Path]):
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve_sources, args=({p: str(f) for p, f in files.items()}, child), daemon=True
        )
        self.proc.start()
        if not parent.poll(30):
            raise RuntimeError("source server did not start")
        self.port = parent.recv()

    def url(self, kind: Kind, n: int) -> str:
        if not kind.path:
            return f"http://127.0.0.1:{closed_port()}/gone.jpg"
        suffix = "?declared" if kind.path == "/too-large.jpg" and n % 2 else f"?n={n}"
        return f"http://127.0.0.1:{self.port}{kind.path}{suffix}"

    def close(self):
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)


_CLOSED_PORT: int | None = None


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused -> 502)."""
    global _CLOSED_PORT
    if _CLOSED_PORT is None:
        _CLOSED_PORT = free_port()
    return _CLOSED_PORT
