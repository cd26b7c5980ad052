"""The `filter` expression of Compute list calls."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..common import (
    Res,
)
from ..discovery import ApiError

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------- filters
_TERM = re.compile(r'\(?\s*([\w.]+)\s*(!=|=|:|\beq\b|\bne\b)\s*("[^"]*"|[^\s)]+)\s*\)?')


def apply_filter(items: list[Res], expr: str) -> list[Res]:
    expr = expr.strip()
    if not expr:
        return items
    terms = []
    rest = expr
    for m in _TERM.finditer(expr):
        terms.append((m.group(1), m.group(2), m.group(3).strip('"')))
        rest = rest.replace(m.group(0), "", 1)
    rest = re.sub(r"\bAND\b", "", rest).strip()
    if not terms or rest:
        raise ApiError(
            400, f"Invalid value for field 'filter': '{expr}'. Invalid list filter expression."
        )

    def value(item: Res, path: str) -> Any:
        cur: Any = item
        for part in path.split("."):
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur

    def ok(item: Res) -> bool:
        for field, op, want in terms:
            v = value(item, field)
            if op == ":":
                hit = v is not None and (
                    want == "*" or want in (v if isinstance(v, list) else str(v))
                )
            elif op in ("eq", "ne"):
                hit = v is not None and re.fullmatch(want, str(v)) is not None
                hit = hit if op == "eq" else not hit
            else:
                sv = str(v).lower() if isinstance(v, bool) else str(v) if v is not None else None
                hit = (
                    sv is not None
                    and re.fullmatch(re.escape(want).replace(r"\*", ".*"), sv) is not None
                )
                hit = hit if op == "=" else not hit
            if not hit:
                return False
        return True

    return [i for i in items if ok(i)]
