"""Sentry against a local receiver used as the DSN host."""

from __future__ import annotations

import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import images
from tests.support.servers import Service


class Receiver:
    def __init__(self):
        self.envelopes: list[list[dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                items = []
                for line in body.splitlines():
                    try:
                        items.append(json.loads(line))
                    except ValueError:
                        continue
                outer.envelopes.append(items)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.dsn = f"http://publickey@127.0.0.1:{self.httpd.server_address[1]}/1"

    def events(self) -> list[dict]:
        return [item for env in self.envelopes for item in env if "exception" in item]


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.httpd.shutdown()


@pytest.fixture
def sentry_service(receiver, tmp_path):
    svc = Service(
        tmp_path,
        env={
            "SENTRY_DSN": receiver.dsn,
            "RELEASE": "test-release-1",
            "ENVIRONMENT": "ci",
            "WEB_CONCURRENCY": "1",
        },
    ).start()
    yield svc
    svc.stop()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_client_errors_are_not_reported(receiver, sentry_service, source):
    before = len(receiver.events())
    assert sentry_service.post("ftp://example.com/x.png").status == 400
    assert sentry_service.post(source.add_bytes("/svg", images.svg())).status == 415
    assert sentry_service.post(source.add_status("/gone", 404)).status == 502
    assert sentry_service.post(source.add_bytes("/bomb", images.pixel_bomb_png())).status == 413
    time.sleep(2)
    assert len(receiver.events()) == before


def test_a_storage_failure_is_reported_once_with_release_and_no_pii(
    receiver, sentry_service, source
):
    before = len(receiver.events())
    data_dir = sentry_service.tmp / "data"
    shutil.rmtree(data_dir)
    data_dir.write_text("not a directory any more")
    resp = sentry_service.post(source.add_bytes("/ok.png", images.png()))
    assert resp.status == 503
    assert wait_for(lambda: len(receiver.events()) > before)
    time.sleep(1)
    events = receiver.events()[before:]
    assert len(events) == 1
    event = events[0]
    assert event["release"] == "test-release-1"
    assert event["environment"] == "ci"
    assert "user" not in event or "ip_address" not in event.get("user", {})
