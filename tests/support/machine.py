"""A real Debian 12 systemd machine for deploy tests: debootstrap + systemd-nspawn.

The machine is as bare as a fresh GCE Debian image (systemd, sshd, python3, sudo), shares
the host network, and is reached by SSH on a free loopback port as a non-root sudo user, the
way OS Login users reach the real VM. The root filesystem is built once with debootstrap and
cached as a tarball under /var/cache/img2pdf-tests/, keyed by what it was built from; a cold
cache costs about a minute more.

    with DebianMachine("img2pdf-t1") as vm:     # boots, waits for systemd, stops on exit
        vm.run("systemctl is-system-running")    # a command inside, as root
        vm.ssh_host, vm.ssh_port, vm.ssh_user, vm.ssh_key
        vm.write_inventory(path, group="img2pdf_app", host_vars={...})

Pitfalls handled here (see DESIGN §3): on a host whose PID 1 is not systemd, nspawn needs
`--register=no --keep-unit`; where systemd is PID 1 (the CI runner) it registers the machine
in its own scope. SIGKILL on nspawn orphans the machine, so `stop()` sends SIGTERM and
waits. cgroup limits inside the machine are not enforced on a cgroup v1/hybrid host, so a
memory cap is put on the whole machine from the host (`memory_limit=`, no swap) with the
host's backend (tests/support/cgroups.py): `--property=MemoryMax=… --property=MemorySwapMax=0`
on the machine's scope under systemd, else nspawn is started inside a fresh v2 or v1 memory
group, so the machine's every process is charged to it.

Run `python -m tests.support.machine warm` to build the cached root filesystem ahead of time.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support import cgroups
from tests.support.servers import free_port

SUITE = "bookworm"
#: What a fresh GCE Debian 12 image has that matters here. Everything else the role installs.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "iproute2",
    "procps",
)
CACHE_DIR = Path(os.environ.get("IMG2PDF_TEST_CACHE", "/var/cache/img2pdf-tests"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: Bump when the steps after debootstrap change what the tarball holds.
ROOTFS_RECIPE = "v2"
SSH_USER = "deployer"
PIP_CACHE_INSIDE = "/var/cache/host-pip"


class MachineError(RuntimeError):
    """The machine could not be built, booted or reached."""


def log(msg: str) -> None:
    print(f"[machine] {msg}", file=sys.stderr, flush=True)


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:  # a continuation line
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields:
            yield fields


def _usable(uri: str) -> bool:
    """debootstrap fetches over http(s) only: not mirror+file:, file:, cdrom:."""
    return uri.startswith(("http://", "https://"))


def host_mirror(root: Path = Path("/"), suite: str = SUITE) -> str:
    """A Debian mirror the host's apt already uses for `suite`, else deb.debian.org.

    Only a source whose suites include `suite` counts (deb822 `Suites:` or a one-line
    `deb URI SUITE …`): on an Ubuntu runner the first `URIs:` is an Ubuntu mirror list
    (`mirror+file:/etc/apt/apt-mirrors.txt`), which has no Debian in it.
    """
    apt = root / "etc/apt"
    sources = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in _deb822_stanzas(text):
                if stanza.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in stanza.get("types", "").split():
                    continue
                if suite not in stanza.get("suites", "").split():
                    continue
                for uri in stanza.get("uris", "").split():
                    if _usable(uri):
                        return uri.rstrip("/")
        elif path.suffix == ".list" or path.name == "sources.list":
            one_line = rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{re.escape(suite)}\s"
            for m in re.finditer(one_line, text + "\n", re.M):
                if _usable(m.group(1)):
                    return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def debootstrap_command(
    target: Path, mirror: str, packages: tuple[str, ...] = BASE_PACKAGES, suite: str = SUITE
) -> list[str]:
    """debootstrap, verifying what it fetches against Debian's own keys on any host
    (Ubuntu's debootstrap does not know Debian's keyring by default)."""
    return [
        "debootstrap",
        "--variant=minbase",
        f"--keyring={DEBIAN_KEYRING}",
        f"--include={','.join(packages)}",
        suite,
        str(target),
        mirror,
    ]


def rootfs_key(
    packages: tuple[str, ...] = BASE_PACKAGES, suite: str = SUITE, mirror: str | None = None
) -> str:
    """Cache key: everything the tarball is built from. The package list, the suite, the
    recipe (variant and the steps after debootstrap) and the mirror, which debootstrap
    writes into the root's own sources.list."""
    mirror = host_mirror(suite=suite) if mirror is None else mirror
    recipe = f"{ROOTFS_RECIPE} minbase {suite} {','.join(sorted(packages))} {mirror}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def rootfs_tarball_name(packages: tuple[str, ...] = BASE_PACKAGES, suite: str = SUITE) -> str:
    return f"debian-{suite}-{rootfs_key(packages, suite)}.tar"


