"""scripts/smoke_test.py: passes against the real service, fails clearly against broken ones."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.servers import free_port

from .conftest import ROOT
from .helpers import pdf_bytes, png_bytes, read_json, send, send_json, serve

SMOKE = ROOT / "scripts" / "smoke_test.py"
sys.path.insert(0, str(SMOKE.parent))
import smoke_test  # noqa: E402


def run_smoke(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run the script exactly as deploy.sh does: its own process, its own interpreter."""
    return subprocess.run(
        [sys.executable, str(SMOKE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith("SMOKE_")},
    )


@pytest.fixture(scope="module")
def image_server():
    png = png_bytes()
    with serve({("GET", "/smoke.png"): lambda h: send(h, 200, png, "image/png")}) as base:
        yield f"{base}/smoke.png"


# --- the PDF check itself ----------------------------------------------------------


def test_check_pdf_accepts_a_one_page_pdf():
    assert smoke_test.check_pdf(pdf_bytes(1)) == 1


def test_check_pdf_counts_pages_inside_object_streams():
    import pikepdf

    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf_bytes(1))) as doc:
        doc.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    data = out.getvalue()
    assert b"/ObjStm" in data
    assert smoke_test.count_pages(data) == 1
    assert smoke_test.check_pdf(data) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<html>502 Bad Gateway</html>", "not a PDF"),
        (pdf_bytes(1)[:-200], "truncated"),
        (pdf_bytes(2), "exactly one page, found 2"),
    ],
    ids=["empty", "html", "truncated", "two-pages"],
)
def test_check_pdf_rejects(data, message):
    with pytest.raises(smoke_test.SmokeFailure, match=message):
        smoke_test.check_pdf(data)


# --- against broken services -----------------------------------------------------


def _ping(h):
    send_json(h, 200, {"ping": "pong"})


def test_fails_clearly_when_the_service_answers_500(image_server):
    routes = {
        ("GET", "/ping"): _ping,
        ("POST", "/image_to_pdf"): lambda h: send_json(
            h, 500, {"detail": "Internal error.", "code": "internal_error"}
        ),
    }
    with serve(routes) as base:
        out = run_smoke(base, "--source-url", image_server, "--wait", "5")
    assert out.returncode == 1, out.stderr
    assert "FAILED" in out.stderr
    assert "POST /image_to_pdf answered HTTP 500 internal_error: Internal error." in out.stderr


def test_fails_clearly_when_the_pdf_is_invalid(image_server):
    def convert(h):
        body = read_json(h)
        port = h.server.server_address[1]
        send_json(
            h,
            200,
            {"source_url": body["source_url"], "converted_url": f"http://127.0.0.1:{port}/f.pdf"},
        )

    routes = {
        ("GET", "/ping"): _ping,
        ("POST", "/image_to_pdf"): convert,
        ("GET", "/f.pdf"): lambda h: send(h, 200, b"%PDF-1.4\nnot really\n", "application/pdf"),
    }
    with serve(routes) as base:
        out = run_smoke(base + "/", "--source-url", image_server, "--wait", "5")
    assert out.returncode == 1, out.stderr
    assert "PDF: no %%EOF at the end" in out.stderr


def test_fails_clearly_when_the_service_never_becomes_ready(image_server):
    routes = {("GET", "/ping"): lambda h: send(h, 502, b"<html>Bad Gateway</html>", "text/html")}
    with serve(routes) as base:
        started = time.monotonic()
        out = run_smoke(base, "--source-url", image_server, "--wait", "3")
    assert out.returncode == 1
    assert "not ready in time: /ping answered HTTP 502" in out.stderr
    assert time.monotonic() - started < 20


def test_fails_when_nothing_listens(image_server):
    out = run_smoke(f"http://127.0.0.1:{free_port()}", "--source-url", image_server, "--wait", "2")
    assert out.returncode == 1
    assert "/ping unreachable" in out.stderr


def test_waits_for_the_expected_release(image_server):
    routes = {
        ("GET", "/ping"): _ping,
        ("GET", "/openapi.json"): lambda h: send_json(h, 200, {"info": {"version": "aaaa1111"}}),
    }
    with serve(routes) as base:
        out = run_smoke(
            base, "--source-url", image_server, "--wait", "3", "--expect-release", "bbbb"
        )
    assert out.returncode == 1
    assert "runs release aaaa1111, not bbbb" in out.stderr


def test_unreachable_source_image_is_inconclusive_not_a_failure():
    with serve({("GET", "/ping"): _ping}) as base:
        out = run_smoke(
            base, "--source-url", f"http://127.0.0.1:{free_port()}/x.png", "--wait", "3"
        )
    assert out.returncode == 3, out.stderr
    assert "INCONCLUSIVE" in out.stderr


def test_a_crash_of_the_smoke_test_itself_exits_4_not_1(image_server):
    """1 means "the release is bad" (deploy.sh rolls back); a bug here proves nothing."""
    routes = {
        ("GET", "/ping"): _ping,
        # A shape the script does not expect: it raises AttributeError, not SmokeFailure.
        ("GET", "/openapi.json"): lambda h: send_json(h, 200, {"info": []}),
    }
    with serve(routes) as base:
        out = run_smoke(base, "--source-url", image_server, "--wait", "3", "--expect-release", "a")
    assert out.returncode == 4, out.stderr
    assert "CRASHED (no verdict on the service)" in out.stderr
    assert "AttributeError" in out.stderr


def test_usage_errors_exit_2():
    out = run_smoke("http://127.0.0.1:1/")
    assert out.returncode == 2
    assert "--source-url" in out.stderr
    out = run_smoke("ftp://x/", "--source-url", "http://x/a.png")
    assert out.returncode == 2


# --- against the real service ------------------------------------------------------


@pytest.fixture(scope="module")
def real_service(tmp_path_factory):
    """`scripts/entrypoint.sh prod` on a loopback port, local storage, private sources allowed."""
    port = free_port()
    data = tmp_path_factory.mktemp("data")
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
        "ALLOW_PRIVATE_SOURCE_URLS": "1",
        "DATA_DIR": str(data),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "RELEASE": "0123456789abcdef0123456789abcdef01234567",
    }
    env.pop("PDF_BUCKET", None)
    env.pop("SENTRY_DSN", None)
    log = (data / "service.log").open("wb")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "entrypoint.sh"), "prod"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("service did not start:\n" + Path(log.name).read_text()[-3000:])
            time.sleep(0.3)
        yield base
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (gunicorn and its workers), then reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_passes_against_the_real_service(real_service, image_server):
    out = run_smoke(
        real_service,
        "--source-url",
        image_server,
        "--expect-release",
        "0123456789ab",
        "--wait",
        "30",
    )
    assert out.returncode == 0, out.stderr
    assert "OK:" in out.stderr and "1 page" in out.stderr
    assert "release 0123456789abcdef" in out.stderr


def test_fails_against_the_real_service_when_it_cannot_convert(real_service):
    text = b"this is not an image"
    with serve({("GET", "/a.png"): lambda h: send(h, 200, text, "image/png")}) as base:
        out = run_smoke(real_service, "--source-url", f"{base}/a.png", "--wait", "30")
    assert out.returncode == 1
    assert "POST /image_to_pdf answered HTTP 415" in out.stderr
