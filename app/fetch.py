"""Download a user-supplied source URL without letting it reach anything internal.

This is the service's SSRF guard. Every hop (the first request and each redirect)
goes through the same steps, in this order:

1. `check_url`: scheme http/https, no userinfo, a host, a port in the policy.
   IP literals in any IPv4 spelling (``2130706433``, ``0x7f.1``, ``127.1``) are
   normalised here, as browsers do, so they cannot dodge the address check.
2. Resolve the host once. Reject the hop if ANY answer is not a public address:
   an attacker who controls DNS could otherwise mix one public and one private
   answer and let the connection pick the private one.
3. Connect to one of exactly those checked addresses (app/http1.py creates the
   socket and connects it to that address; nothing is pooled or reused). The
   Host header and the TLS SNI keep the hostname and the certificate is
   verified against the hostname, so nothing (a second lookup, DNS rebinding, a
   proxy variable) can swap the address between the check and the connection.

Redirects are never followed by the client; each Location (301/302/303/307/308, relative
ones resolved against the current URL) goes back to step 1. More than
`max_redirects` hops is the source misbehaving, so it is a 502
(`SourceHttpError`), not a 400: the URL the client sent was fine. Other 3xx, and
redirects without a Location, are upstream errors too.

A Location that does not parse as an absolute http(s) URL is the source
misbehaving: 502 `source_bad_redirect`. A well-formed one that points somewhere
not allowed is the URL check's 400.

The body is read as it arrives, into blocks of one accounting step that the
socket transport writes into directly (app/http1.py), with the byte cap on the
wire bytes (we ask for identity
encoding, never decompress and refuse any other Content-Encoding with 415) and
the type is sniffed from the first bytes, so a huge or non-image source costs at
most one read past the point we know.

Memory is accounted as bytes actually arrive (a step ahead), never from the
Content-Length a source announces, and a source must keep up `min_rate` bytes/s
over every `rate_window` seconds: a source that announces 20 MiB and then
trickles holds at most one step of the download pool, for one window.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import certifi
import httpx

from app.errors import (
    SourceBadRedirect,
    SourceHttpError,
    SourceTimeout,
    SourceTooLarge,
    SourceUnreachable,
    UnsupportedImage,
    UrlNotAllowed,
)
from app.http1 import Connection, Head, ProtocolError, Truncated, unfilled_bytes
from app.settings import Settings
from app.sniff import SNIFF_BYTES, enough_to_sniff, sniff_image_type

_DEFAULT = Settings()  # the defaults of every setting, from its one spec

Resolver = Callable[[str, int], Awaitable[list[str]]]
# Told how many body bytes to account for as they arrive (admission's data pool).
ByteCounter = Callable[[int], None]
# The body arrives in blocks (and chunked pieces) of at most this: the sniff, the
# byte cap and the rate check run on every read, so a non-image or oversized
# source costs at most one block past the point we know, and a block never
# outruns the bytes accounted a step ahead.
_ACCOUNT_STEP = 256 * 1024
_BROKE_OFF = "The source URL's answer broke off before the whole image arrived."
# A chunked body past this many chunks must average at least `_MIN_CHUNK_AVERAGE`
# bytes a chunk: each costs an h11 event (~10 us), so one-byte chunks took a core
# ~7 s per MB. Servers send chunks of their write size, kilobytes.
_FREE_CHUNKS = 1024
_MIN_CHUNK_AVERAGE = 64

USER_AGENT = "img2pdf-service/1"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "image/jpeg,image/png,image/gif,image/tiff,image/bmp,image/webp,image/jp2,*/*;q=0.1"

# Special-purpose ranges that must never be fetched, whatever `is_global` says.
# `ipaddress.is_global` alone is not enough (Python 3.11 calls multicast, NAT64,
# 6to4, IPv4-compatible and 192.0.0.0/24 addresses "global"), so this table is
# checked first and `is_global` then catches the rest of the IANA registries.
_BLOCKED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local, cloud metadata (169.254.169.254)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved, includes broadcast 255.255.255.255"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated (SIIT): a translator would reach the IPv4 address"),
    ("64:ff9b::/96", "NAT64: would reach the embedded IPv4 address"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments, includes Teredo"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4: would reach the embedded IPv4 address"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 segment identifiers: not globally reachable (RFC 9602)"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
_BLOCKED = tuple(ipaddress.ip_network(net) for net, _why in _BLOCKED_NETWORKS)
# All of IPv6 that is allocated for global unicast; IANA keeps the rest reserved
# (Python 3.11's `is_global` calls e.g. 4000::1 and fe00:: global).
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one download. `allow_private` lifts ONLY the address and port checks."""

    allow_private: bool = _DEFAULT.allow_private_source_urls
    allowed_ports: tuple[int, ...] = _DEFAULT.allowed_ports
    max_bytes: int = _DEFAULT.max_source_bytes
    max_redirects: int = _DEFAULT.max_redirects
    connect_timeout: float = _DEFAULT.connect_timeout_s
    read_timeout: float = _DEFAULT.read_timeout_s
    total_timeout: float = _DEFAULT.total_timeout_s
    min_rate: int = _DEFAULT.source_min_rate  # bytes/s a source must sustain over each window
    rate_window: float = 2.0

    @classmethod
    def from_settings(cls, s: Settings) -> FetchPolicy:
        return cls(
            allow_private=s.allow_private_source_urls,
            allowed_ports=tuple(s.allowed_ports),
            max_bytes=s.max_source_bytes,
            max_redirects=s.max_redirects,
            connect_timeout=s.connect_timeout_s,
            read_timeout=s.read_timeout_s,
            total_timeout=s.total_timeout_s,
            min_rate=s.source_min_rate,
        )


