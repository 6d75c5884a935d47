"""Host-side router driver: a router namespace with veth ports, routes and nftables NAT.

- ``model``: ``Router``, ``RouterPort``, ``Gateway``, ``FloatingIP``, ``ExtraRoute``.
- ``nat``: ``render_nat(router) -> str``, one ``nft -f`` transaction per sync.
- ``namespace``: ``RouterNamespace(router_id, host=..., host_netns=...)`` with ``sync``
  and ``destroy``; pure ``desired_addresses`` / ``desired_routes``; ``destroy_namespace``
  (veths, then the namespace: also used for DHCP namespaces).
- ``system``: ``LinuxSystem`` (namespaces, sysctls, nft, conntrack).
- ``naming``: ``qrouter-``/``qdhcp-`` namespace names (optional host suffix), ``qr-``,
  ``qg-``, ``ns-`` and ``tap`` device names.
"""

from lbtap.drivers.router.model import ExtraRoute, FloatingIP, Gateway, Router, RouterPort
from lbtap.drivers.router.namespace import (
    RouterNamespace,
    SyncResult,
    desired_addresses,
    desired_routes,
    destroy_namespace,
)
from lbtap.drivers.router.naming import (
    dhcp_namespace,
    gateway_device,
    host_device,
    internal_device,
    router_namespace,
)
from lbtap.drivers.router.nat import render_nat
from lbtap.drivers.router.system import LinuxSystem, RouterSystem

__all__ = [
    "ExtraRoute", "FloatingIP", "Gateway", "LinuxSystem", "Router", "RouterNamespace", "RouterPort",
    "RouterSystem", "SyncResult", "desired_addresses", "desired_routes", "destroy_namespace", "dhcp_namespace",
    "gateway_device", "host_device", "internal_device", "render_nat", "router_namespace",
]
