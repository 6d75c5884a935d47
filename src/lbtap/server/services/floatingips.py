"""Floating IPs: an address on a ``router:external`` network, optionally NATed to a port.

Each floating IP owns a ``network:floatingip`` port on the external network (status
``N/A``, as in the seed's table) holding its address. Associating it with a port
finds the router that can do the NAT: one whose gateway is on the floating network
and which has an interface on the subnet of the fixed IP (Neutron's
ExternalGatewayForFloatingIPNotFound otherwise). Status: ACTIVE while associated,
DOWN otherwise. Changes notify ``router_updated`` for the routers involved.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.l3_models import FloatingIP, Router
from lbtap.server.db.models import IPAllocation, Network, Port
from lbtap.server.services import attributes
from lbtap.server.services import validators as v
from lbtap.server.services.attributes import COMMON, Attr, _ro
from lbtap.server.services.base import ResourceService, check_can_write, check_owner

ADMIN = Context.admin()

FLOATINGIP: dict[str, Attr] = {
    **{k: a for k, a in COMMON.items() if k != "name"},
    "floating_network_id": Attr(convert=v.uuid_str, post=True, column="floating_network_id"),
    "floating_ip_address": Attr(convert=v.ip, post=True, column="floating_ip_address"),
    "subnet_id": Attr(convert=v.uuid_str, post=True),
    "port_id": Attr(convert=lambda n, x: None if x is None else v.uuid_str(n, x), post=True, put=True,
                    column="fixed_port_id"),
    "fixed_ip_address": Attr(convert=lambda n, x: None if x is None else v.ip(n, x), post=True, put=True,
                             column="fixed_ip_address"),
    "router_id": _ro("router_id"),
    "status": _ro("status"),
    "port_details": _ro(),
}
attributes.ATTRIBUTES.setdefault("floatingips", FLOATINGIP)


class FloatingIPNotFound(errors.NotFound):
    pass


class FloatingIPService(ResourceService):
    resource = "floatingips"
    model = FloatingIP
    not_found = FloatingIPNotFound

    def __init__(self, *args: Any, ports: ResourceService):
        super().__init__(*args)
        self.ports = ports

    @property
    def _label(self) -> str:
        return "Floating IP"

    def to_dict(self, f: FloatingIP) -> dict[str, Any]:
        return {"id": f.id, "floating_network_id": f.floating_network_id,
                "floating_ip_address": f.floating_ip_address, "port_id": f.fixed_port_id,
                "fixed_ip_address": f.fixed_ip_address, "router_id": f.router_id, "status": f.status,
                "port_details": None, **self.std_fields(f)}

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows = {f.id: f for f in session.scalars(select(FloatingIP).where(FloatingIP.id.in_(ids)))}
        return [self.to_dict(rows[i]) for i in ids if i in rows]

    def _notify_routers(self, *router_ids: str | None) -> None:
        if not hasattr(self.notifier, "router_updated"):
            return
        for rid in sorted({r for r in router_ids if r}):
            self.notify("router_updated", {"id": rid})

    # -- association ----------------------------------------------------------------
    def resolve(self, session: Session, ctx: Context, floating_net: str, port_id: str,
                fixed_ip: str | None, own_id: str | None) -> tuple[str, str]:
        """(fixed_ip_address, router_id) for associating with ``port_id``."""
        port = session.get(Port, port_id)
        if port is None or (ctx.project_id is not None and port.project_id != ctx.project_id and not ctx.is_admin):
            raise errors.PortNotFound(f"Port {port_id} could not be found.")
        ips = session.execute(select(IPAllocation.ip_address, IPAllocation.subnet_id).where(
            IPAllocation.port_id == port_id)).all()
        v4 = [(ip, sid) for ip, sid in ips if ipaddress.ip_address(ip).version == 4]
        if fixed_ip is not None:
            v4 = [(ip, sid) for ip, sid in v4 if ip == fixed_ip]
            if not v4:
                raise errors.BadRequest(f"Port {port_id} does not have fixed ip {fixed_ip}")
        if not v4:
            raise errors.BadRequest(f"Port {port_id} does not have an IPv4 address to associate with")
        if len(v4) > 1 and fixed_ip is None:
            raise errors.BadRequest(f"Port {port_id} has multiple fixed IPv4 addresses; specify fixed_ip_address")
        ip, subnet_id = v4[0]
        taken = session.scalar(select(FloatingIP.id).where(
            FloatingIP.fixed_port_id == port_id, FloatingIP.fixed_ip_address == ip,
            FloatingIP.floating_network_id == floating_net))
        if taken and taken != own_id:
            raise errors.Conflict(f"Cannot associate floating IP with port {port_id} using fixed IP {ip}, as "
                                  f"that fixed IP already has floating IP {taken} on the external network",
                                  type_name="FloatingIPPortAlreadyAssociated")
        interface_routers = select(Port.device_id).join(IPAllocation, IPAllocation.port_id == Port.id).where(
            Port.device_owner == c.DEVICE_OWNER_ROUTER_INTF, IPAllocation.subnet_id == subnet_id)
        rid = session.scalar(select(Router.id).where(Router.id.in_(interface_routers),
                                                     Router.gw_network_id == floating_net).order_by(Router.id))
        if rid is None:
            raise errors.NotFound(f"External network {floating_net} is not reachable from subnet {subnet_id}. "
                                  f"Therefore, cannot associate Port {port_id} with a Floating IP.",
                                  type_name="ExternalGatewayForFloatingIPNotFound")
        return ip, rid

    # -- writes ---------------------------------------------------------------------
    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        return [self._create(ctx, b) for b in bodies]

    def _create(self, ctx: Context, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=True)
        if "floating_network_id" not in given:
            raise errors.BadRequest("Failed to parse request. Required attribute 'floating_network_id' not specified")
        net_id = given["floating_network_id"]
        net = self.db.read(lambda s: s.get(Network, net_id))
        if net is None:
            raise errors.NetworkNotFound(f"Network {net_id} could not be found.")
        if not net.router_external:
            raise errors.BadRequest(f"Bad floatingip request: Network {net_id} is not a valid external network.")
        fid = str(uuid.uuid4())
        project = attributes.owner_project(ctx, given)
        fixed: dict[str, str] = {}
        if "subnet_id" in given:
            fixed["subnet_id"] = given["subnet_id"]
        if "floating_ip_address" in given:
            fixed["ip_address"] = given["floating_ip_address"]
        port = self.ports.create_bulk(ADMIN, [{
            "network_id": net_id, "device_owner": c.DEVICE_OWNER_FLOATINGIP, "device_id": fid,
            "tenant_id": project, **({"fixed_ips": [fixed]} if fixed else {})}])[0]
        v4 = [f for f in port["fixed_ips"] if ipaddress.ip_address(f["ip_address"]).version == 4]

        def run(session: Session) -> dict:
            if not v4:
                raise errors.BadRequest(f"Network {net_id} has no IPv4 subnet for floating IPs")
            now = self.now()
            f = FloatingIP(id=fid, project_id=project, floating_network_id=net_id, floating_port_id=port["id"],
                           floating_ip_address=v4[0]["ip_address"], status=c.PORT_STATUS_DOWN,
                           description=given.get("description", ""), tags=given.get("tags", []),
                           created_at=now, updated_at=now, revision_number=0)
            if given.get("port_id"):
                f.fixed_ip_address, f.router_id = self.resolve(session, ctx, net_id, given["port_id"],
                                                               given.get("fixed_ip_address"), fid)
                f.fixed_port_id, f.status = given["port_id"], c.PORT_STATUS_ACTIVE
            session.add(f)
            session.flush()
            return self.to_dict(f)

        try:
            out = self.db.write(run)
        except BaseException:
            self.ports.delete(ADMIN, port["id"])
            raise
        self._notify_routers(out["router_id"])
        return out

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)

        def run(session: Session) -> tuple[str | None, dict]:
            f = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, f.project_id, "floating IP")
            old_router = f.router_id
            for key in ("description", "tags"):
                if key in given:
                    setattr(f, key, given[key])
            if "port_id" in given:
                if given["port_id"] is None:
                    f.fixed_port_id = f.fixed_ip_address = f.router_id = None
                    f.status = c.PORT_STATUS_DOWN
                else:
                    f.fixed_ip_address, f.router_id = self.resolve(
                        session, ctx, f.floating_network_id, given["port_id"], given.get("fixed_ip_address"), f.id)
                    f.fixed_port_id, f.status = given["port_id"], c.PORT_STATUS_ACTIVE
            self.bump(f)
            session.flush()
            return old_router, self.to_dict(f)

        old_router, out = self.db.write(run)
        self._notify_routers(old_router, out["router_id"])
        return out

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> tuple[str | None, str]:
            f = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, f.project_id, "floating IP")
            session.delete(f)
            return f.router_id, f.floating_port_id

        router_id, port_id = self.db.write(run)
        try:
            self.ports.delete(ADMIN, port_id)
        except errors.NotFound:
            pass
        self._notify_routers(router_id)

    def disassociate_port(self, port_id: str) -> list[str]:
        """A fixed port was deleted: its floating IPs stay, unassociated (Neutron);
        returns the routers to update."""
        def run(session: Session) -> list[str]:
            routers = []
            for f in session.scalars(select(FloatingIP).where(FloatingIP.fixed_port_id == port_id)):
                routers.append(f.router_id)
                f.fixed_port_id = f.fixed_ip_address = f.router_id = None
                f.status = c.PORT_STATUS_DOWN
                self.bump(f)
            return [r for r in routers if r]

        routers = self.db.write(run)
        self._notify_routers(*routers)
        return routers
