"""Routers: CRUD, external gateway, extra routes, add/remove router interfaces.

Router ports are ordinary ports created through the port service (so allocation,
validation and DHCP leases apply to them): ``network:router_gateway`` on the
``router:external`` network and ``network:router_interface`` holding a subnet's
``gateway_ip``, all with ``device_id`` = router id. Each change notifies
``router_updated`` (or ``router_deleted``), which the L3 extension casts to the L3
agents as the seed's ``router_update``. Port writes are separate transactions from
the router row; a failure after a port was created removes that port again.
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
from lbtap.server.db.models import IPAllocation, Network, Port, Subnet
from lbtap.server.services import attributes
from lbtap.server.services import validators as v
from lbtap.server.services.attributes import COMMON, Attr, _ro, _rw
from lbtap.server.services.base import ResourceService, check_can_write, check_owner

ADMIN = Context.admin()


def gateway_info(name: str, x: Any) -> dict | None:
    """``external_gateway_info``: None/{} (no gateway) or {network_id, enable_snat?,
    external_fixed_ips?}."""
    if x is None or x == {}:
        return None
    if not isinstance(x, dict) or "network_id" not in x or set(x) - {"network_id", "enable_snat", "external_fixed_ips"}:
        raise v.bad(name, "must be {network_id, enable_snat, external_fixed_ips}")
    out: dict[str, Any] = {"network_id": v.uuid_str(name, x["network_id"])}
    if "enable_snat" in x:
        out["enable_snat"] = v.boolean(name, x["enable_snat"])
    if "external_fixed_ips" in x:
        out["external_fixed_ips"] = v.fixed_ips(name, x["external_fixed_ips"])
    return out


ROUTER: dict[str, Attr] = {
    **COMMON,
    "admin_state_up": _rw(v.boolean, "admin_state_up", "bool"),
    "status": _ro("status"),
    "external_gateway_info": _rw(gateway_info),
    "routes": Attr(convert=v.host_routes, put=True),
    "distributed": _ro(kind="bool"),
    "ha": _ro(kind="bool"),
    "flavor_id": _ro(),
    "availability_zone_hints": _ro(),
    "availability_zones": _ro(),
}
attributes.ATTRIBUTES.setdefault("routers", ROUTER)


class RouterInUse(errors.InUse):
    pass


class RouterNotFound(errors.NotFound):
    pass


class RouterService(ResourceService):
    """Routers; ``ports`` is the shared port service (router ports go through it)."""

    resource = "routers"
    model = Router
    not_found = RouterNotFound

    def __init__(self, *args: Any, ports: ResourceService):
        super().__init__(*args)
        self.ports = ports

    # -- shape --------------------------------------------------------------------
    def to_dict(self, session: Session, r: Router) -> dict[str, Any]:
        gw = None
        if r.gw_port_id:
            ips = [{"subnet_id": s, "ip_address": ip} for s, ip in session.execute(
                select(IPAllocation.subnet_id, IPAllocation.ip_address).where(IPAllocation.port_id == r.gw_port_id))]
            gw = {"network_id": r.gw_network_id, "enable_snat": r.enable_snat,
                  "external_fixed_ips": sorted(ips, key=lambda f: f["ip_address"])}
        return {"id": r.id, "name": r.name, "admin_state_up": r.admin_state_up, "status": r.status,
                "external_gateway_info": gw, "routes": [dict(x) for x in r.routes], "distributed": False,
                "ha": False, "flavor_id": None, "availability_zone_hints": [], "availability_zones": [],
                **self.std_fields(r)}

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows = {r.id: r for r in session.scalars(select(Router).where(Router.id.in_(ids)))}
        return [self.to_dict(session, rows[i]) for i in ids if i in rows]

    def _notify(self, method: str, *args: Any) -> None:
        if hasattr(self.notifier, method):  # the L3 extension's notifier has them
            self.notify(method, *args)

    # -- gateway ports ------------------------------------------------------------
    def _external_network(self, session: Session, network_id: str) -> Network:
        net = session.get(Network, network_id)
        if net is None:
            raise errors.NetworkNotFound(f"Network {network_id} could not be found.")
        if not net.router_external:
            raise errors.BadRequest(f"Network {network_id} is not an external network", type_name="ExternalNetworkNotFound")
        return net

    def _make_gw_port(self, router_id: str, host: str, info: dict, project: str) -> dict:
        self.db.read(lambda s: self._external_network(s, info["network_id"]))
        body: dict[str, Any] = {"network_id": info["network_id"], "device_owner": c.DEVICE_OWNER_ROUTER_GW,
                                "device_id": router_id, "tenant_id": project, "binding:host_id": host}
        if info.get("external_fixed_ips"):
            body["fixed_ips"] = info["external_fixed_ips"]
        return self.ports.create_bulk(ADMIN, [body])[0]

    def _drop_port(self, port_id: str | None) -> None:
        if port_id:
            try:
                self.ports.delete(ADMIN, port_id)
            except errors.NotFound:
                pass

    # -- writes -------------------------------------------------------------------
    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        return [self._create(ctx, b) for b in bodies]

    def _create(self, ctx: Context, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=True)
        rid = str(uuid.uuid4())
        info = given.get("external_gateway_info")
        gw = self._make_gw_port(rid, "", info, attributes.owner_project(ctx, given)) if info else None

        def run(session: Session) -> dict:
            now = self.now()
            r = Router(id=rid, project_id=attributes.owner_project(ctx, given), name=given.get("name", ""),
                       description=given.get("description", ""), tags=given.get("tags", []),
                       admin_state_up=given.get("admin_state_up", True), status="ACTIVE",
                       gw_port_id=gw["id"] if gw else None, gw_network_id=info["network_id"] if info else None,
                       enable_snat=(info or {}).get("enable_snat", True), routes=[], host="",
                       created_at=now, updated_at=now, revision_number=0)
            session.add(r)
            session.flush()
            return self.to_dict(session, r)

        try:
            out = self.db.write(run)
        except BaseException:
            self._drop_port(gw and gw["id"])
            raise
        self._notify("router_updated", out)
        return out

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)
        cur = self.db.read(lambda s: self._snapshot(s, ctx, id))
        new_gw, old_gw_port = None, None
        if "external_gateway_info" in given:
            info = given["external_gateway_info"]
            same_net = info is not None and info["network_id"] == cur.gw_network_id and not info.get("external_fixed_ips")
            if info is None and cur.gw_port_id:
                self._check_no_floatingips(id)
            if not same_net:
                old_gw_port = cur.gw_port_id
                new_gw = self._make_gw_port(id, cur.host, info, cur.project_id) if info else None

        def run(session: Session) -> dict:
            r = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, r.project_id, "router")
            for key in ("name", "description", "tags", "admin_state_up"):
                if key in given:
                    setattr(r, key, given[key])
            if "routes" in given:
                self._check_routes(session, r, given["routes"], new_gw)
                r.routes = given["routes"]
            if "external_gateway_info" in given:
                info = given["external_gateway_info"]
                if info is None:
                    r.gw_port_id, r.gw_network_id, r.enable_snat = None, None, True
                else:
                    if new_gw is not None:
                        r.gw_port_id, r.gw_network_id = new_gw["id"], info["network_id"]
                    r.enable_snat = info.get("enable_snat", r.enable_snat if new_gw is None else True)
            self.bump(r)
            session.flush()
            return self.to_dict(session, r)

        try:
            out = self.db.write(run)
        except BaseException:
            self._drop_port(new_gw and new_gw["id"])
            raise
        if old_gw_port and ("external_gateway_info" in given):
            self._drop_port(old_gw_port)
        self._notify("router_updated", out)
        return out

    def _snapshot(self, session: Session, ctx: Context, id: str) -> Router:
        r = self.fetch(session, ctx, id)
        session.expunge(r)
        return r

    def _check_no_floatingips(self, router_id: str) -> None:
        n = self.db.read(lambda s: s.scalar(select(FloatingIP.id).where(FloatingIP.router_id == router_id)))
        if n:
            raise RouterInUse(f"Gateway cannot be updated for router {router_id}: floating IPs use it.")

    def _check_routes(self, session: Session, r: Router, routes: list[dict], new_gw: dict | None) -> None:
        """Every next hop must sit on a subnet the router is attached to (Neutron's
        InvalidRoutes), and must not be one of the router's own addresses."""
        port_ids = [p for p, in session.execute(select(Port.id).where(Port.device_id == r.id))]
        if new_gw:
            port_ids.append(new_gw["id"])
        rows = session.execute(select(Subnet.cidr, IPAllocation.ip_address).join(
            IPAllocation, IPAllocation.subnet_id == Subnet.id).where(IPAllocation.port_id.in_(port_ids))).all()
        nets = [ipaddress.ip_network(cidr) for cidr, _ in rows]
        own = {ip for _, ip in rows}
        for route in routes:
            hop = ipaddress.ip_address(route["nexthop"])
            if route["nexthop"] in own or not any(hop in n for n in nets):
                raise errors.BadRequest(f"Invalid format for routes: the nexthop {hop} is not connected "
                                        "with the router", type_name="InvalidRoutes")

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> tuple[dict, str | None]:
            r = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, r.project_id, "router")
            if session.scalar(select(Port.id).where(Port.device_id == id,
                                                    Port.device_owner == c.DEVICE_OWNER_ROUTER_INTF)):
                raise RouterInUse(f"Router {id} still has ports")
            if session.scalar(select(FloatingIP.id).where(FloatingIP.router_id == id)):
                raise RouterInUse(f"Router {id} still has associated floating IPs")
            before = self.to_dict(session, r)
            session.delete(r)
            return before, r.gw_port_id

        before, gw_port = self.db.write(run)
        self._drop_port(gw_port)
        self._notify("router_deleted", before)

    # -- interfaces (PUT /routers/{id}/add_router_interface, remove_router_interface) --
    def add_interface(self, ctx: Context, id: str, body: Any) -> dict:
        check_can_write(ctx)
        if not isinstance(body, dict) or len(set(body) & {"subnet_id", "port_id"}) != 1:
            raise errors.BadRequest("Either subnet_id or port_id must be specified", type_name="BadRequest")
        router = self.db.read(lambda s: self._snapshot(s, ctx, id))
        check_owner(ctx, router.project_id, "router")
        if "subnet_id" in body:
            sid = v.uuid_str("subnet_id", body["subnet_id"])
            sub = self.db.read(lambda s: s.get(Subnet, sid))
            if sub is None:
                raise errors.SubnetNotFound(f"Subnet {sid} could not be found.")
            if not sub.gateway_ip:
                raise errors.BadRequest(f"Subnet {sid} has no gateway_ip", type_name="BadRequest")
            self._check_new_subnet(id, sub)
            port = self.ports.create_bulk(ADMIN, [{
                "network_id": sub.network_id, "device_owner": c.DEVICE_OWNER_ROUTER_INTF, "device_id": id,
                "fixed_ips": [{"subnet_id": sid, "ip_address": sub.gateway_ip}],
                "tenant_id": router.project_id, "binding:host_id": router.host}])[0]
        else:
            pid = v.uuid_str("port_id", body["port_id"])
            port = self.ports.get(ctx, pid)
            if port["device_id"] or port["device_owner"]:
                raise errors.Conflict(f"Port {pid} is in use by {port['device_owner'] or port['device_id']}")
            if len(port["fixed_ips"]) != 1:
                raise errors.BadRequest("Router port must have exactly one fixed IP", type_name="BadRequest")
            sub = self.db.read(lambda s: s.get(Subnet, port["fixed_ips"][0]["subnet_id"]))
            self._check_new_subnet(id, sub)
            port = self.ports.update(ADMIN, pid, {"device_owner": c.DEVICE_OWNER_ROUTER_INTF, "device_id": id})
        self._touch(id)
        return self._interface_info(router, port)

    def _check_new_subnet(self, router_id: str, sub: Subnet) -> None:
        """One interface per subnet, and no two attached subnets may overlap."""
        def run(session: Session) -> list[str]:
            return [cidr for cidr, in session.execute(select(Subnet.cidr).join(
                IPAllocation, IPAllocation.subnet_id == Subnet.id).join(Port, Port.id == IPAllocation.port_id).where(
                Port.device_id == router_id, Port.device_owner == c.DEVICE_OWNER_ROUTER_INTF))]

        new = ipaddress.ip_network(sub.cidr)
        for cidr in self.db.read(run):
            if ipaddress.ip_network(cidr).overlaps(new):
                raise errors.BadRequest(f"Bad router request: Cidr {sub.cidr} of subnet {sub.id} overlaps with "
                                        f"cidr {cidr} of another router interface", type_name="BadRequest")

    def remove_interface(self, ctx: Context, id: str, body: Any) -> dict:
        check_can_write(ctx)
        if not isinstance(body, dict) or not set(body) & {"subnet_id", "port_id"}:
            raise errors.BadRequest("Either subnet_id or port_id must be specified", type_name="BadRequest")
        router = self.db.read(lambda s: self._snapshot(s, ctx, id))
        check_owner(ctx, router.project_id, "router")

        def find(session: Session) -> tuple[str, str, str] | None:
            stmt = select(Port.id, IPAllocation.subnet_id, IPAllocation.ip_address).join(
                IPAllocation, IPAllocation.port_id == Port.id).where(
                Port.device_id == id, Port.device_owner == c.DEVICE_OWNER_ROUTER_INTF)
            if "port_id" in body:
                stmt = stmt.where(Port.id == body["port_id"])
            if "subnet_id" in body:
                stmt = stmt.where(IPAllocation.subnet_id == body["subnet_id"])
            return session.execute(stmt).first()

        found = self.db.read(find)
        if found is None:
            raise errors.NotFound(f"Router {id} does not have an interface with {body}",
                                  type_name="RouterInterfaceNotFound")
        port_id, subnet_id, _ = found
        self._check_interface_unused(id, subnet_id)
        port = self.ports.get(ADMIN, port_id)
        self.ports.delete(ADMIN, port_id)
        self._touch(id)
        return self._interface_info(router, port)

    def _check_interface_unused(self, router_id: str, subnet_id: str) -> None:
        """Neutron's RouterInterfaceInUseByFloatingIP: a floating IP NATed to an
        address on the subnet needs this interface."""
        def run(session: Session) -> list[str]:
            cidr = session.scalar(select(Subnet.cidr).where(Subnet.id == subnet_id))
            fixed = [ip for ip, in session.execute(select(FloatingIP.fixed_ip_address).where(
                FloatingIP.router_id == router_id, FloatingIP.fixed_ip_address.is_not(None)))]
            net = ipaddress.ip_network(cidr)
            return [ip for ip in fixed if ipaddress.ip_address(ip) in net]

        if self.db.read(run):
            raise RouterInUse(f"Router interface for subnet {subnet_id} on router {router_id} cannot be "
                              "deleted, as it is required by one or more floating IPs.")

    def _touch(self, id: str) -> None:
        def run(session: Session) -> dict:
            r = session.get(Router, id)
            self.bump(r)
            session.flush()
            return self.to_dict(session, r)

        self._notify("router_updated", self.db.write(run))

    @staticmethod
    def _interface_info(router: Router, port: dict) -> dict:
        sids = [f["subnet_id"] for f in port["fixed_ips"]]
        return {"id": router.id, "tenant_id": router.project_id, "project_id": router.project_id,
                "port_id": port["id"], "network_id": port["network_id"],
                "subnet_id": sids[0] if sids else None, "subnet_ids": sids}
