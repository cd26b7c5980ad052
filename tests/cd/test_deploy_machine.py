"""scripts/deploy.sh against a real Debian 12 systemd machine (tests/support/machine.py).

Only the configuration differs from CI: DEPLOY_TRANSPORT=ssh and a plain inventory
pointing at the machine on loopback instead of the gcp_compute inventory and IAP.
The machine shares the host network, so the smoke test reaches the service on
127.0.0.1 and the service fetches the smoke image from a loopback server.

The history deployed is a scratch repository made from this checkout: commit
"good" is the code as it is; commit "bad" adds a middleware that breaks
/image_to_pdf while /ping stays healthy, so the app role's own health check
passes and only the smoke test can catch it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.machine import DebianMachine
from tests.support.servers import free_port

from .conftest import ROOT, controller_venv
from .helpers import copy_tree, git, linear_history, png_bytes, send, serve

RELEASE_PATHS = ("app", "config", "scripts", "systemd", "ansible", "ansible.cfg", "pyproject.toml")

BREAK_CONVERSION = """

# --- deliberately broken release (tests/cd/test_deploy_machine.py) ---
_healthy_create_app = create_app


def create_app(settings=None):  # type: ignore[no-redef]
    from starlette.responses import JSONResponse

    app = _healthy_create_app(settings)

    @app.middleware("http")
    async def _broken(request, call_next):
        if request.url.path == "/image_to_pdf":
            return JSONResponse({"detail": "broken", "code": "internal_error"}, status_code=500)
        return await call_next(request)

    return app
"""


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, str, str]:
    """A scratch repo with this checkout's release and deploy paths: commit good, then
    commit bad (a copy, not a clone: how this checkout was cloned does not matter)."""
    repo = copy_tree(ROOT, tmp_path_factory.mktemp("repo"), RELEASE_PATHS)
    (good,) = linear_history(repo, 1)
    with (repo / "app" / "main.py").open("a") as f:
        f.write(BREAK_CONVERSION)
    git(repo, "commit", "-qam", "bad")
    bad = git(repo, "rev-parse", "HEAD")
    return repo, good, bad


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    with DebianMachine("img2pdf-cd", workdir=tmp_path_factory.mktemp("vm")) as vm:
        yield vm


@pytest.fixture(scope="module")
def image_url():
    png = png_bytes((120, 80))
    with serve({("GET", "/smoke.png"): lambda h: send(h, 200, png, "image/png")}) as base:
        yield f"{base}/smoke.png"


@pytest.fixture(scope="module")
def target(machine, tmp_path_factory):
    """The inventory (the only thing that differs from CI) and the service's URL."""
    port = free_port()
    inventory = machine.write_inventory(
        tmp_path_factory.mktemp("inv") / "hosts.yml",
        host_vars={
            "app_port": port,
            "app_public_base_url": f"http://127.0.0.1:{port}",
            "app_env_extra": {"ALLOW_PRIVATE_SOURCE_URLS": "1", "WEB_CONCURRENCY": "1"},
        },
    )
    return inventory, f"http://127.0.0.1:{port}/"


def deploy(repo: Path, release: str, inventory: Path, base_url: str, image_url: str, tmp: Path):
    summary = tmp / f"summary-{release[:7]}.md"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "SMOKE_", "DEPLOY_", "GCP_", "BASE_URL", "SENTRY_"))
    }
    env.update(
        {
            "PATH": os.environ["PATH"],
            "ANSIBLE_VENV": str(controller_venv()),
            "CI": "",
            "RELEASE": release,
            "DEPLOY_TRANSPORT": "ssh",
            "DEPLOY_INVENTORY": str(inventory),
            "BASE_URL": base_url,
            "SMOKE_SOURCE_URL": image_url,
            "SMOKE_WAIT": "60",
            "GITHUB_STEP_SUMMARY": str(summary),
        }
    )
    out = subprocess.run(
        ["bash", str(repo / "scripts" / "deploy.sh")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(out.stdout[-4000:], out.stderr[-6000:])
    return out, summary.read_text() if summary.exists() else ""


def live_release(machine: DebianMachine) -> str:
    return Path(machine.run("readlink -e /opt/img2pdf/current").stdout.strip()).name


def test_a_good_commit_goes_live(machine, history, target, image_url, tmp_path):
    repo, good, _ = history
    inventory, base_url = target
    out, summary = deploy(repo, good, inventory, base_url, image_url, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"release {good} replaces nothing" in out.stderr, "a fresh machine has no current"
    assert "smoke: OK" in out.stderr
    assert live_release(machine) == good
    assert "Deploy succeeded" in summary and good in summary


def test_a_commit_failing_the_smoke_test_is_rolled_back(
    machine, history, target, image_url, tmp_path
):
    repo, good, bad = history
    inventory, base_url = target
    out, summary = deploy(repo, bad, inventory, base_url, image_url, tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "POST /image_to_pdf answered HTTP 500" in out.stderr
    assert f"rolling back to {good}" in out.stderr
    assert live_release(machine) == good
    assert "Deploy rolled back" in summary
    # The previous release serves again, and says so.
    again = subprocess.run(
        [
            str(controller_venv() / "bin" / "python"),
            str(ROOT / "scripts" / "smoke_test.py"),
            base_url,
            "--source-url",
            image_url,
            "--expect-release",
            good,
            "--wait",
            "30",
        ],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
