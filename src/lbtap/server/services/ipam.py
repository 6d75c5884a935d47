"""Fixed-IP and MAC allocation for ports, over a per-network state loaded once.

``load_network_state`` reads what a network's allocations need (subnets, pools, used
addresses, taken MACs) in three queries; ``resolve_fixed_ips`` then decides a port's
addresses in memory, marking them used so that the next port of a bulk request sees
them. The database's unique keys still guard against anything the network lock
(below) does not cover.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.models import IPAllocation, Network, Port, Subnet
from lbtap.server.services import allocation as alloc
from lbtap.server.services.networks import network_visibility

ROUTER_OWNERS = (c.DEVICE_OWNER_ROUTER_INTF, c.DEVICE_OWNER_ROUTER_GW, "network:router_ha_interface",
                 "network:ha_router_replicated_interface", "network:router_interface_distributed")


@dataclass
class NetworkState:
    """What allocation needs to know about one network, loaded once per transaction."""

    session: Session
    network: Network
    subnets: list[Subnet]
    nets: dict[str, alloc.IPNet] = field(default_factory=dict)
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    used: dict[str, set[int]] = field(default_factory=dict)
    macs: set[str] = field(default_factory=set)
    mac_gen: Any = None


def load_network_state(session: Session, ctx: Context, network_id: str, base_mac: str) -> NetworkState:
    """The allocation state of a network ``ctx`` can see (NetworkNotFound otherwise).

    On PostgreSQL and MariaDB the network row is locked first, so allocations on one
    network queue instead of racing for the same free addresses and retrying (SQLite
    already serialises writers). Rows are read after the lock: under READ COMMITTED
    they include everything committed by the previous holder.
    """
    stmt = select(Network).where(Network.id == network_id, network_visibility(ctx))
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    network = session.scalars(stmt).first()
    if network is None:
        raise errors.NetworkNotFound(f"Network {network_id} could not be found.")
    subnets = list(session.scalars(select(Subnet).where(Subnet.network_id == network_id)
                                   .order_by(Subnet.created_at, Subnet.id)))
    st = NetworkState(session=session, network=network, subnets=subnets)
    for s in subnets:
        st.nets[s.id] = ipaddress.ip_network(s.cidr)
        st.ranges[s.id] = alloc.pool_ranges(s.allocation_pools)
        st.used[s.id] = set()
    for sid, ip in session.execute(select(IPAllocation.subnet_id, IPAllocation.ip_address)
                                   .where(IPAllocation.network_id == network_id)):
        st.used.setdefault(sid, set()).add(int(ipaddress.ip_address(ip)))
    st.macs = set(session.scalars(select(Port.mac_address).where(Port.network_id == network_id)))
    st.mac_gen = alloc.mac_generator(base_mac, st.macs)
    return st


def _subnet_of(st: NetworkState, subnet_id: str) -> Subnet:
    for s in st.subnets:
        if s.id == subnet_id:
            return s
    if st.session.get(Subnet, subnet_id) is not None:
        raise errors.InvalidInput(f"Subnet {subnet_id} is not on network {st.network.id}")
    raise errors.SubnetNotFound(f"Subnet {subnet_id} could not be found.")


def _in_use(st: NetworkState, ip: str) -> errors.IpAddressInUse:
    return errors.IpAddressInUse(
        f"Unable to complete operation for network {st.network.id}. The IP address {ip} is in use.")


def _auto_ip(st: NetworkState, s: Subnet, mac: str, window: int) -> str:
    if s.ip_version == 6 and alloc.is_slaac(s.ipv6_address_mode):
        ip = alloc.eui64(st.nets[s.id], mac)
        n = int(ipaddress.ip_address(ip))
        if n in st.used[s.id]:
            raise _in_use(st, ip)
        st.used[s.id].add(n)
        return ip
    n = alloc.pick_ip(st.ranges[s.id], st.used[s.id], window=window)
    if n is None:
        raise errors.IpAddressGenerationFailure(f"No more IP addresses available for subnet {s.id}.")
    st.used[s.id].add(n)
    return str(ipaddress.ip_address(n))


def _automatic(st: NetworkState, mac: str, window: int) -> list[dict[str, str]]:
    """Neutron's default: one IPv4 address (first subnet with room), an address on
    every SLAAC subnet, and one from the first stateful IPv6 subnet."""
    out = []
    v4 = [s for s in st.subnets if s.ip_version == 4]
    for s in v4:
        try:
            out.append({"subnet_id": s.id, "ip_address": _auto_ip(st, s, mac, window)})
            break
        except errors.IpAddressGenerationFailure:
            if s is v4[-1]:
                raise
    stateful_done = False
    for s in (s for s in st.subnets if s.ip_version == 6):
        if alloc.is_slaac(s.ipv6_address_mode) or not stateful_done:
            out.append({"subnet_id": s.id, "ip_address": _auto_ip(st, s, mac, window)})
            stateful_done |= not alloc.is_slaac(s.ipv6_address_mode)
    return out


def resolve_fixed_ips(st: NetworkState, requested: list[dict] | None, mac: str, device_owner: str,
                      keep: set[tuple[str, str]], window: int) -> list[dict[str, str]]:
    """The fixed IPs of a port: requested ones checked, missing ones allocated.

    ``requested`` None means automatic. ``keep``: (subnet_id, ip) the port already
    holds (updates); those stay valid without re-checking. ``window``: how many of the
    lowest free addresses to pick randomly among.
    """
    if requested is None:
        return _automatic(st, mac, window)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in requested:
        ip = item.get("ip_address")
        if ip is None:
            s = _subnet_of(st, item["subnet_id"])
            out.append({"subnet_id": s.id, "ip_address": _auto_ip(st, s, mac, window)})
            continue
        if ip in seen:
            raise errors.InvalidInput(f"Duplicate IP address {ip} in fixed_ips")
        seen.add(ip)
        addr = ipaddress.ip_address(ip)
        if "subnet_id" in item:
            s = _subnet_of(st, item["subnet_id"])
            if addr not in st.nets[s.id]:
                raise errors.InvalidInput(f"IP address {ip} is not a valid IP for the specified subnet.")
        else:
            s = next((x for x in st.subnets if addr in st.nets[x.id]), None)
            if s is None:
                raise errors.InvalidInput(
                    f"IP address {ip} is not a valid IP for any of the subnets on the specified network.")
        out.append({"subnet_id": s.id, "ip_address": ip})
        if (s.id, ip) in keep:
            continue
        lo, hi = alloc.usable_range(st.nets[s.id])
        if not lo <= int(addr) <= hi:
            raise errors.InvalidInput(f"IP address {ip} is the network or broadcast address of its subnet.")
        if ip == s.gateway_ip and device_owner not in ROUTER_OWNERS:
            raise errors.IpAddressInUse(f"IP address {ip} is the gateway of subnet {s.id}.")
        if int(addr) in st.used[s.id]:
            raise _in_use(st, ip)
        st.used[s.id].add(int(addr))
    return out
