"""Networks: CRUD, the provider segment, MTU, sharing."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, delete, select, true
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.models import IPAllocation, Network, Port, SegmentAllocation, Subnet
from lbtap.server.services import attributes
from lbtap.server.services.allocation import network_mtu
from lbtap.server.services.base import ResourceService, check_can_write, check_owner, chunks, sees_all
from lbtap.server.services.segments import SegmentAllocator

# Ports the server deletes together with their network (Neutron's auto-delete owners).
AUTO_DELETE_OWNERS = (c.DEVICE_OWNER_DHCP,)


def network_visibility(ctx: Context) -> ColumnElement[bool]:
    if sees_all(ctx):
        return true()
    return (Network.project_id == ctx.project_id) | (Network.shared.is_(True))


class NetworkService(ResourceService):
    """Networks with their segment; ``provider:*`` shown to admins only."""

    resource = "networks"
    # Callables (session, ctx, values, given, create) run in the write transaction.
    write_checks: tuple = ()
    model = Network
    not_found = errors.NetworkNotFound

    def visibility(self, ctx: Context) -> ColumnElement[bool]:
        return network_visibility(ctx)

    # -- shape --------------------------------------------------------------------
    def to_dict(self, n: Network, subnets: list[str], admin: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": n.id,
            "name": n.name,
            "admin_state_up": n.admin_state_up,
            "status": n.status,
            "subnets": subnets,
            "shared": n.shared,
            "router:external": n.router_external,
            "mtu": n.mtu,
            "port_security_enabled": n.port_security_enabled,
            "qos_policy_id": n.qos_policy_id,
            "availability_zone_hints": [],
            "availability_zones": [],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "l2_adjacency": True,
            **self.std_fields(n),
        }
        if admin:
            out["provider:network_type"] = n.network_type
            out["provider:physical_network"] = n.physical_network
            out["provider:segmentation_id"] = n.segmentation_id
        return out

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows: dict[str, Network] = {}
        subnets: dict[str, list[str]] = {i: [] for i in ids}
        for part in chunks(ids):
            rows.update((n.id, n) for n in session.scalars(select(Network).where(Network.id.in_(part))))
            for sid, nid in session.execute(
                select(Subnet.id, Subnet.network_id).where(Subnet.network_id.in_(part))
                .order_by(Subnet.created_at, Subnet.id)
            ):
                subnets[nid].append(sid)
        return [self.to_dict(rows[i], subnets[i], ctx.is_admin) for i in ids if i in rows]

    # -- writes -------------------------------------------------------------------
    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        check_can_write(ctx)
        checked = [attributes.check_body(self.resource, b, ctx, create=True) for b in bodies]
        admin_view = Context.admin()

        def run(session: Session) -> list[dict]:
            segs = SegmentAllocator(session, self.settings.server)
            ids = []
            for given in checked:
                ids.append(self._create_one(session, ctx, given, segs))
            session.flush()
            return self.load(session, admin_view, ids)

        created = self.db.write(run, on_exhausted=lambda: errors.NoNetworkAvailable(
            "Unable to create the network: too many concurrent requests, try again."))
        for net in created:
            self.notify("network_created", net)
        return [self._view(ctx, n) for n in created]

    def _create_one(self, session: Session, ctx: Context, given: dict, segs: SegmentAllocator) -> str:
        seg = segs.choose(given)
        max_mtu = network_mtu(seg.network_type, self.settings.server.global_physnet_mtu,
                              self.settings.server.overlay_ip_version)
        mtu = given.get("mtu", max_mtu)
        if mtu > max_mtu:
            raise errors.InvalidInput(
                f"Requested MTU {mtu} is too big, maximum is {max_mtu} for {seg.network_type}")
        now = self.now()
        net = Network(
            id=str(uuid.uuid4()),
            project_id=attributes.owner_project(ctx, given),
            name=given.get("name", ""),
            description=given.get("description", ""),
            tags=given.get("tags", []),
            admin_state_up=given.get("admin_state_up", True),
            status=c.NET_STATUS_ACTIVE,
            shared=given.get("shared", False),
            router_external=given.get("router:external", False),
            mtu=mtu,
            port_security_enabled=given.get("port_security_enabled", True),
            qos_policy_id=given.get("qos_policy_id"),
            network_type=seg.network_type,
            physical_network=seg.physical_network,
            segmentation_id=seg.segmentation_id,
            created_at=now, updated_at=now, revision_number=0,
        )
        for check in self.write_checks:  # e.g. the QoS policy must exist
            check(session, ctx, {"qos_policy_id": net.qos_policy_id}, given, True)
        session.add(net)
        session.flush()
        segs.reserve(net.id, seg)
        return net.id

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)
        admin_view = Context.admin()

        def run(session: Session) -> tuple[dict, dict]:
            net = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, net.project_id, "network")
            before = self.load(session, admin_view, [id])[0]
            if "mtu" in given:
                max_mtu = network_mtu(net.network_type, self.settings.server.global_physnet_mtu,
                                      self.settings.server.overlay_ip_version)
                if given["mtu"] > max_mtu:
                    raise errors.InvalidInput(f"Requested MTU {given['mtu']} is too big, maximum is {max_mtu}")
            if given.get("shared") is False and net.shared:
                foreign = session.scalar(select(Port.id).where(
                    Port.network_id == id, Port.project_id != net.project_id).limit(1))
                if foreign:
                    raise errors.InvalidSharedSetting(
                        f"Unable to reconfigure sharing settings for network {id}. "
                        "Multiple tenants are using it.")
            for check in self.write_checks:
                check(session, ctx, {"qos_policy_id": given.get("qos_policy_id", net.qos_policy_id)}, given, False)
            columns = {"router:external": "router_external"}
            changed = False
            for key, value in given.items():
                col = columns.get(key, key)
                if getattr(net, col) != value:
                    setattr(net, col, value)
                    changed = True
            if changed:
                self.bump(net)
            session.flush()
            return before, self.load(session, admin_view, [id])[0]

        before, after = self.db.write(run)
        if after != before:
            self.notify("network_updated", after)
        return self._view(ctx, after)

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)
        admin_view = Context.admin()

        def run(session: Session) -> tuple[dict, list[str]]:
            net = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, net.project_id, "network")
            before = self.load(session, admin_view, [id])[0]
            ports = session.execute(select(Port.id, Port.device_owner).where(Port.network_id == id)).all()
            blocking = [p for p, owner in ports if owner not in AUTO_DELETE_OWNERS]
            if blocking:
                raise errors.NetworkInUse(
                    f"Unable to complete operation on network {id}. "
                    f"There are one or more ports still in use on the network ({len(blocking)}).")
            auto = [p for p, _ in ports]
            for stmt in (
                delete(IPAllocation).where(IPAllocation.network_id == id),
                delete(Port).where(Port.network_id == id),
                delete(Subnet).where(Subnet.network_id == id),
                delete(SegmentAllocation).where(SegmentAllocation.network_id == id),
                delete(Network).where(Network.id == id),
            ):
                session.execute(stmt)
            return before, auto

        before, _auto_ports = self.db.write(run)
        self.notify("network_deleted", before)

    def _view(self, ctx: Context, net: dict) -> dict:
        """The admin-view dict as ``ctx`` may see it."""
        if ctx.is_admin:
            return net
        return {k: v for k, v in net.items() if not k.startswith("provider:")}
