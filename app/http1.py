"""One HTTP/1.1 GET on one connection to one address the caller has already checked.

The source download (app/fetch.py) used httpx for this. On a 4.5 MB body httpx
cost ~9 ms on loopback where urllib takes ~4 ms: every byte was copied four
times (the socket transport's read, h11's receive buffer, h11's slice of it,
the final join), with an h11 event and a few awaits per read. Here a plain
socket writes the body straight into the caller's buffer (asyncio's
`BufferedProtocol`: `recv_into`); over TLS each decrypted piece is copied into
it once.

What stays with h11 is what it is good at: writing the request and parsing the
response head (status line, header syntax, a 100 KiB head cap as httpcore set
it, Content-Length / Transfer-Encoding rules), and decoding chunked bodies
(chunk extensions, trailers, a size line split across reads). Only a body
framed by Content-Length, or by the connection's end, is read past it.

The connection goes to exactly the address given: the socket is created and
connected here, then handed to the event loop (no name lookup, no proxy). TLS
verifies the certificate against `server_hostname`, which is also the SNI.
One request per connection (`Connection: close`); nothing is pooled or reused.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import ssl
from dataclasses import dataclass

import anyio
import h11

# httpcore's h11 limit on an incomplete event (a response head, a chunk size line).
MAX_HEAD_BYTES = 100 * 1024
# The buffer the response head (and a chunked body) is read into, before h11 parses it.
# A download waiting on a source holds it before admission accounts any byte, so
# it starts small; a chunked body moves to the larger one once a read fills it.
HEAD_STAGING_BYTES = 16 * 1024
CHUNKED_STAGING_BYTES = 256 * 1024
# At most this much per read into a caller's buffer (asyncio's own read size).
MAX_READ_BYTES = 256 * 1024
# Where a read goes while the caller's buffer is full, and how much may wait there.
SPARE_BYTES = 64 * 1024
SPILL_LIMIT = 1024 * 1024
# Chunked bodies: the event loop gets a turn after this many chunks. A read may
# hold ~1.3 MB of one-byte chunks, an h11 event each (~10 us): run in one go, they
# kept every other request of the worker waiting for seconds.
EVENTS_PER_TURN = 256
# Interim (1xx) answers read before the response; a source may send a 100 and a
# 103 or two, never a stream of them (each is parsed, and no body byte counts them).
MAX_INTERIM_RESPONSES = 8


_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
_bytes_address = ctypes.pythonapi.PyBytes_AsString
_bytes_address.restype = ctypes.c_void_p
_bytes_address.argtypes = (ctypes.py_object,)


def unfilled_bytes(size: int) -> tuple[bytes, memoryview]:
    """A new `bytes` of `size` (>= 1) and a writable view of its contents, to fill.

    What `urllib`'s read (io.BufferedReader) does in C: the C API's
    `PyBytes_FromStringAndSize(NULL, size)` makes a bytes object with
    uninitialised contents for its caller to fill before anyone else sees it.
    The body is received straight into it: one copy from the socket, no join,
    and no page is touched before its bytes arrive (a large allocation is fresh
    memory from the kernel), so the resident size grows only with what arrived,
    as admission accounts it, never with the length a source announces.

    The caller must write all of it (or drop it) and let go of the view before
    handing the bytes on. The view keeps the bytes alive.
    """
    if size < 1:
        raise ValueError("size must be at least 1 (b'' is a shared object)")
    body = _new_bytes(None, size)
    array = (ctypes.c_char * size).from_address(_bytes_address(body))
    array.owner = body  # type: ignore[attr-defined]  # the memory's owner outlives the view
    return body, memoryview(array).cast("B")


class ProtocolError(Exception):
    """The answer is not HTTP/1.1 this client reads."""


class Truncated(ProtocolError):
    """The connection ended before the response (or its chunked body) did."""


@dataclass(frozen=True)
class Head:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    length: int | None  # Content-Length framing, else None
    chunked: bool  # Transfer-Encoding: chunked (h11 allows no other coding)


class _Receiver(asyncio.Protocol):
    """Puts what arrives into `view`; what comes while it is full goes aside.

    This class takes bytes objects (`data_received`): asyncio's TLS layer hands
    the decrypted stream over so, in full. `_DirectReceiver` below lets a plain
    socket write into `view` itself. Bytes that arrive while `view` is full
    (between the caller's turns, or past the end of a body) are kept in `spill`
    for the caller's next view, up to `SPILL_LIMIT`; past that the transport is
    paused, which a caller that keeps up never reaches.
    """

    def __init__(self, view: memoryview) -> None:
        self.transport: asyncio.Transport | None = None
        self.view = view
        self.filled = 0
        self.spill: list[bytes] = []
        self.spilled = 0
        self.paused = False
        self.discard = False
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        n = min(len(self.view) - self.filled, len(data))
        if n:
            self.view[self.filled : self.filled + n] = memoryview(data)[:n]
            self.filled += n
        if n < len(data):
            self._set_aside(data[n:])
        self._wake()

    def _set_aside(self, data: bytes) -> None:
        if self.discard:
            return
        self.spill.append(data)
        self.spilled += len(data)
        if self.spilled > SPILL_LIMIT and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if not self._ended_cleanly():
            self.error = Truncated("the TLS connection ended without close_notify")
        self._wake()
        return False  # close the transport

    def _ended_cleanly(self) -> bool:
        """False for TLS ended by a bare TCP close, without the close_notify alert.

        asyncio's TLS layer reports both as the end of the stream; only the
        alert tells a body framed by the close from one cut short (a reset, a
        forged FIN). After the alert the TLS object reads b"" again; after a
        bare close it still waits for a record.
        """
        tls = self.transport.get_extra_info("ssl_object") if self.transport else None
        if tls is None:
            return True
        try:
            return tls.read(1) == b""
        except ssl.SSLError:
            return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None or self.error is None:
            self.error = exc
        self._wake()

    def take_spill(self) -> list[bytes]:
        spill, self.spill, self.spilled = self.spill, [], 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return spill

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _DirectReceiver(_Receiver, asyncio.BufferedProtocol):
    """For plain TCP: the socket writes into `view` itself (`recv_into`), no copy.

    Not for TLS: asyncio 3.11's TLS layer, at the end of the stream, gives a
    buffered protocol one buffer's worth of what it still holds and drops the
    rest (a 700 KB chunked body over TLS came out short with 16 KiB buffers).
    """

    def __init__(self, view: memoryview) -> None:
        super().__init__(view)
        self._spare: memoryview | None = None  # made the first time `view` is full

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.filled < len(self.view):
            return self.view[self.filled : self.filled + MAX_READ_BYTES]
        if self._spare is None:
            self._spare = memoryview(bytearray(SPARE_BYTES))
        return self._spare

    def buffer_updated(self, nbytes: int) -> None:
        if self.filled < len(self.view):
            self.filled += nbytes
        else:
            assert self._spare is not None  # handed out by get_buffer
            self._set_aside(bytes(self._spare[:nbytes]))
        self._wake()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection:
    """A connected socket (TLS done) ready for one GET."""

    def __init__(
        self, transport: asyncio.Transport, receiver: _Receiver, read_timeout: float
    ) -> None:
        self._transport = transport
        self._rx = receiver
        self._read_timeout = read_timeout
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._staging = receiver.view
        self._chunked = False
        self._events = 0  # chunks handed out since the event loop last ran
        self.chunks = 0  # chunks of a chunked body received whole
        # Body bytes that came before the caller's buffer did (with the head, or spilled).
        self._pending: list[memoryview] = []

    @classmethod
    async def open(
        cls,
        ip: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        server_hostname: str,
        connect_timeout: float,
        read_timeout: float,
    ) -> Connection:
        """TCP to exactly (ip, port), then the TLS handshake; both within `connect_timeout`.

        Raises OSError (refused, reset, TLS failure) or TimeoutError.
        """
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            staging = memoryview(bytearray(HEAD_STAGING_BYTES))
            receiver = _Receiver(staging) if tls is not None else _DirectReceiver(staging)
            with anyio.fail_after(connect_timeout):
                await loop.sock_connect(sock, (ip, port))
                transport, _ = await loop.create_connection(
                    lambda: receiver,
                    sock=sock,
                    ssl=tls,
                    server_hostname=server_hostname if tls is not None else None,
                    ssl_handshake_timeout=connect_timeout if tls is not None else None,
                )
        except BaseException:
            sock.close()
            raise
        return cls(transport, receiver, read_timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.stop_receiving()
        self._transport.abort()

    async def _wait(self, seen: int) -> None:
        """Until the receiver has more than `seen` bytes or the connection ended."""
        rx = self._rx
        if rx.filled > seen or rx.spill or rx.eof:
            return
        loop = asyncio.get_running_loop()
        waiter = rx.waiter = loop.create_future()
        timer = loop.call_later(self._read_timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            rx.waiter = None

    async def _feed_h11(self) -> None:
        """Hand h11 what arrived in the staging buffer (b"" once the connection ended)."""
        rx = self._rx
        await self._wait(0)
        if rx.filled:
            self._h11.receive_data(bytes(self._staging[: rx.filled]))
            if self._chunked and rx.filled == len(self._staging) < CHUNKED_STAGING_BYTES:
                # A chunked body arriving faster than the small buffer takes it.
                self._staging = rx.view = memoryview(bytearray(CHUNKED_STAGING_BYTES))
            rx.filled = 0
            for piece in rx.take_spill():  # what came while the staging buffer was full
                self._h11.receive_data(piece)
        elif rx.error is not None:
            raise rx.error
        else:
            self._h11.receive_data(b"")

    def _next_event(self) -> object:
        try:
            return self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if self._h11.their_state is h11.ERROR and self._rx.eof and not self._rx.filled:
                raise Truncated(str(exc)) from None
            raise ProtocolError(str(exc)) from None

    async def get(self, target: str, headers: list[tuple[str, str]]) -> Head:
        """Send the request and read the response head (1xx answers skipped)."""
        try:
            request = h11.Request(method="GET", target=target, headers=headers)
            self._transport.write(self._h11.send(request) + self._h11.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as exc:  # a header or target h11 will not send
            raise ValueError(str(exc)) from None
        interim = 0
        while True:
            event = self._next_event()
            if event is h11.NEED_DATA:
                await self._feed_h11()
            elif isinstance(event, h11.InformationalResponse):
                interim += 1
                if interim > MAX_INTERIM_RESPONSES:
                    raise ProtocolError("too many interim (1xx) answers")
            elif isinstance(event, h11.Response):
                break
            else:
                raise Truncated("the connection ended before a response")
        fields: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            try:
                text = value.decode("utf-8")  # as httpx read them
            except UnicodeDecodeError:
                text = value.decode("latin-1")
            fields[key] = f"{fields[key]}, {text}" if key in fields else text
        chunked = "transfer-encoding" in fields  # h11 refused any coding but chunked
        length: int | None = None
        if event.status_code in (204, 304):
            length = 0
        elif not chunked and "content-length" in fields:
            length = int(fields["content-length"].split(",")[0])  # h11 checked: digits, all equal
        # h11 has had every byte received so far (no await since the last feed).
        rx = self._rx
        if chunked:
            self._chunked = True  # the head's buffer goes on, grown once it fills
        else:
            # The body bytes that came with the head; what comes next waits in the
            # spill until `receive_into` says where the body goes.
            self._pending = [memoryview(self._h11.trailing_data[0])]
            rx.view = memoryview(b"")
        return Head(event.status_code, fields, length, chunked)

    def stop_receiving(self) -> None:
        """Take the transport off the caller's buffer; whatever comes later is dropped."""
        rx = self._rx
        rx.view, rx.filled, rx.discard = memoryview(b""), 0, True
        rx.take_spill()
        self._pending = []

    def receive_into(self, view: memoryview) -> int:
        """Point the transport at `view`; returns how many bytes are already in it."""
        rx = self._rx
        pending = self._pending + [memoryview(piece) for piece in rx.take_spill()]
        n = 0
        while pending and n < len(view):
            piece = pending[0]
            k = min(len(piece), len(view) - n)
            view[n : n + k] = piece[:k]
            n += k
            if k < len(piece):
                pending[0] = piece[k:]
            else:
                pending.pop(0)
        self._pending = pending  # if `view` is full; later bytes spill behind these
        rx.view, rx.filled = view, n
        return n

    async def received(self, seen: int) -> int:
        """How many bytes the current view holds, once more than `seen` (== `seen`: the end).

        Raises OSError if the connection broke, TimeoutError after `read_timeout`
        without a byte.
        """
        await self._wait(seen)
        rx = self._rx
        if rx.filled == seen and rx.error is not None:
            raise rx.error
        return rx.filled

    async def next_chunk(self) -> bytes | None:
        """The next piece of a chunked body, None after its last chunk (and trailers)."""
        self._events += 1
        if self._events >= EVENTS_PER_TURN:
            self._events = 0
            await asyncio.sleep(0)
        while True:
            event = self._next_event()
            if event is h11.NEED_DATA:
                await self._feed_h11()
            elif isinstance(event, h11.Data):
                if event.chunk_end:
                    self.chunks += 1
                return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return None
            else:
                raise ProtocolError("unexpected event in a chunked body")
