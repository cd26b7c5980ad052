"""Routing and validation driven by Google's own discovery documents.

The documents ship inside google-api-python-client, so a field or enum that
does not exist in the real API fails here exactly as it would against GCP.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import googleapiclient

DOCS_DIR = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"

# host -> discovery documents served on it (name, version)
HOST_APIS: dict[str, list[str]] = {
    "compute.googleapis.com": ["compute.v1"],
    "www.googleapis.com": ["compute.v1", "storage.v1", "oauth2.v2"],
    "storage.googleapis.com": ["storage.v1"],
    "iam.googleapis.com": ["iam.v1"],
    "cloudresourcemanager.googleapis.com": ["cloudresourcemanager.v1", "cloudresourcemanager.v3"],
    "iamcredentials.googleapis.com": ["iamcredentials.v1"],
    "sts.googleapis.com": ["sts.v1"],
    "serviceusage.googleapis.com": ["serviceusage.v1"],
    "oslogin.googleapis.com": ["oslogin.v1"],
    "monitoring.googleapis.com": ["monitoring.v3", "monitoring.v1"],
    "oauth2.googleapis.com": [],
}
FAKED_HOSTS = frozenset(HOST_APIS)
# The Cloud Storage JSON API ignores query parameters it does not know (the
# google.cloud bucket module sends ?projection=full even on DELETE); the
# One Platform APIs (compute, iam, ...) answer 400 "Cannot bind query parameter".
LENIENT_QUERY_APIS = frozenset({"storage"})


class ApiError(Exception):
    """An error answered in GCP's JSON error shape."""

    STATUS: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ALREADY_EXISTS",
        412: "FAILED_PRECONDITION",
        500: "INTERNAL",
    }

    def __init__(self, code: int, message: str, reason: str = "invalid", status: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status or self.STATUS.get(code, "UNKNOWN")
        self.domain = "global"
        self.details: list[dict[str, Any]] = []

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
            "status": self.status,
        }
        if self.details:
            err["details"] = self.details
        return {"error": err}


def not_found(resource: str = "", message: str = "") -> ApiError:
    """GCP's 404 for a missing resource: Compute's "The resource 'projects/P/global/
    networks/N' was not found", or the API's own `message` (Storage, IAM, ...)."""
    return ApiError(404, message or f"The resource '{resource}' was not found", reason="notFound")


@dataclass
class Method:
    api: str  # short api name: compute, storage, iam, cloudresourcemanager, ...
    doc: str  # discovery doc name, e.g. compute.v1
    id: str  # e.g. compute.networks.insert
    http_method: str
    template: str  # full path template incl. service path, no leading slash
    regex: re.Pattern[str]
    var_names: list[str]
    literal_len: int
    spec: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.id.rsplit(".", 1)[-1]

    @property
    def collection(self) -> str:
        return self.id.split(".")[-2]


def _template_regex(template: str) -> tuple[re.Pattern[str], list[str], int]:
    names: list[str] = []
    out = []
    literal = 0
    pos = 0
    for m in re.finditer(r"\{(\+?)([^}]+)\}", template):
        lit = template[pos : m.start()]
        literal += len(lit)
        out.append(re.escape(lit))
        names.append(m.group(2))
        out.append("(.+?)" if m.group(1) else "([^/]+?)")
        pos = m.end()
    lit = template[pos:]
    literal += len(lit)
    out.append(re.escape(lit))
    return re.compile("^" + "".join(out) + "$"), names, literal


@cache
def load_doc(name: str) -> dict[str, Any]:
    return json.loads((DOCS_DIR / f"{name}.json").read_text())


def _walk_methods(resources: dict[str, Any]):
    for res in resources.values():
        yield from res.get("methods", {}).values()
        yield from _walk_methods(res.get("resources", {}))


@cache
def methods_for_host(host: str) -> list[Method]:
    out: list[Method] = []
    for doc_name in HOST_APIS.get(host, []):
        doc = load_doc(doc_name)
        api = doc["name"]
        for spec in _walk_methods(doc.get("resources", {})):
            tmpl = doc["servicePath"] + spec.get("flatPath", spec["path"])
            regex, names, literal = _template_regex(tmpl)
            out.append(
                Method(
                    api, doc_name, spec["id"], spec["httpMethod"], tmpl, regex, names, literal, spec
                )
            )
    out.sort(key=lambda m: -m.literal_len)
    return out


def match(host: str, http_method: str, path: str) -> tuple[Method, dict[str, str]] | None:
    """Find the discovery method for a request path (no leading slash)."""
    for m in methods_for_host(host):
        if m.http_method != http_method:
            continue
        mm = m.regex.match(path)
        if mm:
            return m, dict(zip(m.var_names, mm.groups(), strict=True))
    return None


# --------------------------------------------------------------------------- validation

_INT_RE = re.compile(r"^-?\d+$")


