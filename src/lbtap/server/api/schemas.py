"""OpenAPI descriptions of request bodies and query parameters (documentation only).

Nothing here validates: routes read the raw JSON and Services decide. The schemas
describe what Neutron accepts so that clients and the fuzzer (schemathesis) can
build meaningful requests; a request they allow always reaches Services.
"""

from __future__ import annotations

from typing import Any

_STR255: dict = {"type": "string", "maxLength": 255}
_UUID: dict = {"type": "string", "format": "uuid"}
_BOOL: dict = {"type": "boolean"}
_IP: dict = {"type": "string", "description": "IPv4 or IPv6 address"}
_TAGS: dict = {"type": "array", "items": _STR255}

NETWORK: dict[str, Any] = {
    "name": _STR255,
    "description": _STR255,
    "admin_state_up": _BOOL,
    "shared": _BOOL,
    "mtu": {"type": "integer", "minimum": 68, "maximum": 65535},
    "port_security_enabled": _BOOL,
    "router:external": _BOOL,
    "provider:network_type": {"type": "string", "enum": ["flat", "vlan", "vxlan", "local"]},
    "provider:physical_network": {"type": ["string", "null"], "maxLength": 64},
    "provider:segmentation_id": {"type": ["integer", "null"], "minimum": 0},
    "qos_policy_id": {"type": ["string", "null"]},
    "tags": _TAGS,
    "project_id": _STR255,
    "tenant_id": _STR255,
}

_POOL = {"type": "object", "properties": {"start": _IP, "end": _IP}, "required": ["start", "end"]}
_ROUTE = {"type": "object", "properties": {"destination": {"type": "string"}, "nexthop": _IP},
          "required": ["destination", "nexthop"]}

SUBNET: dict[str, Any] = {
    "name": _STR255,
    "description": _STR255,
    "network_id": _UUID,
    "ip_version": {"type": "integer", "enum": [4, 6]},
    "cidr": {"type": "string", "description": "e.g. 10.0.0.0/24"},
    "gateway_ip": {"type": ["string", "null"]},
    "allocation_pools": {"type": "array", "items": _POOL},
    "dns_nameservers": {"type": "array", "items": _IP},
    "host_routes": {"type": "array", "items": _ROUTE},
    "enable_dhcp": _BOOL,
    "ipv6_ra_mode": {"type": ["string", "null"], "enum": ["slaac", "dhcpv6-stateful", "dhcpv6-stateless", None]},
    "ipv6_address_mode": {"type": ["string", "null"],
                          "enum": ["slaac", "dhcpv6-stateful", "dhcpv6-stateless", None]},
    "tags": _TAGS,
    "project_id": _STR255,
    "tenant_id": _STR255,
}

_FIXED_IP = {"type": "object", "properties": {"subnet_id": _UUID, "ip_address": _IP}}
_PAIR = {"type": "object", "properties": {"ip_address": {"type": "string"}, "mac_address": {"type": "string"}},
         "required": ["ip_address"]}

PORT: dict[str, Any] = {
    "name": _STR255,
    "description": _STR255,
    "network_id": _UUID,
    "admin_state_up": _BOOL,
    "mac_address": {"type": "string", "description": "e.g. fa:16:3e:00:00:01"},
    "fixed_ips": {"type": "array", "items": _FIXED_IP},
    "device_id": _STR255,
    "device_owner": _STR255,
    "dns_name": _STR255,
    "binding:host_id": _STR255,
    "binding:vnic_type": {"type": "string", "enum": ["normal"]},
    "binding:profile": {"type": "object"},
    "port_security_enabled": _BOOL,
    "security_groups": {"type": "array", "items": {"type": "string"}},
    "allowed_address_pairs": {"type": "array", "items": _PAIR},
    "qos_policy_id": {"type": ["string", "null"]},
    "tags": _TAGS,
    "project_id": _STR255,
    "tenant_id": _STR255,
}

AGENT: dict[str, Any] = {"admin_state_up": _BOOL, "description": _STR255}

# Attributes a client may send on create / update, per collection.
CREATE_ATTRS = {"networks": NETWORK, "subnets": SUBNET, "ports": PORT}
UPDATE_ATTRS = {
    "networks": {k: v for k, v in NETWORK.items() if k not in ("project_id", "tenant_id")},
    "subnets": {k: v for k, v in SUBNET.items()
                if k not in ("network_id", "ip_version", "cidr", "project_id", "tenant_id")},
    "ports": {k: v for k, v in PORT.items() if k not in ("network_id", "project_id", "tenant_id")},
    "agents": AGENT,
}
REQUIRED_ON_CREATE = {"networks": [], "subnets": ["network_id", "cidr", "ip_version"], "ports": ["network_id"]}


def _object(props: dict, required: list[str] | None = None) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def create_body(collection: str, member: str) -> dict:
    """``{"port": {...}}`` or, for bulk create, ``{"ports": [{...}, ...]}``."""
    item = _object(CREATE_ATTRS[collection], REQUIRED_ON_CREATE[collection])
    schema = {"oneOf": [
        {"type": "object", "properties": {member: item}, "required": [member], "additionalProperties": False},
        {"type": "object", "properties": {collection: {"type": "array", "items": item, "minItems": 1}},
         "required": [collection], "additionalProperties": False},
    ]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def update_body(collection: str, member: str) -> dict:
    item = _object(UPDATE_ATTRS[collection])
    schema = {"type": "object", "properties": {member: item}, "required": [member], "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _query(name: str, schema: dict, description: str) -> dict:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema,
                             "description": description}
    if schema.get("type") == "array":
        param.update(style="form", explode=True)
    return param


def list_parameters(filter_attributes: list[str]) -> dict:
    """Reserved paging/sorting parameters plus one repeatable filter per attribute."""
    params = [
        _query("fields", {"type": "array", "items": {"type": "string"}}, "attributes to return (repeatable)"),
        _query("sort_key", {"type": "array", "items": {"type": "string"}}, "attribute to sort by (repeatable)"),
        _query("sort_dir", {"type": "array", "items": {"type": "string", "enum": ["asc", "desc"]}},
               "direction per sort_key"),
        _query("limit", {"type": "integer", "minimum": 0}, "page size; 0 means no limit"),
        _query("marker", {"type": "string"}, "id of the last item of the previous page"),
        _query("page_reverse", {"type": "boolean"}, "page backwards from the marker"),
    ]
    for attr in filter_attributes:
        params.append(_query(attr, {"type": "array", "items": {"type": "string"}},
                             f"filter on {attr}; a repeated key matches any of the values"))
    return {"parameters": params}


def show_parameters() -> dict:
    return {"parameters": [
        _query("fields", {"type": "array", "items": {"type": "string"}}, "attributes to return (repeatable)"),
    ]}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": {
        "type": "object", "required": ["NeutronError"],
        "properties": {"NeutronError": {"type": "object", "required": ["type", "message", "detail"],
                                        "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                                                       "detail": {"type": "string"}}}},
    }}}}
    for status, text in ((400, "Bad request"), (401, "Not authenticated"), (403, "Not allowed"),
                         (404, "Not found"), (409, "Conflict"))
}
