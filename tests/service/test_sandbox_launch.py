"""app.sandbox's launch through app.zygote: failures, reaping, descriptors, limits.

Real zygote, real children; a stopped zygote (SIGSTOP) and the kernel's count of
bytes its socket has not read yet stand in for timing, so nothing here races.
"""

from __future__ import annotations

import array
import fcntl
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import anyio
import pytest

from app import sandbox
from app.engine.pricing import estimate_peak_bytes
from app.errors import Busy, ConversionTooLarge
from app.main import build_services
from app.pipeline import convert_source_url
from app.sandbox import Limits, Sandbox, zygote_pid
from app.settings import Settings
from tests.support import images
from tests.support.servers import SourceServer

MAX_PIXELS = 40_000_000
BUDGET = 400 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def box():
    box = Sandbox(Limits(timeout_s=10.0, max_memory=BUDGET))
    box.start()
    return box


def fds(pid: int | str = "self") -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def unread_launch_bytes() -> int:
    """Bytes sent to the zygote it has not read yet (SIOCOUTQ on our end)."""
    out = array.array("i", [0])
    fcntl.ioctl(sandbox._zygote._sock.fileno(), termios.TIOCOUTQ, out)
    return out[0]


def convert(box: Sandbox, data: bytes) -> bytes:
    with box.job(data) as job:
        info = job.inspect(MAX_PIXELS)
        return job.convert(info, estimate_peak_bytes(info, len(data)))


def kill_zygote_during_launch(start) -> BaseException | object:
    """Stops the zygote, runs `start` in a thread until its launch message waits
    in the zygote's socket, kills the zygote: what `start` returned or raised."""
    pid = zygote_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(start())
        except BaseException as exc:  # the outcome under test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    try:
        thread.start()
        wait_until(lambda: unread_launch_bytes() > 0, "the launch was never sent")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    thread.join()
    return outcome[0]


def test_a_zygote_killed_during_the_launch_is_an_os_error_and_leaks_nothing(box):
    convert(box, images.png(64, 48))
    before = fds()
    outcome = kill_zygote_during_launch(lambda: box.job(images.png(64, 48)))
    assert isinstance(outcome, OSError), outcome
    assert fds() == before  # the memfds, the pipe and the job's socket are closed
    # The next job starts a new zygote.
    assert convert(box, images.png(64, 48)).startswith(b"%PDF-")


def test_a_launch_failure_in_a_request_is_503_busy(tmp_path, box):
    source = SourceServer()
    try:
        settings = Settings.from_env(
            {
                **os.environ,
                "ALLOW_PRIVATE_SOURCE_URLS": "1",
                "DATA_DIR": str(tmp_path),
                "PUBLIC_BASE_URL": "http://127.0.0.1:1",
                "STORAGE_BACKEND": "local",
            }
        )
        svc = build_services(settings)
        url = source.add_bytes("/a.png", images.alpha_png(64, 48))
        outcome = kill_zygote_during_launch(lambda: anyio.run(convert_source_url, url, svc))
        assert isinstance(outcome, Busy), outcome
        assert outcome.status == 503 and outcome.code == "busy"
        assert list(tmp_path.iterdir()) == []
        assert svc.admission.in_use == 0 and svc.admission.data_in_use == 0
        # The service recovers: the next request converts.
        assert anyio.run(convert_source_url, url, svc).startswith("http://127.0.0.1:1/")
    finally:
        source.close()


def test_a_child_killed_as_it_starts_is_an_error_and_is_reaped(box):
    job = box.job(images.png(64, 48))
    try:
        os.kill(job.pid, signal.SIGKILL)  # before it has read its first message
        with pytest.raises(ConversionTooLarge):  # SIGKILL not from us: the OOM killer's
            job.inspect(MAX_PIXELS)
    finally:
        job.close()
    assert state(job.pid) is None  # reaped, not a zombie
    assert children(zygote_pid()) == []


def test_two_hundred_jobs_leave_no_descriptor_and_no_process_behind(box):
    convert(box, images.png(64, 48))
    zygote = zygote_pid()
    ours, theirs = fds(), fds(zygote)
    data = images.alpha_png(64, 48)
    for i in range(200):
        if i % 2:
            assert convert(box, data).startswith(b"%PDF-")
        else:  # closed after the inspection, the child still waiting
            with box.job(data) as job:
                job.inspect(MAX_PIXELS)
    assert fds() == ours
    assert fds(zygote) == theirs
    assert children(zygote) == []


def test_concurrent_launches_each_get_their_own_child(box):
    """Eight threads launching at once (a worker's conversion threads): every
    job converts its own image, and nothing is left behind."""
    import concurrent.futures

    convert(box, images.png(64, 48))
    zygote = zygote_pid()
    ours, theirs = fds(), fds(zygote)
    sizes = [(40 + i, 30 + i) for i in range(40)]

    def one(size: tuple[int, int]) -> bytes:
        return convert(box, images.png(*size))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        pdfs = list(pool.map(one, sizes))
    for (w, h), pdf in zip(sizes, pdfs, strict=True):
        assert f"/Width {w}".encode() in pdf and f"/Height {h}".encode() in pdf
    assert fds() == ours
    assert fds(zygote) == theirs
    assert children(zygote) == []


