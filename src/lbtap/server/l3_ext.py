"""Server side of the router flow (seed section 3, "router port"): casts and ``sync_routers``.

Flow: the user sets a gateway or adds an interface → the router service allocates
the port and notifies ``router_updated`` → we fan ``routers_updated`` out to the L3
agents on ``L3_TOPIC`` and the API answers → the hosting agent calls
``sync_routers(host)``, builds ``qrouter-<id>`` with the ``tap`` ends, and the L2
agent makes those ports ACTIVE.

Scheduling: a router is hosted by one L3 agent (``routers.host``); an unscheduled
router is claimed by the first L3 agent that syncs. Router ports get that host as
``binding:host_id``; before that, the L2 agent claims them when their tap appears.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.server.db.l3_models import FloatingIP, Router
from lbtap.server.db.models import Network, Port, Subnet
from lbtap.server.outbox import Outbox

log = logging.getLogger(__name__)

L3_TOPIC = "l3_agent"  # server -> L3 agents (fanout), Neutron's topic name
ROUTERS_UPDATED = "routers_updated"
ROUTER_DELETED = "router_deleted"
SYNC_ROUTERS = "sync_routers"  # L3 agent -> server
ROUTER_PORT_OWNERS = (c.DEVICE_OWNER_ROUTER_INTF, c.DEVICE_OWNER_ROUTER_GW)


def _svc(services: Any, name: str) -> Any:
    return services.service(name) if hasattr(services, "service") else services._svc(name)


class L3Rpc:
    """``sync_routers``: the routers an agent hosts, in the shape ``Router.from_dict`` reads."""

    def __init__(self, services: Any):
        self.services = services

    def sync_routers(self, host: str, router_ids: list[str] | None = None, **_: Any) -> list[dict]:
        ports_svc = _svc(self.services, "ports")

        def claim(session: Session) -> None:
            # Unscheduled routers go to the first agent asking; their ports follow.
            ids = [r for r, in session.execute(select(Router.id).where(Router.host == ""))]
            if ids:
                session.execute(update(Router).where(Router.id.in_(ids)).values(host=host)
                                .execution_options(synchronize_session=False))
                session.execute(update(Port).where(Port.device_id.in_(ids), Port.binding_host_id == "",
                                                   Port.device_owner.in_(ROUTER_PORT_OWNERS))
                                .values(binding_host_id=host).execution_options(synchronize_session=False))

        def read(session: Session) -> list[dict]:
            stmt = select(Router).where(Router.host == host, Router.admin_state_up.is_(True))
            if router_ids:
                stmt = stmt.where(Router.id.in_(router_ids))
            routers = list(session.scalars(stmt.order_by(Router.id)))
            if not routers:
                return []
            rids = [r.id for r in routers]
            port_ids = [p for p, in session.execute(select(Port.id).where(
                Port.device_id.in_(rids), Port.device_owner.in_(ROUTER_PORT_OWNERS)))]
            ports = ports_svc.load_admin(session, port_ids)
            sub_ids = {f["subnet_id"] for p in ports for f in p["fixed_ips"]}
            subnets = {s.id: {"id": s.id, "cidr": s.cidr, "gateway_ip": s.gateway_ip}
                       for s in session.scalars(select(Subnet).where(Subnet.id.in_(sub_ids)))}
            mtus = dict(session.execute(select(Network.id, Network.mtu).where(
                Network.id.in_({p["network_id"] for p in ports}))).all())
            fips: dict[str, list[dict]] = {}
            for f in session.scalars(select(FloatingIP).where(FloatingIP.router_id.in_(rids),
                                                              FloatingIP.fixed_ip_address.is_not(None))):
                fips.setdefault(f.router_id, []).append({"id": f.id, "floating_ip_address": f.floating_ip_address,
                                                         "fixed_ip_address": f.fixed_ip_address})
            out = []
            for r in routers:
                mine = [dict(p, subnets=[subnets[f["subnet_id"]] for f in p["fixed_ips"] if f["subnet_id"] in subnets],
                             mtu=mtus.get(p["network_id"], c.DEFAULT_MTU)) for p in ports if p["device_id"] == r.id]
                gw = next((p for p in mine if p["id"] == r.gw_port_id), None)
                out.append({"id": r.id, "admin_state_up": r.admin_state_up, "enable_snat": r.enable_snat,
                            "routes": [dict(x) for x in r.routes], "gw_port": gw,
                            "external_gateway_info": {"network_id": r.gw_network_id, "enable_snat": r.enable_snat}
                            if gw else None,
                            "_interfaces": [p for p in mine if p["device_owner"] == c.DEVICE_OWNER_ROUTER_INTF],
                            "_floatingips": fips.get(r.id, [])})
            return out

        db = self.services.db
        if db.read(lambda s: s.scalar(select(Router.id).where(Router.host == ""))):
            db.write(claim)
        return db.read(read)


class L3Notifier:
    """Data-layer notifications → ``routers_updated`` / ``router_deleted`` fanouts."""

    def __init__(self, services: Any, bus: Any, loop: asyncio.AbstractEventLoop):
        self.services = services
        self.bus = bus
        self.loop = loop
        self._outbox = Outbox(loop, "l3 notification")

    def _cast(self, method: str, **kwargs: Any) -> None:
        async def run() -> None:
            try:
                await self.bus.fanout(L3_TOPIC, method, **kwargs)
            except Exception as e:  # agents resync periodically
                log.warning("l3 notification %s failed: %s", method, e)

        self._outbox.submit(run)

    def idle(self) -> bool:
        """True when everything handed over so far has been sent."""
        return self._outbox.idle()

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every cast handed over so far has been sent; False on timeout."""
        return await self._outbox.drain(timeout)

    def router_updated(self, router: dict) -> None:
        self._cast(ROUTERS_UPDATED, router_ids=[router["id"]])

    def router_deleted(self, router: dict) -> None:
        self._cast(ROUTER_DELETED, router_id=router["id"])

    def port_deleted(self, port: dict) -> None:
        if port.get("device_owner") in ROUTER_PORT_OWNERS and port.get("device_id"):
            self._cast(ROUTERS_UPDATED, router_ids=[port["device_id"]])
        elif not port.get("device_owner", "").startswith("network:"):
            # Neutron keeps the floating IP of a deleted port, unassociated.
            _svc(self.services, "floatingips").disassociate_port(port["id"])


def install(parts: Any) -> None:
    """Server extension hook (``lbtap.server.process.EXTENSION_MODULES``)."""
    rpc = L3Rpc(parts.services)
    parts.rpc_handlers[SYNC_ROUTERS] = rpc.sync_routers
    if parts.loop is not None:
        parts.notifiers.append(L3Notifier(parts.services, parts.bus, parts.loop))
