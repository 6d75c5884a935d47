"""Server side of the DHCP flow (seed section 3, "DHCP port"): casts and RPC methods.

Flow: the user creates a network / subnet → the data layer notifies us after commit →
we fan ``network_create_end`` / ``subnet_create_end`` … out to every DHCP agent on
``DHCP_TOPIC`` and return at once → an agent serving the network asks for its
``network:dhcp`` port with ``create_dhcp_port`` → the server allocates it (bound to
the agent's host) → the agent plugs ``tap<port_id[:11]>`` and the L2 agent makes it
ACTIVE. Port changes are cast too, so the agent's leases follow the ports.

Scheduling: every DHCP agent serves every network with a DHCP-enabled subnet
(Neutron's ``dhcp_agents_per_network`` set to "all"); on one all-in-one host that is
exactly one agent, and with simulated hosts (issue 7 item 3) each serves it side by
side from its own ``qdhcp-<net>-<host>`` namespace.

The RPC methods run in the server's RPC worker threads and only use ``Services``
with the admin context, so every validation and notification of the API applies.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.outbox import Outbox
from lbtap.server.services.query import ListQuery

log = logging.getLogger(__name__)

DHCP_TOPIC = "dhcp_agent"  # server -> DHCP agents (fanout), Neutron's topic name

# server -> DHCP agent casts (Neutron's method names)
NETWORK_CREATE_END = "network_create_end"
NETWORK_UPDATE_END = "network_update_end"
NETWORK_DELETE_END = "network_delete_end"
SUBNET_CREATE_END = "subnet_create_end"
SUBNET_UPDATE_END = "subnet_update_end"
SUBNET_DELETE_END = "subnet_delete_end"
PORT_CREATE_END = "port_create_end"
PORT_UPDATE_END = "port_update_end"
PORT_DELETE_END = "port_delete_end"

# DHCP agent -> server calls
GET_ACTIVE_NETWORKS_INFO = "get_active_networks_info"
GET_NETWORK_INFO = "get_network_info"
CREATE_DHCP_PORT = "create_dhcp_port"
RELEASE_DHCP_PORT = "release_dhcp_port"


def dhcp_device_id(network_id: str, host: str) -> str:
    """Neutron's ``dhcp<host uuid>-<network_id>``: one DHCP port per (network, host)."""
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{network_id}"


def served_subnets(subnets: list[dict]) -> list[dict]:
    """Subnets a DHCP port needs an address on: DHCP-enabled IPv4 and DHCPv6 ones."""
    out = []
    for s in subnets:
        if not s.get("enable_dhcp"):
            continue
        if s.get("ip_version") == 6 and s.get("ipv6_address_mode") == "slaac":
            continue
        out.append(s)
    return out


class DhcpRpc:
    """The calls DHCP agents make (registered in ``parts.rpc_handlers``)."""

    def __init__(self, services: Any):
        self.services = services
        self.ctx = Context.admin()

    def _list(self, resource: str, **filters: Any) -> list[dict]:
        q = ListQuery(filters={k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in filters.items()})
        return self.services.list(self.ctx, resource, q).items

    def get_network_info(self, network_id: str, host: str = "", **_: Any) -> dict | None:
        """The network with ``subnets`` and ``ports`` as dicts (None: it is gone)."""
        try:
            net = self.services.get(self.ctx, "networks", network_id)
        except errors.NotFound:
            return None
        info = dict(net)
        info["subnets"] = self._list("subnets", network_id=network_id)
        info["ports"] = self._list("ports", network_id=network_id)
        return info

    def get_active_networks_info(self, host: str = "", **_: Any) -> list[dict]:
        """Every network that has a DHCP-enabled subnet (what an agent must serve)."""
        ids = sorted({s["network_id"] for s in self._list("subnets", enable_dhcp="true")})
        return [i for i in (self.get_network_info(n, host) for n in ids) if i is not None]

    def create_dhcp_port(self, network_id: str, host: str, **_: Any) -> dict | None:
        """The ``network:dhcp`` port of (network, host): created, or updated so that it
        has one address on each served subnet (existing addresses are kept)."""
        device_id = dhcp_device_id(network_id, host)
        try:
            subnets = served_subnets(self._list("subnets", network_id=network_id))
        except errors.NotFound:
            return None
        if not subnets:
            return None
        wanted = [{"subnet_id": s["id"]} for s in subnets]
        existing = self._list("ports", network_id=network_id, device_id=device_id)
        if existing:
            port = existing[0]
            have = {f["subnet_id"] for f in port["fixed_ips"]}
            if have == {s["id"] for s in subnets} and port.get("binding:host_id") == host:
                return port
            return self.services.update(self.ctx, "ports", port["id"], {
                "fixed_ips": wanted, "binding:host_id": host})
        try:
            return self.services.create(self.ctx, "ports", {
                "network_id": network_id, "name": "", "device_owner": c.DEVICE_OWNER_DHCP,
                "device_id": device_id, "fixed_ips": wanted, "binding:host_id": host})
        except errors.NotFound:
            return None  # the network went away meanwhile

    def release_dhcp_port(self, network_id: str, host: str, **_: Any) -> int:
        """Delete (network, host)'s DHCP port(s); returns how many went."""
        n = 0
        try:
            ports = self._list("ports", network_id=network_id, device_id=dhcp_device_id(network_id, host))
        except errors.NotFound:
            return 0
        for p in ports:
            try:
                self.services.delete(self.ctx, "ports", p["id"])
                n += 1
            except errors.NotFound:
                pass
        return n


