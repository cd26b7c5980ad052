"""OS Login for deploys from a laptop or CI (ansible/oslogin.yml, imported by
deploy.yml and so site.yml; scripts/deploy.sh runs it too), against the fake:
the account comes from Application Default Credentials, a throwaway key is
registered with a short TTL, and SSH to the VMs uses that account's POSIX user."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from tests.support.ansible_run import run_playbook

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "img2pdf-test"

SHOW = """---
- name: OS Login
  ansible.builtin.import_playbook: {oslogin}

- name: What SSH to the VMs would use
  hosts: img2pdf_app
  gather_facts: false
  tasks:
    - name: Show the login
      ansible.builtin.copy:
        content: >-
          {{{{ {{'user': ansible_user | default(''),
                'key': ansible_ssh_private_key_file | default('')}} | to_json }}}}
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0644"
      delegate_to: localhost
"""

INVENTORY = """all:
  children:
    img2pdf_app:
      hosts:
        img2pdf-vm:
          gcp_instance_zone: us-central1-b
        local-box: {}
"""


@pytest.fixture
def adc_env(fake_gcp, tmp_path):
    fake_gcp.reset()
    fake_gcp.enable_all_services()
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "c.apps.googleusercontent.com",
                "client_secret": "s",
                "refresh_token": "r",
            }
        )
    )
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = dict(fake_gcp.env, GOOGLE_APPLICATION_CREDENTIALS=str(adc), XDG_RUNTIME_DIR=str(runtime))
    env.pop("ANSIBLE_REMOTE_USER", None)
    return env


def test_the_adc_account_gets_a_short_lived_key_and_its_posix_user(fake_gcp, adc_env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    play = tmp_path / "show.yml"
    play.write_text(SHOW.format(oslogin=ROOT / "ansible" / "oslogin.yml", out=out))
    inv = tmp_path / "inventory.yml"
    inv.write_text(INVENTORY)
    started = time.time()
    result = run_playbook(str(play), "-i", str(inv), "-e", f"gcp_project={PROJECT}", env=adc_env)
    assert result.rc == 0
    [imp] = [r for r in fake_gcp.requests_log() if r["id"] == "oslogin.users.importSshPublicKey"]
    assert imp["path"] == "/v1/users/owner@example.com:importSshPublicKey"
    assert imp["query"] == {"projectId": PROJECT}
    expiry = int(imp["body"]["expirationTimeUsec"]) / 1e6
    assert started + 3600 - 5 <= expiry <= time.time() + 3600 + 5
    login = json.loads((out / "img2pdf-vm.json").read_text())
    assert login["user"] == "owner_example_com"
    key = Path(login["key"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Path(f"{key}.pub").read_text().split()[:2] == imp["body"]["key"].split()[:2]
    other = json.loads((out / "local-box.json").read_text())
    assert other == {"user": "", "key": ""}, "hosts that are not GCP VMs keep their login"


def test_no_gcp_vm_means_no_key(fake_gcp, adc_env, tmp_path):
    inv = tmp_path / "inventory.yml"
    inv.write_text("all:\n  children:\n    img2pdf_app:\n      hosts:\n        box: {}\n")
    result = run_playbook(
        str(ROOT / "ansible" / "oslogin.yml"), "-i", str(inv), "-e", f"gcp_project={PROJECT}",
        env=adc_env,
    )  # fmt: skip
    assert result.rc == 0 and result.changed_total == 0
    assert not [r for r in fake_gcp.requests_log() if r["id"]]


def test_env_file_for_deploy_sh(fake_gcp, adc_env, tmp_path):
    env_file = tmp_path / "oslogin.env"
    key = tmp_path / "id_deploy"
    result = run_playbook(
        str(ROOT / "ansible" / "oslogin.yml"), "-i", "localhost,",
        "-e", f"gcp_project={PROJECT}", "-e", f"oslogin_env_file={env_file}",
        "-e", f"oslogin_key_file={key}",
        env=adc_env,
    )  # fmt: skip
    assert result.rc == 0
    assert env_file.read_text().splitlines() == [
        "ANSIBLE_REMOTE_USER=owner_example_com",
        f"ANSIBLE_PRIVATE_KEY_FILE={key}",
    ]
    assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
