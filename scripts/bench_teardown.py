"""How fast teardown empties a bucket: the gcp_bucket_empty module against the
local fake GCP (tests/provision/fakegcp), one worker against the default 16.

    .venv/bin/python scripts/bench_teardown.py [objects]     # default 3000

Prints seconds and objects/s for each, and the same-run ratio. Against real
Cloud Storage each DELETE takes tens of milliseconds more than against the
fake, which makes the parallel pass matter more, not less.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.provision.fakegcp import FakeGcpServer, FakeGcpState  # noqa: E402

BUCKET = "bench-bkt"


def run_module(env: dict[str, str], workers: int) -> dict:
    venv = Path(os.environ.get("ANSIBLE_VENV", ROOT / ".venv-ansible"))
    args = f"bucket_url=https://storage.googleapis.com/storage/v1/b/{BUCKET} access_token=fake"
    out = subprocess.run(
        [str(venv / "bin" / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={venv / 'bin' / 'python'}",
         "-m", "gcp_bucket_empty", "-a", f"{args} workers={workers}", "-o"],
        env={**os.environ, **env, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.split("=>", 1)[1])


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = FakeGcpServer(Path(tempfile.mkdtemp(prefix="bench-gcp-")), FakeGcpState()).start()
    try:
        state = server.state
        results = {}
        for workers in (1, 16):
            with state.lock:
                state.store[f"storage/v1/b/{BUCKET}"] = {"name": BUCKET, "kind": "storage#bucket"}
                for i in range(count):
                    state.put_object(BUCKET, f"{i:08x}.pdf", b"%PDF")
            res = run_module(server.env_overrides(), workers)
            assert res["deleted"] == count, res
            results[workers] = res["seconds"]
            print(
                f"workers={workers:2d}: {count} objects, {res['pages']} pages, "
                f"{res['seconds']:.1f} s, {count / res['seconds']:.0f} objects/s"
            )
        print(f"ratio 1 worker / 16 workers: {results[1] / results[16]:.1f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
