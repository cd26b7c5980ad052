"""app/errors.py: every client-visible failure in one module, its docstring a true map."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from app import errors
from app.errors import ApiError, BadUpload, Busy, ItemFailed, RateLimited, Retryable

CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if inspect.isclass(cls) and issubclass(cls, ApiError) and cls.__module__ == errors.__name__
}
TREE_ROW = re.compile(r"[├└]── (\w+)\s+(\d{3}) (\w+)")


def test_every_api_error_of_the_app_is_defined_in_errors():
    """No module but app/errors.py defines a client-visible failure."""
    for module in (
        "batch",
        "bodycap",
        "engine.convert",
        "fetch",
        "ratelimit",
        "sandbox",
        "uploads",
    ):
        importlib.import_module(f"app.{module}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    elsewhere = {c.__qualname__: c.__module__ for c in subclasses(ApiError)}
    assert {n: m for n, m in elsewhere.items() if m != "app.errors"} == {}


def test_the_docstring_tree_names_every_error_with_its_status_and_code():
    rows = {name: (int(status), code) for name, status, code in TREE_ROW.findall(errors.__doc__)}
    expected = {
        name: (cls.status, cls.code)
        for name, cls in CLASSES.items()
        if name not in {"ApiError", "Retryable", "ItemFailed"}
    }
    assert rows == expected
    assert {"Retryable", "ItemFailed"} <= set(re.findall(r"── (\w+)", errors.__doc__))


def test_each_error_states_its_own_status_code_and_detail():
    for name, cls in CLASSES.items():
        if name in {"ApiError", "Retryable", "ItemFailed"}:
            continue
        own = vars(cls)
        assert {"status", "code", "detail"} <= set(own), name
        assert 400 <= own["status"] < 600 and own["detail"].endswith("."), name


@pytest.mark.parametrize("cls", [Busy, errors.StorageUnavailable, RateLimited])
def test_retryable_errors_carry_retry_after(cls):
    exc = cls(7)
    assert isinstance(exc, Retryable)
    assert exc.headers == {"Retry-After": "7"} and exc.retry_after_s == 7
    assert exc.detail == cls.detail
    assert cls(1, "Other words.").detail == "Other words."


def test_only_the_three_momentary_failures_are_retryable():
    assert {n for n, c in CLASSES.items() if issubclass(c, Retryable)} == {
        "Retryable",
        "Busy",
        "StorageUnavailable",
        "RateLimited",
    }


def test_item_failed_keeps_its_cause_and_names_the_item():
    exc = ItemFailed(Busy(3), 2, "cat.png")
    assert (exc.status, exc.code, exc.item) == (503, "busy", 2)
    assert exc.detail == 'Image 2 ("cat.png"): The service is busy; retry shortly.'
    assert exc.headers == {"Retry-After": "3"}
    assert ItemFailed(BadUpload(), 1).detail.startswith("Image 1: Send multipart")