class DhcpNotifier:
    """Data-layer notifications → fanout casts to DHCP agents (never blocks a request)."""

    def __init__(self, bus: Any, loop: asyncio.AbstractEventLoop):
        self.bus = bus
        self.loop = loop
        self._outbox = Outbox(loop, "dhcp notification")

    def _cast(self, method: str, **kwargs: Any) -> None:
        async def run() -> None:
            try:
                await self.bus.fanout(DHCP_TOPIC, method, **kwargs)
            except Exception as e:  # agents resync periodically: a lost cast heals
                log.warning("dhcp notification %s failed: %s", method, e)

        self._outbox.submit(run)

    def idle(self) -> bool:
        """True when everything handed over so far has been sent."""
        return self._outbox.idle()

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every cast handed over so far has been sent; False on timeout."""
        return await self._outbox.drain(timeout)

    def network_created(self, network: dict) -> None:
        self._cast(NETWORK_CREATE_END, network_id=network["id"])

    def network_updated(self, network: dict, original: dict | None = None) -> None:
        self._cast(NETWORK_UPDATE_END, network_id=network["id"])

    def network_deleted(self, network: dict) -> None:
        self._cast(NETWORK_DELETE_END, network_id=network["id"])

    def subnet_created(self, subnet: dict) -> None:
        self._cast(SUBNET_CREATE_END, network_id=subnet["network_id"], subnet_id=subnet["id"])

    def subnet_updated(self, subnet: dict, original: dict | None = None) -> None:
        self._cast(SUBNET_UPDATE_END, network_id=subnet["network_id"], subnet_id=subnet["id"])

    def subnet_deleted(self, subnet: dict) -> None:
        self._cast(SUBNET_DELETE_END, network_id=subnet["network_id"], subnet_id=subnet["id"])

    def port_created(self, port: dict) -> None:
        self._cast(PORT_CREATE_END, network_id=port["network_id"], port_id=port["id"])

    def port_updated(self, port: dict, original: dict | None = None) -> None:
        # Status flips (ACTIVE/DOWN) do not reach the notifier; what does may change a lease.
        self._cast(PORT_UPDATE_END, network_id=port["network_id"], port_id=port["id"])

    def port_deleted(self, port: dict) -> None:
        self._cast(PORT_DELETE_END, network_id=port["network_id"], port_id=port["id"])


def install(parts: Any) -> None:
    """Server extension hook (``lbtap.server.process.EXTENSION_MODULES``)."""
    rpc = DhcpRpc(parts.services)
    parts.rpc_handlers.update({
        GET_ACTIVE_NETWORKS_INFO: rpc.get_active_networks_info,
        GET_NETWORK_INFO: rpc.get_network_info,
        CREATE_DHCP_PORT: rpc.create_dhcp_port,
        RELEASE_DHCP_PORT: rpc.release_dhcp_port,
    })
    if parts.loop is not None:
        parts.notifiers.append(DhcpNotifier(parts.bus, parts.loop))
