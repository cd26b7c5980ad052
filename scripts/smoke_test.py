#!/usr/bin/env python3
"""Smoke-test a running img2pdf service end to end, the way a client uses it.

    scripts/smoke_test.py http://203.0.113.7.nip.io/ --source-url https://…/smoke.png

1. GET /ping until it answers {"ping": "pong"} (a fresh release or the load
   balancer may need a few seconds); with --expect-release, also wait until
   /openapi.json reports that release, so the check is of the new code.
2. POST /image_to_pdf with a known image, expect 200 and a converted_url.
3. Download the PDF and check it is a well-formed PDF with exactly one page.

Standard library only: it runs on any Python >= 3.9 (the CI runner, the
ansible controller, a laptop). pikepdf, when importable, double-checks the PDF.

Exit status: 0 healthy; 1 the service failed a check (roll back); 2 usage;
3 inconclusive: the source image itself is unreachable from here, so the
service cannot be judged (do not blame the release for it); 4 the smoke test
itself crashed (a bug here, not a verdict on the service). Only 1 means "bad":
an uncaught exception would also exit 1, so every one is caught and exits 4.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCONCLUSIVE, EXIT_CRASHED = 0, 1, 2, 3, 4
USER_AGENT = "img2pdf-smoke-test/1"
MAX_PDF_BYTES = 50 * 1024 * 1024


class SmokeFailure(Exception):
    """The service answered, but not as a healthy release must."""


class Inconclusive(Exception):
    """Something outside the service (the source image) is broken."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def log(msg: str) -> None:
    print(f"smoke: {msg}", file=sys.stderr, flush=True)


def request(
    url: str, *, data: dict | None = None, timeout: float = 30.0, limit: int = MAX_PDF_BYTES
) -> Response:
    """One HTTP request; HTTP error statuses are returned, network errors raise OSError."""
    body = None if data is None else json.dumps(data).encode()
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    # Only http(s) URLs reach here (parse_args checks them; converted_url in convert()).
    req = urllib.request.Request(  # noqa: S310
        url, data=body, headers=headers, method="POST" if body else "GET"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers.items()), resp.read(limit + 1))
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers.items()), err.read(64 * 1024))


def request_or(error: type[Exception], what: str, url: str, **kwargs) -> Response:
    """`request`, a connection failure raised as `error`: "<what>: <reason>"."""
    try:
        return request(url, **kwargs)
    except OSError as err:
        raise error(f"{what}: {getattr(err, 'reason', err)}") from None


def _json(resp: Response, what: str) -> dict:
    try:
        data = json.loads(resp.body)
    except ValueError:
        raise SmokeFailure(
            f"{what}: expected JSON, got {resp.headers.get('Content-Type', '?')}: "
            f"{resp.body[:120]!r}"
        ) from None
    if not isinstance(data, dict):
        raise SmokeFailure(f"{what}: expected a JSON object, got {data!r:.120}")
    return data


def _describe(resp: Response) -> str:
    detail = ""
    try:
        data = json.loads(resp.body)
        if isinstance(data, dict) and "detail" in data:
            detail = f" {data.get('code', '')}: {data['detail']}"
    except ValueError:
        detail = f" {resp.body[:120]!r}"
    return f"HTTP {resp.status}{detail}"


# --- PDF checks ---------------------------------------------------------------

_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9_])")
_STREAM = re.compile(rb"<<(?:(?!>>\s*stream).)*?/Type\s*/ObjStm.*?>>\s*stream\r?\n", re.S)


def count_pages(pdf: bytes) -> int:
    """Count page objects, including those inside compressed object streams."""
    count = len(_PAGE.findall(pdf))
    for match in _STREAM.finditer(pdf):
        start = match.end()
        end = pdf.find(b"endstream", start)
        if end < 0:
            raise SmokeFailure("PDF: object stream without endstream")
        try:
            inner = zlib.decompressobj().decompress(pdf[start:end])
        except zlib.error:
            raise SmokeFailure("PDF: an object stream does not inflate") from None
        count += len(_PAGE.findall(inner))
    return count


def check_pdf(pdf: bytes) -> int:
    """Raise SmokeFailure unless `pdf` is a structurally sound one-page PDF."""
    if not pdf:
        raise SmokeFailure("PDF: the download is empty")
    if not re.match(rb"%PDF-[12]\.\d", pdf):
        raise SmokeFailure(f"PDF: not a PDF (starts with {pdf[:16]!r})")
    tail = pdf[-2048:]
    if b"%%EOF" not in tail[-64:]:
        raise SmokeFailure("PDF: no %%EOF at the end: the file is truncated")
    found = re.findall(rb"startxref\s+(\d+)", tail)
    if not found:
        raise SmokeFailure("PDF: no startxref: the cross-reference table is missing")
    offset = int(found[-1])
    if offset >= len(pdf) or not re.match(rb"xref|\d+\s+\d+\s+obj", pdf[offset : offset + 32]):
        raise SmokeFailure(f"PDF: startxref points to byte {offset}, where no xref is")
    pages = count_pages(pdf)
    if pages != 1:
        raise SmokeFailure(f"PDF: expected exactly one page, found {pages}")
    try:
        import io

        import pikepdf
    except ImportError:
        return pages
    try:
        with pikepdf.open(io.BytesIO(pdf)) as doc:
            pages = len(doc.pages)
    except pikepdf.PdfError as err:
        raise SmokeFailure(f"PDF: pikepdf cannot open it: {err}") from None
    if pages != 1:
        raise SmokeFailure(f"PDF: expected exactly one page, pikepdf counts {pages}")
    return pages


