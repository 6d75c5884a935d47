"""A snapshot of one network namespace, read through a ``HostDriver``.

Every check in ``doctor`` and every table of the host-side commands is a pure function of
a ``HostSnapshot``; this module is the only place that reads the host for them. Reading
the kernel's views one after the other is not atomic, so a device that vanishes between
two reads is tolerated (it simply appears in one view and not in the other).

Two things are not reachable through the ``HostDriver`` interface and are read here
directly, inside the target namespace: the ``net.bridge.bridge-nf-call-iptables``
sysctl (per namespace since br_netfilter became namespace-aware) and whether any lbtap
firewall tables exist (nftables tables or iptables chains whose name contains "lbtap"
or "neutron").
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from lbtap.drivers.host.base import Address, FdbEntry, HostDriver, Link, LinkStats, Route

BR_NF_SYSCTL = "net/bridge/bridge-nf-call-iptables"
FIREWALL_MARKERS = ("lbtap", "neutron")


@dataclass(frozen=True)
class HostSnapshot:
    """Everything the host-side checks look at, taken at ``taken_at`` (epoch seconds).

    ``br_nf_call_iptables``: the sysctl's value, None when br_netfilter is absent.
    ``firewall_tables``: names of lbtap/neutron nftables tables or iptables chains
    (empty: no filtering by lbtap in this namespace); None when it could not be read.
    """

    netns: str | None
    links: tuple[Link, ...]
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    stats: dict[str, LinkStats] = field(default_factory=dict)
    fdb: tuple[FdbEntry, ...] = ()
    br_nf_call_iptables: int | None = None
    firewall_tables: tuple[str, ...] | None = ()
    taken_at: float = 0.0

    # -- lookups used by several checks; cheap enough to recompute --------------------
    def link(self, name: str) -> Link | None:
        return next((lk for lk in self.links if lk.name == name), None)

    def bridges(self) -> list[Link]:
        return [lk for lk in self.links if lk.kind == "bridge"]

    def ports_of(self, bridge: str) -> list[Link]:
        return [lk for lk in self.links if lk.master == bridge]

    def addresses_of(self, ifname: str) -> list[Address]:
        return [a for a in self.addresses if a.ifname == ifname]

    def routes_of(self, ifname: str) -> list[Route]:
        return [r for r in self.routes if r.ifname == ifname]

    def local_ips(self) -> set[str]:
        """Every address (without prefix length) configured in the namespace."""
        return {ip_of(a.cidr) for a in self.addresses}

    def to_dict(self) -> dict:
        return {
            "netns": self.netns,
            "taken_at": self.taken_at,
            "links": [link_dict(lk) for lk in self.links],
            "addresses": [{"ifname": a.ifname, "cidr": a.cidr, "scope": a.scope, "secondary": a.secondary}
                          for a in self.addresses],
            "routes": [{"dst": r.dst, "ifname": r.ifname, "gateway": r.gateway, "metric": r.metric,
                        "family": r.family} for r in self.routes],
            "br_nf_call_iptables": self.br_nf_call_iptables,
            "firewall_tables": list(self.firewall_tables) if self.firewall_tables is not None else None,
        }


def ip_of(cidr: str) -> str:
    """The address of a CIDR string in canonical form ("2001:DB8::1/64" -> "2001:db8::1")."""
    return str(ipaddress.ip_interface(cidr).ip)


def link_dict(lk: Link) -> dict:
    d = {"name": lk.name, "index": lk.index, "kind": lk.kind, "mac": lk.mac, "mtu": lk.mtu,
         "up": lk.up, "carrier": lk.carrier, "master": lk.master}
    if lk.vxlan is not None:
        d["vxlan"] = {"vni": lk.vxlan.vni, "local": lk.vxlan.local, "group": lk.vxlan.group,
                      "dev": lk.vxlan.dev, "port": lk.vxlan.port}
    return d


# ---------------------------------------------------------------------- reading a host

def read_sysctl(netns: str | None, key: str) -> int | None:
    """An integer sysctl as seen inside ``netns`` (None: missing, e.g. no br_netfilter).

    The file must be opened while the thread is in the namespace: /proc/sys/net shows
    the namespace of the task that opens it.
    """
    from lbtap.drivers.host import netns as netns_mod

    with netns_mod.in_namespace(netns):
        try:
            with open(f"/proc/sys/{key}") as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None


def _run_in_netns(netns: str | None, argv: list[str]) -> str | None:
    """Output of a command run inside ``netns`` (None if it is missing or fails)."""
    if shutil.which(argv[0]) is None:
        return None
    cmd = (["ip", "netns", "exec", netns] if netns else []) + argv
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def firewall_names(nft_tables: str | None, iptables_save: str | None) -> tuple[str, ...] | None:
    """lbtap/neutron tables and chains from ``nft list tables`` and ``iptables-save``
    output (None: neither could be read, so filtering is unknown)."""
    if nft_tables is None and iptables_save is None:
        return None
    found: list[str] = []
    for line in (nft_tables or "").splitlines():  # "table inet lbtap-filter"
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table" and any(m in parts[2].lower() for m in FIREWALL_MARKERS):
            found.append(f"nft:{parts[1]}:{parts[2]}")
    for line in (iptables_save or "").splitlines():  # ":neutron-linuxbri-FORWARD - [0:0]"
        if line.startswith(":") and any(m in line.lower() for m in FIREWALL_MARKERS):
            found.append("iptables:" + line[1:].split()[0])
    return tuple(found)


def read_firewall_tables(netns: str | None) -> tuple[str, ...] | None:
    """Names of lbtap/neutron nftables tables and iptables chains in ``netns``."""
    return firewall_names(_run_in_netns(netns, ["nft", "list", "tables"]), _run_in_netns(netns, ["iptables-save"]))


def take_snapshot(
    driver: HostDriver,
    *,
    netns: str | None = None,
    with_fdb: bool = False,
    now: Callable[[], float] = time.time,
    sysctl: Callable[[str | None, str], int | None] = read_sysctl,
    firewall: Callable[[str | None], tuple[str, ...] | None] = read_firewall_tables,
) -> HostSnapshot:
    """Read links, addresses, routes and counters of the driver's namespace.

    ``sysctl`` and ``firewall`` are injectable so unit tests on ``FakeHost`` can state
    them; by default they read the real namespace ``netns``.
    """
    links = tuple(sorted(driver.list_links(), key=lambda lk: lk.index))
    return HostSnapshot(
        netns=netns,
        links=links,
        addresses=tuple(driver.list_addresses()),
        routes=tuple(driver.list_routes()),
        stats=dict(driver.link_stats()),
        fdb=tuple(driver.list_fdb()) if with_fdb else (),
        br_nf_call_iptables=sysctl(netns, BR_NF_SYSCTL),
        firewall_tables=firewall(netns),
        taken_at=now(),
    )


def bridge_table(snap: HostSnapshot) -> list[dict]:
    """``brctl show`` as data: each bridge with its addresses and interfaces."""
    rows = []
    for br in snap.bridges():
        rows.append({
            "bridge": br.name,
            "mac": br.mac,
            "mtu": br.mtu,
            "up": br.up,
            "carrier": br.carrier,
            "addresses": [a.cidr for a in snap.addresses_of(br.name) if a.scope != "link"],
            "interfaces": [{"name": p.name, "kind": p.kind or "device", "mtu": p.mtu, "up": p.up,
                            "carrier": p.carrier} for p in snap.ports_of(br.name)],
        })
    return rows


def fdb_table(entries: list[FdbEntry] | tuple[FdbEntry, ...]) -> list[dict]:
    """The MAC table of a bridge: MAC, port, local/learned, age (and VTEP for VXLAN)."""
    rows = []
    for e in sorted(entries, key=lambda e: (e.ifname, not e.permanent, e.mac)):
        rows.append({
            "mac": e.mac,
            "port": e.ifname,
            "local": e.permanent,
            "type": "local" if e.permanent else "learned",
            "age": e.age,
            "dst": e.dst,
        })
    return rows