@dataclass(frozen=True)
class Fetched:
    data: bytes
    kind: str
    final_url: str


@dataclass(frozen=True)
class ParsedTarget:
    """One hop's URL after the syntactic checks: what to resolve and what to send."""

    url: str  # normalised, fragment dropped
    scheme: str
    host: str  # ASCII (IDNA) name, or the canonical address for IP literals
    port: int  # explicit or implied by the scheme
    ip: str | None  # the address when the host is an IP literal, else None
    target: str  # path + query, percent-encoded

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def pinned_url(self, ip: str) -> str:
        """The same request aimed at one checked address instead of the name."""
        addr = f"[{ip}]" if ":" in ip else ip
        return f"{self.scheme}://{addr}:{self.port}{self.target}"


def is_public_address(ip: str) -> bool:
    """True only for a globally routable unicast address we are willing to connect to."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket.
        return is_public_address(str(addr.ipv4_mapped))
    if any(addr in net for net in _BLOCKED if net.version == addr.version):
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr not in _GLOBAL_UNICAST_V6:
        return False
    return addr.is_global


def _parse_ipv4_number(part: str) -> int | None:
    """One dotted part the way inet_aton and browsers read it: 0x hex, 0 octal, decimal."""
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10) if part.isascii() and part.isdigit() else None
    except ValueError:
        return None


def _legacy_ipv4(host: str) -> str | None:
    """Canonical address for any IPv4 spelling; None if the host is a plain name.

    Follows the URL Standard: a host whose last label is a number is an IPv4
    address (``2130706433``, ``0x7f.1``, ``127.1``), and one that does not parse
    as such is rejected outright rather than handed to the resolver.
    """
    parts = host.removesuffix(".").split(".")
    last = parts[-1]
    is_hex = last[:2].lower() == "0x" and all(c in string.hexdigits for c in last[2:])
    if not (last.isascii() and last.isdigit()) and not is_hex:
        return None
    numbers = [_parse_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise UrlNotAllowed("The URL's host is not a valid address.")
    *head, tail = [n or 0 for n in numbers]
    if any(n > 255 for n in head) or tail >= 256 ** (5 - len(parts)):
        raise UrlNotAllowed("The URL's host is not a valid address.")
    value = tail + sum(n << (8 * (3 - i)) for i, n in enumerate(head))
    return str(ipaddress.IPv4Address(value))


def _check_address(ip: str, policy: FetchPolicy) -> None:
    if not policy.allow_private and not is_public_address(ip):
        raise UrlNotAllowed("The URL's host is not a public address.")


def check_url(url: str, policy: FetchPolicy) -> ParsedTarget:
    """Syntactic checks that need no network: scheme, userinfo, host, port, IP literals."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UrlNotAllowed("The URL is not valid.") from None
    scheme = parsed.scheme
    if scheme not in _DEFAULT_PORTS:
        raise UrlNotAllowed("Only http and https URLs are allowed.")
    authority = url.split("//", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if parsed.userinfo or "@" in authority:
        raise UrlNotAllowed("URLs with credentials are not allowed.")
    host = parsed.raw_host.decode("ascii")
    if not host or "%" in host:
        raise UrlNotAllowed("The URL has no valid host.")
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise UrlNotAllowed("The URL's port is not valid.")
    if not policy.allow_private and port not in policy.allowed_ports:
        raise UrlNotAllowed("The URL's port is not allowed.")
    ip: str | None
    if ":" in host:
        try:
            ip = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise UrlNotAllowed("The URL has no valid host.") from None
    else:
        ip = _legacy_ipv4(host)
    if ip is not None:
        _check_address(ip, policy)
        host = ip
    parsed = parsed.copy_with(fragment=None)
    return ParsedTarget(
        url=str(parsed),
        scheme=scheme,
        host=host,
        port=port,
        ip=ip,
        target=parsed.raw_path.decode("ascii"),
    )


async def _system_resolver(host: str, port: int) -> list[str]:
    """The event loop's getaddrinfo (in a worker thread), answers in its order."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _resolve(target: ParsedTarget, policy: FetchPolicy, resolver: Resolver) -> list[str]:
    if target.ip is not None:
        return [target.ip]
    try:
        answers = await resolver(target.host, target.port)
    except OSError:
        raise SourceUnreachable("The source host could not be resolved.") from None
    try:
        # Canonical form, scope ids dropped: the string checked is the one connected to.
        ips = [str(ipaddress.ip_address(a.split("%", 1)[0])) for a in answers]
    except ValueError:
        ips = []
    if not ips:
        raise SourceUnreachable("The source host could not be resolved.")
    for ip in ips:
        _check_address(ip, policy)
    return ips


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Verifying context (certifi roots) shared by all fetches; hostname checks on."""
    return ssl.create_default_context(cafile=certifi.where())


async def _connect(target: ParsedTarget, ips: list[str], policy: FetchPolicy) -> Connection:
    """Try the checked addresses in resolver order; never look the name up again.

    A fresh connection per hop, never reused: a TLS connection verified for one
    hostname must never carry a request for another, nor a socket to one checked
    address a request meant for another.
    """
    tls = _tls_context() if target.scheme == "https" else None
    for ip in ips:
        try:
            return await Connection.open(
                ip,
                target.port,
                tls=tls,
                server_hostname=target.host,  # SNI and the name the certificate must carry
                connect_timeout=policy.connect_timeout,
                read_timeout=policy.read_timeout,
            )
        except (OSError, TimeoutError):
            continue  # down, silent or failing TLS: the next checked address may answer
    raise SourceUnreachable()


def _request_headers(target: ParsedTarget) -> list[tuple[str, str]]:
    return [
        ("Host", target.host_header),
        ("User-Agent", USER_AGENT),
        ("Accept", _ACCEPT),
        ("Accept-Encoding", "identity"),
        ("Connection", "close"),
    ]


class _Checks:
    """What runs on every piece of the body as it arrives: rate, sniff, cap, accounting."""

    def __init__(self, policy: FetchPolicy, on_bytes: ByteCounter | None) -> None:
        self.policy = policy
        self.on_bytes = on_bytes
        self.size = 0
        self.accounted = 0
        self.kind: str | None = None
        self.head = b""
        self.mark_time = anyio.current_time()
        self.mark_bytes = 0

    def arrived(self, piece: bytes | memoryview) -> None:
        policy = self.policy
        self.size += len(piece)
        now = anyio.current_time()
        if now - self.mark_time >= policy.rate_window:
            if self.size - self.mark_bytes < policy.min_rate * (now - self.mark_time):
                raise SourceTimeout("The source URL sent the image too slowly.")
            self.mark_time, self.mark_bytes = now, self.size
        if self.kind is None:
            self.head += bytes(piece[: SNIFF_BYTES - len(self.head)])  # never the whole body
            self.kind = sniff_image_type(self.head)
            if self.kind is None and enough_to_sniff(self.head):
                raise UnsupportedImage()
        if self.size > policy.max_bytes:
            raise SourceTooLarge()
        if self.on_bytes is not None and self.size > self.accounted:
            # What arrived, a step ahead; the final join doubles it briefly.
            self.accounted = min(policy.max_bytes, self.size + _ACCOUNT_STEP)
            self.on_bytes(self.accounted)


async def _receive_all(conn: Connection, view: memoryview, checks: _Checks) -> None:
    """Fill `view` from the connection (reads of at most one accounting step)."""
    got = conn.receive_into(view)
    if got:
        checks.arrived(view[:got])
    while got < len(view):
        filled = await conn.received(got)
        if filled == got:
            raise SourceHttpError(_BROKE_OFF)
        checks.arrived(view[got:filled])
        got = filled


async def _read_body(
    conn: Connection, head: Head, policy: FetchPolicy, on_bytes: ByteCounter | None = None
) -> tuple[bytes, str]:
    encoding = head.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedImage("The source sent a compressed (Content-Encoding) body.")
    if head.length is not None and head.length > policy.max_bytes:
        raise SourceTooLarge()
    checks = _Checks(policy, on_bytes)
    pieces: list[bytes | memoryview] = []
    if head.chunked:
        # One growing buffer, not a list of the pieces: a chunk may be one byte,
        # and a `bytes` plus a list slot per chunk is ~40 times the body.
        joined = bytearray()
        while (piece := await conn.next_chunk()) is not None:
            checks.arrived(piece)
            joined += piece
            if conn.chunks > _FREE_CHUNKS and checks.size < _MIN_CHUNK_AVERAGE * conn.chunks:
                raise SourceHttpError("The source URL sent the image in too many tiny chunks.")
        pieces.append(joined)
    elif head.length:
        # The transport writes straight into the bytes object returned: one copy
        # from the socket, as urllib's read does (app/http1.py, `unfilled_bytes`).
        body, view = unfilled_bytes(head.length)
        try:
            await _receive_all(conn, view, checks)
        finally:
            conn.stop_receiving()  # nothing writes into `body` once this returns
            view.release()
        if checks.kind is None:
            raise UnsupportedImage()
        return body, checks.kind
    elif head.length is None:
        # A body framed by the connection's end: blocks of one accounting step,
        # allocated as it arrives; it may run one byte past the cap.
        end = policy.max_bytes + 1
        while checks.size < end:
            block = memoryview(bytearray(min(_ACCOUNT_STEP, end - checks.size)))
            used = conn.receive_into(block)
            if used:
                checks.arrived(block[:used])
            while used < len(block):
                filled = await conn.received(used)
                if filled == used:
                    break  # the connection ended
                checks.arrived(block[used:filled])
                used = filled
            pieces.append(block[:used])
            if used < len(block):
                break
    if checks.kind is None:
        raise UnsupportedImage()
    return b"".join(pieces), checks.kind


def _redirect_target(current: ParsedTarget, location: str) -> str:
    """The absolute URL a Location names; one that cannot be fetched as written is a 502."""
    try:
        alone = httpx.URL(location)
        if alone.scheme and not alone.host:
            # "http:x" names a scheme and no host: no relative reference to join.
            alone.copy_with(host=current.host)
        joined = httpx.URL(current.url).join(location).copy_with(fragment=None)
        text = str(joined)
        if joined.scheme in _DEFAULT_PORTS:
            # A join httpx accepts can still name no host, or a path without
            # its leading "/": neither can be requested.
            if not joined.raw_host or not joined.raw_path.startswith(b"/"):
                raise SourceBadRedirect()
            httpx.URL(text)  # round-trips, or it is not a URL
    except (httpx.InvalidURL, TypeError, ValueError, UnicodeError):
        raise SourceBadRedirect() from None
    return text


async def _fetch(
    url: str, policy: FetchPolicy, resolver: Resolver, on_bytes: ByteCounter | None
) -> Fetched:
    for _hop in range(policy.max_redirects + 1):
        target = check_url(url, policy)
        ips = await _resolve(target, policy, resolver)
        conn = await _connect(target, ips, policy)
        try:
            head = await conn.get(target.target, _request_headers(target))
            status = head.status
            if status in _REDIRECT_STATUSES:
                location = head.headers.get("location", "").strip()
                if not location:
                    raise SourceHttpError("The source URL redirected nowhere.")
                url = _redirect_target(target, location)
                continue
            if not 200 <= status < 300:
                raise SourceHttpError()
            data, kind = await _read_body(conn, head, policy, on_bytes)
            return Fetched(data=data, kind=kind, final_url=target.url)
        finally:
            conn.close()
    raise SourceHttpError("The source URL redirected too many times.")


async def fetch_source(
    url: str,
    policy: FetchPolicy,
    resolver: Resolver | None = None,
    on_bytes: ByteCounter | None = None,
) -> Fetched:
    """Fetch an image from `url` under `policy`; every failure is an `ApiError`.

    `resolver` maps (host, port) to IP strings; it defaults to getaddrinfo and is
    injectable so tests can point names at the loopback test servers. `on_bytes`
    is called with a running byte count to account for (it may raise to stop).
    """
    try:
        with anyio.fail_after(policy.total_timeout):
            return await _fetch(url, policy, resolver or _system_resolver, on_bytes)
    except TimeoutError:
        raise SourceTimeout() from None
    except Truncated:
        raise SourceHttpError(_BROKE_OFF) from None
    except ProtocolError:
        # A head h11 refuses (syntax, size, framing): the source's fault, never a 500.
        raise SourceHttpError("The source URL's answer was not valid HTTP.") from None
    except OSError:
        raise SourceUnreachable() from None