# --- the checks, in order -------------------------------------------------------


def wait_until_ready(base: str, expect_release: str | None, deadline: float, timeout: float):
    """Poll /ping (and the release in /openapi.json) until good or the deadline."""
    last = "no answer yet"
    delay = 0.5
    while True:
        try:
            resp = request(urllib.parse.urljoin(base, "ping"), timeout=timeout)
            if resp.status != 200:
                last = f"/ping answered {_describe(resp)}"
            elif _json(resp, "/ping") != {"ping": "pong"}:
                raise SmokeFailure(f"/ping answered {resp.body[:120]!r}, not {{'ping': 'pong'}}")
            elif expect_release is None:
                return None
            else:
                spec = _json(
                    request(urllib.parse.urljoin(base, "openapi.json"), timeout=timeout),
                    "/openapi.json",
                )
                running = str(spec.get("info", {}).get("version", ""))
                if running and (
                    running.startswith(expect_release) or expect_release.startswith(running)
                ):
                    return running
                last = f"the service runs release {running or '?'}, not {expect_release}"
        except OSError as err:
            last = f"/ping unreachable: {getattr(err, 'reason', err)}"
        if time.monotonic() + delay > deadline:
            raise SmokeFailure(f"not ready in time: {last}")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def check_source(source_url: str, timeout: float) -> None:
    what = f"the source image {source_url} is unreachable from here"
    resp = request_or(Inconclusive, what, source_url, timeout=timeout)
    if resp.status != 200 or not resp.body:
        raise Inconclusive(f"the source image {source_url} answered HTTP {resp.status}")


def convert(base: str, source_url: str, deadline: float, timeout: float) -> str:
    """POST the image; retry briefly on 502/503/504 from a warming load balancer."""
    url = urllib.parse.urljoin(base, "image_to_pdf")
    attempt = 0
    while True:
        attempt += 1
        resp = request_or(
            SmokeFailure,
            "POST /image_to_pdf failed",
            url,
            data={"source_url": source_url},
            timeout=timeout,
        )
        if resp.status in (502, 503, 504) and attempt < 4 and time.monotonic() + 2 < deadline:
            log(f"POST /image_to_pdf: {_describe(resp)}, retrying")
            time.sleep(2)
            continue
        if resp.status != 200:
            raise SmokeFailure(f"POST /image_to_pdf answered {_describe(resp)}")
        data = _json(resp, "POST /image_to_pdf")
        if data.get("source_url") != source_url:
            raise SmokeFailure(f"POST /image_to_pdf echoed source_url {data.get('source_url')!r}")
        converted = data.get("converted_url")
        if not isinstance(converted, str) or urllib.parse.urlsplit(converted).scheme not in (
            "http",
            "https",
        ):
            raise SmokeFailure(f"POST /image_to_pdf gave no usable converted_url: {converted!r}")
        return converted


def download(converted_url: str, timeout: float) -> bytes:
    resp = request_or(
        SmokeFailure, f"download of {converted_url} failed", converted_url, timeout=timeout
    )
    if resp.status != 200:
        raise SmokeFailure(f"download of {converted_url} answered {_describe(resp)}")
    if len(resp.body) > MAX_PDF_BYTES:
        raise SmokeFailure(f"download of {converted_url} is larger than {MAX_PDF_BYTES} bytes")
    return resp.body


def run(args: argparse.Namespace) -> int:
    base = args.base_url if args.base_url.endswith("/") else args.base_url + "/"
    started = time.monotonic()
    deadline = started + args.wait
    try:
        running = wait_until_ready(base, args.expect_release, deadline, args.timeout)
        log(f"{base} is up" + (f", release {running}" if running else ""))
        check_source(args.source_url, args.timeout)
        converted = convert(base, args.source_url, deadline, args.timeout)
        pdf = download(converted, args.timeout)
        check_pdf(pdf)
    except Inconclusive as err:
        log(f"INCONCLUSIVE: {err}")
        return EXIT_INCONCLUSIVE
    except SmokeFailure as err:
        log(f"FAILED against {base}: {err}")
        return EXIT_FAILED
    log(
        f"OK: {args.source_url} -> {converted} ({len(pdf)} bytes, 1 page) "
        f"in {time.monotonic() - started:.1f}s"
    )
    return EXIT_OK


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base_url", help="the service's base URL, e.g. http://1.2.3.4.nip.io/")
    p.add_argument(
        "--source-url",
        default=os.environ.get("SMOKE_SOURCE_URL"),
        help="a known image the service can fetch (env SMOKE_SOURCE_URL)",
    )
    p.add_argument(
        "--expect-release",
        default=os.environ.get("SMOKE_EXPECT_RELEASE") or None,
        help="wait until the service reports this release (git SHA or a prefix of it)",
    )
    p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for readiness")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    args = p.parse_args(argv)
    for name in ("base_url", "source_url"):
        value = getattr(args, name)
        if not value:
            p.error(f"--{name.replace('_', '-')} (or SMOKE_SOURCE_URL) is required")
        if urllib.parse.urlsplit(value).scheme not in ("http", "https"):
            p.error(f"{name} must be an http(s) URL, got {value!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except Exception:  # a bug in this script is no proof the release is bad
        import traceback

        log("CRASHED (no verdict on the service):\n" + traceback.format_exc().rstrip())
        return EXIT_CRASHED


if __name__ == "__main__":
    sys.exit(main())
