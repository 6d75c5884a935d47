"""Security group rules as Neutron validates and compares them, and the error types of
the security-group extension (used by ``security_groups`` and its callers).

Validation mirrors Neutron's ``securitygroups_db`` (port ranges, ICMP values,
ethertype/protocol conflicts, normalised duplicate keys) before the agent's own ``Rule``
model checks the rest, so nothing the API accepts is refused by the firewall renderer.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lbtap.drivers.firewall.model import PORT_PROTOCOLS, PROTOCOL_NUMBERS, Rule
from lbtap.server import errors
from lbtap.server.db.security_models import SecurityGroupRule


# -- Neutron's error types for this extension ------------------------------------------
class SecurityGroupNotFound(errors.NotFound):
    pass


class SecurityGroupRuleNotFound(errors.NotFound):
    pass


class SecurityGroupInUse(errors.InUse):
    pass


class SecurityGroupCannotRemoveDefault(errors.InUse):
    pass


class SecurityGroupRuleExists(errors.Conflict):
    pass


class SecurityGroupRuleInvalidProtocol(errors.InvalidInput):
    pass


class SecurityGroupRuleParameterConflict(errors.InvalidInput):
    pass


class DuplicateSecurityGroupRuleInPost(errors.InUse):
    pass


class SecurityGroupInvalidPortRange(errors.InvalidInput):
    pass


class SecurityGroupInvalidPortValue(errors.InvalidInput):
    pass


class SecurityGroupProtocolRequiredWithPorts(errors.InvalidInput):
    pass


class SecurityGroupInvalidProtocolForPort(errors.InvalidInput):
    pass


class SecurityGroupInvalidIcmpValue(errors.InvalidInput):
    pass


class SecurityGroupMissingIcmpType(errors.InvalidInput):
    pass


class SecurityGroupEthertypeConflictWithProtocol(errors.InvalidInput):
    pass


class PortSecurityPortHasSecurityGroup(errors.InUse):
    pass


class AddressPairAndPortSecurityRequired(errors.Conflict):
    pass


def rule_dict(r: SecurityGroupRule | Any) -> dict[str, Any]:
    """A rule as the API and the agents' RPC show it."""
    return {
        "id": r.id, "tenant_id": r.project_id, "project_id": r.project_id,
        "security_group_id": r.security_group_id, "direction": r.direction, "ethertype": r.ethertype,
        "protocol": r.protocol, "port_range_min": r.port_range_min, "port_range_max": r.port_range_max,
        "remote_ip_prefix": r.remote_ip_prefix, "remote_group_id": r.remote_group_id,
        "remote_address_group_id": None, "normalized_cidr": r.remote_ip_prefix,
        "description": r.description, "revision_number": r.revision_number,
        "created_at": r.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": r.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# Protocols only IPv6 carries (Neutron refuses them on an IPv4 rule): IPv6-in-IP, routing
# and fragment headers, ICMPv6, no-next-header, destination options.
IPV6_ONLY_PROTOCOLS = frozenset({41, 43, 44, 58, 59, 60})
_ANY_PREFIXES = ("0.0.0.0/0", "::/0")
_PORT_PROTOCOL_NAMES = ", ".join(n.upper() for n in PORT_PROTOCOLS.values())


def protocol_number(protocol: Any, ethertype: str) -> int | str | None:
    """``protocol`` as Neutron compares it: its IANA number, ``icmp`` on IPv6 being
    ICMPv6 (58); None for any; a name the model does not know (old data) as itself."""
    if protocol is None or protocol in ("", "any"):
        return None
    text = str(protocol).lower()
    num = int(text) if text.isdigit() else PROTOCOL_NUMBERS.get(text)
    if num is None:
        return text
    return 58 if num == 1 and ethertype == "IPv6" else num


def rule_key(r: Any) -> tuple:
    """What makes two rules of one group the same rule (Neutron's ``_rule_to_key``):
    protocol by number, an all-addresses prefix the same as none."""
    get = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    prefix = get("remote_ip_prefix")
    if prefix is not None:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
            prefix = None if net.prefixlen == 0 else str(net)
        except ValueError:
            pass
    ethertype = get("ethertype") or "IPv4"
    return (get("direction"), ethertype, protocol_number(get("protocol"), ethertype),
            get("port_range_min"), get("port_range_max"), prefix, get("remote_group_id"))


def _check_ports(proto: int | str | None, lo: int | None, hi: int | None) -> None:
    """Neutron's ``_validate_port_range``."""
    if lo is None and hi is None:
        return
    if proto is None:
        raise SecurityGroupProtocolRequiredWithPorts("Must also specify protocol if port range is given.")
    if proto in PORT_PROTOCOLS:
        for port in (lo, hi):
            if port == 0:
                raise SecurityGroupInvalidPortValue("Invalid value for port 0.")
        if lo is None or hi is None:
            missing = "port_range_max" if hi is None else "port_range_min"
            raise SecurityGroupInvalidPortRange(
                "For TCP/UDP protocols, port_range_min must be <= port_range_max "
                f"({missing} is missing: give both, the same value for a single port).")
        if lo > hi:
            raise SecurityGroupInvalidPortRange("For TCP/UDP protocols, port_range_min must be <= port_range_max")
    elif proto in (1, 58):
        for value, field, attr in ((lo, "type", "port_range_min"), (hi, "code", "port_range_max")):
            if value is not None and not 0 <= value <= 255:
                raise SecurityGroupInvalidIcmpValue(
                    f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.")
        if lo is None:
            raise SecurityGroupMissingIcmpType(
                f"ICMP code (port-range-max) {hi} is provided but ICMP type (port-range-min) is missing.")
    else:
        raise SecurityGroupInvalidProtocolForPort(
            f"Invalid protocol {proto} for port range, only supported for {_PORT_PROTOCOL_NAMES}.")


def check_rule(given: dict[str, Any]) -> dict[str, Any]:
    """Neutron's rule checks, then the firewall model's (the renderer's own contract)."""
    lo, hi = given.get("port_range_min"), given.get("port_range_max")
    proto = given.get("protocol")
    ethertype = given.get("ethertype", "IPv4")
    prefix = given.get("remote_ip_prefix")
    if prefix is not None:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise errors.InvalidInput(f"Invalid input for remote_ip_prefix. Reason: '{prefix}' is not a valid CIDR.") from None
        if (net.version == 4) != (ethertype == "IPv4"):
            raise SecurityGroupRuleParameterConflict(
                f"Conflicting value ethertype {ethertype} for CIDR {prefix}")
        given["remote_ip_prefix"] = str(net)
    if prefix is not None and given.get("remote_group_id"):
        raise errors.BadRequest("Only remote_ip_prefix or remote_group_id may be provided.",
                                type_name="SecurityGroupRemoteGroupAndRemoteIpPrefix")
    num = protocol_number(proto, ethertype)
    if isinstance(num, str) or (num is not None and not 0 <= num <= 255):
        raise SecurityGroupRuleInvalidProtocol(f"Security group rule protocol {proto} not supported.")
    if ethertype == "IPv4" and num in IPV6_ONLY_PROTOCOLS:
        raise SecurityGroupEthertypeConflictWithProtocol(f"Invalid ethertype {ethertype} for protocol {proto}.")
    _check_ports(num, lo, hi)
    try:
        Rule(direction=given["direction"], ethertype=ethertype, protocol=proto,
             port_range_min=lo, port_range_max=hi, remote_ip_prefix=given.get("remote_ip_prefix"),
             remote_group_id=given.get("remote_group_id"))
    except ValueError as e:
        if "protocol" in str(e):
            raise SecurityGroupRuleInvalidProtocol(f"Security group rule protocol {proto} not supported.") from None
        raise SecurityGroupInvalidPortValue(f"Invalid security group rule: {e}") from None
    return given
