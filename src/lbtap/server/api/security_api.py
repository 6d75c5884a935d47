"""API pieces of security groups and QoS that the generic collection routes lack.

* OpenAPI descriptions of the new collections' bodies (registered into ``schemas``);
* the nested QoS rule routes, ``/v2.0/qos/policies/{policy_id}/bandwidth_limit_rules``
  and ``.../{rule_id}`` (list, create, show, update, delete), over
  ``Services.service("qos_policies")``. Bodies are ``{"bandwidth_limit_rule": {...}}``
  and lists ``{"bandwidth_limit_rules": [...]}``, as in Neutron.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from lbtap.server.api import schemas
from lbtap.server.api.common import NeutronJSONResponse, NeutronRoute, read_json_body
from lbtap.server.context import Context
from lbtap.server.errors import BadRequest

_STR255 = {"type": "string", "maxLength": 255}
_OPT_INT = {"type": ["integer", "null"], "minimum": 0, "maximum": 65535}
SECURITY_GROUP = {"name": _STR255, "description": _STR255, "tags": {"type": "array", "items": _STR255},
                  "project_id": _STR255, "tenant_id": _STR255}
SECURITY_GROUP_RULE = {
    "security_group_id": {"type": "string", "format": "uuid"},
    "direction": {"type": "string", "enum": ["ingress", "egress"]},
    "ethertype": {"type": "string", "enum": ["IPv4", "IPv6"]},
    "protocol": {"type": ["string", "null"], "description": "tcp, udp, icmp, ... or a number"},
    "port_range_min": _OPT_INT, "port_range_max": _OPT_INT,
    "remote_ip_prefix": {"type": ["string", "null"]},
    "remote_group_id": {"type": ["string", "null"], "format": "uuid"},
    "description": _STR255, "project_id": _STR255, "tenant_id": _STR255,
}
QOS_POLICY = {"name": _STR255, "description": _STR255, "shared": {"type": "boolean"},
              "is_default": {"type": "boolean"}, "project_id": _STR255, "tenant_id": _STR255}
schemas.CREATE_ATTRS.update(security_groups=SECURITY_GROUP, security_group_rules=SECURITY_GROUP_RULE,
                            qos_policies=QOS_POLICY)
schemas.UPDATE_ATTRS.update(
    security_groups={k: v for k, v in SECURITY_GROUP.items() if k not in ("project_id", "tenant_id")},
    security_group_rules={},
    qos_policies={k: v for k, v in QOS_POLICY.items() if k not in ("project_id", "tenant_id")})
schemas.REQUIRED_ON_CREATE.update(security_groups=[], security_group_rules=["security_group_id", "direction"],
                                  qos_policies=[])

RULE = "bandwidth_limit_rule"
RULES = "bandwidth_limit_rules"


def _member(body: Any) -> Any:
    if not isinstance(body, dict) or set(body) != {RULE}:
        raise BadRequest(f"Unable to find '{RULE}' in request body.", type_name="InvalidInput")
    return body[RULE]


def build_qos_rules_router(services: Any, authenticate: Callable[..., Context]) -> APIRouter:
    """Routes of the bandwidth-limit rules nested under a QoS policy."""
    router = APIRouter(route_class=NeutronRoute, default_response_class=NeutronJSONResponse)
    base = "/v2.0/qos/policies/{policy_id}/" + RULES
    item = base + "/{rule_id}"
    tags = ["qos"]

    def call(method: str, *args: Any) -> Any:
        # Same database-error mapping as the generic routes get from Services.
        from lbtap.server.services import _db_errors_as_neutron

        fn = getattr(services.service("qos_policies"), method)
        return run_in_threadpool(functools.partial(_db_errors_as_neutron(fn), *args))

    @router.get(base, tags=tags, operation_id="list_bandwidth_limit_rules")
    async def list_rules(policy_id: str, ctx: Context = Depends(authenticate)) -> Response:
        return NeutronJSONResponse({RULES: await call("list_rules", ctx, policy_id)})

    @router.post(base, tags=tags, operation_id="create_bandwidth_limit_rule", status_code=201)
    async def create_rule(request: Request, policy_id: str, ctx: Context = Depends(authenticate)) -> Response:
        body = _member(await read_json_body(request))
        return NeutronJSONResponse({RULE: await call("create_rule", ctx, policy_id, body)}, status_code=201)

    @router.get(item, tags=tags, operation_id="show_bandwidth_limit_rule")
    async def show_rule(policy_id: str, rule_id: str, ctx: Context = Depends(authenticate)) -> Response:
        return NeutronJSONResponse({RULE: await call("get_rule", ctx, policy_id, rule_id)})

    @router.put(item, tags=tags, operation_id="update_bandwidth_limit_rule")
    async def update_rule(request: Request, policy_id: str, rule_id: str,
                          ctx: Context = Depends(authenticate)) -> Response:
        body = _member(await read_json_body(request))
        return NeutronJSONResponse({RULE: await call("update_rule", ctx, policy_id, rule_id, body)})

    @router.delete(item, tags=tags, operation_id="delete_bandwidth_limit_rule", status_code=204)
    async def delete_rule(policy_id: str, rule_id: str, ctx: Context = Depends(authenticate)) -> Response:
        await call("delete_rule", ctx, policy_id, rule_id)
        return Response(status_code=204)

    return router
