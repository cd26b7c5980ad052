"""The SSRF guard in app.fetch, against real HTTP(S) servers on 127.0.0.1.

No test may send a packet anywhere but loopback: the autouse `loopback_only`
tripwire fails any test that connects to a non-loopback address or asks the
system resolver about a real name. So every "would have connected" bug shows
up as a failure here, never as traffic.

How redirect re-checking is tested: the test servers live on 127.0.0.1, which
the real address table rightly blocks, so a first hop cannot pass the address
check while still being reachable. `allow_private=True` is no help (it lifts the
very checks under test). Instead the `loopback_is_public` fixture wraps
`is_public_address` so that exactly 127.0.0.1 counts as public, every other
address still goes through the real table, and the port allow-list is set to
the test server's port. The first hop then stands in for a public host and the
redirect targets (a name resolving to 10.0.0.1, the metadata IP, port 22,
other schemes, userinfo) must each be rejected on their own merits.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import gzip
import http.server
import ipaddress
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import pytest
import trustme

from app import fetch, http1
from app.errors import (
    ApiError,
    SourceBadRedirect,
    SourceHttpError,
    SourceTimeout,
    SourceTooLarge,
    SourceUnreachable,
    UnsupportedImage,
    UrlNotAllowed,
)
from app.fetch import FetchPolicy, check_url, fetch_source, is_public_address
from app.settings import Settings

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
UPSTREAM_SECRET = "upstream-secret-text 10.9.8.7"
IP_PATTERN = re.compile(r"\d{1,3}(\.\d{1,3}){3}|[0-9a-f]{0,4}::[0-9a-f]{0,4}", re.IGNORECASE)

# One address (or more) from every range that must never be fetched.
BLOCKED = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "169.254.0.1",
    "172.16.0.1",
    "172.31.255.254",
    "192.0.0.9",
    "192.0.0.170",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.254",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::127.0.0.1",
    "::8.8.8.8",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::808:808",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
    "2002:808:808::1",
    "2002:7f00:1::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "100::1",
    "2001::1",
    "2001:1::1",
    "2001:2::1",
    "3fff::1",
    # SRv6 SIDs (5f00::/16, RFC 9602), first and last: Python 3.11 calls them global.
    "5f00::",
    "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    # IPv4-translated (::ffff:0:0:0/96): 127.0.0.1, the metadata address, first, last.
    "::ffff:0:7f00:1",
    "::ffff:0:a9fe:a9fe",
    "::ffff:0:0:0",
    "::ffff:0:ffff:ffff",
    # 6to4 forms in the upper half of 2002::/16 (a /17 would miss them):
    # 169.254.169.254 and 192.168.1.1.
    "2002:a9fe:a9fe::1",
    "2002:c0a8:101::1",
    "2002:ffff:ffff::1",
    # Multicast in the upper half of ff00::/8 (a /9 would miss it).
    "ff80::1",
    "ffff::1",
    # IPv4-mapped forms of ranges `is_global` calls global: only the unwrap to
    # the IPv4 address blocks them.
    "::ffff:224.0.0.1",
    "::ffff:192.88.99.1",
    "::ffff:192.0.0.9",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "172.32.0.1",
    "100.128.0.1",
    "192.169.0.1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
]
# Every spelling of 127.0.0.1 a URL parser or inet_aton accepts.
LOOPBACK_SPELLINGS = [
    "2130706433",
    "017700000001",
    "0x7f000001",
    "0x7F000001",
    "0x7f.0.0.1",
    "0x7f.0x0.0x0.0x1",
    "0x7f.1",
    "0177.1",
    "0177.0.1",
    "127.1",
    "127.0.1",
    "127.0.0.1.",
]
ODD_LITERALS = [
    *LOOPBACK_SPELLINGS,
    "0177.0.0.1",
    "0x0",
    "0",
    "0xa9.0xfe.0xa9.0xfe",
    "2852039166",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[::1]",
]


# --- the loopback-only tripwire --------------------------------------------


class ForbiddenTraffic(AssertionError):
    pass


def _is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host == "localhost"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail the test if anything connects off-box or queries real DNS."""
    violations: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guard(address: object) -> None:
        if isinstance(address, tuple) and not _is_loopback(str(address[0])):
            violations.append(f"connect {address!r}")
            raise ForbiddenTraffic(f"connect to {address!r}")

    def connect(self: socket.socket, address: object) -> None:
        guard(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        guard(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not _is_loopback(name):
            violations.append(f"getaddrinfo {name!r}")
            raise ForbiddenTraffic(f"resolving {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield violations
    assert not violations, violations


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- test servers -------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _start_stream(self, content_type: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()

    def _stream(self, first: bytes, more: bytes, pause: float = 0.0, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        try:
            self.wfile.write(first)
            while time.monotonic() < deadline:
                self.wfile.write(more)
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
        except OSError:
            pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        route = parts[0]
        if route == "img.png":
            # Content-Type lies on purpose: the type comes from the bytes.
            self._send(200, PNG, {"Content-Type": "text/plain"})
        elif route == "redirect":
            status = int(query.get("status", "302"))
            self._send(status, b"", {"Location": query["to"]})
        elif route == "noloc":
            self._send(302)
        elif route == "hop":
            n = int(parts[1])
            if n == 0:
                self._send(200, PNG)
            elif n % 2:
                self._send(302, b"", {"Location": str(n - 1)})  # relative to /hop/
            else:
                self._send(301, b"", {"Location": f"/hop/{n - 1}"})
        elif route == "status":
            self._send(int(parts[1]), UPSTREAM_SECRET.encode(), {"Content-Type": "text/plain"})
        elif route == "html":
            self._send(200, b"<!doctype html><html><body>" + b"x" * 100, {})
        elif route == "endless-html":
            self._start_stream("image/png")
            self._stream(b"<!doctype html><html>", b"<p>hello</p>" * 1000)
        elif route == "endless-image":
            self._start_stream("image/png")
            self._stream(PNG, b"\x00" * 65536)
        elif route == "huge-length":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
            self._stream(PNG, b"", pause=0.05, seconds=3)
        elif route == "trickle":
            self._start_stream("image/png")
            self._stream(PNG, b"\x00", pause=0.05, seconds=6)
        elif route == "chunked":
            # The PNG in chunked encoding, no Content-Length: only counting can cap it.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(0, len(PNG), 50):
                part = PNG[i : i + 50]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif route == "gzip":
            self._send(200, gzip.compress(PNG), {"Content-Encoding": "gzip"})
        elif route == "drip":
            # Announces 20 MiB, then one byte every 0.1 s.
            self.send_response(200)
            self.send_header("Content-Length", str(20 * 1024 * 1024))
            self.end_headers()
            self._stream(PNG, b"\x00", pause=0.1, seconds=8)
        elif route == "stall":
            self._start_stream("image/png")
            time.sleep(3)
        elif route == "silent":
            time.sleep(3)
        else:
            self._send(404)


class LocalServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.tls = tls
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sni: list[str | None] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def finish_request(self, request: socket.socket, client_address: object) -> None:
        # TLS handshake in the worker thread, so a failed one cannot stall the server.
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


def _serve(server: LocalServer) -> Iterator[LocalServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def module_server() -> Iterator[LocalServer]:
    yield from _serve(LocalServer())


@pytest.fixture
def server(module_server: LocalServer) -> LocalServer:
    module_server.requests.clear()
    return module_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA) -> Iterator[LocalServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("images.test").configure_cert(ctx)
    server = LocalServer(tls=ctx)
    ctx.sni_callback = lambda _sock, name, _ctx: server.sni.append(name)  # type: ignore[assignment,misc]
    yield from _serve(server)


@pytest.fixture
def trust_test_ca(monkeypatch: pytest.MonkeyPatch, ca: trustme.CA) -> None:
    """Make the fetcher trust the test CA instead of the public roots."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    monkeypatch.setattr(fetch, "_tls_context", lambda: ctx)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- helpers ------------------------------------------------------------------


class FakeDns:
    """Injected resolver: a fixed name -> answers table that records each lookup."""

    def __init__(self, table: dict[str, list[str]] | None = None, *answers: list[str]) -> None:
        self.table = table or {}
        self.sequence = list(answers)  # if set, successive lookups get these in turn
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if self.sequence:
            return self.sequence.pop(0) if len(self.sequence) > 1 else self.sequence[0]
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


async def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver must not be called for {host!r}")


def assert_clean(exc: ApiError, *also_absent: str) -> None:
    """Client-visible text must carry no addresses and nothing from upstream."""
    for text in (str(exc), exc.detail):
        assert not IP_PATTERN.search(text), text
        assert "upstream-secret" not in text
        for needle in also_absent:
            assert needle not in text


def private(**kw: object) -> FetchPolicy:
    return FetchPolicy(allow_private=True, **kw)  # type: ignore[arg-type]


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let exactly 127.0.0.1 stand in for a public host; see the module docstring."""
    real = fetch.is_public_address
    monkeypatch.setattr(fetch, "is_public_address", lambda ip: ip == "127.0.0.1" or real(ip))


# --- the address table ----------------------------------------------------------


@pytest.mark.parametrize("ip", BLOCKED)
def test_blocked_addresses_are_not_public(ip: str) -> None:
    assert not is_public_address(ip)


# IPv6 outside global unicast (2000::/3) that no blocked range covers: the first and
# last addresses around each. IANA keeps it reserved; Python 3.11 calls it global.
IPV6_RESERVED = [
    "::1:0:0",  # just past IPv4-compatible ::/96
    "::fffe:ffff:ffff:ffff",  # just before IPv4-translated ::ffff:0:0:0/96
    "100:0:0:1::",  # just past discard-only 100::/64
    "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",  # the last before 2000::/3
    "4000::",  # the first after it
    "e000::1",
    "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",  # just before unique local fc00::/7
    "fe00::",  # between unique local and link-local
]


@pytest.mark.parametrize("ip", IPV6_RESERVED)
def test_ipv6_outside_global_unicast_is_not_public(ip: str) -> None:
    assert not is_public_address(ip)


@pytest.mark.parametrize(
    "ip", ["2000::", "2000::1", "3fff:1000::", "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
)
def test_the_edges_of_global_unicast_are_public(ip: str) -> None:
    assert is_public_address(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_global_unicast_addresses_are_public(ip: str) -> None:
    assert is_public_address(ip)


@pytest.mark.parametrize("junk", ["", "localhost", "1.2.3", "fe80::1%eth0", "::ffff:999.0.0.1"])
def test_non_addresses_and_scoped_link_local_are_not_public(junk: str) -> None:
    assert not is_public_address(junk)


# --- syntactic checks -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://images.test/a.png",
        "file:///etc/passwd",
        "gopher://images.test:70/_GET",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "ws://images.test/",
        "//images.test/a.png",
        "images.test/a.png",
        "",
        "http://",
        "http:///a.png",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_only_http_and_https_urls_with_a_host(url: str, allow_private: bool) -> None:
    with pytest.raises(UrlNotAllowed) as info:
        check_url(url, FetchPolicy(allow_private=allow_private))
    assert_clean(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@images.test/a.png",
        "http://user@images.test/a.png",
        "http://:@images.test/a.png",
        "http://@images.test/a.png",
        "https://images.test\\@127.0.0.1/",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_userinfo_rejected_even_when_private_allowed(url: str, allow_private: bool) -> None:
    with pytest.raises(UrlNotAllowed) as info:
        check_url(url, FetchPolicy(allow_private=allow_private))
    assert_clean(info.value, "secret")


@pytest.mark.parametrize("url", ["http://images.test:22/", "https://images.test:8443/"])
def test_ports_outside_the_allow_list_rejected(url: str) -> None:
    with pytest.raises(UrlNotAllowed):
        check_url(url, FetchPolicy())
    assert check_url(url, private()).host == "images.test"  # allow_private lifts it


@pytest.mark.parametrize("url", ["http://images.test:0/", "http://images.test:99999/"])
def test_impossible_ports_rejected_even_when_private_allowed(url: str) -> None:
    with pytest.raises(UrlNotAllowed):
        check_url(url, private())


def test_implied_and_explicit_default_ports_pass() -> None:
    assert check_url("http://images.test/a.png?x=1#frag", FetchPolicy()).port == 80
    target = check_url("https://images.test:443/a.png?x=1#frag", FetchPolicy())
    assert (target.port, target.target, target.url) == (
        443,
        "/a.png?x=1",
        "https://images.test/a.png?x=1",
    )
    assert target.host_header == "images.test"


@pytest.mark.parametrize("host", ODD_LITERALS)
def test_odd_ip_spellings_are_blocked_without_dns(host: str) -> None:
    with pytest.raises(UrlNotAllowed) as info:
        check_url(f"http://{host}/", FetchPolicy())
    assert_clean(info.value)


@pytest.mark.parametrize("host", ["1.2.3.4.5", "images.123", "256.1", "1.0x100.1", "08.1"])
def test_hosts_ending_in_a_number_that_are_no_address_rejected(host: str) -> None:
    with pytest.raises(UrlNotAllowed):
        check_url(f"http://{host}/", private())


@pytest.mark.parametrize("ip", BLOCKED)
def test_blocked_ip_literal_hosts_rejected(ip: str) -> None:
    host = f"[{ip}]" if ":" in ip else ip
    with pytest.raises(UrlNotAllowed) as info:
        check_url(f"http://{host}/", FetchPolicy())
    assert_clean(info.value)


def test_policy_from_settings() -> None:
    assert FetchPolicy.from_settings(Settings()) == FetchPolicy()
    s = Settings.from_env(
        {
            "ALLOW_PRIVATE_SOURCE_URLS": "1",
            "MAX_SOURCE_BYTES": "4096",
            "MAX_REDIRECTS": "1",
            "SOURCE_CONNECT_TIMEOUT": "1.5",
            "SOURCE_READ_TIMEOUT": "2.5",
            "SOURCE_TOTAL_TIMEOUT": "7",
            "RELEASE": "test",
        }
    )
    assert FetchPolicy.from_settings(s) == FetchPolicy(
        allow_private=True,
        allowed_ports=(80, 443),
        max_bytes=4096,
        max_redirects=1,
        connect_timeout=1.5,
        read_timeout=2.5,
        total_timeout=7.0,
    )


# --- fetching: address checks after resolution ----------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("ip", BLOCKED)
async def test_names_resolving_to_blocked_addresses_rejected(ip: str) -> None:
    dns = FakeDns({"images.test": [ip]})
    with pytest.raises(UrlNotAllowed) as info:
        await fetch_source("http://images.test/a.png", FetchPolicy(), dns)
    assert dns.calls == [("images.test", 80)]
    assert_clean(info.value, ip)


@pytest.mark.anyio
@pytest.mark.parametrize("host", ODD_LITERALS)
async def test_odd_ip_spellings_blocked_by_fetch(host: str) -> None:
    with pytest.raises(UrlNotAllowed) as info:
        await fetch_source(f"http://{host}/a.png", FetchPolicy(), no_dns)
    assert_clean(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_odd_ip_spellings_mean_what_the_os_thinks(host: str, server: LocalServer) -> None:
    """With address checks lifted each spelling reaches 127.0.0.1, so the blocks above
    come from decoding it right, not from refusing odd syntax."""
    got = await fetch_source(f"http://{host}:{server.port}/img.png", private(), no_dns)
    assert got.data == PNG
    assert server.requests[-1][1]["Host"] == f"127.0.0.1:{server.port}"


@pytest.mark.anyio
async def test_any_non_public_answer_rejects_the_name() -> None:
    """A DNS answer mixing a public and a private address must not get through."""
    for answers in (["8.8.8.8", "127.0.0.1"], ["127.0.0.1", "8.8.8.8"], ["1.1.1.1", "::1"]):
        with pytest.raises(UrlNotAllowed) as info:
            await fetch_source(
                "https://images.test/a.png", FetchPolicy(), FakeDns({"images.test": answers})
            )
        assert_clean(info.value)


@pytest.mark.anyio
async def test_metadata_server_by_name_and_by_address_rejected() -> None:
    dns = FakeDns({"metadata.google.internal": ["169.254.169.254"]})
    for url in ("http://metadata.google.internal/computeMetadata/v1/", "http://169.254.169.254/"):
        with pytest.raises(UrlNotAllowed):
            await fetch_source(url, FetchPolicy(), dns)


@pytest.mark.anyio
async def test_localhost_via_system_resolver_rejected(server: LocalServer) -> None:
    policy = FetchPolicy(allowed_ports=(server.port,))
    with pytest.raises(UrlNotAllowed):
        await fetch_source(f"http://localhost:{server.port}/img.png", policy)
    assert server.requests == []


@pytest.mark.anyio
async def test_system_resolver_used_by_default(server: LocalServer) -> None:
    got = await fetch_source(f"http://localhost:{server.port}/img.png", private())
    assert got.data == PNG


@pytest.mark.anyio
async def test_unresolvable_host_is_unreachable_not_a_bad_url() -> None:
    for dns in (FakeDns({}), FakeDns({"images.test": []}), FakeDns({"images.test": ["junk"]})):
        with pytest.raises(SourceUnreachable) as info:
            await fetch_source("http://images.test/a.png", private(), dns)
        assert_clean(info.value, "images.test", "not known")


# --- fetching: pinning ------------------------------------------------------------


@pytest.mark.anyio
async def test_connects_to_the_resolved_address_and_keeps_the_name(server: LocalServer) -> None:
    """The name is unknown to the system resolver (the tripwire would fail the test
    if httpx looked it up), so the request can only arrive through the pinned IP."""
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    got = await fetch_source(f"http://images.test:{server.port}/img.png?a=1", private(), dns)
    assert (got.data, got.kind) == (PNG, "png")
    assert got.final_url == f"http://images.test:{server.port}/img.png?a=1"
    assert dns.calls == [("images.test", server.port)]
    path, headers = server.requests[-1]
    assert path == "/img.png?a=1"
    assert headers["Host"] == f"images.test:{server.port}"
    assert headers["User-Agent"] == "img2pdf-service/1"
    assert headers["Accept-Encoding"] == "identity"


@pytest.mark.anyio
async def test_falls_back_to_the_next_checked_address(server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["::1", "127.0.0.2", "127.0.0.1"]})
    got = await fetch_source(f"http://images.test:{server.port}/img.png", private(), dns)
    assert got.data == PNG
    assert len(dns.calls) == 1


@pytest.mark.anyio
async def test_rebinding_between_hops_is_caught(
    server: LocalServer, loopback_is_public: None
) -> None:
    """Each hop resolves afresh and checks again: a name that turns into the
    metadata address on the second lookup is stopped there."""
    dns = FakeDns(None, ["127.0.0.1"], ["169.254.169.254"])
    to = f"http://images.test:{server.port}/img.png"
    url = f"http://images.test:{server.port}/redirect?to={to}"
    with pytest.raises(UrlNotAllowed) as info:
        await fetch_source(url, FetchPolicy(allowed_ports=(server.port,)), dns)
    assert len(dns.calls) == 2
    assert [p for p, _ in server.requests] == [f"/redirect?to={to}"]
    assert_clean(info.value)


@pytest.mark.anyio
async def test_tls_uses_sni_and_verifies_the_hostname(
    tls_server: LocalServer, trust_test_ca: None
) -> None:
    """The certificate names images.test and has no IP in it: this only succeeds if
    the handshake carries the name while the socket goes to the pinned IP."""
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    got = await fetch_source(f"https://images.test:{tls_server.port}/img.png", private(), dns)
    assert got.data == PNG
    assert tls_server.sni[-1] == "images.test"
    assert tls_server.requests[-1][1]["Host"] == f"images.test:{tls_server.port}"


@pytest.mark.anyio
async def test_tls_certificate_for_another_name_rejected(
    tls_server: LocalServer, trust_test_ca: None
) -> None:
    dns = FakeDns({"evil.test": ["127.0.0.1"]})
    with pytest.raises(SourceUnreachable) as info:
        await fetch_source(f"https://evil.test:{tls_server.port}/img.png", private(), dns)
    assert_clean(info.value, "certificate", "evil.test")


@pytest.mark.anyio
async def test_tls_with_public_roots_rejects_a_self_made_certificate(
    tls_server: LocalServer,
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with pytest.raises(SourceUnreachable):
        await fetch_source(f"https://images.test:{tls_server.port}/img.png", private(), dns)


@pytest.mark.anyio
async def test_proxy_environment_is_ignored(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{closed_port()}"
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    got = await fetch_source(f"http://images.test:{server.port}/img.png", private(), dns)
    assert got.data == PNG


# --- fetching: redirects ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("hops", [0, 1, 2, 3])
async def test_up_to_three_redirects_followed_including_relative(
    hops: int, server: LocalServer
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    got = await fetch_source(f"http://images.test:{server.port}/hop/{hops}", private(), dns)
    assert got.data == PNG
    assert got.final_url == f"http://images.test:{server.port}/hop/0"
    assert [p for p, _ in server.requests] == [f"/hop/{n}" for n in range(hops, -1, -1)]
    assert len(dns.calls) == hops + 1  # one lookup per hop


@pytest.mark.anyio
async def test_more_than_max_redirects_is_an_upstream_error(server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with pytest.raises(SourceHttpError) as info:
        await fetch_source(f"http://images.test:{server.port}/hop/4", private(), dns)
    assert len(server.requests) == 4
    assert_clean(info.value)
    with pytest.raises(SourceHttpError):
        await fetch_source(f"http://images.test:{server.port}/hop/1", private(max_redirects=0), dns)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_every_redirect_status_followed(status: int, server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    url = f"http://images.test:{server.port}/redirect?status={status}&to=/img.png"
    assert (await fetch_source(url, private(), dns)).data == PNG


@pytest.mark.anyio
async def test_redirect_without_location_is_an_upstream_error(server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with pytest.raises(SourceHttpError):
        await fetch_source(f"http://images.test:{server.port}/noloc", private(), dns)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "target",
    [
        "http://internal.test:{port}/img.png",  # resolves to 10.0.0.1
        "http://169.254.169.254/computeMetadata/v1/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254
        "http://0x7f.0.0.2:{port}/img.png",
        "http://images.test:22/",
        "ftp://images.test/img.png",
        "file:///etc/passwd",
        "gopher://images.test:{port}/_x",
        "http://user:pw@images.test:{port}/img.png",
    ],
)
async def test_redirect_targets_are_checked_again(
    target: str, server: LocalServer, loopback_is_public: None
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"], "internal.test": ["10.0.0.1"]})
    policy = FetchPolicy(allowed_ports=(server.port,))
    to = target.format(port=server.port)
    with pytest.raises(UrlNotAllowed) as info:
        await fetch_source(f"http://images.test:{server.port}/redirect?to={to}", policy, dns)
    assert len(server.requests) == 1
    assert_clean(info.value, "internal.test")
    if "internal.test" in target:
        assert dns.calls[-1] == ("internal.test", server.port)


@pytest.mark.anyio
async def test_redirect_check_baseline_passes(
    server: LocalServer, loopback_is_public: None
) -> None:
    """Control for the test above: an allowed redirect target does get fetched."""
    dns = FakeDns({"images.test": ["127.0.0.1"], "cdn.test": ["127.0.0.1"]})
    policy = FetchPolicy(allowed_ports=(server.port,))
    to = f"http://cdn.test:{server.port}/img.png"
    got = await fetch_source(f"http://images.test:{server.port}/redirect?to={to}", policy, dns)
    assert got.final_url == to
    assert server.requests[-1][1]["Host"] == f"cdn.test:{server.port}"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "to", ["ftp://images.test/x", "http://u:p@images.test/x", "file:///etc/passwd"]
)
async def test_redirects_to_bad_schemes_or_userinfo_rejected_even_when_private_allowed(
    to: str, server: LocalServer
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with pytest.raises(UrlNotAllowed):
        await fetch_source(f"http://images.test:{server.port}/redirect?to={to}", private(), dns)


# --- fetching: caps, timeouts, upstream errors -----------------------------------------


@pytest.mark.anyio
async def test_declared_length_over_cap_rejected_before_reading(server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    started = time.monotonic()
    with pytest.raises(SourceTooLarge):
        await fetch_source(f"http://images.test:{server.port}/huge-length", private(), dns)
    assert time.monotonic() - started < 1.0  # the server is still "sending" for 3 s


@pytest.mark.anyio
async def test_endless_body_stopped_at_the_cap(server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    started = time.monotonic()
    with pytest.raises(SourceTooLarge):
        await fetch_source(
            f"http://images.test:{server.port}/endless-image", private(max_bytes=1 << 20), dns
        )
    assert time.monotonic() - started < 3.0


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["img.png", "chunked"])  # with a Content-Length, and without
async def test_body_exactly_at_the_cap_accepted_one_more_refused(
    route: str, server: LocalServer
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    url = f"http://images.test:{server.port}/{route}"
    assert (await fetch_source(url, private(max_bytes=len(PNG)), dns)).data == PNG
    with pytest.raises(SourceTooLarge):
        await fetch_source(url, private(max_bytes=len(PNG) - 1), dns)


@pytest.mark.anyio
async def test_slow_source_stopped_by_the_total_timeout(server: LocalServer) -> None:
    """Bytes keep arriving (so no read timeout fires) but the whole fetch is capped."""
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    policy = private(total_timeout=1.0, read_timeout=5.0)
    started = time.monotonic()
    with pytest.raises(SourceTimeout) as info:
        await fetch_source(f"http://images.test:{server.port}/trickle", policy, dns)
    assert time.monotonic() - started < policy.total_timeout + 1.0
    assert_clean(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["stall", "silent"])
async def test_read_timeout_before_and_after_headers(route: str, server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    started = time.monotonic()
    with pytest.raises(SourceTimeout):
        await fetch_source(
            f"http://images.test:{server.port}/{route}", private(read_timeout=0.3), dns
        )
    assert time.monotonic() - started < 1.5


@pytest.mark.anyio
async def test_closed_port_is_unreachable() -> None:
    port = closed_port()
    with pytest.raises(SourceUnreachable) as info:
        await fetch_source(
            f"http://images.test:{port}/", private(), FakeDns({"images.test": ["127.0.0.1"]})
        )
    assert_clean(info.value, str(port), "refused")


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 403, 404, 410, 500, 503])
async def test_upstream_errors_never_echo_the_body(status: int, server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with pytest.raises(SourceHttpError) as info:
        await fetch_source(f"http://images.test:{server.port}/status/{status}", private(), dns)
    assert_clean(info.value, str(status))


@pytest.mark.anyio
async def test_non_image_rejected_by_its_bytes(server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with pytest.raises(UnsupportedImage):
        await fetch_source(f"http://images.test:{server.port}/html", private(), dns)


@pytest.mark.anyio
async def test_non_image_stream_abandoned_after_the_first_bytes(server: LocalServer) -> None:
    """An endless HTML body labelled image/png: 415 (not 413) proves we stopped
    at the sniff point instead of reading on to the 1 MiB cap."""
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    started = time.monotonic()
    with pytest.raises(UnsupportedImage):
        await fetch_source(
            f"http://images.test:{server.port}/endless-html", private(max_bytes=1 << 20), dns
        )
    assert time.monotonic() - started < 1.0


@pytest.mark.anyio
async def test_compressed_body_refused_not_decoded(server: LocalServer) -> None:
    """gzip of a valid PNG: decoding it would succeed, so a 415 proves we did not."""
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with pytest.raises(UnsupportedImage) as info:
        await fetch_source(f"http://images.test:{server.port}/gzip", private(), dns)
    assert info.value.status == 415


@contextlib.contextmanager
def black_hole_at(host: str, port: int = 0) -> Iterator[int]:
    """A loopback port whose accept queue is full: a SYN to it is never answered."""
    listener = socket.socket()
    listener.bind((host, port))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect((host, port))
        fillers.append(sock)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


@pytest.fixture
def black_hole() -> Iterator[int]:
    with black_hole_at("127.0.0.1") as port:
        yield port


@pytest.mark.anyio
async def test_connect_timeout_gives_up_on_a_silent_address(black_hole: int) -> None:
    """With only the total timeout (60 s here) this would be a 504 SourceTimeout;
    the connect timeout ends the attempt on the silent address first."""
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    policy = private(connect_timeout=0.3, read_timeout=60.0, total_timeout=60.0)
    with pytest.raises(SourceUnreachable):
        await fetch_source(f"http://images.test:{black_hole}/img.png", policy, dns)


@pytest.mark.anyio
async def test_connect_timeout_falls_back_to_the_next_checked_address(
    server: LocalServer,
) -> None:
    dns = FakeDns({"images.test": ["127.0.0.2", "127.0.0.1"]})
    policy = private(connect_timeout=0.3, total_timeout=60.0)
    with black_hole_at("127.0.0.2", server.port):  # the first answer never accepts
        got = await fetch_source(f"http://images.test:{server.port}/img.png", policy, dns)
    assert got.data == PNG


@pytest.mark.anyio
@pytest.mark.parametrize(
    "to",
    ["http:x", "https:127.0.0.1", "http://[::1", "//[zz]/", "https://", "http://a:99x/"],
)
async def test_malformed_location_is_a_502_with_its_own_code(to: str, server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    url = f"http://images.test:{server.port}/redirect?to={quote(to, safe='')}"
    with pytest.raises(SourceBadRedirect) as info:
        await fetch_source(url, private(), dns)
    assert info.value.status == 502
    assert info.value.code == "source_bad_redirect"


@pytest.mark.anyio
async def test_a_trickling_source_holds_what_arrived_and_is_dropped_below_the_rate(
    server: LocalServer,
) -> None:
    """Announcing 20 MiB reserves nothing: only bytes that arrived (a 256 KiB step
    ahead) are accounted, and under `min_rate` over a window the fetch ends."""
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    accounted: list[int] = []
    policy = private(min_rate=1024, rate_window=0.5, read_timeout=5.0, total_timeout=30.0)
    with pytest.raises(SourceTimeout) as info:
        await fetch_source(
            f"http://images.test:{server.port}/drip", policy, dns, on_bytes=accounted.append
        )
    assert "slowly" in info.value.detail
    assert accounted and max(accounted) < 1024 * 1024  # one step, not the 20 MiB announced


@pytest.mark.anyio
async def test_a_source_keeping_the_rate_is_not_cut(server: LocalServer) -> None:
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    policy = private(min_rate=10, rate_window=0.2, total_timeout=30.0)
    url = f"http://images.test:{server.port}/endless-image"
    with pytest.raises(SourceTooLarge):  # fast enough: read on until the byte cap
        await fetch_source(url, replace(policy, max_bytes=4 << 20), dns)


# --- the HTTP/1.1 reader (app/http1.py), byte by byte ---------------------------------

# Larger than two accounting steps (256 KiB), so the body crosses step and read boundaries.
BIG = b"\x89PNG\r\n\x1a\n" + random.Random(16).randbytes(700_000)
Part = bytes | float  # bytes to send, or seconds to wait before the next part


class RawServer:
    """Answers each connection with a scripted byte sequence, on loopback addresses.

    Listens on the same port at every address in `hosts`, records each connection
    (the address it reached, what it asked) and sends the script's parts in order,
    pausing where a part is a number, so a test decides where reads split. The
    connection then stays open (`linger` seconds) unless the script says "close".
    """

    def __init__(self, hosts: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.scripts: dict[str, list[Part]] = {}
        self.connections: list[tuple[str, list[bytes]]] = []  # (address reached, requests)
        self.linger = 3.0
        self.tls: ssl.SSLContext | None = None  # set: each connection speaks TLS first
        self.listeners = []
        port = 0
        for host in hosts:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(16)
            self.listeners.append(sock)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        self.port = port

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        requests: list[bytes] = []
        self.connections.append((conn.getsockname()[0], requests))
        with conn, contextlib.suppress(OSError):
            data = b""
            while True:  # keep-alive: answer every request this connection sends
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                request, _, data = data.partition(b"\r\n\r\n")
                requests.append(request)
                path = request.split(b" ")[1].decode()
                close = self._play(conn, self.scripts[path])
                if close:
                    return

    def _play(self, conn: socket.socket, script: list[Part]) -> bool:
        for part in script:
            if part == "close":
                return True
            if part == "keep-alive":
                return False
            if isinstance(part, float):
                time.sleep(part)
            else:
                conn.sendall(part)
        time.sleep(self.linger)
        return True

    def close(self) -> None:
        for sock in self.listeners:
            sock.close()


@contextlib.contextmanager
def raw_as_tls(server: RawServer, ca: trustme.CA) -> Iterator[None]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("images.test").configure_cert(context)
    server.tls = context
    try:
        yield
    finally:
        server.tls = None


def head(status: str = "200 OK", *fields: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\n".encode() + b"".join(f"{f}\r\n".encode() for f in fields) + b"\r\n"
    )


@pytest.fixture
def raw() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


async def fetch_raw(server: RawServer, script: list, **policy: object) -> fetch.Fetched:
    server.scripts["/x"] = script
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    return await fetch_source(f"http://images.test:{server.port}/x", private(**policy), dns)


def chunked(body: bytes, size: int) -> list[bytes]:
    return [
        b"%x\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    ]


@pytest.mark.anyio
async def test_chunked_with_extensions_and_trailers(raw: RawServer) -> None:
    parts = [
        b'%x;name=value;quoted="a b"\r\n' % len(p) + p + b"\r\n" for p in (BIG[:100], BIG[100:])
    ]
    script = [head("200 OK", "Transfer-Encoding: chunked"), *parts]
    script += [b"0;last=1\r\nX-Checksum: abc\r\nX-Other: 2\r\n\r\n"]
    got = await fetch_raw(raw, script)
    assert got.data == BIG


@pytest.mark.anyio
async def test_chunk_size_line_data_and_crlf_split_across_reads(raw: RawServer) -> None:
    """Every boundary of a chunk arrives in a read of its own: the size line cut
    in the middle and before its LF, the data cut, the CRLF after it cut."""
    body = BIG[:300]
    script: list = [head("200 OK", "Transfer-Encoding: chunked")]
    script += [b"1", 0.05, b"2c\r", 0.05, b"\n", body[:150], 0.05, body[150:] + b"\r", 0.05]
    script += [b"\n0\r", 0.05, b"\n\r", 0.05, b"\n"]
    assert len(body) == 0x12C
    got = await fetch_raw(raw, script)
    assert got.data == body


@pytest.mark.anyio
async def test_chunked_body_split_anywhere_over_many_reads(raw: RawServer) -> None:
    wire = b"".join(chunked(BIG, 70_001)) + b"0\r\n\r\n"
    cuts = sorted(random.Random(3).sample(range(1, len(wire)), 40))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    script = [head("200 OK", "Transfer-Encoding: chunked")]
    for piece in pieces:
        script += [piece, 0.002]
    got = await fetch_raw(raw, script)
    assert got.data == BIG


@pytest.mark.anyio
@pytest.mark.parametrize("cut", [5, len(PNG) - 1])
async def test_chunked_body_that_breaks_off_is_a_502_saying_so(cut: int, raw: RawServer) -> None:
    script = [
        head("200 OK", "Transfer-Encoding: chunked"),
        b"%x\r\n" % len(PNG) + PNG[:cut],
        "close",
    ]
    with pytest.raises(SourceHttpError) as info:
        await fetch_raw(raw, script)
    assert "broke off" in info.value.detail
    assert_clean(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("sent", [100, 256 * 1024, len(BIG) - 1])
async def test_body_shorter_than_its_content_length_is_a_502_saying_so(
    sent: int, raw: RawServer
) -> None:
    """Cut in the first read, exactly at an accounting step, one byte short."""
    script = [head("200 OK", f"Content-Length: {len(BIG)}"), BIG[:sent], "close"]
    with pytest.raises(SourceHttpError) as info:
        await fetch_raw(raw, script)
    assert info.value.status == 502
    assert "broke off" in info.value.detail
    assert_clean(info.value)


@pytest.mark.anyio
async def test_content_length_exactly_at_the_cap_read_one_over_refused_unread(
    raw: RawServer,
) -> None:
    at_cap = [head("200 OK", f"Content-Length: {len(BIG)}"), BIG[:1000], 0.05, BIG[1000:]]
    assert (await fetch_raw(raw, at_cap, max_bytes=len(BIG))).data == BIG
    # One over: refused on the head alone (the body would take 5 s to come).
    started = time.monotonic()
    over = [head("200 OK", f"Content-Length: {len(BIG)}"), 5.0, BIG]
    with pytest.raises(SourceTooLarge):
        await fetch_raw(raw, over, max_bytes=len(BIG) - 1)
    assert time.monotonic() - started < 2.0


@pytest.mark.anyio
@pytest.mark.parametrize("framing", ["close", "chunked"])
async def test_unannounced_body_exactly_at_the_cap_accepted_one_more_refused(
    framing: str, raw: RawServer
) -> None:
    """Without a Content-Length the cap is found by counting: the body framed by the
    connection's end may be read one byte past it, never kept."""
    if framing == "close":
        script: list = [head("200 OK", "Connection: close"), BIG, "close"]
    else:
        script = [head("200 OK", "Transfer-Encoding: chunked"), *chunked(BIG, 99_999), b"0\r\n\r\n"]
    assert (await fetch_raw(raw, script, max_bytes=len(BIG))).data == BIG
    with pytest.raises(SourceTooLarge):
        await fetch_raw(raw, script, max_bytes=len(BIG) - 1)


@pytest.mark.anyio
async def test_bytes_past_the_content_length_are_ignored_and_not_waited_for(
    raw: RawServer,
) -> None:
    """The server sends more than it announced and keeps the connection open: the
    body is exactly the announced bytes, read without waiting for the close."""
    script = [head("200 OK", f"Content-Length: {len(PNG)}"), PNG + b"EXTRA" * 1000]
    started = time.monotonic()
    got = await fetch_raw(raw, script, read_timeout=5.0)
    assert got.data == PNG
    assert time.monotonic() - started < 2.0  # the server lingers 3 s


@pytest.mark.anyio
async def test_a_zero_length_answer_is_not_read_until_the_close(raw: RawServer) -> None:
    script = [head("200 OK", "Content-Length: 0"), PNG]
    with pytest.raises(UnsupportedImage):
        await fetch_raw(raw, script, read_timeout=5.0)


@pytest.mark.anyio
async def test_http10_answer_without_length_read_until_the_close(raw: RawServer) -> None:
    script = [b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\n\r\n", BIG[:5000], 0.05, BIG[5000:]]
    got = await fetch_raw(raw, [*script, "close"])
    assert got.data == BIG


@pytest.mark.anyio
async def test_interim_1xx_answers_are_skipped(raw: RawServer) -> None:
    script = [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]
    script += [head("200 OK", f"Content-Length: {len(PNG)}"), PNG]
    assert (await fetch_raw(raw, script)).data == PNG


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad",
    [
        head("200 OK", "Content-Length: 12", "Content-Length: 13"),
        head("200 OK", "Content-Length: -1"),
        head("200 OK", "Transfer-Encoding: gzip, chunked"),
        b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        b"HTTP/9 200 OK\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello, not HTTP
    ],
)
async def test_malformed_heads_are_a_502_not_a_500(bad: bytes, raw: RawServer) -> None:
    with pytest.raises(SourceHttpError) as info:
        await fetch_raw(raw, [bad, PNG, "close"])
    assert_clean(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(("size", "ok"), [(60 * 1024, True), (200 * 1024, False)])
async def test_response_heads_are_capped_at_100_kib(size: int, ok: bool, raw: RawServer) -> None:
    script = [head("200 OK", f"X-Big: {'a' * size}", f"Content-Length: {len(PNG)}"), PNG]
    if ok:
        assert (await fetch_raw(raw, script)).data == PNG
    else:
        with pytest.raises(SourceHttpError):
            await fetch_raw(raw, script)


@pytest.mark.anyio
async def test_a_head_dripped_byte_by_byte_is_stopped_by_the_total_timeout(
    raw: RawServer,
) -> None:
    """Each byte comes well inside the read timeout, so only the total deadline ends it."""
    drip: list = []
    for byte in head("200 OK", f"X-Slow: {'a' * 100}"):
        drip += [bytes([byte]), 0.05]
    started = time.monotonic()
    with pytest.raises(SourceTimeout):
        await fetch_raw(raw, drip, read_timeout=1.0, total_timeout=1.5)
    assert time.monotonic() - started < 3.0


@pytest.mark.anyio
async def test_no_connection_is_reused_across_hops_or_vetted_addresses() -> None:
    """Both answers offer keep-alive. The redirect goes to a name checked to another
    address (127.0.0.2), then back to the first: each hop opens its own connection
    to its own checked address, and each connection carries one request."""
    server = RawServer(hosts=("127.0.0.1", "127.0.0.2"))
    port = server.port
    try:
        keep = [
            head(
                "302 Found",
                f"Location: http://cdn.test:{port}/b",
                "Content-Length: 0",
                "Connection: keep-alive",
            ),
            "keep-alive",
        ]
        back = [
            head(
                "301 Moved",
                f"Location: http://images.test:{port}/c",
                "Content-Length: 0",
                "Connection: keep-alive",
            ),
            "keep-alive",
        ]
        server.scripts = {
            "/a": keep,
            "/b": back,
            "/c": [
                head("200 OK", f"Content-Length: {len(PNG)}", "Connection: keep-alive"),
                PNG,
                "keep-alive",
            ],
        }
        dns = FakeDns({"images.test": ["127.0.0.1"], "cdn.test": ["127.0.0.2"]})
        got = await fetch_source(f"http://images.test:{port}/a", private(), dns)
        assert got.data == PNG
        reached = [(address, len(requests)) for address, requests in server.connections]
        assert reached == [("127.0.0.1", 1), ("127.0.0.2", 1), ("127.0.0.1", 1)]
        assert [r[0].split(b" ")[1] for _, r in server.connections] == [b"/a", b"/b", b"/c"]
    finally:
        server.close()


@pytest.mark.anyio
@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
async def test_a_large_body_over_tls_arrives_whole(
    framing: str, tls_server: LocalServer, trust_test_ca: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TLS layer decrypts into the reader's buffers, which fill up many times
    (blocks, the chunked staging buffer) before the server's close. asyncio's TLS
    layer drops the records it holds if the reader pauses it just then."""
    # Small buffers: many of them fill before the close (the spare one while they are full).
    monkeypatch.setattr(fetch, "_ACCOUNT_STEP", 4096)
    monkeypatch.setattr(http1, "CHUNKED_STAGING_BYTES", 4096)
    monkeypatch.setattr(http1, "SPARE_BYTES", 1024)
    original = Handler.do_GET

    def do_get(self: Handler) -> None:
        if self.path != "/big.png":
            original(self)
        elif framing == "length":
            self._send(200, BIG)
        else:
            self.send_response(200)
            if framing == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            parts = [*chunked(BIG, 50_000), b"0\r\n\r\n"] if framing == "chunked" else [BIG]
            for part in parts:
                self.wfile.write(part)
            if framing == "close":
                self.wfile.flush()
                self.connection.unwrap()  # close_notify: the body's end, not a cut
            self.close_connection = True

    monkeypatch.setattr(Handler, "do_GET", do_get)
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    got = await fetch_source(f"https://images.test:{tls_server.port}/big.png", private(), dns)
    assert got.data == BIG


def test_unfilled_bytes_take_no_memory_until_written() -> None:
    """The body's buffer is as large as the Content-Length announced; only bytes that
    arrive may make it resident (a zeroed bytearray of the same size would)."""
    from app.http1 import unfilled_bytes

    def rss_kib() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    size = 64 * 1024 * 1024
    before = rss_kib()
    body, view = unfilled_bytes(size)
    view[: 1 << 20] = b"\x01" * (1 << 20)
    grown = rss_kib() - before
    view.release()
    assert type(body) is bytes and len(body) == size
    assert body[:4] == b"\x01" * 4
    assert grown < 16 * 1024, grown  # 1 MiB written; 64 MiB announced
    with pytest.raises(ValueError):
        unfilled_bytes(0)


# --- a hostile source's framing -------------------------------------------------


@pytest.mark.anyio
async def test_a_body_of_one_byte_chunks_costs_about_its_size_in_memory(
    raw: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk is a piece of the body: kept one object per chunk, 100 KB sent as
    one-byte chunks held ~4.5 MB (a `bytes` and a list slot per byte), far past what
    admission accounts for it (the body bytes, a step ahead)."""
    import tracemalloc

    body = PNG + bytes(100_000 - len(PNG))
    wire = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    script = [head("200 OK", "Transfer-Encoding: chunked"), wire + b"0\r\n\r\n"]
    monkeypatch.setattr(fetch, "_FREE_CHUNKS", len(body))  # past the chunk count check
    tracemalloc.start()
    try:
        got = await fetch_raw(raw, script, min_rate=0, total_timeout=60.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.data == body
    # The body with its growth slack and the final copy; the 500 KB of wire at most
    # three times (h11's buffer, the copy fed to it, what spilled meanwhile).
    assert peak < 3 * len(body) + 3 * len(wire), peak


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("interim", "ok"),
    [(http1.MAX_INTERIM_RESPONSES, True), (http1.MAX_INTERIM_RESPONSES + 1, False)],
)
async def test_interim_answers_are_capped(interim: int, ok: bool, raw: RawServer) -> None:
    """A flood of 100 Continue heads was read for as long as it came (200 000 in 2 s)."""
    script = [b"HTTP/1.1 100 Continue\r\n\r\n" * interim]
    script += [head("200 OK", f"Content-Length: {len(PNG)}"), PNG]
    if ok:
        assert (await fetch_raw(raw, script)).data == PNG
    else:
        with pytest.raises(SourceHttpError) as info:
            await fetch_raw(raw, script)
        assert_clean(info.value)


@contextlib.contextmanager
def tls_raw_server(ca: trustme.CA, parts: list, close_notify: bool) -> Iterator[int]:
    """One TLS connection for images.test: the parts, then a close with or without
    the TLS close_notify alert (a cut connection, or an attacker's forged TCP FIN)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("images.test").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            tls = context.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                data += tls.recv(4096)
            for part in parts:
                tls.sendall(part)
            time.sleep(0.1)  # the client reads it all before the end
            if close_notify:
                tls = tls.unwrap()
            tls.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


@pytest.mark.anyio
@pytest.mark.parametrize("sent", [300_000, len(BIG)])
@pytest.mark.parametrize("close_notify", [True, False])
async def test_a_tls_body_framed_by_the_close_needs_close_notify(
    sent: int, close_notify: bool, ca: trustme.CA, trust_test_ca: None
) -> None:
    """Without a length, only the TLS close_notify tells the body's end from a cut
    (a reset, or a FIN forged on the path): a bare TCP close was taken as the end,
    and a shorter image accepted."""
    parts = [head("200 OK", "Connection: close"), BIG[:sent]]
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with tls_raw_server(ca, parts, close_notify) as port:
        url = f"https://images.test:{port}/x"
        if close_notify:
            assert (await fetch_source(url, private(), dns)).data == BIG[:sent]
        else:
            with pytest.raises(SourceHttpError) as info:
                await fetch_source(url, private(), dns)
            assert "broke off" in info.value.detail
            assert_clean(info.value)


# --- the body received into an unfilled bytes object -----------------------------

PATTERN = b"\xa5\x5a" * 32


@pytest.mark.anyio
@pytest.mark.parametrize("tls", [False, True])
async def test_no_byte_of_other_memory_reaches_a_body(
    tls: bool,
    raw: RawServer,
    ca: trustme.CA,
    trust_test_ca: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The body's buffer is not cleared when made: whatever the memory held before
    stays until the bytes arrive. Here each new buffer is first filled with a
    pattern (the worst such leftover). Whole bodies come back exactly as sent, in
    pieces and all at once; a body cut short, one below the rate and one cut by the
    total deadline raise and are never returned, so no unfilled byte is handed on."""
    size = 100_000
    body = PNG + random.Random(5).randbytes(size - len(PNG))
    assert PATTERN not in body
    made: list[int] = []
    real = http1.unfilled_bytes

    def dirty(n: int) -> tuple[bytes, memoryview]:
        buffer, view = real(n)
        view[:] = (PATTERN * (n // len(PATTERN) + 1))[:n]
        made.append(n)
        return buffer, view

    monkeypatch.setattr(fetch, "unfilled_bytes", dirty)
    cl = head("200 OK", f"Content-Length: {size}")
    whole = [[cl, body], [cl, body[:1000], 0.05, body[1000:50_000], 0.05, body[50_000:]]]
    cut = [
        ([cl, body[:1], "close"], {}),
        ([cl, body[: size - 1], "close"], {}),
        ([cl, body[:5000], 1.0, body[5000:]], {"total_timeout": 0.5}),
        ([cl, body[:5000], 0.3, body[5000:]], {"min_rate": 1 << 20, "rate_window": 0.1}),
    ]
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    with contextlib.ExitStack() as stack:
        if tls:
            stack.enter_context(raw_as_tls(raw, ca))
        url = f"{'https' if tls else 'http'}://images.test:{raw.port}/x"
        for script in whole:
            raw.scripts["/x"] = script
            got = await fetch_source(url, private(), dns)
            assert got.data == body
        for script, policy in cut:
            raw.scripts["/x"] = [*script, "close"]
            with pytest.raises((SourceHttpError, SourceTimeout)):
                await fetch_source(url, private(**policy), dns)
    assert made == [size] * (len(whole) + len(cut))  # every body went through a dirty buffer


@pytest.mark.anyio
@pytest.mark.parametrize("answer", ["nothing", "length", "chunked"])
async def test_a_stalled_source_holds_little_memory(answer: str) -> None:
    """A worker may have a thousand downloads open, each waiting on a source that
    answers nothing (or a head and an image's first bytes) and then stalls. None of
    that is in admission's data pool yet, so what each holds must stay small: they
    held 128 KiB (a 64 KiB head buffer and a 64 KiB spare one), 384 KiB chunked."""
    import tracemalloc

    count = 40
    listener = socket.create_server(("127.0.0.1", 0), backlog=count + 8)
    accepted: list[socket.socket] = []
    first = {
        "nothing": b"",
        "length": head("200 OK", "Content-Length: 1000000") + PNG,
        "chunked": head("200 OK", "Transfer-Encoding: chunked") + b"%x\r\n" % len(PNG) + PNG,
    }[answer]

    def accept() -> None:
        with contextlib.suppress(OSError):
            while len(accepted) < count:
                conn, _ = listener.accept()
                accepted.append(conn)
                conn.recv(4096)
                conn.sendall(first)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    url = f"http://images.test:{listener.getsockname()[1]}/x"
    policy = private(read_timeout=30.0, total_timeout=30.0, min_rate=0)
    tracemalloc.start()
    try:
        async with anyio.create_task_group() as tasks:
            for _ in range(count):
                tasks.start_soon(fetch_source, url, policy, dns)
            with anyio.fail_after(10):
                while len(accepted) < count:
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)  # every first answer read
            held = tracemalloc.get_traced_memory()[0]
            tasks.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
        listener.close()
        for conn in accepted:
            conn.close()
        thread.join(5)
    # The announced body's buffer is allocated, not resident until bytes arrive
    # (test_unfilled_bytes_take_no_memory_until_written); tracemalloc counts it.
    announced = 1_000_000 if answer == "length" else 0
    per_download = held / count - announced
    assert per_download < 40 * 1024, per_download


@pytest.mark.anyio
async def test_tiny_chunks_do_not_hold_the_event_loop(raw: RawServer) -> None:
    """h11 makes an event per chunk, and a read hands it up to ~1.3 MB of them: a body
    of one-byte chunks kept the worker's event loop (every other request on it) from
    running for 2.2 s at a stretch. The download now lets it run every few hundred."""
    body = PNG + bytes(50_000 - len(PNG))
    wire = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    script = [head("200 OK", "Transfer-Encoding: chunked"), wire + b"0\r\n\r\n"]
    turns = 0
    done = False

    async def count_turns() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await anyio.sleep(0)

    at_turn: list[int] = []
    real = http1.Connection.next_chunk

    async def next_chunk(self: http1.Connection) -> bytes | None:
        piece = await real(self)
        at_turn.append(turns)
        return piece

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http1.Connection, "next_chunk", next_chunk)
        patch.setattr(fetch, "_FREE_CHUNKS", len(body))  # past the chunk count check
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(count_turns)
            got = await fetch_raw(raw, script, min_rate=0, total_timeout=60.0)
            done = True
    assert got.data == body
    assert len(at_turn) == len(body) + 1
    most = max(collections.Counter(at_turn).values())
    assert most <= http1.EVENTS_PER_TURN, most


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("names", "host", "ok"),
    [
        (("images.test",), "images.test", True),
        (("127.0.0.1",), "127.0.0.1", True),  # an IP-literal URL: the IP must be in the cert
        (("images.test",), "127.0.0.1", False),
        (("127.0.0.1",), "images.test", False),
        (("*.images.test",), "images.test", False),
        (("expired",), "images.test", False),
        (("other CA",), "images.test", False),
    ],
)
async def test_tls_certificates_a_source_may_not_use(
    names: tuple[str, ...],
    host: str,
    ok: bool,
    raw: RawServer,
    ca: trustme.CA,
    trust_test_ca: None,
) -> None:
    if names == ("expired",):
        cert = ca.issue_cert("images.test", not_after=datetime.datetime(2020, 1, 1))
    elif names == ("other CA",):
        cert = trustme.CA().issue_cert("images.test")
    else:
        cert = ca.issue_cert(*names)
    raw.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(raw.tls)
    raw.linger = 0.1
    raw.scripts["/x"] = [head("200 OK", f"Content-Length: {len(PNG)}"), PNG]
    dns = FakeDns({"images.test": ["127.0.0.1"]})
    url = f"https://{host}:{raw.port}/x"
    if ok:
        assert (await fetch_source(url, private(), dns)).data == PNG
    else:
        with pytest.raises(SourceUnreachable):
            await fetch_source(url, private(), dns)
        assert raw.connections == []  # the handshake failed: no request was sent


def _range_edges() -> list[str]:
    edges = []
    for net in fetch._BLOCKED:
        for address in (net.network_address, net.broadcast_address):
            if address.version == 4 and address != ipaddress.IPv4Address("127.0.0.1"):
                edges.append(str(address))
            elif address.version == 6:
                edges.append(f"[{address}]")
    return edges


@pytest.mark.anyio
@pytest.mark.parametrize("host", _range_edges())
@pytest.mark.parametrize("how", ["literal", "name"])
async def test_a_redirect_to_the_edge_of_every_blocked_range_is_refused(
    host: str, how: str, server: LocalServer, loopback_is_public: None
) -> None:
    """The first and last address of each blocked range, as the redirect's host and as
    one of two DNS answers for it (the other public): refused before any connection."""
    address = host.strip("[]")
    dns = FakeDns({"images.test": ["127.0.0.1"], "mixed.test": ["8.8.8.8", address]})
    policy = FetchPolicy(allowed_ports=(server.port, 80))
    to = f"http://{host}/" if how == "literal" else "http://mixed.test/"
    with pytest.raises(UrlNotAllowed):
        await fetch_source(f"http://images.test:{server.port}/redirect?to={to}", policy, dns)
    assert len(server.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("size", "count", "ok"),
    [(64, 2000, True), (63, 2000, False), (1, 1024, True), (1, 1025, False)],
)
async def test_a_body_in_too_many_tiny_chunks_is_refused(
    size: int, count: int, ok: bool, raw: RawServer
) -> None:
    """Past 1024 chunks a chunked body must average 64 bytes a chunk: one-byte chunks
    cost an h11 event each and took a core ~7 s per MB, inside the rate check."""
    body = (PNG * (size * count // len(PNG) + 1))[: size * count]
    script = [head("200 OK", "Transfer-Encoding: chunked"), *chunked(body, size), b"0\r\n\r\n"]
    if ok:
        assert (await fetch_raw(raw, script)).data == body
    else:
        with pytest.raises(SourceHttpError) as info:
            await fetch_raw(raw, script)
        assert "tiny chunks" in info.value.detail
        assert_clean(info.value)
