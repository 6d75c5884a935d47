"""Ports: CRUD, binding, bulk creation in one transaction (allocation: ipam.py).

A create (single or bulk) loads each network's subnets, taken MACs and used IPs once,
allocates in memory and inserts all rows with two executemany statements: no
per-port round trips, so a bulk of 1000 ports is one short transaction.
"""

from __future__ import annotations

import ipaddress
import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, select, true
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.models import IPAllocation, Port
from lbtap.server.services import allocation as alloc
from lbtap.server.services import attributes
from lbtap.server.services.base import ResourceService, check_can_write, check_owner, chunks, sees_all
from lbtap.server.services.binding import binding_for, live_l2_hosts
from lbtap.server.services.ipam import NetworkState, load_network_state, resolve_fixed_ips

ADMIN_ONLY_OUTPUT = ("binding:host_id", "binding:profile", "binding:vif_type", "binding:vif_details")
SIMPLE = {"name": "name", "description": "description", "tags": "tags", "admin_state_up": "admin_state_up",
          "device_id": "device_id", "device_owner": "device_owner", "dns_name": "dns_name",
          "binding:vnic_type": "binding_vnic_type", "binding:profile": "binding_profile",
          "security_groups": "security_groups", "port_security_enabled": "port_security_enabled",
          "allowed_address_pairs": "allowed_address_pairs", "qos_policy_id": "qos_policy_id"}


def ip_sort_key(fixed: dict[str, str]) -> tuple[int, int]:
    a = ipaddress.ip_address(fixed["ip_address"])
    return a.version, int(a)


# Port values handed to ``write_checks`` on update (on create: the whole new row).
WRITE_CHECKED = ("project_id", "device_owner", "security_groups", "port_security_enabled",
                 "allowed_address_pairs", "qos_policy_id")


