"""Kernel device names derived from Neutron ids.

The names are part of the compatibility contract: operators, hypervisors (libvirt,
os-vif) and the server all derive the same name from an id, and the server resolves a
tap name back to its port by id prefix.
"""

from __future__ import annotations

import hashlib

IFNAMSIZ = 15  # usable characters of a Linux interface name (16 with the NUL)

BRIDGE_PREFIX = "brq"
TAP_PREFIX = "tap"
VXLAN_PREFIX = "vxlan-"
ID_CHARS = 11  # "tap" + 11 = 14 characters, under IFNAMSIZ


def bridge_name(network_id: str) -> str:
    """Bridge of a network on a host: ``brq`` + the first 11 characters of its id."""
    return BRIDGE_PREFIX + network_id[:ID_CHARS]


def tap_name(port_id: str) -> str:
    """Host-side device of a port: ``tap`` + the first 11 characters of its id."""
    return TAP_PREFIX + port_id[:ID_CHARS]


def vxlan_name(vni: int) -> str:
    """VXLAN device of a segment: ``vxlan-<vni>`` (at most 14 characters for 24-bit VNIs)."""
    return f"{VXLAN_PREFIX}{vni}"


def vlan_name(physdev: str, vlan_id: int) -> str:
    """VLAN sub-interface ``<physdev>.<vid>``; hashed when it would exceed IFNAMSIZ.

    Neutron shortens long names by keeping a prefix of the device and appending a hash,
    so that two long parents never collide.
    """
    name = f"{physdev}.{vlan_id}"
    if len(name) <= IFNAMSIZ:
        return name
    suffix = f".{vlan_id}"
    digest = hashlib.sha1(physdev.encode()).hexdigest()[:4]
    keep = IFNAMSIZ - len(suffix) - len(digest)
    return f"{physdev[:keep]}{digest}{suffix}"


def port_id_prefix(device: str) -> str | None:
    """The port-id prefix encoded in a tap name, or None if it is not a tap name."""
    if device.startswith(TAP_PREFIX) and len(device) > len(TAP_PREFIX):
        return device[len(TAP_PREFIX):]
    return None


def is_tap(device: str) -> bool:
    """True for names the agent manages as port devices."""
    return port_id_prefix(device) is not None


def is_bridge(device: str) -> bool:
    """True for names of network bridges the agent owns."""
    return device.startswith(BRIDGE_PREFIX) and len(device) > len(BRIDGE_PREFIX)


def validate_ifname(name: str) -> str:
    """Return ``name`` if it is a valid Linux interface name, else raise ValueError."""
    if not name or len(name) > IFNAMSIZ or name in (".", ".."):
        raise ValueError(f"invalid interface name {name!r}: 1-{IFNAMSIZ} characters")
    if any(c in name for c in "/: \t\n") or not name.isprintable():
        raise ValueError(f"invalid interface name {name!r}: no '/', ':' or whitespace")
    return name
