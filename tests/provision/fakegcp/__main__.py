"""Run the fake GCP by hand: `python -m tests.provision.fakegcp` from the repo root.

Prints the environment to export so ansible-playbook, curl or gcloud reach it,
then serves until interrupted. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .proxy import FakeGcpServer


def main() -> None:
    server = FakeGcpServer(Path(tempfile.mkdtemp(prefix="fake-gcp-"))).start()
    for name, value in server.env_overrides().items():
        print(f"export {name}={value!r}" if value else f"export {name}=")
    print(f"# project {server.state.project} (number {server.state.project_number}); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
