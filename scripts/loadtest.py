#!/usr/bin/env python3
"""Load test of one e2-micro: the real service under the VM's CPU and memory limits.

    .venv/bin/python scripts/loadtest.py --mode short            # CI, under 2 minutes
    .venv/bin/python scripts/loadtest.py --mode full --plots docs/img

The harness is the package tests/load/harness (one module per part: corpus, origin,
limits, service, load, plans, report, cli; see docs/testing.md). This entry only
puts the repository root on the import path, as `python -m tests.load.harness`
run from the root does.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.load.harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