class PortService(ResourceService):
    """Ports; ``binding:*`` (except vnic_type) shown to admins only.

    ``write_checks``: callables ``(session, ctx, values, given, create)`` run inside the
    write transaction; they may raise, or adjust ``values["security_groups"]``.
    """

    resource = "ports"
    model = Port
    not_found = errors.PortNotFound
    write_checks: tuple = ()

    def visibility(self, ctx: Context) -> ColumnElement[bool]:
        return true() if sees_all(ctx) else Port.project_id == ctx.project_id

    # -- shape ----------------------------------------------------------------------
    def to_dict(self, p: Any, fixed_ips: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "id": p.id, "name": p.name, "network_id": p.network_id, "mac_address": p.mac_address,
            "admin_state_up": p.admin_state_up, "status": p.status,
            "fixed_ips": sorted(fixed_ips, key=ip_sort_key),
            "device_id": p.device_id, "device_owner": p.device_owner, "dns_name": p.dns_name,
            "binding:host_id": p.binding_host_id, "binding:vif_type": p.binding_vif_type,
            "binding:vif_details": dict(p.binding_vif_details), "binding:vnic_type": p.binding_vnic_type,
            "binding:profile": dict(p.binding_profile),
            "security_groups": list(p.security_groups), "port_security_enabled": p.port_security_enabled,
            "allowed_address_pairs": [dict(x) for x in p.allowed_address_pairs],
            "qos_policy_id": p.qos_policy_id, "qos_network_policy_id": None,
            "extra_dhcp_opts": [], "ip_allocation": "immediate", "propagate_uplink_status": False,
            **self.std_fields(p),
        }

    def view(self, ctx: Context, port: dict) -> dict:
        if ctx.is_admin:
            return port
        return {k: v for k, v in port.items() if k not in ADMIN_ONLY_OUTPUT}

    def load_admin(self, session: Session, ids: list[str]) -> list[dict]:
        rows: dict[str, Port] = {}
        ips: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
        for part in chunks(ids):
            rows.update((p.id, p) for p in session.scalars(select(Port).where(Port.id.in_(part))))
            for pid, sid, ip in session.execute(select(
                    IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
                    .where(IPAllocation.port_id.in_(part))):
                ips[pid].append({"subnet_id": sid, "ip_address": ip})
        return [self.to_dict(rows[i], ips[i]) for i in ids if i in rows]

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        return [self.view(ctx, p) for p in self.load_admin(session, ids)]

    # -- filters ----------------------------------------------------------------------
    def special_filter(self, ctx: Context, key: str, values: list[Any]) -> ColumnElement[bool]:
        if key != "fixed_ips":
            return super().special_filter(ctx, key, values)
        sub = select(IPAllocation.port_id)
        by_kind: dict[str, list[str]] = {}
        for raw in values:
            kind, sep, value = raw.partition("=")
            if not sep or kind not in ("ip_address", "subnet_id", "ip_address_substr"):
                raise errors.BadRequest(f"Invalid fixed_ips filter '{raw}'")
            by_kind.setdefault(kind, []).append(value)
        if "ip_address" in by_kind:
            sub = sub.where(IPAllocation.ip_address.in_(by_kind["ip_address"]))
        if "subnet_id" in by_kind:
            sub = sub.where(IPAllocation.subnet_id.in_(by_kind["subnet_id"]))
        for part in by_kind.get("ip_address_substr", []):
            sub = sub.where(IPAllocation.ip_address.contains(part, autoescape=True))
        return Port.id.in_(sub)

    def python_filter(self, ctx: Context, key: str, values: list[Any]):  # noqa: ANN201
        if key == "security_groups":
            wanted = set(values)
            return "security_groups", Port.security_groups, lambda r: bool(wanted & set(r["security_groups"]))
        if key == "mac_address":
            wanted_macs = {v.lower() for v in values}
            return "mac_address", Port.mac_address, lambda r: r["mac_address"] in wanted_macs
        return None

    # -- allocation ---------------------------------------------------------------------
    def network_state(self, session: Session, ctx: Context, network_id: str,
                      cache: dict[str, NetworkState]) -> NetworkState:
        if network_id not in cache:
            cache[network_id] = load_network_state(session, ctx, network_id, self.settings.server.base_mac)
        return cache[network_id]

    def bind(self, session: Session, host: str, network_id: str, live: dict[str, bool]) -> tuple[str, dict]:
        if host and host not in live:
            live[host] = bool(live_l2_hosts(session, [host], self.now(), self.settings.server.agent_down_time))
        return binding_for(host, live.get(host, False), network_id)

    # -- writes -----------------------------------------------------------------------
    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        check_can_write(ctx)
        checked = [attributes.check_body(self.resource, b, ctx, create=True) for b in bodies]
        for given in checked:
            if "network_id" not in given:
                raise errors.BadRequest("Failed to parse request. Required attribute 'network_id' not specified")
        # One port: pick among a window of free IPs so racing writers rarely collide;
        # a bulk: take them in order, it owns the transaction anyway.
        window = alloc.IP_PICK_WINDOW if len(checked) == 1 else 1

        def run(session: Session) -> list[dict]:
            cache: dict[str, NetworkState] = {}
            live: dict[str, bool] = {}
            now = self.now()
            port_rows, ip_rows, results = [], [], []
            for given in checked:
                st = self.network_state(session, ctx, given["network_id"], cache)
                row = self._new_row(ctx, given, st, now)
                for check in self.write_checks:  # e.g. security groups, QoS policy
                    check(session, ctx, row, given, True)
                owner = row["device_owner"]
                if "mac_address" in given:
                    if given["mac_address"] in st.macs:
                        raise errors.MacAddressInUse(
                            f"Unable to complete operation for network {st.network.id}. "
                            f"The mac address {given['mac_address']} is in use.")
                    st.macs.add(given["mac_address"])
                    row["mac_address"] = given["mac_address"]
                else:
                    row["mac_address"] = next(st.mac_gen)
                fixed = resolve_fixed_ips(st, given.get("fixed_ips"), row["mac_address"], owner,
                                               set(), window)
                vif_type, details = self.bind(session, row["binding_host_id"], st.network.id, live)
                row.update(binding_vif_type=vif_type, binding_vif_details=details)
                port_rows.append(row)
                ip_rows.extend({"port_id": row["id"], "network_id": st.network.id, **f} for f in fixed)
                results.append(self.to_dict(SimpleNamespace(**row), fixed))
            session.execute(insert(Port), port_rows)
            if ip_rows:
                session.execute(insert(IPAllocation), ip_rows)
            return results

        created = self.db.write(run, on_exhausted=lambda: errors.IpAddressGenerationFailure(
            "Unable to allocate addresses: too many concurrent requests, try again."))
        for port in created:
            self.notify("port_created", port)
        return [self.view(ctx, p) for p in created]

    def _new_row(self, ctx: Context, given: dict, st: NetworkState, now: Any) -> dict[str, Any]:
        owner = given.get("device_owner", "")
        return {
            "id": str(uuid.uuid4()), "project_id": attributes.owner_project(ctx, given, st.network.project_id),
            "network_id": st.network.id, "name": given.get("name", ""),
            "description": given.get("description", ""), "tags": given.get("tags", []),
            "admin_state_up": given.get("admin_state_up", True),
            "status": c.PORT_STATUS_NOTAPPLICABLE if owner == c.DEVICE_OWNER_FLOATINGIP else c.PORT_STATUS_DOWN,
            "device_id": given.get("device_id", ""), "device_owner": owner,
            "dns_name": given.get("dns_name", ""), "binding_host_id": given.get("binding:host_id", ""),
            "binding_vnic_type": given.get("binding:vnic_type", c.VNIC_NORMAL),
            "binding_profile": given.get("binding:profile", {}),
            "port_security_enabled": given.get("port_security_enabled", st.network.port_security_enabled),
            "qos_policy_id": given.get("qos_policy_id"),
            "security_groups": given.get("security_groups", []),
            "allowed_address_pairs": given.get("allowed_address_pairs", []),
            "created_at": now, "updated_at": now, "revision_number": 0,
        }

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)
        if "mac_address" in given and not ctx.is_admin:
            raise errors.PolicyNotAuthorized("(rule:update_port:mac_address) is disallowed by policy")

        def run(session: Session) -> tuple[dict, dict]:
            port = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, port.project_id, "port")
            before = self.load_admin(session, [id])[0]
            changed = False
            for key, col in SIMPLE.items():
                if key in given and getattr(port, col) != given[key]:
                    setattr(port, col, given[key])
                    changed = True
            if self.write_checks:
                values = {k: getattr(port, k) for k in WRITE_CHECKED}
                for check in self.write_checks:
                    check(session, ctx, values, given, False)
                if values["security_groups"] != port.security_groups:
                    port.security_groups = values["security_groups"]
            st = None
            if "mac_address" in given and given["mac_address"] != port.mac_address:
                st = self.network_state(session, ctx, port.network_id, {})
                if given["mac_address"] in st.macs:
                    raise errors.MacAddressInUse(f"The mac address {given['mac_address']} is in use.")
                port.mac_address = given["mac_address"]
                changed = True
            if "fixed_ips" in given:
                st = st or self.network_state(session, ctx, port.network_id, {})
                changed |= self._replace_fixed_ips(session, st, port, given["fixed_ips"], before["fixed_ips"])
            host = given.get("binding:host_id", port.binding_host_id)
            # Rebind when the host changes, or to retry a failed binding; a working
            # binding survives its agent being briefly away.
            if host != port.binding_host_id or (host and port.binding_vif_type != c.VIF_TYPE_BRIDGE):
                vif_type, details = self.bind(session, host, port.network_id, {})
                changed |= port.binding_host_id != host
                port.binding_host_id = host
                if (vif_type, details) != (port.binding_vif_type, port.binding_vif_details):
                    port.binding_vif_type, port.binding_vif_details = vif_type, details
                    changed = True
            if port.device_owner == c.DEVICE_OWNER_FLOATINGIP:
                port.status = c.PORT_STATUS_NOTAPPLICABLE
            if changed:
                self.bump(port)
            session.flush()
            return before, self.load_admin(session, [id])[0]

        before, after = self.db.write(run, on_exhausted=lambda: errors.IpAddressGenerationFailure(
            "Unable to update the port: too many concurrent requests, try again."))
        if after != before:
            self.notify("port_updated", after, before)
        return self.view(ctx, after)

    def _replace_fixed_ips(self, session: Session, st: NetworkState, port: Port,
                           requested: list[dict], current: list[dict]) -> bool:
        held = {(f["subnet_id"], f["ip_address"]) for f in current}
        # A bare {"subnet_id"} keeps the address the port already has there (Neutron).
        claimed = {f["ip_address"] for f in requested if "ip_address" in f}
        spare = [f for f in current if f["ip_address"] not in claimed]
        resolved_request = []
        for f in requested:
            if "ip_address" not in f:
                mine = next((x for x in spare if x["subnet_id"] == f["subnet_id"]), None)
                if mine is not None:
                    spare.remove(mine)
                    f = dict(mine)
            resolved_request.append(f)
        requested = resolved_request
        new = resolve_fixed_ips(st, requested, port.mac_address, port.device_owner, held,
                                     alloc.IP_PICK_WINDOW)
        wanted = {(f["subnet_id"], f["ip_address"]) for f in new}
        if wanted == held:
            return False
        for sid, ip in held - wanted:
            session.execute(delete(IPAllocation).where(
                IPAllocation.port_id == port.id, IPAllocation.subnet_id == sid, IPAllocation.ip_address == ip))
        added = [{"port_id": port.id, "network_id": port.network_id, "subnet_id": sid, "ip_address": ip}
                 for sid, ip in wanted - held]
        if added:
            session.execute(insert(IPAllocation), added)
        return True

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> dict:
            port = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, port.project_id, "port")
            before = self.load_admin(session, [id])[0]
            session.execute(delete(IPAllocation).where(IPAllocation.port_id == id))
            session.execute(delete(Port).where(Port.id == id))
            return before

        before = self.db.write(run)
        self.notify("port_deleted", before)
