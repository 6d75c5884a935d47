"""``PUT /v2.0/routers/{id}/add_router_interface`` and ``.../remove_router_interface``.

Neutron's member actions: the body is bare (``{"subnet_id": ...}`` or
``{"port_id": ...}``, no wrapper) and the answer is the interface info
(router id, port_id, subnet_id(s), network_id, project).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from lbtap.server.api import schemas
from lbtap.server.api.common import NeutronJSONResponse, NeutronRoute, read_json_body
from lbtap.server.context import Context

# OpenAPI documentation of the two collections (registered here to keep schemas.py untouched).
_S, _B, _U = schemas._STR255, schemas._BOOL, schemas._UUID
_GW = {"type": ["object", "null"], "properties": {"network_id": _U, "enable_snat": _B,
                                                  "external_fixed_ips": {"type": "array", "items": schemas._FIXED_IP}}}
ROUTER_SCHEMA = {"name": _S, "description": _S, "admin_state_up": _B, "external_gateway_info": _GW,
                 "tags": schemas._TAGS, "project_id": _S, "tenant_id": _S}
FLOATINGIP_SCHEMA = {"floating_network_id": _U, "floating_ip_address": schemas._IP, "subnet_id": _U,
                     "port_id": {"type": ["string", "null"]}, "fixed_ip_address": {"type": ["string", "null"]},
                     "description": _S, "tags": schemas._TAGS, "project_id": _S, "tenant_id": _S}
schemas.CREATE_ATTRS.setdefault("routers", ROUTER_SCHEMA)
schemas.CREATE_ATTRS.setdefault("floatingips", FLOATINGIP_SCHEMA)
schemas.UPDATE_ATTRS.setdefault("routers", {**{k: v for k, v in ROUTER_SCHEMA.items() if k not in (
    "project_id", "tenant_id")}, "routes": {"type": "array", "items": schemas._ROUTE}})
schemas.UPDATE_ATTRS.setdefault("floatingips", {k: FLOATINGIP_SCHEMA[k] for k in (
    "port_id", "fixed_ip_address", "description", "tags")})
schemas.REQUIRED_ON_CREATE.setdefault("routers", [])
schemas.REQUIRED_ON_CREATE.setdefault("floatingips", ["floating_network_id"])


def _routers(services: Any) -> Any:
    if hasattr(services, "service"):
        return services.service("routers")
    return services._svc("routers")


def build_router_actions(services: Any, authenticate: Callable[..., Context]) -> APIRouter:
    router = APIRouter(route_class=NeutronRoute, default_response_class=NeutronJSONResponse)

    async def add(request: Request, id: str, ctx: Context = Depends(authenticate)) -> Response:
        body = await read_json_body(request)
        out = await run_in_threadpool(_routers(services).add_interface, ctx, id, body)
        return NeutronJSONResponse(out)

    async def remove(request: Request, id: str, ctx: Context = Depends(authenticate)) -> Response:
        body = await read_json_body(request)
        out = await run_in_threadpool(_routers(services).remove_interface, ctx, id, body)
        return NeutronJSONResponse(out)

    router.add_api_route("/v2.0/routers/{id}/add_router_interface", add, methods=["PUT"], tags=["routers"],
                         operation_id="add_router_interface", summary="Attach a subnet or port to a router")
    router.add_api_route("/v2.0/routers/{id}/remove_router_interface", remove, methods=["PUT"], tags=["routers"],
                         operation_id="remove_router_interface", summary="Detach a subnet or port from a router")
    return router
