"""The page at GET / in headless Chromium (or Chrome), driven by Playwright, against
the real service (gunicorn via scripts/entrypoint.sh prod) and a real source server,
all on loopback. Screenshots of each state go to tests/artifacts/web/."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pikepdf
import pytest
from playwright.sync_api import Page, sync_playwright

from tests.support.servers import ROOT, Service

#: The browser: $CHROMIUM (scripts/test.sh sets it), else the first of these on PATH.
#: Debian has chromium; GitHub's runner has Chrome as /usr/bin/chromium and google-chrome.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next(filter(None, (shutil.which(name) for name in BROWSER_NAMES)), None)


ARTIFACTS = ROOT / "tests" / "artifacts" / "web"
# The flags that work on these machines (and in CI): no GPU, no sandbox (root),
# and none of Chromium's own background traffic. Playwright adds a fresh
# temporary --user-data-dir to every launch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("web")).start()
    yield svc
    svc.stop()


# Module scope: sync Playwright keeps an event loop running in this thread until it
# stops, which would break asyncio.run() in any suite collected after this one.
@pytest.fixture(scope="module")
def browser():
    executable = find_browser()
    assert executable and Path(executable).exists(), (
        f"no browser: set CHROMIUM or install one of {BROWSER_NAMES}"
    )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, service) -> Page:
    context = browser.new_context(
        accept_downloads=True, viewport={"width": 1000, "height": 900}, base_url=service.base
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Failed HTTP answers (an expected 415) are logged by Chromium too: not page errors.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.goto("/")
    yield page
    context.close()
    assert not errors, errors


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_pdf(data: bytes) -> pikepdf.Pdf:
    assert data.startswith(b"%PDF-"), data[:20]
    return pikepdf.open(io.BytesIO(data))


def page_sizes(pdf: pikepdf.Pdf) -> list[tuple[int, int]]:
    return [(round(float(p.mediabox[2])), round(float(p.mediabox[3]))) for p in pdf.pages]
