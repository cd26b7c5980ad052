"""A CONNECT proxy on loopback that terminates TLS for Google API hosts.

`requests` (used by the google.cloud modules) honours HTTPS_PROXY: it sends
`CONNECT compute.googleapis.com:443`, then speaks TLS through the tunnel. We
answer the CONNECT ourselves, do the TLS handshake with a certificate from a
local `trustme` CA, and hand each decrypted HTTP request to the fake. Any
other CONNECT target is refused with 403: nothing ever leaves this machine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

from .discovery import FAKED_HOSTS
from .state import FakeGcpState


class _ApiHandler(BaseHTTPRequestHandler):
    """Serves decrypted HTTP/1.1 requests from one TLS tunnel."""

    protocol_version = "HTTP/1.1"
    server_version = "ESF"
    sys_version = ""
    state: FakeGcpState
    host_name: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = _read_chunked(self.rfile)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body = self.state.handle(self.command, self.host_name, self.path, headers, raw)
        data = b"" if body is None else json.dumps(body, indent=1).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


def _read_chunked(rfile: Any) -> bytes:
    out = b""
    while True:
        size = int(rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return out
        out += rfile.read(size)
        rfile.readline()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        if host not in FAKED_HOSTS or port != "443":
            self.server.refused.append(self.path)
            self.send_response(403, "Forbidden: fake GCP proxy only serves Google APIs")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.close_connection = True
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        handler_cls = type(
            "_BoundApiHandler", (_ApiHandler,), {"state": self.server.state, "host_name": host}
        )
        try:
            handler_cls(tls, self.client_address, self.server)
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                tls.close()
        self.close_connection = True

    def _refuse(self) -> None:
        self.server.refused.append(f"{self.command} {self.path}")
        self.send_response(403, "Forbidden: only CONNECT to Google APIs")
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _refuse


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: FakeGcpState, tls: ssl.SSLContext):
        self.state = state
        self.tls = tls
        self.refused: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class FakeGcpServer:
    """The proxy + fake running in a background thread of this process."""

    def __init__(self, workdir: Path, state: FakeGcpState | None = None):
        self.state = state or FakeGcpState()
        self.ca = trustme.CA()
        cert = self.ca.issue_cert(*sorted(FAKED_HOSTS))
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca_path = workdir / "fake-gcp-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self._server = _ProxyServer(self.state, ctx)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-gcp-proxy", daemon=True
        )

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def refused(self) -> list[str]:
        return list(self._server.refused)

    def start(self) -> FakeGcpServer:
        self._thread.start()
        # wait until it accepts
        with socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env_overrides(self) -> dict[str, str]:
        ca = str(self.ca_path)
        return {
            "HTTPS_PROXY": self.proxy_url,
            "https_proxy": self.proxy_url,
            "HTTP_PROXY": self.proxy_url,
            "http_proxy": self.proxy_url,
            "NO_PROXY": "",
            "no_proxy": "",
            "REQUESTS_CA_BUNDLE": ca,
            "SSL_CERT_FILE": ca,
            "CURL_CA_BUNDLE": ca,
            "HTTPLIB2_CA_CERTS": ca,
            "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": ca,
            "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE": ca,
            "CLOUDSDK_PROXY_TYPE": "http",
            "CLOUDSDK_PROXY_ADDRESS": "127.0.0.1",
            "CLOUDSDK_PROXY_PORT": str(self.port),
            # never let a stray credential file or metadata server be used
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9",
        }