def test_an_allocation_past_the_address_space_limit_is_413(box):
    """libwebp decodes a 2000x2000 lossless WebP into a whole ARGB frame (16 MB):
    with a reservation of 4 MiB the child's RLIMIT_AS stops it, and the answer is
    ConversionTooLarge (413), not a crash."""
    data = images.encode(images.banded_gradient(2000, 2000, "RGBA"), "WEBP", lossless=True)
    with box.job(data) as job:
        info = job.inspect(MAX_PIXELS)
        with pytest.raises(ConversionTooLarge) as err:
            job.convert(info, 4 * 1024 * 1024)
        assert err.value.status == 413
    # The same job with its estimate converts: the limit, not the image, refused it.
    assert convert(box, data).startswith(b"%PDF-")


def test_the_zygote_is_single_threaded_and_goes_with_its_parent(tmp_path):
    """A parent killed while one of its children is stopped mid-job: the zygote
    kills that child and exits (its socket's end), nothing is left."""
    script = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from app.sandbox import Limits, Sandbox, zygote_pid\n"
        "from tests.support import images\n"
        "box = Sandbox(Limits(timeout_s=60.0, max_memory=1 << 28))\n"
        "job = box.job(images.png(64, 48))\n"
        "job.inspect(10**6)\n"
        "os.kill(job.pid, signal.SIGSTOP)\n"
        "stat = f'/proc/{job.pid}/stat'\n"
        "while open(stat).read().rsplit(')', 1)[1].split()[0] != 'T':\n"
        "    pass\n"
        "print(zygote_pid(), job.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        zygote, child = (int(p) for p in proc.stdout.readline().split())
        assert len(os.listdir(f"/proc/{zygote}/task")) == 1
        assert state(child) == "T"
        proc.kill()
        proc.wait()
        wait_until(lambda: state(zygote) is None, "the zygote outlived its parent")
        wait_until(lambda: state(child) is None, "the child outlived its parent")
    finally:
        proc.kill()
        proc.wait()


def stopped_zygote_outcome(
    run, limits: Limits, stop_first: bool = True
) -> tuple[BaseException | object, bool]:
    """Runs `run(box)` in a thread with the zygote stopped (SIGSTOP; by `run`
    itself unless `stop_first`) and never resumed: (what `run` returned or
    raised, whether the stopped zygote is gone). The thread is given far longer
    than the launch's bound to end; the box must then convert with a new zygote."""
    box = Sandbox(limits)
    box.start()
    convert(box, images.png(64, 48))
    pid = zygote_pid()
    assert pid is not None
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(run(box))
        except BaseException as exc:  # the outcome under test
            outcome.append(exc)

    if stop_first:
        os.kill(pid, signal.SIGSTOP)
    thread = threading.Thread(target=target, daemon=True)
    try:
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "the worker waits for a stopped zygote for ever"
    finally:
        if state(pid) not in (None, "Z"):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
        thread.join()
    gone = state(pid) in (None, "Z")
    # The service recovers: the next job gets a new zygote.
    assert convert(box, images.png(64, 48)).startswith(b"%PDF-")
    assert zygote_pid() != pid
    return outcome[0], gone


def test_a_stopped_zygote_fails_the_launch_and_is_replaced():
    """A zygote that stops answering (SIGSTOP, a frozen cgroup) mid-launch: the
    launch waits at most its job's timeout for the child's pid, then is an
    OSError (503 busy), and the stuck zygote is killed, not waited on."""
    convert(Sandbox(Limits(max_memory=BUDGET)), images.png(64, 48))  # a zygote's socket is open
    before = fds()
    outcome, gone = stopped_zygote_outcome(
        lambda box: box.job(images.png(64, 48)), Limits(timeout_s=1.0, max_memory=BUDGET)
    )
    assert isinstance(outcome, OSError), outcome
    assert gone
    assert fds() == before


def test_a_zygote_stopped_while_its_child_converts_does_not_hang_the_job():
    """The child answers but its zygote, stopped, never reports its exit code:
    closing the job does not wait for ever; the stuck zygote is replaced."""

    def run(box: Sandbox) -> bytes:
        with box.job(images.png(64, 48)) as job:
            info = job.inspect(MAX_PIXELS)
            os.kill(zygote_pid(), signal.SIGSTOP)
            return job.convert(info, estimate_peak_bytes(info, 10**6))

    outcome, gone = stopped_zygote_outcome(
        run, Limits(timeout_s=1.0, max_memory=BUDGET), stop_first=False
    )
    assert isinstance(outcome, bytes) and outcome.startswith(b"%PDF-"), outcome
    assert gone


def test_emfile_at_the_jobs_second_memfd_leaks_nothing(box):
    """The worker out of descriptors (EMFILE) with exactly one left: the job's
    output memfd takes it, its source memfd fails: an OSError (503 busy), and the
    output memfd is closed, not leaked into an already exhausted table."""
    import resource

    convert(box, images.png(64, 48))
    fillers = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # Fill the holes below the highest descriptor, so the next is the last.
        top = max(fds())
        while (fd := os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)) < top:
            fillers.append(fd)
        fillers.append(fd)
        last = fd + 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (last + 1, hard))
        with pytest.raises(OSError):
            box.job(images.png(64, 48))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
    assert last not in fds()
    assert convert(box, images.png(64, 48)).startswith(b"%PDF-")