def validate_query(method: Method, query: dict[str, list[str]]) -> dict[str, str]:
    """Check query parameters against the method and the API's global parameters."""
    doc = load_doc(method.doc)
    params = method.spec.get("parameters", {})
    global_params = doc.get("parameters", {})
    out: dict[str, str] = {}
    for name, values in query.items():
        spec = params.get(name)
        if spec is None or spec.get("location") != "query":
            spec = global_params.get(name)
        if spec is None and method.api in LENIENT_QUERY_APIS:
            continue
        if spec is None:
            raise ApiError(
                400,
                f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query '
                "parameter. Field '" + name + "' could not be found in request message.",
            )
        value = values[-1]
        _check_scalar(spec, value, name, from_query=True)
        out[name] = value
    for name, spec in params.items():
        if spec.get("location") == "query" and spec.get("required") and name not in out:
            raise ApiError(400, f"Required parameter: {name}", reason="required")
    return out


def _check_scalar(spec: dict[str, Any], value: Any, where: str, from_query: bool = False) -> None:
    typ = spec.get("type")
    if typ == "boolean":
        # proto JSON accepts quoted booleans in bodies too
        ok = (isinstance(value, bool) and not from_query) or value in ("true", "false")
        if not ok:
            raise ApiError(
                400, f"Invalid value for field '{where}': '{value}'. Expected a boolean."
            )
    elif typ == "integer" or (typ == "string" and spec.get("format") in ("int64", "uint64")):
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, str) and _INT_RE.match(value))
        ):
            raise ApiError(
                400, f"Invalid value for field '{where}': '{value}'. Expected an integer."
            )
    elif typ == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ApiError(400, f"Invalid value for field '{where}': '{value}'. Expected a number.")
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                raise ApiError(
                    400, f"Invalid value for field '{where}': '{value}'. Expected a number."
                ) from None
    elif typ == "string" and not from_query and not isinstance(value, str):
        raise ApiError(
            400,
            f"Invalid value at '{where}' (TYPE_STRING), {json.dumps(value)}",
        )
    enum = spec.get("enum")
    if enum and value not in enum:
        raise ApiError(400, f"Invalid value at '{where}' (TYPE_ENUM), \"{value}\"")


def validate_body(
    method: Method, body: Any, ignored_fields: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Validate a request body against the method's request schema and coerce
    numbers to the types GCP answers with (int64 -> string, integral doubles -> int)."""
    req = method.spec.get("request")
    if req is None:
        if body not in (None, {}, b""):
            # GCP ignores a body on methods that take none, but it must still be JSON
            return {}
        return {}
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received. Expected an object.")
    schemas = load_doc(method.doc)["schemas"]
    root = req["$ref"]
    body = {k: v for k, v in body.items() if k not in ignored_fields}
    return _validate(schemas, {"$ref": root}, body, _lower_first(root))


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _validate(schemas: dict[str, Any], spec: dict[str, Any], value: Any, where: str) -> Any:
    if "$ref" in spec:
        spec = schemas[spec["$ref"]]
    typ = spec.get("type")
    if value is None:
        return None
    if typ == "object" or "properties" in spec:
        if not isinstance(value, dict):
            raise ApiError(
                400,
                f"Invalid JSON payload received. Expected an object at '{where}', "
                f"got {json.dumps(value)[:80]}.",
            )
        props = spec.get("properties")
        addl = spec.get("additionalProperties")
        out = {}
        for k, v in value.items():
            if props is not None and k in props:
                out[k] = _validate(schemas, props[k], v, f"{where}.{k}")
            elif addl is not None:
                out[k] = _validate(schemas, addl, v, f"{where}.{k}")
            elif props is None and addl is None:
                out[k] = v  # free-form object (e.g. "any")
            else:
                raise ApiError(
                    400,
                    f"Invalid JSON payload received. Unknown name \"{k}\" at '{where}': "
                    "Cannot find field.",
                )
        return out
    if typ == "array":
        if not isinstance(value, list):
            raise ApiError(
                400,
                f"Invalid JSON payload received. Expected a list at '{where}', "
                f"got {json.dumps(value)[:80]}.",
            )
        return [
            _validate(schemas, spec.get("items", {}), v, f"{where}[{i}]")
            for i, v in enumerate(value)
        ]
    if typ == "any" or typ is None:
        return value
    _check_scalar(spec, value, where)
    fmt = spec.get("format")
    if typ == "string" and fmt in ("int64", "uint64"):
        return str(value)
    if typ == "integer":
        return int(value)
    if typ == "number":
        f = float(value)
        return int(f) if f.is_integer() else f
    if typ == "boolean" and isinstance(value, str):
        return value == "true"
    return value


def request_schema_name(method: Method) -> str | None:
    req = method.spec.get("request")
    return req["$ref"] if req else None


def schema_kind(doc: str, schema: str) -> str | None:
    props = load_doc(doc)["schemas"].get(schema, {}).get("properties", {})
    return props.get("kind", {}).get("default")
