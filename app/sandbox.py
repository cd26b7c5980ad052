"""Untrusted images are decoded in a child process the kernel bounds and we can kill.

A decoder that loops, crashes or overshoots its memory estimate must not take
the web worker with it, and a thread cannot be stopped. So every conversion runs
in its own process, forked from a pre-started, single-threaded zygote
(app.zygote: a fresh interpreter with the conversion modules imported once):

- a launch is one message on the zygote's socket: the job's size and limits,
  and its descriptors passed with SCM_RIGHTS; the zygote forks and the child
  goes straight to the job (no pickled process object, no re-import of the
  parent's `__main__`);
- the zygote reaps its children and reports each one's pid, then its exit code,
  through a pipe the parent holds, and closes that pipe; the parent sends a
  kill only while no exit code has arrived, and the job returns only once the
  pipe has closed (the child reaped, nothing of it left open in the zygote);
- the source reaches the child through a memfd, which the child maps read-only
  (its pages are shared, not copied: a copy cost ~1,000 page faults, ~2.5 ms, per
  4 MB); only routes that hand the bytes to img2pdf or Pillow whole get a copy,
  made before the conversion's limit is set. The PDF comes back through another
  memfd; a socket carries only small messages;
- the child keeps stdin/stdout/stderr on /dev/null, its socket and the two memfds,
  and closes every other file descriptor before it reads a byte of the image;
- it is forked only once the job holds `inspect_reservation` in the work pool,
  inspects the image under RLIMIT_AS = its own measured size at start + that
  reservation, reports what it found, then waits for the job's reservation to
  grow to the estimated peak and converts under RLIMIT_AS = its size at start +
  that reservation; RLIMIT_CPU backs the wall clock (CONVERT_TIMEOUT), after
  which the parent kills it;
- whatever happens, the child is killed and reaped before the job returns.

Failures become clean API errors: ConversionTimeout (422), ConversionTooLarge
(413, the memory limit), ConversionCrashed (422, a signal or an abnormal exit).
A child that cannot be started (the zygote is gone, fork fails) raises OSError,
which the request path answers with 503 Busy. Decoder warnings are counted in
the child and logged as one line by the parent.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import mmap
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, fields
from multiprocessing.connection import Connection
from pathlib import Path

from app import errors
from app.engine.facts import ImageInfo
from app.errors import ApiError, ConversionCrashed, ConversionTimeout, ConversionTooLarge
from app.fdio import write_all

# Address space the inspection step may use besides its copy of the source:
# header parsers keep at most what the file holds (APP segments, ICC profiles,
# Exif: the byte-level caps in app.engine.structure bound their number), so twice the
# file plus this covers them.
INSPECT_MEMORY = 16 * 1024 * 1024
# Room between the estimate and the kernel limit for the interpreter itself
# (pickling a message, a traceback).
LIMIT_SLACK = 4 * 1024 * 1024
# A launch: the source's size, the timeout (s), the largest reservation.
LAUNCH = struct.Struct("=qdq")
# What the zygote writes to a child's status pipe: its pid, then its exit code
# (negative: the signal that ended it).
STATUS = struct.Struct("=i")
# The exit code reported for a child whose zygote died before it could tell.
UNKNOWN_EXIT = 255
# How long a zygote may take to report a child's exit once the child is known to
# be ending (killed, or it has answered), and to take a launch message: a zygote
# silent that long is stuck (stopped, frozen) and is killed, so no worker thread
# waits on it for ever. A launch waits at most the job's timeout for the pid.
REPORT_TIMEOUT_S = 10.0

log = logging.getLogger("img2pdf.sandbox")
_ROOT = str(Path(__file__).resolve().parents[1])  # the directory holding `app`


class _Zygote:
    """The zygote process of this worker (one per process, shared by Sandboxes)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._lost = False  # it stopped answering: replace it at the next launch

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def ensure_running(self) -> None:
        with self._lock:
            self._ensure_running()

    def _ensure_running(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None and not self._lost:
                return
            self._end(kill=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A stuck zygote's full socket must not block a launch (holding the lock).
        ours.settimeout(REPORT_TIMEOUT_S)
        with theirs:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; sys.path.insert(0, sys.argv[1]); "
                    "from app.zygote import serve; serve(int(sys.argv[2]))",
                    _ROOT,
                    str(theirs.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        self._sock = ours
        self._lost = False

    def launch(self, fds: list[int], size: int, limits: Limits) -> tuple[int, int, object]:
        """Fork a child with `fds` (its socket, source, output): (pid, status fd,
        the zygote's Popen). OSError when none could be started, or when the
        zygote sends no pid within the job's timeout (it is then killed)."""
        status, status_w = os.pipe()
        message = LAUNCH.pack(size, limits.timeout_s, limits.max_memory)
        try:
            with self._lock:
                for retry in (False, True):
                    self._ensure_running()
                    try:
                        socket.send_fds(self._sock, [message], [*fds, status_w])
                        break
                    except OSError:  # it died since it was last seen: start another, once
                        self._lost = True
                        if retry:
                            raise
                proc = self._proc
            os.close(status_w)
            status_w = -1
            try:
                pid = _read_status(status, max(limits.timeout_s, 0.0))
            except TimeoutError:
                self.abandon(proc)
                raise OSError("the conversion zygote did not answer") from None
            if pid is None:  # the zygote died with the message unanswered
                with self._lock:
                    self._lost = self._lost or self._proc is proc
            if not pid:  # None, or 0: the fork failed (TasksMax, memory)
                raise OSError("no conversion process could be started")
            return pid, status, proc
        except BaseException:
            os.close(status)
            if status_w >= 0:
                os.close(status_w)
            raise

    def abandon(self, proc) -> None:
        """Kill a zygote that stopped answering (its children's status pipes then
        close, so whoever waits on them sees the end); the next launch starts another."""
        with self._lock:
            if proc is self._proc:
                self._end(kill=True)
                return
        if proc is not None:
            proc.kill()
            proc.wait()

    def _end(self, kill: bool) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            if kill:
                self._proc.kill()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def stop(self) -> None:
        """At exit: the zygote ends when its socket closes."""
        with self._lock:
            self._end(kill=False)


_zygote = _Zygote()
atexit.register(_zygote.stop)


def zygote_pid() -> int | None:
    """The pid of this process's conversion zygote (None before it starts)."""
    return _zygote.pid


def _read_status(fd: int, timeout: float | None) -> int | None:
    """The next number on a status pipe; None at its end. Waits up to `timeout`
    (None: for ever); raises TimeoutError."""
    if timeout is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, math.ceil(timeout * 1000))):
            raise TimeoutError
    data = b""
    while len(data) < STATUS.size:
        chunk = os.read(fd, STATUS.size - len(data))
        if not chunk:
            return None
        data += chunk
    return STATUS.unpack(data)[0]


class _Child:
    """A conversion child as its parent sees it: pid, exit code, kill."""

    def __init__(self, pid: int, status: int, zygote=None):
        self.pid = pid
        self._status = status
        self._zygote = zygote  # the Popen of the zygote that forked it
        self.exitcode: int | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the child has ended (waits up to `timeout`; None: until it has,
        which, the child being killed or done, takes its zygote at most
        REPORT_TIMEOUT_S: a zygote silent longer is killed and the child with it)."""
        if self.exitcode is not None:
            return True
        try:
            code = _read_status(self._status, REPORT_TIMEOUT_S if timeout is None else timeout)
        except TimeoutError:
            if timeout is not None:
                return False
            log.warning("conversion zygote stopped answering: replaced")
            _zygote.abandon(self._zygote)
            code = _read_status(self._status, None)  # its end: the zygote is gone
        if code is None:  # the zygote died first: make sure the child does too
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            code = UNKNOWN_EXIT
        else:  # the zygote closes the pipe once it has sent the code: nothing is left open
            _read_status(self._status, None)
        self.exitcode = code
        return True

    def kill(self) -> None:
        if not self.wait(0):  # not reaped yet: the pid is still the child's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._status >= 0:
            os.close(self._status)
            self._status = -1


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 15.0
    # The largest reservation a job can get (the work pool): the hard limit.
    max_memory: int = 1024 * 1024 * 1024


def inspect_reservation(source_len: int) -> int:
    """Work-pool bytes a child holds while it inspects: its kernel limit then."""
    return 2 * source_len + INSPECT_MEMORY


class Sandbox:
    """One per worker process: starts the zygote and hands out jobs."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def start(self) -> None:
        """Start the zygote now (at worker start) rather than on the first request."""
        _zygote.ensure_running()

    def job(self, data: bytes) -> Job:
        self.start()
        return Job(data, self.limits)


def _memfd(name: str) -> int:
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # no memfd: an unlinked temp file does the same
        fd, path = tempfile.mkstemp(prefix=name)
        os.unlink(path)
        return fd


class Job:
    """One image in one child: `inspect()`, then `convert()`, then `close()`.

    The methods block (they wait on the child); call them from a thread.
    """

    def __init__(self, data: bytes, limits: Limits):
        self.limits = limits
        self.warnings = 0
        self.peak_rss = 0  # the child's VmHWM once it has converted
        self._closed = False
        self._remaining = limits.timeout_s
        self._out = _memfd("img2pdf-out")
        src = readonly = -1
        try:
            src = _memfd("img2pdf-src")  # EMFILE here: the output memfd is closed below
            write_all(src, data)
            # The child gets the source read-only: it maps it and keeps the descriptor.
            readonly = os.open(f"/proc/self/fd/{src}", os.O_RDONLY | os.O_CLOEXEC)
            parent, child = socket.socketpair()
            with parent, child:
                pid, status, zygote = _zygote.launch(
                    [child.fileno(), readonly, self._out], len(data), limits
                )
                self._conn = Connection(parent.detach())
            self._proc = _Child(pid, status, zygote)
            self._pid = pid
        except BaseException:
            os.close(self._out)
            raise
        finally:
            if src >= 0:
                os.close(src)
            if readonly >= 0:
                os.close(readonly)

    @property
    def pid(self) -> int | None:
        return self._pid

    def inspect(self, max_pixels: int):
        self._send(("inspect", max_pixels))
        return self._reply("info")

    def convert(self, info, reserved_bytes: int) -> bytes:
        size = self.convert_size(info, reserved_bytes)
        return os.pread(self._out, size, 0) if size else b""

    def convert_size(self, info, reserved_bytes: int) -> int:
        """Convert; the PDF is then the first `size` bytes of `self.output_fd`."""
        self._send(("convert", info, reserved_bytes))
        return self._reply("pdf")

    @property
    def output_fd(self) -> int:
        return self._out

    def _send(self, message) -> None:
        try:
            self._conn.send(message)
        except OSError:  # the child is gone already (a signal, a crash)
            raise self._died() from None

    def close(self) -> None:
        """Kill the child if it still runs and reap it; nothing is left behind."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._conn.close()
        self._proc.kill()
        self._proc.wait()
        self._proc.close()
        with contextlib.suppress(OSError):
            os.close(self._out)

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reply(self, expected: str):
        started = time.monotonic()
        try:
            ready = self._conn.poll(max(self._remaining, 0.0))
        except (OSError, EOFError):
            ready = True
        finally:
            self._remaining -= time.monotonic() - started
        if not ready:
            self._proc.kill()
            self._proc.wait()
            log.warning("conversion process killed after %.1f s", self.limits.timeout_s)
            raise ConversionTimeout()
        try:
            raw = self._conn.recv_bytes(MAX_REPLY_BYTES)
        except (OSError, EOFError):
            raw = None
        if raw is None:
            raise self._died()
        message = _decode_reply(raw)
        self.warnings += message[-1]
        tag = message[0]
        if tag == expected:
            if tag == "pdf":
                self.peak_rss = message[2]
            return message[1]
        if tag == "api":
            _, name, detail, _count = message
            cls = getattr(errors, name, None)
            # An image's error; never a Retryable one (the child has no say in retries).
            if (
                isinstance(cls, type)
                and issubclass(cls, ApiError)
                and not issubclass(cls, errors.Retryable)
            ):
                return _raise(cls(detail))
            raise ConversionCrashed()
        if tag == "memory":
            raise ConversionTooLarge()
        raise ConversionCrashed()

    def _died(self) -> ApiError:
        """The child ended without an answer: say what stopped it."""
        if not self._proc.wait(max(self._remaining, 0.0)):  # closed its socket but runs on
            self._proc.kill()
            self._proc.wait()
            return ConversionCrashed()
        code = self._proc.exitcode
        log.warning("conversion process ended without an answer (exit code %s)", code)
        if code == -signal.SIGXCPU:
            return ConversionTimeout()
        if code == -signal.SIGKILL:
            # Not killed by us (we only kill on timeout): the kernel's OOM killer.
            return ConversionTooLarge()
        return ConversionCrashed()


def _raise(exc: ApiError):
    raise exc


# --- the child's replies: plain JSON, checked field by field -----------------
# The child decodes untrusted bytes with C libraries: if one is ever turned into
# code execution, what the child says must not become code in the worker, so
# replies are not pickles. The worker -> child direction stays pickled (the
# worker is trusted).
MAX_REPLY_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 300
# ImageInfo's fields and their types (its annotations are strings); a field of
# another type fails here, at import, rather than in a reply.
_INFO_TYPES = {f.name: {"str": str, "int": int, "bool": bool}[f.type] for f in fields(ImageInfo)}


def _encode_reply(reply: tuple) -> bytes:
    if reply[0] == "info":
        reply = ("info", asdict(reply[1]), reply[2])
    return json.dumps(reply).encode()


def _decode_reply(raw: bytes) -> tuple:
    """The child's reply as the worker uses it; anything off the schema is a
    crash of the child (ConversionCrashed), never an object the child chose."""
    try:
        message = json.loads(raw)
        tag, *rest = message
        *values, count = rest
        if not _count(count):
            raise ValueError
        if tag == "info" and len(values) == 1:
            return ("info", _image_info(values[0]), count)
        if tag == "pdf" and len(values) == 2 and all(_count(v) for v in values):
            return ("pdf", values[0], values[1], count)
        if tag == "api" and len(values) == 2:
            name, detail = values
            if isinstance(name, str) and name.isidentifier() and _detail(detail):
                return ("api", name, detail, count)
        if tag == "memory" and not values:
            return ("memory", count)
    except (ValueError, TypeError):
        pass
    raise ConversionCrashed()


def _count(value) -> bool:
    return type(value) is int and value >= 0


def _detail(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_DETAIL_CHARS and value.isprintable()


def _image_info(value) -> ImageInfo:
    if not isinstance(value, dict) or set(value) != set(_INFO_TYPES):
        raise ValueError
    for name, expected in _INFO_TYPES.items():
        if type(value[name]) is not expected:  # bool is not an int here, nor the reverse
            raise ValueError
        if expected is int and value[name] < 0:
            raise ValueError
    return ImageInfo(**value)


# --- the child -------------------------------------------------------------


def _vm_size() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(soft: int, hard: int | None = None) -> None:
    # prlimit64 is in systemd's @default set; setrlimit is in @resources, which
    # the unit denies. resource.prlimit calls the former.
    current = resource.prlimit(0, resource.RLIMIT_AS)[1]
    if current != resource.RLIM_INFINITY:
        hard = min(current, hard if hard is not None else current)
    hard = soft if hard is None else hard
    resource.prlimit(0, resource.RLIMIT_AS, (min(soft, hard), hard))


def _isolate(keep: set[int]) -> None:
    """stdio on /dev/null; every other descriptor but `keep` closed."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    keep = keep | {0, 1, 2}
    low = 3
    for fd in [*sorted(keep), resource.getrlimit(resource.RLIMIT_NOFILE)[0]]:
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1


class _WarningCounter:
    def __init__(self):
        self.count = 0

    def show(self, *args, **kwargs) -> None:
        self.count += 1

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def _child_main(conn, src_fd: int, out_fd: int, size: int, limits: Limits) -> None:
    """Runs in the forked child; always ends in os._exit."""
    code = 0
    try:
        _isolate({conn.fileno(), src_fd, out_fd})
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cpu = math.ceil(limits.timeout_s) + 1
        resource.prlimit(0, resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.prlimit(0, resource.RLIMIT_CORE, (0, 0))
        baseline = _vm_size()
        inspecting = inspect_reservation(size)
        _limit_memory(
            baseline + inspecting + LIMIT_SLACK,
            baseline + max(inspecting, limits.max_memory) + LIMIT_SLACK,
        )
        counter = _WarningCounter()
        warnings.showwarning = counter.show
        warnings.simplefilter("always")
        data = _map_source(src_fd, size)
        os.close(src_fd)  # the mapping keeps its own descriptor
        _serve(conn, data, out_fd, baseline, counter)
    except BaseException:  # the parent reports a crash from the exit code
        code = 70
    finally:
        os._exit(code)


def _map_source(fd: int, size: int) -> bytes | mmap.mmap:
    """The source as a read-only shared mapping of its memfd (no copy)."""
    return mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else b""


# Routes that read the source through memoryviews, libvips' memory source or
# Pillow opened on the mapping itself; the others wrap it in a BytesIO, which
# would copy a mapping (bytes it shares), so they get bytes.
MAPPED_ROUTES = {"stream"}


def _for_route(data, route: str):
    """`data` as the conversion of `route` reads it: the mapping, or a copy as bytes
    (made under the inspection's limit, which has room for it; the mapping is
    then unmapped)."""
    if route in MAPPED_ROUTES or not isinstance(data, mmap.mmap):
        return data
    copy = data[:]
    data.close()
    return copy


def _serve(conn, data, out_fd: int, baseline: int, counter: _WarningCounter) -> None:
    from app.engine.convert import convert_to_fd
    from app.engine.inspect import inspect_image
    from app.engine.pillow_warnings import take_warning_count

    def warned() -> int:
        return counter.take() + take_warning_count()

    info = None
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        try:
            if request[0] == "inspect":
                info = inspect_image(data, request[1])
                reply = ("info", info, warned())
            elif request[0] == "convert":
                _, info, reserved = request
                data = _for_route(data, info.route)
                limit = baseline + reserved + LIMIT_SLACK
                _limit_memory(limit, limit)
                size = convert_to_fd(data, info, out_fd)
                del data
                reply = ("pdf", size, _peak_rss(), warned())
            else:
                return
        except ApiError as exc:
            reply = ("api", type(exc).__name__, exc.detail, warned())
        except MemoryError:
            reply = ("memory", warned())
        conn.send_bytes(_encode_reply(reply))
        if reply[0] != "info":
            return
