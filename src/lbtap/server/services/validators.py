"""Pure validators and converters for attribute values; they raise InvalidInput (400).

Each takes the attribute name (for the message) and the raw JSON value and returns the
normalised value that is stored.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from typing import Any

from lbtap.server.errors import InvalidInput

NAME_MAX = 255
DESCRIPTION_MAX = 255
_MAC = re.compile(r"^([0-9a-fA-F]{2})([:-][0-9a-fA-F]{2}){5}$")
_DNS_LABEL = re.compile(r"^(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")
VNIC_TYPES = ("normal", "direct", "macvtap", "baremetal", "direct-physical", "virtio-forwarder",
              "smart-nic", "remote-managed", "vdpa")
IPV6_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")


def bad(name: str, why: str) -> InvalidInput:
    return InvalidInput(f"Invalid input for {name}. Reason: {why}.")


def string(name: str, v: Any, max_len: int = NAME_MAX) -> str:
    if not isinstance(v, str):
        raise bad(name, f"'{v}' is not a valid string")
    if "\x00" in v:  # PostgreSQL cannot store NUL in text
        raise bad(name, "NUL characters are not allowed")
    if len(v) > max_len:
        raise bad(name, f"'{v[:20]}...' exceeds maximum length of {max_len}")
    return v


def boolean(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise bad(name, f"'{v}' cannot be converted to boolean")


def integer(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise bad(name, f"'{v}' is not an integer")
    try:
        n = int(v)
    except ValueError:
        raise bad(name, f"'{v}' is not an integer") from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise bad(name, f"'{n}' is not in range {lo} through {hi}")
    return n


def uuid_str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise bad(name, f"'{v}' is not a valid UUID")
    try:
        return str(uuid.UUID(v)) if len(v) in (32, 36) else _raise()
    except ValueError:
        raise bad(name, f"'{v}' is not a valid UUID") from None


def _raise() -> str:
    raise ValueError


def uuid_or_none(name: str, v: Any) -> str | None:
    return None if v is None else uuid_str(name, v)


def mac(name: str, v: Any) -> str:
    if not isinstance(v, str) or not _MAC.match(v):
        raise bad(name, f"'{v}' is not a valid MAC address")
    norm = v.lower().replace("-", ":")
    first = int(norm[:2], 16)
    if norm == "00:00:00:00:00:00" or first & 1:
        raise bad(name, f"'{v}' is not a valid unicast MAC address")
    return norm


def ip(name: str, v: Any, version: int | None = None) -> str:
    if not isinstance(v, str):
        raise bad(name, f"'{v}' is not a valid IP address")
    try:
        addr = ipaddress.ip_address(v)
    except ValueError:
        raise bad(name, f"'{v}' is not a valid IP address") from None
    if version is not None and addr.version != version:
        raise bad(name, f"'{v}' is not an IPv{version} address")
    return str(addr)


def ip_or_none(name: str, v: Any) -> str | None:
    return None if v is None else ip(name, v)


def cidr(name: str, v: Any) -> str:
    """A network in canonical form; host bits set is an error (Neutron's rule)."""
    if not isinstance(v, str) or "/" not in v:
        raise bad(name, f"'{v}' is not a valid CIDR")
    try:
        net = ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise bad(name, f"'{v}' is not a valid CIDR") from None
    if str(net) != str(ipaddress.ip_interface(v).network) or ipaddress.ip_interface(v).ip != net.network_address:
        raise bad(name, f"'{v}' isn't a recommended CIDR, use '{net}' instead")
    return str(net)


def ip_or_cidr(name: str, v: Any) -> str:
    if isinstance(v, str) and "/" in v:
        try:
            return str(ipaddress.ip_network(v, strict=True))
        except ValueError:
            raise bad(name, f"'{v}' is not a valid IP address or CIDR") from None
    return ip(name, v)


def str_list(name: str, v: Any, item=None) -> list:  # noqa: ANN001
    if not isinstance(v, list):
        raise bad(name, f"'{v}' is not a list")
    out = [item(name, x) if item else string(name, x) for x in v]
    if len(set(map(str, out))) != len(out):
        raise bad(name, f"duplicate items in the list: '{v}'")
    return out


def tags(name: str, v: Any) -> list[str]:
    out = str_list(name, v)
    for t in out:
        if not t or len(t) > 255 or "," in t or "/" in t:
            raise bad(name, f"'{t}' is not a valid tag")
    return out


def dict_value(name: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise bad(name, f"'{v}' is not a dictionary")
    if "\\u0000" in json.dumps(v):  # PostgreSQL cannot store NUL in text
        raise bad(name, "NUL characters are not allowed")
    return v


def dns_name(name: str, v: Any) -> str:
    s = string(name, v)
    if s:
        labels = s.rstrip(".").split(".")
        if len(s) > 253 or not all(_DNS_LABEL.match(lbl) for lbl in labels):
            raise bad(name, f"'{s}' is not a valid DNS name")
    return s


def one_of(name: str, v: Any, choices: tuple) -> Any:
    if v not in choices:
        raise bad(name, f"'{v}' is not in {list(choices)}")
    return v


def host_routes(name: str, v: Any) -> list[dict[str, str]]:
    if not isinstance(v, list):
        raise bad(name, f"'{v}' is not a list")
    out = []
    for r in v:
        if not isinstance(r, dict) or set(r) != {"destination", "nexthop"}:
            raise bad(name, f"'{r}' must have exactly destination and nexthop")
        out.append({"destination": cidr(name, r["destination"]), "nexthop": ip(name, r["nexthop"])})
    if len({(r["destination"], r["nexthop"]) for r in out}) != len(out):
        raise bad(name, "duplicate host routes")
    return out


def allocation_pools(name: str, v: Any) -> list[dict[str, str]]:
    if not isinstance(v, list):
        raise bad(name, f"'{v}' is not a list")
    out = []
    for p in v:
        if not isinstance(p, dict) or set(p) != {"start", "end"}:
            raise bad(name, f"'{p}' must have exactly start and end")
        out.append({"start": ip(name, p["start"]), "end": ip(name, p["end"])})
    return out


def address_pairs(name: str, v: Any) -> list[dict[str, str]]:
    if not isinstance(v, list):
        raise bad(name, f"'{v}' is not a list")
    out = []
    for p in v:
        if not isinstance(p, dict) or "ip_address" not in p or set(p) - {"ip_address", "mac_address"}:
            raise bad(name, f"'{p}' must have ip_address and optionally mac_address")
        pair = {"ip_address": ip_or_cidr(name, p["ip_address"])}
        if p.get("mac_address") is not None:
            pair["mac_address"] = mac(name, p["mac_address"])
        out.append(pair)
    return out


def fixed_ips(name: str, v: Any) -> list[dict[str, str]]:
    """Requested fixed IPs: each with subnet_id and/or ip_address."""
    if not isinstance(v, list):
        raise bad(name, f"'{v}' is not a list")
    out = []
    for f in v:
        if not isinstance(f, dict) or not f or set(f) - {"subnet_id", "ip_address"}:
            raise bad(name, f"'{f}' must have subnet_id and/or ip_address")
        item = {}
        if "subnet_id" in f:
            item["subnet_id"] = uuid_str(name, f["subnet_id"])
        if "ip_address" in f:
            item["ip_address"] = ip(name, f["ip_address"])
        out.append(item)
    return out
