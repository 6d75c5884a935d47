"""Subnets: CIDR, gateway and allocation-pool rules, IPv6 modes, in-use checks."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sqlalchemy import ColumnElement, delete, select, true
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.models import IPAllocation, Network, Port, Subnet
from lbtap.server.services import allocation as alloc
from lbtap.server.services import attributes
from lbtap.server.services.base import ResourceService, check_can_write, check_owner, chunks, sees_all
from lbtap.server.services.networks import network_visibility

FIELDS = ("name", "ip_version", "network_id", "cidr", "gateway_ip", "allocation_pools",
          "dns_nameservers", "host_routes", "enable_dhcp", "ipv6_ra_mode", "ipv6_address_mode")


class SubnetService(ResourceService):
    """Subnets; visible to their project and to users of their shared network."""

    resource = "subnets"
    model = Subnet
    not_found = errors.SubnetNotFound

    def visibility(self, ctx: Context) -> ColumnElement[bool]:
        if sees_all(ctx):
            return true()
        shared = select(Network.id).where(Network.shared.is_(True))
        return (Subnet.project_id == ctx.project_id) | Subnet.network_id.in_(shared)

    def to_dict(self, s: Subnet) -> dict[str, Any]:
        out = {k: getattr(s, k) for k in FIELDS}
        out.update(id=s.id, subnetpool_id=None, segment_id=None, service_types=[],
                   allocation_pools=list(s.allocation_pools), dns_nameservers=list(s.dns_nameservers),
                   host_routes=list(s.host_routes), **self.std_fields(s))
        return out

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows: dict[str, Subnet] = {}
        for part in chunks(ids):
            rows.update((s.id, s) for s in session.scalars(select(Subnet).where(Subnet.id.in_(part))))
        return [self.to_dict(rows[i]) for i in ids if i in rows]

    # -- rules ----------------------------------------------------------------------
    @staticmethod
    def check_gateway(net: alloc.IPNet, gateway: str | None) -> None:
        if gateway is None:
            return
        gw = ipaddress.ip_address(gateway)
        if gw.version != net.version or gw not in net:
            raise errors.InvalidInput(f"Gateway IP {gateway} is not in subnet {net}")
        lo, hi = alloc.usable_range(net)
        if not lo <= int(gw) <= hi:
            raise errors.InvalidInput(f"Gateway IP {gateway} is the network or broadcast address of {net}")

    @staticmethod
    def check_pools(net: alloc.IPNet, pools: list[dict[str, str]], gateway: str | None) -> None:
        why = alloc.check_pools(net, pools, gateway)
        if why == "gateway":
            raise errors.GatewayConflictWithAllocationPools(
                f"Gateway ip {gateway} conflicts with allocation pool(s) {pools}")
        if why:
            raise errors.InvalidInput(f"Invalid allocation pools: {why}")

    @staticmethod
    def check_ipv6_modes(version: int, ra: str | None, addr: str | None) -> None:
        if version == 4 and (ra or addr):
            raise errors.InvalidInput("ipv6_ra_mode and ipv6_address_mode are only for IPv6 subnets")
        if ra and addr and ra != addr:
            raise errors.InvalidInput(
                f"ipv6_ra_mode set to '{ra}' with ipv6_address_mode set to '{addr}' is not valid")

    # -- writes ---------------------------------------------------------------------
    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        check_can_write(ctx)
        checked = [attributes.check_body(self.resource, b, ctx, create=True) for b in bodies]

        def run(session: Session) -> list[dict]:
            ids = [self._create_one(session, ctx, given) for given in checked]
            return self.load(session, ctx, ids)

        created = self.db.write(run)
        for s in created:
            self.notify("subnet_created", s)
        return created

    def _create_one(self, session: Session, ctx: Context, given: dict) -> str:
        for key in ("network_id", "ip_version", "cidr"):
            if key not in given:
                raise errors.BadRequest(f"Failed to parse request. Required attribute '{key}' not specified")
        network = session.scalars(select(Network).where(
            Network.id == given["network_id"], network_visibility(ctx))).first()
        if network is None:
            raise errors.NetworkNotFound(f"Network {given['network_id']} could not be found.")
        if not ctx.is_admin and network.project_id != ctx.project_id:
            raise errors.PolicyNotAuthorized("Creating a subnet on another project's network is disallowed")
        net = ipaddress.ip_network(given["cidr"])
        if net.version != given["ip_version"]:
            raise errors.InvalidInput(f"Cidr {net} does not match ip_version {given['ip_version']}")
        self.check_ipv6_modes(net.version, given.get("ipv6_ra_mode"), given.get("ipv6_address_mode"))
        for other in session.scalars(select(Subnet.cidr).where(Subnet.network_id == network.id)):
            if ipaddress.ip_network(other).overlaps(net):
                raise errors.InvalidInput(
                    f"Requested subnet with cidr: {net} for network: {network.id} overlaps with another subnet")
        gateway = given["gateway_ip"] if "gateway_ip" in given else alloc.default_gateway(net)
        self.check_gateway(net, gateway)
        if "allocation_pools" in given:
            pools = given["allocation_pools"]
            self.check_pools(net, pools, gateway)
        else:
            pools = alloc.default_pools(net, gateway)
        for ns in given.get("dns_nameservers", []):
            if ipaddress.ip_address(ns).version != net.version:
                raise errors.InvalidInput(f"DNS nameserver {ns} is not IPv{net.version}")
        now = self.now()
        subnet = Subnet(
            id=str(uuid.uuid4()), project_id=attributes.owner_project(ctx, given, network.project_id), network_id=network.id,
            name=given.get("name", ""), description=given.get("description", ""), tags=given.get("tags", []),
            ip_version=net.version, cidr=str(net), gateway_ip=gateway,
            allocation_pools=sorted(pools, key=lambda p: int(ipaddress.ip_address(p["start"]))),
            dns_nameservers=given.get("dns_nameservers", []), host_routes=given.get("host_routes", []),
            enable_dhcp=given.get("enable_dhcp", True),
            ipv6_ra_mode=given.get("ipv6_ra_mode"), ipv6_address_mode=given.get("ipv6_address_mode"),
            created_at=now, updated_at=now, revision_number=0,
        )
        session.add(subnet)
        session.flush()
        return subnet.id

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)

        def run(session: Session) -> dict:
            s = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, s.project_id, "subnet")
            net = ipaddress.ip_network(s.cidr)
            gateway = given["gateway_ip"] if "gateway_ip" in given else s.gateway_ip
            pools = given.get("allocation_pools", s.allocation_pools)
            if "gateway_ip" in given or "allocation_pools" in given:
                self.check_gateway(net, gateway)
                self.check_pools(net, pools, gateway)
                if "gateway_ip" in given and gateway and gateway != s.gateway_ip:
                    holder = session.scalar(select(IPAllocation.port_id).where(
                        IPAllocation.subnet_id == id, IPAllocation.ip_address == gateway))
                    owner = holder and session.scalar(select(Port.device_owner).where(Port.id == holder))
                    if holder and not (owner or "").startswith("network:router"):
                        raise errors.IpAddressInUse(f"Gateway IP {gateway} is in use by port {holder}")
            for ns in given.get("dns_nameservers", []):
                if ipaddress.ip_address(ns).version != net.version:
                    raise errors.InvalidInput(f"DNS nameserver {ns} is not IPv{net.version}")
            changed = False
            for key, value in given.items():
                if key == "allocation_pools":
                    value = sorted(value, key=lambda p: int(ipaddress.ip_address(p["start"])))
                if key == "service_types":
                    continue
                if getattr(s, key) != value:
                    setattr(s, key, value)
                    changed = True
            if changed:
                self.bump(s)
            session.flush()
            return self.to_dict(s)

        result = self.db.write(run)
        self.notify("subnet_updated", result)
        return result

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> dict:
            s = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, s.project_id, "subnet")
            before = self.to_dict(s)
            users = session.execute(
                select(IPAllocation.port_id, Port.device_owner)
                .join(Port, Port.id == IPAllocation.port_id)
                .where(IPAllocation.subnet_id == id)
            ).all()
            if any(owner != c.DEVICE_OWNER_DHCP for _p, owner in users):
                raise errors.SubnetInUse(
                    f"Unable to complete operation on subnet {id}: "
                    "One or more ports have an IP allocation from this subnet.")
            session.execute(delete(IPAllocation).where(IPAllocation.subnet_id == id))
            session.execute(delete(Subnet).where(Subnet.id == id))
            return before

        before = self.db.write(run)
        self.notify("subnet_deleted", before)
