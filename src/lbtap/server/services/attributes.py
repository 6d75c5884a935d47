"""The attribute maps of networks, subnets and ports: who may set what, and how.

A pure description (Neutron's RESOURCE_ATTRIBUTE_MAP in spirit) plus the two checks
every write and every list goes through: ``check_body`` for request bodies and
``filter_values`` for query-string filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.services import validators as v


@dataclass(frozen=True)
class Attr:
    """One attribute of a resource.

    ``post``/``put``: may be given on create / update. ``admin_only``: only admins may
    set it (403 otherwise). ``admin_visible``: hidden from non-admins in results.
    ``column``: model column for SQL filters and sorting (None: neither, unless
    ``filter`` names a special filter the service implements). ``kind`` converts
    query-string filter values: "str", "bool" or "int"; "time" columns sort but do
    not filter.
    """

    convert: Callable[[str, Any], Any] | None = None
    post: bool = False
    put: bool = False
    admin_only: bool = False
    admin_visible: bool = False
    column: str | None = None
    kind: str = "str"
    special_filter: bool = False


def _rw(convert, column=None, kind="str", **kw) -> Attr:  # noqa: ANN001
    return Attr(convert=convert, post=True, put=True, column=column, kind=kind, **kw)


def _ro(column=None, kind="str", **kw) -> Attr:  # noqa: ANN001
    return Attr(column=column, kind=kind, **kw)


_name = _rw(v.string, "name")
_desc = _rw(lambda n, x: v.string(n, x, v.DESCRIPTION_MAX), "description")
_project = Attr(convert=lambda n, x: v.string(n, x), post=True, column="project_id")

COMMON: dict[str, Attr] = {
    "id": _ro("id"),
    "name": _name,
    "description": _desc,
    "tenant_id": _project,
    "project_id": _project,
    "tags": _rw(v.tags, special_filter=True),
    "created_at": _ro("created_at", "time"),
    "updated_at": _ro("updated_at", "time"),
    "revision_number": _ro("revision_number", "int"),
}

NETWORK: dict[str, Attr] = {
    **COMMON,
    "admin_state_up": _rw(v.boolean, "admin_state_up", "bool"),
    "status": _ro("status"),
    "subnets": _ro(),
    "shared": _rw(v.boolean, "shared", "bool", admin_only=True),
    "router:external": _rw(v.boolean, "router_external", "bool", admin_only=True),
    "mtu": _rw(lambda n, x: v.integer(n, x, 68, 65535), "mtu", "int"),
    "port_security_enabled": _rw(v.boolean, "port_security_enabled", "bool"),
    "qos_policy_id": _rw(v.uuid_or_none, "qos_policy_id"),
    "provider:network_type": Attr(
        convert=lambda n, x: v.one_of(n, x, ("local", "flat", "vlan", "vxlan")),
        post=True, admin_only=True, admin_visible=True, column="network_type"),
    "provider:physical_network": Attr(
        convert=lambda n, x: None if x is None else v.string(n, x, 64),
        post=True, admin_only=True, admin_visible=True, column="physical_network"),
    "provider:segmentation_id": Attr(
        convert=lambda n, x: None if x is None else v.integer(n, x, 0, 2**24 - 1),
        post=True, admin_only=True, admin_visible=True, column="segmentation_id", kind="int"),
    "availability_zone_hints": _ro(),
    "availability_zones": _ro(),
    "ipv4_address_scope": _ro(),
    "ipv6_address_scope": _ro(),
    "l2_adjacency": _ro(),
}

SUBNET: dict[str, Attr] = {
    **COMMON,
    "network_id": Attr(convert=v.uuid_str, post=True, column="network_id"),
    "ip_version": Attr(convert=lambda n, x: v.one_of(n, v.integer(n, x), (4, 6)), post=True,
                       column="ip_version", kind="int"),
    "cidr": Attr(convert=v.cidr, post=True, column="cidr"),
    "gateway_ip": _rw(v.ip_or_none, "gateway_ip"),
    "allocation_pools": _rw(v.allocation_pools),
    "dns_nameservers": _rw(lambda n, x: v.str_list(n, x, v.ip)),
    "host_routes": _rw(v.host_routes),
    "enable_dhcp": _rw(v.boolean, "enable_dhcp", "bool"),
    "ipv6_ra_mode": Attr(convert=lambda n, x: None if x is None else v.one_of(n, x, v.IPV6_MODES),
                         post=True, column="ipv6_ra_mode"),
    "ipv6_address_mode": Attr(convert=lambda n, x: None if x is None else v.one_of(n, x, v.IPV6_MODES),
                              post=True, column="ipv6_address_mode"),
    "subnetpool_id": Attr(convert=lambda n, x: None if x is None else _no_subnetpools(n, x), post=True),
    "segment_id": Attr(convert=lambda n, x: None if x is None else _unsupported(n, x), post=True),
    "service_types": _rw(lambda n, x: _empty_list(n, x)),
}

PORT: dict[str, Attr] = {
    **COMMON,
    "network_id": Attr(convert=v.uuid_str, post=True, column="network_id"),
    "admin_state_up": _rw(v.boolean, "admin_state_up", "bool"),
    "mac_address": Attr(convert=v.mac, post=True, put=True, admin_only=False, column="mac_address"),
    "fixed_ips": _rw(v.fixed_ips, special_filter=True),
    "device_id": _rw(v.string, "device_id"),
    "device_owner": _rw(v.string, "device_owner"),
    "status": _ro("status"),
    "dns_name": _rw(v.dns_name, "dns_name"),
    "binding:host_id": _rw(v.string, "binding_host_id", admin_only=True, admin_visible=True),
    "binding:profile": _rw(v.dict_value, admin_only=True, admin_visible=True),
    "binding:vnic_type": _rw(lambda n, x: v.one_of(n, x, v.VNIC_TYPES), "binding_vnic_type"),
    "binding:vif_type": _ro("binding_vif_type", admin_visible=True),
    "binding:vif_details": _ro(admin_visible=True),
    "security_groups": _rw(lambda n, x: v.str_list(n, x, v.uuid_str), special_filter=True),
    "port_security_enabled": _rw(v.boolean, "port_security_enabled", "bool"),
    "allowed_address_pairs": _rw(v.address_pairs),
    "qos_policy_id": _rw(v.uuid_or_none, "qos_policy_id"),
    "qos_network_policy_id": _ro(),
    "extra_dhcp_opts": _ro(),
    "ip_allocation": _ro(),
    "propagate_uplink_status": _ro(),
}

AGENT: dict[str, Attr] = {
    "id": _ro("id"),
    "agent_type": _ro("agent_type"),
    "binary": _ro("binary"),
    "host": _ro("host"),
    "topic": _ro("topic"),
    "configurations": _ro(),
    "resource_versions": _ro(),
    "admin_state_up": Attr(convert=v.boolean, put=True, column="admin_state_up", kind="bool"),
    "description": Attr(convert=lambda n, x: v.string(n, x, v.DESCRIPTION_MAX), put=True,
                        column="description"),
    "created_at": _ro("created_at", "time"),
    "started_at": _ro("started_at", "time"),
    "heartbeat_timestamp": _ro("heartbeat_timestamp", "time"),
    "alive": _ro(kind="bool", special_filter=True),
    "availability_zone": _ro(),
    "resources_synced": _ro(),
}

ATTRIBUTES: dict[str, dict[str, Attr]] = {
    "networks": NETWORK, "subnets": SUBNET, "ports": PORT, "agents": AGENT,
}


def _no_subnetpools(name: str, x: Any) -> None:
    raise v.bad(name, "subnet pools are not supported")


def _unsupported(name: str, x: Any) -> None:
    raise v.bad(name, "routed network segments are not supported")


def _empty_list(name: str, x: Any) -> list:
    if x != []:
        raise v.bad(name, "service types are not supported")
    return []


def check_body(resource: str, body: Any, ctx: Context, *, create: bool) -> dict[str, Any]:
    """Validate and convert a request body; returns only the attributes given.

    Raises BadRequest for a non-dict body, unknown or read-only attributes and bad
    values; PolicyNotAuthorized for admin-only attributes set by a non-admin.
    tenant_id and project_id are merged into ``project_id``.
    """
    spec = ATTRIBUTES[resource]
    if not isinstance(body, dict):
        raise errors.BadRequest(f"Body of a {resource[:-1]} must be an object.")
    unknown = sorted(k for k in body if k not in spec)
    if unknown:
        raise errors.BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    out: dict[str, Any] = {}
    for key, raw in body.items():
        attr = spec[key]
        if not (attr.post if create else attr.put):
            raise errors.BadRequest(
                f"Attribute '{key}' not allowed in {'POST' if create else 'PUT'}")
        if attr.admin_only and not ctx.is_admin:
            raise errors.PolicyNotAuthorized(
                f"(rule:{'create' if create else 'update'}_{resource[:-1]}:{key}) is disallowed by policy")
        out[key] = attr.convert(key, raw) if attr.convert else raw
    if "tenant_id" in out or "project_id" in out:
        values = {out.pop(k) for k in ("tenant_id", "project_id") if k in out}
        if len(values) > 1:
            raise errors.BadRequest("tenant_id and project_id must be equal")
        project = values.pop()
        if not project:
            raise errors.BadRequest("project_id must not be empty")
        if not ctx.is_admin and project != ctx.project_id:
            raise errors.BadRequest(
                "Specifying 'project_id' or 'tenant_id' other than the authenticated project "
                "in request requires admin privileges")
        out["project_id"] = project
    return out


# Project of resources an unscoped admin creates without naming one (noauth clients
# such as openstacksdk with auth_type="none" send no project at all).
DEFAULT_ADMIN_PROJECT = "admin"


def owner_project(ctx: Context, given: dict[str, Any], fallback: str | None = None) -> str:
    """The project a new resource belongs to: the body's, the caller's, ``fallback``
    (a subnet's or port's network project), else DEFAULT_ADMIN_PROJECT."""
    return given.get("project_id") or ctx.project_id or fallback or DEFAULT_ADMIN_PROJECT


def filter_values(resource: str, key: str, raw: list[str], ctx: Context) -> tuple[Attr, list[Any]]:
    """Convert query-string filter values; BadRequest for unknown/unfilterable keys."""
    spec = ATTRIBUTES[resource]
    attr = spec.get(key)
    if attr is None or (attr.column is None and not attr.special_filter) or (
        attr.admin_visible and not ctx.is_admin
    ) or attr.kind == "time":
        raise errors.BadRequest(f"{key} is an invalid filter for {resource}")
    out: list[Any] = []
    for value in raw:
        if "\x00" in value:
            raise errors.BadRequest(f"Invalid value for filter {key}")
        if attr.kind == "bool":
            if value.lower() in ("true", "1", "t", "yes"):
                out.append(True)
            elif value.lower() in ("false", "0", "f", "no"):
                out.append(False)
            else:
                raise errors.BadRequest(f"'{value}' is not a valid boolean for filter {key}")
        elif attr.kind == "int":
            if value in ("", "None", "null") and key == "provider:segmentation_id":
                out.append(None)
                continue
            try:
                n = int(value)
            except ValueError:
                raise errors.BadRequest(f"'{value}' is not a valid integer for filter {key}") from None
            if not -2**31 <= n < 2**31:  # the columns are 32-bit everywhere
                raise errors.BadRequest(f"'{value}' is out of range for filter {key}")
            out.append(n)
        else:
            out.append(value)
    return attr, out


def check_sorts(resource: str, sorts: list[tuple[str, bool]], ctx: Context) -> None:
    spec = ATTRIBUTES[resource]
    for key, _asc in sorts:
        attr = spec.get(key)
        if attr is None or attr.column is None or (attr.admin_visible and not ctx.is_admin):
            raise errors.BadRequest(f"{key} is an invalid sort key for {resource}")
