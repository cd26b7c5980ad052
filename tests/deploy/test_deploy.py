"""The real playbook against a real Debian 12 systemd machine (tests/support/machine.py).

The scenarios build on each other, in file order, on one machine:
first deploy -> no-change rerun -> new commit -> broken release rolled back ->
memory under a 1 GiB cap -> SIGKILL restart -> a fourth release (cleanup keeps three).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
import tarfile
import time

import httpx
import pytest

from tests.support import images


def ping(base_url: str) -> dict:
    return httpx.get(f"{base_url}/ping", timeout=10).json()


def wait_ping(base_url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ping(base_url)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def convert(base_url: str, url: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{base_url}/image_to_pdf", json={"source_url": url}, timeout=timeout)


def journal(target, *args: str) -> str:
    return target.sh("journalctl --no-pager -u img2pdf.service " + " ".join(args), timeout=60)


def big_alpha_png(w: int = 8000, h: int = 5000) -> bytes:
    """An RGBA PNG of w x h (smooth gradients: a few hundred KB even at 40 MP)."""
    from PIL import Image

    ramp = Image.linear_gradient("L").resize((w, h))
    rings = Image.radial_gradient("L").resize((w, h))
    flat = Image.new("L", (w, h), 90)
    im = Image.merge("RGBA", (ramp, rings, flat, ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def budget_sized_alpha_png(share: float = 0.85) -> tuple[bytes, str]:
    """The biggest 4:3 alpha PNG whose estimated peak is ~`share` of one worker's budget,
    or the largest the pixel cap allows when that binds first (the streaming engine
    prices alpha PNGs by the strip, so none under the cap may reach the budget).

    Sized with the service's own estimate and default budget (the machine runs this very
    code), so a retuned cost model or budget does not turn the burst into all-413.
    """
    from app.engine.inspect import inspect_image
    from app.engine.pricing import estimate_peak_bytes
    from app.settings import Settings

    settings = Settings.from_env({})
    budget, max_pixels = settings.worker_memory_budget, settings.max_image_pixels
    w, h = 4000, 3000
    for _ in range(4):
        data = big_alpha_png(w, h)
        estimate = estimate_peak_bytes(inspect_image(data, max_pixels), len(data))
        at_cap = w * h >= 0.97 * max_pixels
        if estimate <= share * budget and (estimate >= 0.7 * budget or at_cap):
            break
        scale = (share * 0.97 * budget / estimate) ** 0.5
        w, h = int(w * scale), int(h * scale)
        if w * h > max_pixels:
            fit = (max_pixels / (w * h)) ** 0.5
            w, h = int(w * fit), int(h * fit)
    else:
        pytest.fail(f"no alpha PNG near {share:.0%} of the {budget} B budget (last: {estimate} B)")
    mib = 2**20
    return data, f"{w}x{h}, est. peak {estimate / mib:.0f} MiB of a {budget / mib:.0f} MiB budget"


# 1 ------------------------------------------------------------------------------------------


@pytest.mark.timeout(1200)
def test_first_deploy_serves_and_converts(target, trees, source, report):
    result = target.deploy(trees["r1"], "r1")
    report("first deploy", result.seconds)
    assert result.rc == 0, result.output[-6000:]

    assert target.sh("systemctl is-active img2pdf.service") == "active"
    assert target.sh("systemctl is-enabled img2pdf.service") == "enabled"
    assert target.live_release() == "r1"
    assert ping(target.base_url) == {"ping": "pong"}

    # A real conversion, stored locally under DATA_DIR and served back by the service.
    url = source.add_bytes("/photo.png", images.alpha_png(320, 200), "image/png")
    answer = convert(target.base_url, url)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["source_url"] == url
    assert re.fullmatch(rf"{target.base_url}/files/[0-9a-f-]{{36}}\.pdf", body["converted_url"])
    pdf = httpx.get(body["converted_url"], timeout=30)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    name = body["converted_url"].rsplit("/", 1)[1]
    assert target.sh(f"stat -c %U /var/lib/img2pdf/files/{name}") == "img2pdf"

    # Every process of the service runs as img2pdf, none as root.
    main = target.unit("MainPID")["MainPID"]
    users = target.sh(f"ps -o user= -p {main} --ppid {main}").split()
    assert len(users) >= 2 and set(users) == {"img2pdf"}, users  # master and its workers

    # Settings file: readable by the service's group only.
    assert target.sh("stat -c '%a %U %G' /etc/img2pdf/env") == "640 root img2pdf"
    env = target.sh("cat /etc/img2pdf/env")
    assert f"PORT={target.port}" in env and "ALLOW_PRIVATE_SOURCE_URLS=1" in env


def test_release_builds_its_own_vp8l_decoder(target, trees):
    release = "/opt/img2pdf/releases/r1"
    library = f"{release}/app/engine/native/libvp8l.so"
    # The checkout's library (scripts/test.sh built it) is in the tree, but never shipped.
    assert (trees["r1"] / "app/engine/native/libvp8l.so").is_file(), "run scripts/test.sh"
    with tarfile.open(target.workdir / "img2pdf-r1.tar.gz") as shipped:
        assert [n for n in shipped.getnames() if n.endswith(".so")] == []

    # Root's, readable by all, current: it reports the sha256 of the release's vp8l.c.
    assert target.sh(f"stat -c '%a %U %G' {library}") == "644 root root"
    assert target.sh(f"{release}/scripts/build_native.sh --check && echo current") == "current"
    # Freestanding: gcc's own headers and ld were enough; libc's headers are not installed.
    assert target.machine.run("dpkg -s libc6-dev", check=False).returncode != 0
    # The binding takes it, as the service's user, with the release's venv.
    check = "from app.engine import vp8l; print(vp8l.available())"
    took = target.sh(
        f"cd {release} && runuser -u img2pdf -- env PYTHONDONTWRITEBYTECODE=1 "
        f".venv/bin/python -c '{check}'"
    )
    assert took == "True"


def test_running_service_maps_the_vp8l_decoder(target, source, report):
    """The unit's sandbox (ProtectSystem=strict, the system-call filter) lets the service
    map the release's library executable: after a lossless WebP, some process of the
    service has it mapped r-x from the release, and no mapping of it is writable."""
    url = source.add_bytes("/lossless.webp", images.webp(640, 480), "image/webp")
    answer = convert(target.base_url, url)
    assert answer.status_code == 200, answer.text
    assert httpx.get(answer.json()["converted_url"], timeout=30).content.startswith(b"%PDF-")

    library = "/opt/img2pdf/releases/r1/app/engine/native/libvp8l.so"
    pids = target.sh("pgrep -u img2pdf").split()
    maps = {
        pid: target.sh(f"grep -F libvp8l.so /proc/{pid}/maps || true", check=False).splitlines()
        for pid in pids
    }
    mapping = {pid: lines for pid, lines in maps.items() if lines}
    report("service processes mapping libvp8l.so", f"{len(mapping)} of {len(pids)}", "")
    assert mapping, f"no process of the service maps libvp8l.so: {pids}"
    for lines in mapping.values():
        assert {line.split()[-1] for line in lines} == {library}, lines
        perms = {line.split()[1] for line in lines}
        assert "r-xp" in perms and not any("w" in p and "x" in p for p in perms), lines


def test_unit_sandbox_scores_ok(target, report):
    out = target.sh("systemd-analyze security --no-pager img2pdf.service")
    score = float(re.search(r"Overall exposure level for img2pdf.service: ([\d.]+)", out)[1])
    report("systemd-analyze security img2pdf.service", score, " (under 2.5 is OK)")
    assert score < 2.5, out


def test_service_logs_json_lines_to_the_journal(target):
    wait_ping(target.base_url)
    lines = [
        line
        for line in journal(target, "-o cat", "SYSLOG_IDENTIFIER=img2pdf").splitlines()
        if line.strip()
    ]
    assert lines, "the service wrote nothing to the journal"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    assert any(r.get("path") == "/image_to_pdf" and r.get("status") == 200 for r in records)


# 2 ------------------------------------------------------------------------------------------


def test_rerun_with_nothing_changed_changes_nothing(target, trees, report):
    pid = target.unit("MainPID")["MainPID"]
    result = target.deploy(trees["r1"], "r1")
    report("no-change rerun", result.seconds)
    assert result.rc == 0, result.output[-6000:]
    assert result.changed == 0, result.output[-6000:]
    assert target.unit("MainPID")["MainPID"] == pid  # not restarted


# 3 ------------------------------------------------------------------------------------------


def test_new_commit_moves_current_and_restarts_once(target, trees, report):
    since = target.sh("date +%s")
    old_pid = target.unit("MainPID")["MainPID"]
    result = target.deploy(trees["r2"], "r2")
    report("new commit deploy", result.seconds)
    assert result.rc == 0, result.output[-6000:]

    assert target.live_release() == "r2"
    assert target.sh("ls /opt/img2pdf/releases").split() == ["r1", "r2"]
    assert target.sh("cat /opt/img2pdf/current/release.env") == "RELEASE=r2"
    assert target.unit("MainPID")["MainPID"] != old_pid
    starts = journal(target, f"--since=@{since}", "-o cat", "_PID=1")
    assert starts.count("Started img2pdf.service") == 1, starts
    assert starts.count("Stopping img2pdf.service") == 1, starts
    assert ping(target.base_url) == {"ping": "pong"}


# 4 ------------------------------------------------------------------------------------------


def test_broken_release_is_rolled_back_and_fails_the_play(target, trees, report):
    result = target.deploy(trees["broken"], "broken")
    report("broken deploy + rollback", result.seconds)
    assert result.rc != 0, "a release whose app cannot import must fail the play"
    assert "Release broken is unhealthy" in result.output, result.output[-6000:]
    assert "Rolled back" in result.output

    assert target.live_release() == "r2"
    assert target.sh("systemctl is-active img2pdf.service") == "active"
    assert ping(target.base_url) == {"ping": "pong"}
    # The broken release stays for a post-mortem; cleanup only runs after a good deploy.
    assert "broken" in target.sh("ls /opt/img2pdf/releases").split()


# 6 (before 5, so NRestarts is still untouched) ----------------------------------------------


@pytest.mark.timeout(900)
def test_memory_burst_under_1gib_cap_is_never_oom_killed(target, source, report):
    vm = target.machine
    # Start from a clean slate: the broken deploy's failed starts count as restarts.
    target.sh("systemctl restart img2pdf.service")
    wait_ping(target.base_url)
    assert target.unit("NRestarts")["NRestarts"] == "0"
    since = target.sh("date +%s")
    oom_before = vm.oom_kills()
    limits = vm.memory_limits()
    assert limits["memory_max"] == 1024**3, "the machine must be capped at 1 GiB from the host"
    assert limits["swap_max"] == 0, "a memory test that swaps proves nothing"

    # The largest allowed alpha PNG (40 MP), then one sized near a worker's whole memory
    # budget, so every worker converts at its peak at the same time.
    sized, size = budget_sized_alpha_png()
    report("budget-sized image", size, "")
    bursts = {"40MP": big_alpha_png(8000, 5000), "budget-sized": sized}
    answers: dict[str, list[int | str]] = {}
    for name, data in bursts.items():
        url = source.add_bytes(f"/alpha-{name}.png", data, "image/png")

        def one(_: int, url: str = url) -> int | str:
            try:
                return convert(target.base_url, url, timeout=180).status_code
            except httpx.HTTPError as exc:  # a dropped connection: what an OOM kill looks like
                return type(exc).__name__

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers[name] = list(pool.map(one, range(20)))
        counts = {a: answers[name].count(a) for a in set(answers[name])}
        seconds = time.monotonic() - started
        report(f"{name} alpha PNG x20 answers", f"{counts} in {seconds:.1f}", "s")
    peak = vm.memory_peak()
    report("machine memory peak, page cache included", f"{peak / 2**20:.0f}", " MiB of 1024")

    # MemoryMax is not enforced inside this machine: check the service stayed under it by its
    # processes' high-water marks (their sum over-states a simultaneous peak: conservative).
    main = target.unit("MainPID")["MainPID"]
    hwm = target.sh(
        f"for p in {main} $(pgrep -P {main}); do awk '/VmHWM/ {{print $2}}' /proc/$p/status; done"
    )
    peak_service = sum(int(kib) for kib in hwm.split()) * 1024
    memory_max = int(target.unit("MemoryMax")["MemoryMax"])
    report(
        "service peak RSS (sum of VmHWM)",
        f"{peak_service / 2**20:.0f}",
        f" MiB, unit MemoryMax {memory_max / 2**20:.0f} MiB",
    )

    for name, got in answers.items():
        assert set(got) <= {200, 503, 413}, (name, got)
    assert 200 in answers["budget-sized"], "a job that fits the budget must be converted"
    assert vm.oom_kills() == oom_before, "the kernel OOM-killed something in the machine"
    assert peak_service < memory_max, "on the VM, MemoryMax would have OOM-killed a worker"
    log = journal(target, f"--since=@{since}")
    assert "SIGKILL" not in log and "Out of memory" not in log, log[-3000:]
    assert target.unit("NRestarts")["NRestarts"] == "0"
    assert target.sh("systemctl is-active img2pdf.service") == "active"
    assert ping(target.base_url) == {"ping": "pong"}


# 5 ------------------------------------------------------------------------------------------


def test_sigkill_is_restarted_by_systemd(target):
    before = target.unit("MainPID", "NRestarts")
    target.sh(f"kill -KILL {before['MainPID']}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = target.unit("MainPID", "NRestarts", "ActiveState")
        if now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"]):
            break
        time.sleep(0.5)
    assert now["MainPID"] != before["MainPID"], now
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1, now
    assert wait_ping(target.base_url) == {"ping": "pong"}


# cleanup ------------------------------------------------------------------------------------


def test_only_the_newest_three_releases_are_kept(target, trees, report):
    result = target.deploy(trees["r3"], "r3")
    report("fourth release", result.seconds)
    assert result.rc == 0, result.output[-6000:]
    assert target.live_release() == "r3"
    # r1 is the oldest of four: removed; the failed one stays until it ages out.
    assert sorted(target.sh("ls /opt/img2pdf/releases").split()) == ["broken", "r2", "r3"]
    assert ping(target.base_url) == {"ping": "pong"}
