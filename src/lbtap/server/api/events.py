"""Read-only, admin-only routes of the events extension (``lbtap.server.events``).

* ``GET /v2.0/lbtap/events[?port_id=&host=&kind=&limit=]``: storm alarms (in memory,
  newest first) and lifecycle events (from ``lbtap_events``, oldest first);
* ``GET /v2.0/lbtap/ports/{id}/explain``: why the port is or is not ACTIVE, with its
  timeline.

Bad input is a 400 NeutronError, an unknown port a 404 PortNotFound, a non-admin
caller a 403; the routes answer 404 when the events extension is not installed.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from lbtap.server import errors
from lbtap.server.api.common import NeutronJSONResponse, NeutronRoute
from lbtap.server.context import Context
from lbtap.server.db.models_events import EVENT_KINDS

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_QUERY_KEYS = frozenset({"port_id", "host", "kind", "limit"})
MAX_LIMIT = 10_000


def _extension(request: Request, ctx: Context) -> Any:
    if not ctx.is_admin:
        raise errors.PolicyNotAuthorized("Events and port explanations are admin-only.")
    ev = getattr(request.app.state, "lbtap_events", None)
    if ev is None:
        raise errors.NotFound("The events extension is not enabled on this server.")
    return ev


def _port_id(value: str) -> str:
    if not _UUID.match(value):
        raise errors.InvalidInput(f"Invalid input for port_id: {value!r} is not a valid UUID.")
    return value.lower()


def parse_events_query(params: Any) -> dict[str, Any]:
    """Validated arguments of ``Events.events`` from the query string (400 on bad input)."""
    unknown = sorted(set(params.keys()) - _QUERY_KEYS)
    if unknown:
        raise errors.BadRequest(f"Unknown query parameter(s): {', '.join(unknown)}; "
                                f"expected {', '.join(sorted(_QUERY_KEYS))}.")
    for key in params.keys():
        if len(params.getlist(key)) > 1:
            raise errors.BadRequest(f"Query parameter {key} given more than once.")
    out: dict[str, Any] = {}
    if params.get("port_id"):
        out["port_id"] = _port_id(params["port_id"])
    if params.get("host"):
        if len(params["host"]) > 255:
            raise errors.InvalidInput("Invalid input for host: longer than 255 characters.")
        out["host"] = params["host"]
    if params.get("kind"):
        if params["kind"] not in EVENT_KINDS:
            raise errors.InvalidInput(f"Invalid input for kind: {params['kind']!r}; expected one of "
                                      f"{', '.join(EVENT_KINDS)}.")
        out["kind"] = params["kind"]
    if "limit" in params:
        raw = params["limit"]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise errors.InvalidInput(f"Invalid input for limit: {raw!r} is not an integer from 1 to {MAX_LIMIT}.")
        out["limit"] = int(raw)
    return out


def build_events_router(authenticate: Callable[..., Context]) -> APIRouter:
    """The events routes; ``authenticate`` is the app's context dependency."""
    router = APIRouter(route_class=NeutronRoute, default_response_class=NeutronJSONResponse)

    @router.get("/v2.0/lbtap/events")
    async def list_events(request: Request, ctx: Context = Depends(authenticate)) -> NeutronJSONResponse:
        ev = _extension(request, ctx)
        kwargs = parse_events_query(request.query_params)
        body = await run_in_threadpool(lambda: ev.events(**kwargs))  # DB reads: off the loop
        return NeutronJSONResponse(body)

    @router.get("/v2.0/lbtap/ports/{id}/explain")
    async def explain_port(request: Request, id: str, ctx: Context = Depends(authenticate)) -> NeutronJSONResponse:
        ev = _extension(request, ctx)
        if request.query_params:
            raise errors.BadRequest("explain takes no query parameters.")
        port_id = _port_id(id)
        body = await run_in_threadpool(ev.explain, port_id)
        return NeutronJSONResponse({"explanation": body})

    return router
