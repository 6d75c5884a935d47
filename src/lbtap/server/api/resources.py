"""CRUD routes of the Neutron v2.0 collections: networks, subnets, ports, agents.

Each route unwraps the Neutron body (``{"port": {...}}`` or ``{"ports": [...]}``),
calls Services in a worker thread (they are synchronous SQLAlchemy code) and wraps
the answer again. Validation of attributes, filters and sort keys is Services' job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from lbtap.server.api import schemas
from lbtap.server.api.common import NeutronJSONResponse, NeutronRoute, read_json_body
from lbtap.server.api.query import pagination_links, parse_collection_query, parse_fields, project
from lbtap.server.context import Context
from lbtap.server.errors import BadRequest, MalformedRequestBody

# Neutron limits one bulk request; larger batches must be split by the client.
MAX_BULK = 10000


@dataclass(frozen=True)
class ResourceSpec:
    """One collection: its URL/wrapper names and which verbs the API offers."""

    collection: str
    member: str
    create: bool = True
    path: str | None = None  # URL under /v2.0/ when not the collection name
    plural: str | None = None  # body wrapper of lists when not the collection name

    @property
    def key(self) -> str:
        return self.plural or self.collection


RESOURCES = (
    ResourceSpec("networks", "network"),
    ResourceSpec("subnets", "subnet"),
    ResourceSpec("ports", "port"),
    # Agents register themselves over RPC; the API only reads, updates and deletes them.
    ResourceSpec("agents", "agent", create=False),
    ResourceSpec("security_groups", "security_group", path="security-groups"),
    ResourceSpec("security_group_rules", "security_group_rule", path="security-group-rules"),
    ResourceSpec("qos_policies", "policy", path="qos/policies", plural="policies"),
    ResourceSpec("routers", "router"),
    ResourceSpec("floatingips", "floatingip"),
)


def unwrap_create(body: Any, spec: ResourceSpec) -> tuple[bool, Any]:
    """(is_bulk, payload) from a create body; 400 for anything but the two wrappers."""
    if not isinstance(body, dict):
        raise MalformedRequestBody(f"Request body must be a JSON object with key '{spec.member}'.")
    if set(body) == {spec.member}:
        item = body[spec.member]
        if not isinstance(item, dict):
            raise BadRequest(f"'{spec.member}' must be an object.", type_name="InvalidInput")
        return False, item
    if set(body) == {spec.key}:
        items = body[spec.key]
        if not isinstance(items, list) or not items:
            raise BadRequest(f"'{spec.key}' must be a non-empty list.", type_name="InvalidInput")
        if len(items) > MAX_BULK:
            raise BadRequest(f"At most {MAX_BULK} {spec.key} per bulk request.", type_name="InvalidInput")
        if not all(isinstance(i, dict) for i in items):
            raise BadRequest(f"Every item of '{spec.key}' must be an object.", type_name="InvalidInput")
        return True, items
    raise BadRequest(f"Unable to find '{spec.member}' in request body.", type_name="InvalidInput")


def unwrap_update(body: Any, spec: ResourceSpec) -> dict:
    if not isinstance(body, dict):
        raise MalformedRequestBody(f"Request body must be a JSON object with key '{spec.member}'.")
    if set(body) != {spec.member}:
        raise BadRequest(f"Unable to find '{spec.member}' in request body.", type_name="InvalidInput")
    item = body[spec.member]
    if not isinstance(item, dict):
        raise BadRequest(f"'{spec.member}' must be an object.", type_name="InvalidInput")
    return item


def _add_routes(router: APIRouter, spec: ResourceSpec, services: Any,
                authenticate: Callable[..., Context]) -> None:
    coll, member, key = spec.collection, spec.member, spec.key
    base = f"/v2.0/{spec.path or coll}"
    item_path = base + "/{id}"
    tags = [coll]
    try:
        filter_attrs = sorted(services.attribute_names(coll))
    except Exception:  # documentation must not stop the server from starting
        filter_attrs = []

    async def list_items(request: Request, ctx: Context = Depends(authenticate)) -> Response:
        params = request.query_params
        cq = parse_collection_query(params)
        result = await run_in_threadpool(services.list, ctx, coll, cq.query)
        body: dict[str, Any] = {key: [project(i, cq.fields) for i in result.items]}
        links = pagination_links(request.url, params, cq.query, result.items, result.has_more)
        if links:
            body[f"{key}_links"] = links
        return NeutronJSONResponse(body)

    async def show_item(request: Request, id: str, ctx: Context = Depends(authenticate)) -> Response:
        fields = parse_fields(request.query_params)
        item = await run_in_threadpool(services.get, ctx, coll, id)
        return NeutronJSONResponse({member: project(item, fields)})

    async def create_item(request: Request, ctx: Context = Depends(authenticate)) -> Response:
        bulk, payload = unwrap_create(await read_json_body(request), spec)
        if bulk:
            items = await run_in_threadpool(services.create_bulk, ctx, coll, payload)
            return NeutronJSONResponse({key: items}, status_code=201)
        item = await run_in_threadpool(services.create, ctx, coll, payload)
        return NeutronJSONResponse({member: item}, status_code=201)

    async def update_item(request: Request, id: str, ctx: Context = Depends(authenticate)) -> Response:
        payload = unwrap_update(await read_json_body(request), spec)
        item = await run_in_threadpool(services.update, ctx, coll, id, payload)
        return NeutronJSONResponse({member: item})

    async def delete_item(id: str, ctx: Context = Depends(authenticate)) -> Response:
        await run_in_threadpool(services.delete, ctx, coll, id)
        return Response(status_code=204)

    errs = schemas.ERROR_RESPONSES
    router.add_api_route(base, list_items, methods=["GET"], tags=tags, operation_id=f"list_{coll}",
                         summary=f"List {coll}", openapi_extra=schemas.list_parameters(filter_attrs),
                         responses={k: errs[k] for k in (400, 401)})
    router.add_api_route(item_path, show_item, methods=["GET"], tags=tags, operation_id=f"show_{member}",
                         summary=f"Show a {member}", openapi_extra=schemas.show_parameters(),
                         responses={k: errs[k] for k in (400, 401, 404)})
    if spec.create:
        router.add_api_route(base, create_item, methods=["POST"], tags=tags, operation_id=f"create_{member}",
                             summary=f"Create a {member} (or many: bulk create)", status_code=201,
                             openapi_extra=schemas.create_body(coll, member),
                             responses={k: errs[k] for k in (400, 401, 403, 404, 409)})
    router.add_api_route(item_path, update_item, methods=["PUT"], tags=tags, operation_id=f"update_{member}",
                         summary=f"Update a {member}", openapi_extra=schemas.update_body(coll, member),
                         responses={k: errs[k] for k in (400, 401, 403, 404, 409)})
    router.add_api_route(item_path, delete_item, methods=["DELETE"], tags=tags, operation_id=f"delete_{member}",
                         summary=f"Delete a {member}", status_code=204,
                         responses={k: errs[k] for k in (401, 403, 404, 409)})


def build_resources_router(services: Any, authenticate: Callable[..., Context]) -> APIRouter:
    """Routes for every collection in ``RESOURCES``."""
    router = APIRouter(route_class=NeutronRoute, default_response_class=NeutronJSONResponse)
    for spec in RESOURCES:
        _add_routes(router, spec, services, authenticate)
    return router
