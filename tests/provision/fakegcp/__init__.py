"""A faithful local fake of the GCP REST APIs the google.cloud collection calls.

See tests/provision/conftest.py for the pytest fixture and state.py for how
stored resources are keyed. Start it by hand with `python -m tests.provision.fakegcp`.
"""

from .discovery import FAKED_HOSTS, ApiError
from .proxy import FakeGcpServer
from .state import FakeGcpState

__all__ = ["FAKED_HOSTS", "ApiError", "FakeGcpServer", "FakeGcpState"]