def ensure_rootfs_tarball(
    packages: tuple[str, ...] = BASE_PACKAGES, suite: str = SUITE, cache_dir: Path = CACHE_DIR
) -> Path:
    """Return the cached root tarball, building it with debootstrap when missing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    mirror = host_mirror(suite=suite)
    tarball = cache_dir / f"debian-{suite}-{rootfs_key(packages, suite, mirror)}.tar"
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs never build the same tarball at once
        if tarball.exists():
            return tarball
        if not shutil.which("debootstrap"):
            raise MachineError("debootstrap is not installed (apt-get install debootstrap)")
        if not Path(DEBIAN_KEYRING).exists():
            raise MachineError(f"no {DEBIAN_KEYRING} (apt-get install debian-archive-keyring)")
        build = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir))
        try:
            log(f"debootstrap {suite} from {mirror} (cold cache: about a minute)")
            started = time.monotonic()
            subprocess.run(
                debootstrap_command(build / "root", mirror, packages, suite),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            root = build / "root"
            # Per-machine identity is made at boot; ship no host keys or machine id.
            (root / "etc/machine-id").write_text("")
            for key in (root / "etc/ssh").glob("ssh_host_*"):
                key.unlink()
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
            partial = tarball.with_suffix(".partial")
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
                check=True,
            )
            partial.rename(tarball)
            log(f"cached {tarball} in {time.monotonic() - started:.0f}s")
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return tarball


def machine_pip_conf(environ: Mapping[str, str], host_conf: Path = Path("/etc/pip.conf")) -> str:
    """The host's pip.conf with its PIP_FOO_BAR=x environment folded in as `foo-bar = x`.

    Inside the machine pip runs under ansible's environment, not ours, so what the host says
    through PIP_* variables has to live in the machine's /etc/pip.conf.
    """
    config = configparser.ConfigParser(interpolation=None)
    if host_conf.exists():
        config.read(host_conf)
    for name, value in sorted(environ.items()):
        if name.startswith("PIP_") and value:
            if not config.has_section("global"):
                config.add_section("global")
            config.set("global", name[4:].lower().replace("_", "-"), value)
    if not config.sections():
        return ""
    buffer = io.StringIO()
    config.write(buffer)
    return buffer.getvalue()


class DebianMachine:
    """One booted Debian 12 systemd machine. Use as a context manager or boot()/stop()."""

    def __init__(
        self,
        name: str = "img2pdf-testvm",
        *,
        workdir: Path | None = None,
        memory_limit: int | None = None,
        packages: tuple[str, ...] = BASE_PACKAGES,
        boot_timeout: float = 180.0,
        pip_cache_dir: Path | None = CACHE_DIR / "pip",
    ) -> None:
        self.name = name
        self.packages = packages
        self.memory_limit = memory_limit
        self.boot_timeout = boot_timeout
        # Host folder shared as pip's cache inside (test machines only): later releases and
        # later runs install the pinned wheels without downloading them again.
        self.pip_cache_dir = pip_cache_dir
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{name}-", dir="/var/tmp"))
        self.root = self.workdir / "root"
        self.ssh_host = "127.0.0.1"
        self.ssh_port = free_port()
        self.ssh_user = SSH_USER
        self.ssh_key = self.workdir / "id_ed25519"
        self.console_log = self.workdir / "console.log"
        self.host = cgroups.detect()
        self.cgroup: cgroups.Group | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> DebianMachine:
        try:
            self.boot()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def boot(self) -> None:
        tarball = ensure_rootfs_tarball(self.packages)
        started = time.monotonic()
        self.root.mkdir(parents=True)
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(self.root), "-xf", str(tarball)],
            check=True,
        )
        self._configure_root()
        self.cgroup = self._make_cgroup()
        self._start_nspawn()
        if isinstance(self.cgroup, cgroups.SystemdGroup):
            self.cgroup.attach(timeout=self.boot_timeout)  # the machine's scope, once registered
        self._wait_until_up()
        log(f"{self.name} up in {time.monotonic() - started:.1f}s (ssh port {self.ssh_port})")

    def stop(self, timeout: float = 90.0) -> None:
        """SIGTERM to the nspawn we started (a clean shutdown inside), wait, then clean up."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Never SIGKILL nspawn (it orphans the machine): ask once more and wait again.
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log(f"{self.name}: nspawn pid {proc.pid} did not stop; left running")
                    return
        self._remove_cgroup()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- using it --------------------------------------------------------------------------

    def ssh_command(self, *, user: str | None = None) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.ssh_port),
            *self.ssh_options(),
            f"{user or self.ssh_user}@{self.ssh_host}",
        ]

    def ssh_options(self) -> list[str]:
        return [
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "IdentitiesOnly=yes",
        ]

    def run(
        self, command: str, *, check: bool = True, timeout: float = 120.0, as_root: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the machine (as root through sudo by default)."""
        remote = f"sudo -n sh -c {shlex.quote(command)}" if as_root else command
        result = subprocess.run(
            [*self.ssh_command(), remote],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise MachineError(
                f"in {self.name}: {command!r} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def write_inventory(
        self,
        path: Path,
        *,
        group: str = "img2pdf_app",
        host_vars: Mapping[str, object] | None = None,
    ) -> Path:
        """A YAML inventory with this machine as the only host of `group`."""
        import json  # YAML is a superset of JSON: no YAML library needed

        host = {
            "ansible_host": self.ssh_host,
            "ansible_port": self.ssh_port,
            "ansible_user": self.ssh_user,
            "ansible_ssh_private_key_file": str(self.ssh_key),
            "ansible_ssh_common_args": " ".join(self.ssh_options()),
            "ansible_python_interpreter": "/usr/bin/python3",
            **(host_vars or {}),
        }
        inventory = {group: {"hosts": {self.name: host}}}
        path.write_text(json.dumps(inventory, indent=2) + "\n")
        return path

    def main_pids(self) -> list[int]:
        """nspawn's PID and every process below it (the machine's processes, host view)."""
        if not self.running or self.proc is None:
            return []
        pids = [self.proc.pid]
        children = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        i = 0
        while i < len(pids):
            pids.extend(children.get(pids[i], []))
            i += 1
        return pids

    def _group(self) -> cgroups.Group:
        if self.cgroup is None:
            raise MachineError("machine was booted without a memory limit")
        return self.cgroup

    def memory_limits(self) -> dict[str, int | None]:
        """The machine's limits as the kernel holds them (memory_max, swap_max, …)."""
        return self._group().read_back()

    def memory_peak(self) -> int:
        """The machine's memory high-water mark since it booted (page cache included)."""
        return int(self._group().stats()["memory_peak"])

    def oom_kills(self) -> int:
        """Kernel OOM kills charged to the machine (v1 memory.oom_control, v2 memory.events)."""
        return int(self._group().stats()["oom_kill"])

    # -- internals -------------------------------------------------------------------------

    def _configure_root(self) -> None:
        root = self.root
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key)], check=True
        )
        (root / "etc/hostname").write_text(self.name + "\n")
        with open(root / "etc/hosts", "a") as hosts:
            hosts.write(f"127.0.1.1 {self.name}\n")
        # sshd on a free loopback port (the host network is shared); host keys made at boot.
        (root / "etc/ssh/sshd_config.d/test.conf").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nPasswordAuthentication no\nUseDNS no\n"
        )
        _chroot(root, "ssh-keygen -A")  # this machine's own host keys
        # A non-root user with passwordless sudo, like an OS Login admin.
        _chroot(root, f"useradd --create-home --shell /bin/bash {SSH_USER}")
        sshdir = root / "home" / SSH_USER / ".ssh"
        sshdir.mkdir(mode=0o700)
        (sshdir / "authorized_keys").write_text(
            self.ssh_key.with_suffix(".pub").read_text(), encoding="utf-8"
        )
        _chroot(root, f"chown -R {SSH_USER}: /home/{SSH_USER}/.ssh")
        sudoers = root / "etc/sudoers.d/deployer"
        sudoers.write_text(f"{SSH_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)
        # Test machine only (never in the role): the host's CA certificates and pip settings,
        # so apt and pip inside reach the registries through this box's TLS interception.
        extra = Path("/usr/local/share/ca-certificates")
        if extra.is_dir():
            for crt in extra.glob("*.crt"):
                shutil.copy2(crt, root / "usr/local/share/ca-certificates" / crt.name)
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists():
            shutil.copy2(bundle, root / "etc/ssl/certs/ca-certificates.crt")
        extra_pip = {"PIP_CACHE_DIR": PIP_CACHE_INSIDE} if self.pip_cache_dir else {}
        pip_conf = machine_pip_conf({**os.environ, **extra_pip})
        if pip_conf:
            (root / "etc/pip.conf").write_text(pip_conf)
        if Path("/etc/xdg/pip").is_dir():
            shutil.copytree("/etc/xdg/pip", root / "etc/xdg/pip", dirs_exist_ok=True)
        # apt inside: no recommends, like GCE's unattended setup, and quick.
        (root / "etc/apt/apt.conf.d/99test").write_text(
            'APT::Install-Recommends "false";\nAcquire::Retries "3";\n'
        )

    def _bind_mounts(self) -> list[str]:
        """find-links folders of the host's pip, read-only at the same path inside."""
        binds = []
        if self.pip_cache_dir is not None:
            self.pip_cache_dir.mkdir(parents=True, exist_ok=True)
            binds.append(f"--bind={self.pip_cache_dir}:{PIP_CACHE_INSIDE}")
        for value in os.environ.get("PIP_FIND_LINKS", "").split():
            if value.startswith("/") and Path(value).is_dir():
                binds.append(f"--bind-ro={value}")
        return binds

    def _make_cgroup(self) -> cgroups.Group | None:
        """A group holding the whole machine (only with a limit), on the host's backend."""
        if self.memory_limit is None:
            return None
        limits = cgroups.Limits(cpu_quota_us=None, memory_max=self.memory_limit)
        try:
            return cgroups.make_group(f"{self.name}-{os.getpid()}", limits, self.host)
        except (RuntimeError, OSError) as exc:
            raise MachineError(f"cannot cap the machine's memory: {exc}") from exc

    def _remove_cgroup(self) -> None:
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None:
            with contextlib.suppress(OSError):  # all are empty once nspawn exited
                cgroup.remove()

    def _start_nspawn(self) -> None:
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "-D",
            str(self.root),
            "--boot",
            f"--machine={self.name}",
            "--resolv-conf=copy-host",
            "--timezone=off",
            *self._bind_mounts(),
        ]
        if self.cgroup is not None:
            # systemd host: the machine's own scope carries the limits (--property=);
            # otherwise join the group first, then become nspawn, so every process of the
            # machine is born inside it and the cap holds from PID 1 on.
            command = self.cgroup.nspawn(nspawn)
        elif self.host.systemd:
            command = nspawn
        else:
            command = [*nspawn, "--register=no", "--keep-unit"]
        log("starting: " + shlex.join(command))
        console = open(self.console_log, "wb")  # noqa: SIM115 - lives as long as the machine
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
        )

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.running:
                raise MachineError(f"nspawn exited early:\n{self._console_tail()}")
            try:
                result = self.run("systemctl is-system-running", check=False, timeout=15)
            except subprocess.TimeoutExpired:
                time.sleep(1)
                continue
            last = result.stdout.strip() or result.stderr.strip()
            if last in {"running", "degraded"}:
                if last == "degraded":
                    failed = self.run("systemctl --failed --no-legend", check=False).stdout
                    log(f"{self.name} is degraded (failed units: {failed.strip()})")
                return
            time.sleep(1)
        raise MachineError(
            f"{self.name} not up after {self.boot_timeout}s (last: {last!r})\n"
            + self._console_tail()
        )

    def _console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _chroot(root: Path, command: str) -> None:
    subprocess.run(["chroot", str(root), "sh", "-c", command], check=True)


@contextlib.contextmanager
def debian_machine(name: str = "img2pdf-testvm", **kwargs: object) -> Iterator[DebianMachine]:
    """`with debian_machine() as vm:` — the same as `with DebianMachine(...) as vm:`."""
    with DebianMachine(name, **kwargs) as vm:  # type: ignore[arg-type]
        yield vm


if __name__ == "__main__":
    if sys.argv[1:] == ["warm"]:
        print(ensure_rootfs_tarball())
    elif sys.argv[1:] == ["key"]:  # the tarball's name: CI's cache key
        print(rootfs_tarball_name())
    elif sys.argv[1:2] == ["mirror"]:  # scripts/lib.sh: env_debian_mirror [FSROOT]
        print(host_mirror(Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/")))
    elif sys.argv[1:] == ["shell"]:
        with DebianMachine("img2pdf-shell") as machine:
            print(shlex.join(machine.ssh_command()))
            with contextlib.suppress(KeyboardInterrupt):
                subprocess.run(machine.ssh_command(), check=False)
    else:
        sys.exit("usage: python -m tests.support.machine warm|key|mirror [FSROOT]|shell")
