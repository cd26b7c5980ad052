"""Which handler answers which discovery method.

discovery.py turns a request into a discovery `Method` (its id, e.g.
compute.networks.insert) and checks its query and body; this module maps that
id to the function that does what GCP does. API modules register with

    @handles("storage.buckets.get")               # one or more method ids
    def bucket_get(state, req): ...

and Compute's generic CRUD registers once per verb name for a whole API with
`@generic("compute", "insert")`: a method without its own handler falls back to
the generic one of its verb. A method with neither answers 501 and is listed in
`unknown_routes()`.

The API modules import this module, never state.py (only for type checking);
state.py imports them, so their handlers are registered before the first request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .discovery import Method

if TYPE_CHECKING:
    from .state import FakeGcpState


class Request:
    """One routed request: its discovery method, path variables, query and body."""

    def __init__(self, method: Method, vars: dict[str, str], path: str, query: dict[str, str]):
        self.method = method
        self.vars = vars
        self.path = path  # request path, no leading slash, no query
        self.query = query
        self.multi: dict[str, list[str]] = {}
        self.body: Any = None

    @property
    def prefix(self) -> str:
        """Path up to the end of its last variable (the resource a custom verb acts on)."""
        m = self.method.regex.match(self.path)
        assert m is not None
        return self.path[: m.end(len(m.groups()))] if m.groups() else self.path


F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[["FakeGcpState", Request], tuple[int, Any]]
HANDLERS: dict[str, Handler] = {}
# api -> verb name -> handler for that API's methods without their own handler
GENERIC: dict[str, dict[str, Handler]] = {}


def register(table: dict[str, F], *keys: str) -> Callable[[F], F]:
    """A decorator that files the function in `table` under each of `keys`."""

    def deco(fn: F) -> F:
        for key in keys:
            table[key] = fn
        return fn

    return deco


def handles(*method_ids: str) -> Callable[[Handler], Handler]:
    return register(HANDLERS, *method_ids)


def generic(api: str, *names: str) -> Callable[[Handler], Handler]:
    return register(GENERIC.setdefault(api, {}), *names)


def handler_for(method: Method) -> Handler | None:
    """The method's own handler, else its API's generic one for the verb, else None."""
    return HANDLERS.get(method.id) or GENERIC.get(method.api, {}).get(method.name)
