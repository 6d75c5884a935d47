"""The narrow interface between everything above and a host's network stack.

Two implementations exist: ``fake.FakeHost`` (in memory, for unit tests and the agent
core) and ``netlink.NetlinkHost`` (pyroute2, for real). Both obey the same contract,
checked by one shared test-suite:

* every create is idempotent: creating something that already exists *in the requested
  form* is success; a conflicting object of the same name raises ``AlreadyExists``;
* every delete is idempotent: deleting something missing is success;
* failures are raised only as ``lbtap.drivers.host.errors.HostError`` subclasses;
* names are kernel interface names; MACs are lower-case ``aa:bb:cc:dd:ee:ff``;
  addresses are CIDR strings ("192.0.2.5/24", "2001:db8::5/64").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class VxlanInfo:
    vni: int
    local: str | None = None
    group: str | None = None  # multicast group, None for unicast (FDB flooding list)
    dev: str | None = None  # underlay device
    port: int = 4789
    learning: bool = False


@dataclass(frozen=True)
class Link:
    """One network interface as the kernel reports it.

    ``kind`` is "bridge", "tun" (TAP devices report as tun), "veth", "vxlan", "vlan"
    or "" for physical/other devices. ``master`` is the name of the bridge the link is
    enslaved to. ``up`` is the administrative state (IFF_UP), ``carrier`` whether the
    link has carrier (a TAP without a reader, or a veth whose peer is down, has none).
    """

    name: str
    index: int
    kind: str = ""
    mac: str | None = None
    mtu: int = 1500
    up: bool = False
    carrier: bool = False
    master: str | None = None
    vxlan: VxlanInfo | None = None
    vlan_id: int | None = None
    parent: str | None = None  # VLAN parent device
    peer_index: int | None = None  # veth peer ifindex (may be in another namespace)


@dataclass(frozen=True)
class Address:
    ifname: str
    cidr: str
    scope: str = "global"  # "global", "link" or "host"
    secondary: bool = False

    @property
    def family(self) -> int:
        return 6 if ":" in self.cidr else 4


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or a CIDR
    ifname: str
    gateway: str | None = None
    metric: int | None = None
    family: int = 4
    scope: str = "universe"  # "universe" or "link"


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    ifname: str  # the port (or the vxlan device) the entry points out of
    master: str | None = None  # the bridge, for bridge-table entries
    dst: str | None = None  # remote VTEP, for vxlan-table entries
    permanent: bool = False  # local/static entries (the port's own MAC)
    age: float | None = None  # seconds since last seen, for learned entries


@dataclass(frozen=True)
class LinkStats:
    rx_packets: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0


@dataclass(frozen=True)
class LinkEvent:
    """A link appeared or changed ("new"), went away ("del"), or the event stream lost
    events ("overflow", link None): the consumer must then do a full reconcile."""

    kind: str
    link: Link | None = None
    name: str = field(default="")


class HostDriver(Protocol):
    """Operations on one network namespace. All methods are synchronous and blocking."""

    # links
    def list_links(self) -> list[Link]: ...
    def get_link(self, name: str) -> Link | None: ...
    def create_bridge(self, name: str, *, mtu: int | None = None) -> None: ...
    def create_tap(self, name: str, *, mac: str | None = None, mtu: int | None = None) -> None: ...
    def create_veth(self, name: str, peer: str, *, peer_netns: str | None = None, mac: str | None = None, peer_mac: str | None = None, mtu: int | None = None) -> None: ...
    def create_vxlan(self, name: str, info: VxlanInfo, *, mtu: int | None = None) -> None: ...
    def create_vlan(self, name: str, parent: str, vlan_id: int, *, mtu: int | None = None) -> None: ...
    def delete_link(self, name: str) -> None: ...
    def set_link(self, name: str, *, up: bool | None = None, mtu: int | None = None, mac: str | None = None) -> None: ...
    def enslave(self, name: str, bridge: str) -> None: ...
    def release(self, name: str) -> None: ...

    # addresses and routes
    def list_addresses(self, ifname: str | None = None) -> list[Address]: ...
    def add_address(self, ifname: str, cidr: str) -> None: ...
    def delete_address(self, ifname: str, cidr: str) -> None: ...
    def list_routes(self, ifname: str | None = None) -> list[Route]: ...
    def add_route(self, route: Route) -> None: ...
    def delete_route(self, route: Route) -> None: ...
    def set_promote_secondaries(self, ifname: str, on: bool = True) -> None: ...

    # forwarding database
    def list_fdb(self, ifname: str | None = None, *, master: str | None = None) -> list[FdbEntry]: ...
    def add_fdb(self, entry: FdbEntry) -> None: ...
    def delete_fdb(self, entry: FdbEntry) -> None: ...

    # counters
    def link_stats(self) -> dict[str, LinkStats]: ...

    # events: calls ``callback`` from a background thread until the returned stop() is called
    def watch_links(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]: ...

    def close(self) -> None: ...
