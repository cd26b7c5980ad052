"""The conversion zygote (started by app.sandbox): warms up once, then forks a child per job.

Pillow loads its format plugins and codecs lazily, on the first open of each
kind: done in every forked child, that cost ~20 ms per conversion. Converting
a tiny image of every accepted kind here leaves all of it loaded in the zygote,
so each fork starts warm. Then the zygote's objects are moved out of the
garbage collector's sight (gc.freeze): a collection in a child would otherwise
touch, and so copy, every page of the heap it shares with the zygote.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import select
import signal
import socket
from multiprocessing.connection import Connection

from PIL import Image

from app.engine import vips, vp8l
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pillow_warnings import take_warning_count
from app.sandbox import LAUNCH, STATUS, Limits, _child_main


def _samples() -> list[bytes]:
    out = []
    rgb = Image.new("RGB", (8, 8), (200, 30, 30))
    rgba = Image.new("RGBA", (8, 8), (200, 30, 30, 128))
    for im, fmt, params in (
        (rgb, "JPEG", {}),
        (rgb, "PNG", {}),
        (rgba, "PNG", {}),
        (rgba.convert("LA"), "PNG", {}),
        (rgb.convert("P"), "GIF", {}),
        (rgb, "TIFF", {}),
        (rgb, "BMP", {}),
        (rgb, "WEBP", {"lossless": True}),
        (rgba, "WEBP", {"lossless": True}),
        (rgb, "JPEG2000", {}),
        (rgba, "JPEG2000", {}),  # the banded route: binds libopenjp2 here, not per child
    ):
        buf = io.BytesIO()
        im.save(buf, fmt, **params)
        out.append(buf.getvalue())
    return out


def warm() -> None:
    vips.configure()
    Image.init()
    vp8l.available()  # maps the lossless WebP decoder (and checks its build) once, here
    for data in _samples():
        # A codec missing on this machine only costs its warm-up.
        with contextlib.suppress(Exception):
            info = inspect_image(data, 10**6)
            if info.kind != "webp":  # libvips' WebP loader starts a worker thread
                convert_to_pdf(data, info)
    take_warning_count()
    # A fork copies only the forking thread: a thread started here (numpy's
    # OpenBLAS, a libvips worker) would be missing in every child, and whatever
    # waits for it there would wait forever.
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise RuntimeError(f"the conversion zygote must be single-threaded, has {threads}")


def serve(control_fd: int) -> None:
    """Fork a child per launch message on `control_fd` until its peer closes it.

    Each launch brings four descriptors: the child's socket, source and output
    (handed to app.sandbox._child_main) and the write end of its status pipe, on
    which the zygote reports the child's pid, then, once it has reaped the
    child, its exit code. When the parent goes, its children are killed.
    """
    control = socket.socket(fileno=control_fd)
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the parent
    signal.signal(signal.SIGCHLD, _wake)  # a handler, so the wakeup fd hears of exits
    signal.set_wakeup_fd(sig_w)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(sig_r, select.POLLIN)
    children: dict[int, int] = {}  # pid -> write end of its status pipe
    while True:
        for fd, _events in poller.poll():
            if fd == sig_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(sig_r, 4096):
                        pass
                _reap(children)
                continue
            message, fds, _flags, _addr = socket.recv_fds(control, LAUNCH.size, 4)
            if not message:  # the parent is gone
                for pid in children:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                os._exit(0)
            _fork(message, fds, (control_fd, sig_r, sig_w), children)


def _wake(_signum, _frame) -> None:
    pass


def _fork(message: bytes, fds: list[int], ours: tuple[int, ...], children: dict) -> None:
    """Start one child: the parent reads its pid (0: the fork failed) on the status
    pipe; a malformed launch only closes the descriptors (the parent reads the end)."""
    if len(fds) != 4 or len(message) != LAUNCH.size:
        for fd in fds:
            os.close(fd)
        return
    conn, src, out, status_w = fds
    size, timeout_s, max_memory = LAUNCH.unpack(message)
    try:
        pid = os.fork()
    except OSError:  # TasksMax, no memory: the parent reads pid 0
        with contextlib.suppress(OSError):
            os.write(status_w, STATUS.pack(0))
        for fd in fds:
            os.close(fd)
        return
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in ours:
                os.close(fd)
            _child_main(Connection(conn), src, out, size, Limits(timeout_s, max_memory))
        finally:
            os._exit(70)
    for fd in (conn, src, out):
        os.close(fd)
    children[pid] = status_w
    with contextlib.suppress(OSError):  # the parent went: the child ends at its socket's EOF
        os.write(status_w, STATUS.pack(pid))


def _reap(children: dict[int, int]) -> None:
    """Reap every child that has ended and send its exit code to its parent."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_w = children.pop(pid, None)
        if status_w is not None:
            with contextlib.suppress(OSError):
                os.write(status_w, STATUS.pack(os.waitstatus_to_exitcode(status)))
            os.close(status_w)


warm()
gc.collect()
gc.freeze()
