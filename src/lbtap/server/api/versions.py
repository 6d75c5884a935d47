"""Version discovery (``GET /``, ``GET /v2.0/``) and ``GET /v2.0/extensions``.

openstacksdk/keystoneauth read ``GET /`` before anything else. The extension list is
derived from the attributes the data layer really serves, so a client never sees an
alias whose attributes it cannot use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Depends
from starlette.requests import Request

from lbtap.server.api.common import NeutronJSONResponse, NeutronRoute
from lbtap.server.context import Context
from lbtap.server.errors import NotFound

UPDATED = "2024-01-01T00:00:00-00:00"


@dataclass(frozen=True)
class Extension:
    alias: str
    name: str
    description: str
    # (resource, attribute) pairs that must all exist for the alias to be listed
    needs: tuple[tuple[str, str], ...] = ()

    def doc(self) -> dict:
        return {"name": self.name, "alias": self.alias, "description": self.description,
                "updated": UPDATED, "links": []}


# The API layer itself implements pagination, sorting and filter validation (the
# last by Services rejecting unknown filters), so those need no attribute check.
KNOWN_EXTENSIONS: tuple[Extension, ...] = (
    Extension("agent", "agent", "The agent management extension.", (("agents", "agent_type"),)),
    Extension("allowed-address-pairs", "Allowed Address Pairs", "Extra IP/MAC pairs a port may use.",
              (("ports", "allowed_address_pairs"),)),
    Extension("binding", "Port Binding", "Expose port bindings of a virtual port to external application.",
              (("ports", "binding:host_id"), ("ports", "binding:vif_type"))),
    Extension("external-net", "Neutron external network", "Adds external network attribute to network resource.",
              (("networks", "router:external"),)),
    Extension("filter-validation", "Filter parameters validation", "Unknown filter parameters are rejected."),
    Extension("net-mtu", "Network MTU", "Provides MTU attribute for a network resource.", (("networks", "mtu"),)),
    Extension("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    Extension("port-security", "Port Security", "Provides port security.",
              (("networks", "port_security_enabled"), ("ports", "port_security_enabled"))),
    Extension("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled.",
              (("networks", "project_id"), ("ports", "project_id"))),
    Extension("provider", "Provider Network", "Expose mapping of virtual networks to physical networks.",
              (("networks", "provider:network_type"), ("networks", "provider:physical_network"),
               ("networks", "provider:segmentation_id"))),
    Extension("qos", "Quality of Service", "QoS policies with bandwidth_limit rules.",
              (("qos_policies", "rules"), ("ports", "qos_policy_id"), ("networks", "qos_policy_id"))),
    Extension("qos-bw-limit-direction", "Direction for QoS bandwidth limit rule",
              "Bandwidth limit rules for ingress and egress.", (("qos_policies", "rules"),)),
    Extension("security-group", "security-group", "The security groups extension.",
              (("security_groups", "security_group_rules"), ("security_group_rules", "remote_group_id"),
               ("ports", "security_groups"))),
    Extension("router", "Neutron L3 Router", "Routers, external gateways and floating IPs.",
              (("routers", "external_gateway_info"), ("floatingips", "floating_ip_address"))),
    Extension("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "enable_snat of a gateway.",
              (("routers", "external_gateway_info"),)),
    Extension("extraroute", "Neutron Extra Route", "Extra routes of a router.", (("routers", "routes"),)),
    Extension("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    Extension("standard-attr-description", "standard-attr-description", "Add description to standard attributes.",
              (("networks", "description"), ("subnets", "description"), ("ports", "description"))),
    Extension("standard-attr-revisions", "Resource revision numbers", "Expose revision_number on resources.",
              (("networks", "revision_number"), ("subnets", "revision_number"), ("ports", "revision_number"))),
    Extension("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields.",
              (("networks", "created_at"), ("subnets", "updated_at"), ("ports", "updated_at"))),
)


def implemented_extensions(attribute_names: Callable[[str], frozenset[str]]) -> list[Extension]:
    """The known extensions whose attributes the data layer serves."""
    cache: dict[str, frozenset[str]] = {}

    def has(resource: str, attr: str) -> bool:
        if resource not in cache:
            try:
                cache[resource] = frozenset(attribute_names(resource))
            except Exception:  # a resource the data layer does not serve
                cache[resource] = frozenset()
        return attr in cache[resource]

    return [e for e in KNOWN_EXTENSIONS if all(has(r, a) for r, a in e.needs)]


def _base(request: Request) -> str:
    return str(request.base_url)


def build_versions_router(collections: list[str], extensions: list[Extension],
                          authenticate: Callable[..., Context]) -> APIRouter:
    """Routes for version discovery and the extension list."""
    router = APIRouter(route_class=NeutronRoute, default_response_class=NeutronJSONResponse)
    by_alias = {e.alias: e for e in extensions}

    @router.get("/", tags=["versions"], operation_id="list_versions", summary="API versions")
    async def versions(request: Request):
        return NeutronJSONResponse({"versions": [
            {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": _base(request) + "v2.0/"}]}
        ]})

    @router.get("/v2.0/", tags=["versions"], operation_id="show_version", summary="Resources of v2.0")
    async def v2(request: Request):
        base = _base(request) + "v2.0/"
        return NeutronJSONResponse({"resources": [
            {"name": c[:-1], "collection": c, "links": [{"rel": "self", "href": base + c}]} for c in collections
        ]})

    @router.get("/v2.0/extensions", tags=["versions"], operation_id="list_extensions",
                summary="Implemented extensions")
    async def list_extensions(ctx: Context = Depends(authenticate)):
        return NeutronJSONResponse({"extensions": [e.doc() for e in extensions]})

    @router.get("/v2.0/extensions/{alias}", tags=["versions"], operation_id="show_extension",
                summary="One extension")
    async def show_extension(alias: str, ctx: Context = Depends(authenticate)):
        ext = by_alias.get(alias)
        if ext is None:
            raise NotFound(f"Extension with alias {alias} does not exist", type_name="ExtensionNotFound")
        return NeutronJSONResponse({"extension": ext.doc()})

    return router
