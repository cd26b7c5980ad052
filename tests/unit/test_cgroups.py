"""tests/support/cgroups.py against fixture trees shaped like the hosts the suites run on:

- ubuntu-24.04 (GitHub's runner) and the GCE VM: cgroup v2 only, systemd as PID 1;
- a container: cgroup v2, no systemd;
- this box: Debian 12 with a hybrid hierarchy (v1 controllers, an empty v2 tree), PID 1
  not systemd; and a pure v1 host.

Detection reads only files under the root it is given, and the v1/v2 backends write
plain files, so a temporary directory stands in for /sys/fs/cgroup and /proc/self. The
v1 backend also runs for real on this box (the load, deploy and cd suites).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import cgroups

GIB = 1024**3
E2_MICRO = cgroups.Limits(cpu_quota_us=50_000, cpu_period_us=100_000, memory_max=GIB)


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ubuntu_2404(root: Path) -> Path:
    cg = root / "sys/fs/cgroup"
    touch(cg / "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    touch(cg / "cgroup.subtree_control", "cpuset cpu io memory pids\n")
    touch(cg / "cgroup.procs")
    (root / "run/systemd/system").mkdir(parents=True)
    touch(root / "usr/bin/systemd-run")
    return root


def v2_container(root: Path) -> Path:
    cg = root / "sys/fs/cgroup"
    touch(cg / "cgroup.controllers", "cpu io memory pids\n")
    touch(cg / "cgroup.subtree_control", "memory\n")
    touch(cg / "cgroup.procs", "1\n")
    return root


def hybrid(root: Path, *, unified: bool = True, memsw: bool = True) -> Path:
    cg = root / "sys/fs/cgroup"
    for ctl in ("cpu", "cpuacct", "memory", "pids"):
        touch(cg / ctl / "cgroup.procs", "1\n")
    (cg / "memory/process_api/abc").mkdir(parents=True)  # this process's memory group
    if memsw:
        touch(cg / "memory/memory.memsw.limit_in_bytes", "9223372036854771712\n")
    if unified:
        touch(cg / "unified/cgroup.controllers", "")  # v2 mounted, but holds no controller
    touch(root / "usr/bin/systemd-run")  # installed, but PID 1 is not systemd
    touch(
        root / "proc/self/cgroup",
        "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n",
    )
    return root


# --- detection ------------------------------------------------------------------------


def test_ubuntu_runner_uses_systemd(tmp_path):
    host = cgroups.detect(ubuntu_2404(tmp_path))
    assert host == cgroups.Host(mode="v2", systemd=True, backend="systemd")


def test_v2_without_systemd_writes_the_files_itself(tmp_path):
    assert cgroups.detect(v2_container(tmp_path)) == cgroups.Host("v2", False, "v2")


def test_v2_with_systemd_but_no_systemd_run_writes_the_files_itself(tmp_path):
    root = ubuntu_2404(tmp_path)
    (root / "usr/bin/systemd-run").unlink()
    assert cgroups.detect(root).backend == "v2"


def test_v2_without_the_memory_controller_offers_no_backend(tmp_path):
    root = v2_container(tmp_path)
    (root / "sys/fs/cgroup/cgroup.controllers").write_text("cpu io pids\n")
    assert cgroups.detect(root).backend is None


def test_this_hybrid_host_uses_v1(tmp_path):
    assert cgroups.detect(hybrid(tmp_path)) == cgroups.Host("hybrid", False, "v1")


def test_pure_v1_host(tmp_path):
    assert cgroups.detect(hybrid(tmp_path, unified=False)) == cgroups.Host("v1", False, "v1")


def test_no_cgroups_at_all(tmp_path):
    assert cgroups.detect(tmp_path) == cgroups.Host("none", False, None)
    with pytest.raises(RuntimeError, match="no cgroup controllers"):
        cgroups.make_group("x", E2_MICRO, cgroups.detect(tmp_path), tmp_path)


def test_the_command_line_prints_the_choice(tmp_path, capsys):
    cgroups.main(["detect", "--root", str(ubuntu_2404(tmp_path))])
    assert capsys.readouterr().out == "mode=v2 systemd=yes backend=systemd\n"


# --- what each backend writes -----------------------------------------------------------


def test_v1_writes_quota_memory_and_caps_swap_under_its_own_group(tmp_path):
    root = hybrid(tmp_path)
    mount = root / "sys/fs/cgroup"
    limits = cgroups.Limits(50_000, 100_000, GIB, cpu_weight=800)
    group = cgroups.V1Group("svc", limits, mount, proc_self=root / "proc/self")
    cpu, mem = mount / "cpu/svc", mount / "memory/process_api/abc/svc"
    assert group.dirs == {"cpu": cpu, "cpuacct": mount / "cpuacct/svc", "memory": mem}
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cpu.shares").read_text() == "8192"
    assert (mem / "memory.limit_in_bytes").read_text() == str(GIB)
    # The group's own memsw file exists on a real cgroupfs; here the fixture makes it.
    assert (mem / "memory.swappiness").read_text() == "0"
    touch(mem / "memory.memsw.limit_in_bytes", str(GIB))
    assert group.read_back() == {
        "cpu_quota_us": 50_000,
        "cpu_period_us": 100_000,
        "memory_max": GIB,
        "swap_max": 0,
    }
    argv = group.wrap(["entrypoint.sh", "prod"])
    assert argv[:2] == ["/bin/sh", "-c"]
    for d in (cpu, mount / "cpuacct/svc", mem):
        assert f"echo $$ > {d / 'cgroup.procs'}" in argv[2]
    assert argv[-2:] == ["entrypoint.sh", "prod"]


def test_v1_sets_memsw_equal_to_the_limit_where_swap_is_accounted(tmp_path):
    root = hybrid(tmp_path)
    mount = root / "sys/fs/cgroup"
    group_dir = mount / "memory/process_api/abc/m"
    touch(group_dir / "memory.memsw.limit_in_bytes", "9223372036854771712")  # as the kernel does
    cgroups.V1Group("m", E2_MICRO, mount, proc_self=root / "proc/self")
    assert (group_dir / "memory.memsw.limit_in_bytes").read_text() == str(GIB)


def common_stats(nr_throttled: int, throttled_s: float, peak: int, hits: int) -> dict:
    """stats() of a group whose files say: 2.5 CPU-s used, 1000 bytes in use of which
    40 anonymous and 30 file, one OOM kill; and the given throttling, peak and limit hits."""
    return {
        "cpu_usage_s": 2.5,
        "nr_throttled": nr_throttled,
        "throttled_s": throttled_s,
        "memory_current": 1000,
        "memory_peak": peak,
        "anon": 40,
        "file": 30,
        "limit_hits": hits,
        "oom_kill": 1,
    }


def test_v1_stats_have_the_common_keys(tmp_path):
    root = hybrid(tmp_path)
    mount = root / "sys/fs/cgroup"
    group = cgroups.V1Group("s", E2_MICRO, mount, proc_self=root / "proc/self")
    mem, cpu = group.dirs["memory"], group.dirs["cpu"]
    touch(group.dirs["cpuacct"] / "cpuacct.usage", "2500000000\n")
    touch(cpu / "cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 1500000000\n")
    touch(mem / "memory.usage_in_bytes", "1000\n")
    touch(mem / "memory.max_usage_in_bytes", "5000\n")
    touch(mem / "memory.stat", "cache 10\nrss 20\ntotal_cache 30\ntotal_rss 40\n")
    touch(mem / "memory.failcnt", "2\n")
    touch(mem / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert group.stats() == common_stats(nr_throttled=4, throttled_s=1.5, peak=5000, hits=2)
    assert group.reset_peak() and (mem / "memory.max_usage_in_bytes").read_text() == "0"


def test_v2_enables_controllers_and_writes_cpu_max_memory_max_and_no_swap(tmp_path):
    mount = v2_container(tmp_path) / "sys/fs/cgroup"
    limits = cgroups.Limits(50_000, 100_000, GIB, cpu_weight=800)
    group = cgroups.V2Group("svc", limits, mount)
    d = mount / "svc"
    assert (mount / "cgroup.subtree_control").read_text() == "+cpu"  # memory was on already
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "cpu.weight").read_text() == "800"
    assert (d / "memory.max").read_text() == str(GIB)
    assert (d / "memory.swap.max").read_text() == "0"
    assert group.read_back() == {
        "cpu_quota_us": 50_000,
        "cpu_period_us": 100_000,
        "memory_max": GIB,
        "swap_max": 0,
    }
    argv = group.wrap(["gunicorn"])
    assert argv == [
        "/bin/sh",
        "-c",
        f'echo $$ > {d}/cgroup.procs && exec "$@"',
        "cgroup-wrapper",
        "gunicorn",
    ]


def test_v2_stats_read_memory_peak_and_events(tmp_path):
    mount = v2_container(tmp_path) / "sys/fs/cgroup"
    group = cgroups.V2Group("s", E2_MICRO, mount)
    d = mount / "s"
    touch(
        d / "cpu.stat", "usage_usec 2500000\nnr_periods 9\nnr_throttled 3\nthrottled_usec 750000\n"
    )
    touch(d / "memory.current", "1000\n")
    touch(d / "memory.peak", "7000\n")
    touch(d / "memory.stat", "anon 40\nfile 30\nkernel 5\n")
    touch(d / "memory.events", "low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\noom_group_kill 0\n")
    touch(d / "cgroup.procs", "12\n13\n")
    touch(d / "child/cgroup.procs", "14\n")
    assert group.stats() == common_stats(nr_throttled=3, throttled_s=0.75, peak=7000, hits=6)
    assert group.pids() == {12, 13, 14}
    assert group.pids_by_controller() == {"cpu": {12, 13, 14}, "memory": {12, 13, 14}}


def test_v2_reads_unlimited_as_none(tmp_path):
    mount = v2_container(tmp_path) / "sys/fs/cgroup"
    group = cgroups.V2Group("u", cgroups.Limits(cpu_quota_us=None, memory_max=None), mount)
    touch(mount / "u/cpu.max", "max 100000")
    touch(mount / "u/memory.max", "max")
    touch(mount / "u/memory.swap.max", "max")
    assert group.read_back() == {
        "cpu_quota_us": None,
        "cpu_period_us": 100_000,
        "memory_max": None,
        "swap_max": None,
    }


def test_systemd_scope_command_caps_cpu_memory_and_swap(tmp_path):
    mount = ubuntu_2404(tmp_path) / "sys/fs/cgroup"
    group = cgroups.make_group("img2pdf-load-1", E2_MICRO, cgroups.detect(tmp_path), mount)
    assert isinstance(group, cgroups.SystemdGroup)
    assert group.wrap(["entrypoint.sh", "prod"]) == [
        "systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=img2pdf-load-1.scope",
        "-p",
        "CPUAccounting=yes",
        "-p",
        "MemoryAccounting=yes",
        "-p",
        "CPUQuota=50%",
        "-p",
        f"MemoryMax={GIB}",
        "-p",
        "MemorySwapMax=0",
        "--",
        "entrypoint.sh",
        "prod",
    ]
    assert not (mount / "img2pdf-load-1.scope").exists(), "systemd makes the group, not us"


def test_systemd_machine_gets_its_limits_as_scope_properties(tmp_path):
    mount = ubuntu_2404(tmp_path) / "sys/fs/cgroup"
    limits = cgroups.Limits(cpu_quota_us=None, memory_max=GIB)
    group = cgroups.make_group("vm-1", limits, cgroups.detect(tmp_path), mount)
    argv = group.nspawn(["systemd-nspawn", "-D", "/r", "--boot", "--machine=img2pdf-deploy"])
    assert argv == [
        "systemd-nspawn",
        "-D",
        "/r",
        "--boot",
        "--machine=img2pdf-deploy",
        "--property=CPUAccounting=yes",
        "--property=MemoryAccounting=yes",
        f"--property=MemoryMax={GIB}",
        "--property=MemorySwapMax=0",
    ]
    # Registered (no --register=no --keep-unit): the limits live on the machine's scope.
    assert group.unit == "machine-img2pdf\\x2ddeploy.scope"


def test_v1_machine_joins_the_group_before_nspawn_and_stays_unregistered(tmp_path):
    root = hybrid(tmp_path)
    mount = root / "sys/fs/cgroup"
    limits = cgroups.Limits(cpu_quota_us=None, memory_max=GIB)
    group = cgroups.V1Group("vm-1", limits, mount, proc_self=root / "proc/self")
    argv = group.nspawn(["systemd-nspawn", "--boot", "--machine=m"])
    assert argv[:2] == ["/bin/sh", "-c"] and "exec" in argv[2]
    assert argv[-5:] == ["systemd-nspawn", "--boot", "--machine=m", "--register=no", "--keep-unit"]
    assert not (mount / "cpu/vm-1/cpu.cfs_quota_us").exists(), "no CPU cap was asked for"
