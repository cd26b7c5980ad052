"""The HTTP routes, one `APIRouter` per resource, and what they all depend on.

Routes reach the per-process services through the `ServicesDep` dependency and
charge the rate limit through `ChargeDep`; none of them knows the storage
backend, the middleware or the app object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.pipeline import Services
from app.ratelimit import charge_images


async def get_services(request: Request) -> Services:
    """The worker's services, built once by the app's lifespan."""
    return request.app.state.services


async def get_charge(request: Request) -> Callable[[int], None]:
    """Charges this request's client one token per image (app/ratelimit.py)."""
    buckets = request.app.state.rate_buckets
    return lambda images: charge_images(request.scope, buckets, images)


# `async` dependencies run on the event loop: no thread hop per request.
ServicesDep = Annotated[Services, Depends(get_services)]
ChargeDep = Annotated[Callable[[int], None], Depends(get_charge)]


def also_head(router: APIRouter, path: str, endpoint: Callable[..., Any]) -> None:
    """HEAD answers like GET without the body (curl -I, link checkers, monitors);
    kept out of the schema, where a second method with the same operation id
    made FastAPI warn on every /openapi.json."""
    router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
