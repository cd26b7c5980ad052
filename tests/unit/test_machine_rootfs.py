"""How the deploy test machine's Debian root is fetched (tests/support/machine.py), against
fixture apt sources of the hosts the suites run on: Debian 12 (deb822 and one-line) and
GitHub's ubuntu-24.04 runner, whose first `URIs:` is an Ubuntu mirror list."""

from __future__ import annotations

from pathlib import Path

from tests.support import machine

DEBIAN_DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://ftp.de.debian.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

UBUNTU_2404_DEB822 = """\
Types: deb
URIs: mirror+file:/etc/apt/apt-mirrors.txt
Suites: noble noble-updates noble-backports
Components: main universe restricted multiverse

Types: deb
URIs: http://security.ubuntu.com/ubuntu
Suites: noble-security
Components: main universe restricted multiverse
"""


def sources(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "etc/apt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_debian_deb822_uses_the_stanza_for_bookworm_not_the_first_uri(tmp_path):
    root = sources(tmp_path, {"sources.list.d/debian.sources": DEBIAN_DEB822})
    assert machine.host_mirror(root) == "http://ftp.de.debian.org/debian"


def test_debian_one_line_format(tmp_path):
    text = (
        "# deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example.org/debian bookworm main contrib\n"
    )
    root = sources(tmp_path, {"sources.list": text})
    assert machine.host_mirror(root) == "http://mirror.example.org/debian"


def test_ubuntu_runner_with_a_mirror_list_falls_back_to_debian(tmp_path):
    root = sources(
        tmp_path,
        {
            "sources.list": "# Ubuntu sources have moved to ubuntu.sources\n",
            "sources.list.d/ubuntu.sources": UBUNTU_2404_DEB822,
            "sources.list.d/microsoft-prod.list": (
                "deb [arch=amd64] https://packages.microsoft.com/ubuntu/24.04/prod noble main\n"
            ),
        },
    )
    assert machine.host_mirror(root) == machine.DEFAULT_MIRROR


def test_a_bookworm_stanza_through_a_mirror_list_is_not_usable_by_debootstrap(tmp_path):
    text = (
        "Types: deb\nURIs: mirror+file:/etc/apt/mirrors.txt\nSuites: bookworm\nComponents: main\n"
    )
    root = sources(tmp_path, {"sources.list.d/debian.sources": text})
    assert machine.host_mirror(root) == machine.DEFAULT_MIRROR


def test_a_disabled_stanza_does_not_count(tmp_path):
    text = "Enabled: no\nTypes: deb\nURIs: http://old.example.org/debian\nSuites: bookworm\n"
    root = sources(tmp_path, {"sources.list.d/old.sources": text})
    assert machine.host_mirror(root) == machine.DEFAULT_MIRROR


def test_no_sources_at_all(tmp_path):
    assert machine.host_mirror(tmp_path) == machine.DEFAULT_MIRROR


def test_debootstrap_verifies_against_debians_keyring():
    argv = machine.debootstrap_command(Path("/t/root"), "http://deb.debian.org/debian")
    assert argv[0] == "debootstrap"
    assert "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg" in argv
    assert argv[-3:] == ["bookworm", "/t/root", "http://deb.debian.org/debian"]
    assert f"--include={','.join(machine.BASE_PACKAGES)}" in argv


def test_the_cache_key_changes_with_what_changes_the_root():
    base = machine.rootfs_key(mirror="http://deb.debian.org/debian")
    assert base == machine.rootfs_key(mirror="http://deb.debian.org/debian")
    # debootstrap writes the mirror into the root's own sources.list.
    assert base != machine.rootfs_key(mirror="http://ftp.de.debian.org/debian")
    assert base != machine.rootfs_key(
        (*machine.BASE_PACKAGES, "less"), mirror="http://deb.debian.org/debian"
    )
    assert base != machine.rootfs_key(suite="trixie", mirror="http://deb.debian.org/debian")
    # The package order does not matter.
    assert base == machine.rootfs_key(
        tuple(reversed(machine.BASE_PACKAGES)), mirror="http://deb.debian.org/debian"
    )
