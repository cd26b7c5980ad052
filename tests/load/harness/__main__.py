"""`python -m tests.load.harness` from the repository root: the same as scripts/loadtest.py."""

import sys

from tests.load.harness.cli import main

sys.exit(main())
