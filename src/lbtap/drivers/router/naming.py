"""Names of the namespaces and devices the DHCP and L3 drivers create.

Neutron's names are a compatibility contract (operators look for ``qrouter-<id>`` and
``qdhcp-<id>``; the L2 agent finds the host end ``tap<port_id[:11]>``). When an agent
manages a simulated host namespace (issue 7, item 3) the namespaces it creates carry
that host as a suffix, ``qrouter-<id>-<host>``, so that several simulated hosts can
serve the same router or network side by side on one machine.
"""

from __future__ import annotations

import hashlib
import re

from lbtap.domain.naming import ID_CHARS, IFNAMSIZ, tap_name

ROUTER_NS_PREFIX = "qrouter-"
DHCP_NS_PREFIX = "qdhcp-"
INTERNAL_DEV_PREFIX = "qr-"  # router end of an interface port
GATEWAY_DEV_PREFIX = "qg-"  # router end of the gateway port
DHCP_DEV_PREFIX = "ns-"  # namespace end of a DHCP port (Neutron's BridgeInterfaceDriver)

# iproute2 refuses namespace names longer than NAME_MAX (a file in /run/netns).
NETNS_NAME_MAX = 255
_HOST_OK = re.compile(r"^[A-Za-z0-9._-]+$")
_HOST_HASH = 8


def _host_suffix(host: str) -> str:
    """A file-name safe form of ``host``: unsafe characters become '_'.

    Two hosts that only differ in unsafe characters would collide, so such a name
    also gets a short hash of the original.
    """
    if _HOST_OK.match(host):
        return host
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", host)
    return f"{cleaned}_{hashlib.sha1(host.encode()).hexdigest()[:_HOST_HASH]}"


def scoped_namespace(prefix: str, resource_id: str, host: str | None = None) -> str:
    """``<prefix><id>`` or ``<prefix><id>-<host>``, at most ``NETNS_NAME_MAX`` chars.

    A host that would overflow the limit is shortened and made unique by a hash.
    """
    if not resource_id or "/" in resource_id:
        raise ValueError(f"invalid id {resource_id!r} for a namespace name")
    base = f"{prefix}{resource_id}"
    if not host:
        if len(base) > NETNS_NAME_MAX:
            raise ValueError(f"namespace name for {resource_id!r} is too long")
        return base
    suffix = _host_suffix(host)
    name = f"{base}-{suffix}"
    if len(name) <= NETNS_NAME_MAX:
        return name
    digest = hashlib.sha1(host.encode()).hexdigest()[:_HOST_HASH]
    keep = NETNS_NAME_MAX - len(base) - 2 - len(digest)
    if keep < 1:
        raise ValueError(f"namespace name for {resource_id!r} is too long")
    return f"{base}-{suffix[:keep]}_{digest}"


def router_namespace(router_id: str, host: str | None = None) -> str:
    """``qrouter-<router_id>`` (``-<host>`` when an agent manages a host namespace)."""
    return scoped_namespace(ROUTER_NS_PREFIX, router_id, host)


def dhcp_namespace(network_id: str, host: str | None = None) -> str:
    """``qdhcp-<network_id>`` (``-<host>`` when an agent manages a host namespace)."""
    return scoped_namespace(DHCP_NS_PREFIX, network_id, host)


def owned_ids(namespaces: list[str], prefix: str, host: str | None = None) -> list[str]:
    """Ids of the namespaces in ``namespaces`` that ``prefix`` + ``host`` would name.

    An agent uses this after a restart to find its own stale namespaces. Without a
    host, names that carry any host suffix cannot be told apart from ids containing
    '-' (UUIDs do), so only the exact form is matched: ``<prefix><id>`` whose id has
    the shape of a UUID; with a host, ``<prefix><id>-<host>``.
    """
    out = []
    for name in namespaces:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if host:
            tail = "-" + _host_suffix(host)
            if rest.endswith(tail) and len(rest) > len(tail):
                rest = rest[: -len(tail)]
                if scoped_namespace(prefix, rest, host) == name:
                    out.append(rest)
        elif _UUID.match(rest):
            out.append(rest)
    return out


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _dev(prefix: str, port_id: str) -> str:
    name = prefix + port_id[:ID_CHARS]
    assert len(name) <= IFNAMSIZ
    return name


def internal_device(port_id: str) -> str:
    """Router end of a ``network:router_interface`` port: ``qr-`` + port_id[:11]."""
    return _dev(INTERNAL_DEV_PREFIX, port_id)


def gateway_device(port_id: str) -> str:
    """Router end of the ``network:router_gateway`` port: ``qg-`` + port_id[:11]."""
    return _dev(GATEWAY_DEV_PREFIX, port_id)


def dhcp_device(port_id: str) -> str:
    """Namespace end of a ``network:dhcp`` port: ``ns-`` + port_id[:11]."""
    return _dev(DHCP_DEV_PREFIX, port_id)


def host_device(port_id: str) -> str:
    """Host end of any of those veths, which the L2 agent enslaves: ``tap`` + id[:11]."""
    return tap_name(port_id)
