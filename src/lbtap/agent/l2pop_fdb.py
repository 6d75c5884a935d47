"""Pure l2population state of an agent: pushed entries in, kernel FDB entries out.

The server pushes Neutron-shaped ``fdb_entries`` (see ``lbtap.server.l2pop``)::

    {network_id: {"segment_id": vni, "network_type": "vxlan",
                  "ports": {vtep_ip: [[mac, ip], ...]}}}

``FdbTable`` accumulates them (``add``/``remove``; ``from_entries`` after a resync,
``replace`` for the networks of a join pull);
``kernel_entries`` turns the table into the entries the VXLAN devices of the networks
present on this host must hold; ``diff`` says what to add and delete. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from lbtap.domain.naming import vxlan_name

ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True, order=True)
class KernelFdb:
    """One entry of a VXLAN device's own FDB: ``mac`` (all-zero: flooding) to ``dst``."""

    ifname: str
    mac: str
    dst: str


@dataclass
class NetEntries:
    segment_id: int | None = None
    # VTEP -> set of (mac, ip) pairs; the flooding entry is (ZERO_MAC, "0.0.0.0").
    ports: dict[str, set[tuple[str, str]]] = field(default_factory=dict)


def _pairs(raw: Iterable[Any]) -> set[tuple[str, str]]:
    out = set()
    for item in raw or ():
        if isinstance(item, (list, tuple)) and item:
            mac = str(item[0]).lower()
            ip = str(item[1]) if len(item) > 1 and item[1] is not None else ""
            out.add((mac, ip))
    return out


@dataclass
class FdbTable:
    """What the server said, per network; tolerant of malformed pieces (skipped)."""

    nets: dict[str, NetEntries] = field(default_factory=dict)

    def add(self, fdb_entries: Mapping[str, Any]) -> None:
        for net_id, block in (fdb_entries or {}).items():
            if not isinstance(block, Mapping):
                continue
            net = self.nets.setdefault(net_id, NetEntries())
            if block.get("segment_id") is not None:
                net.segment_id = int(block["segment_id"])
            for vtep, raw in (block.get("ports") or {}).items():
                net.ports.setdefault(vtep, set()).update(_pairs(raw))

    def remove(self, fdb_entries: Mapping[str, Any]) -> None:
        for net_id, block in (fdb_entries or {}).items():
            net = self.nets.get(net_id)
            if net is None or not isinstance(block, Mapping):
                continue
            for vtep, raw in (block.get("ports") or {}).items():
                pairs = net.ports.get(vtep)
                if pairs is None:
                    continue
                pairs.difference_update(_pairs(raw))
                if not pairs:
                    del net.ports[vtep]
            if not net.ports:
                del self.nets[net_id]

    def replace(self, net_ids: Iterable[str], fdb_entries: Mapping[str, Any]) -> None:
        """The networks ``net_ids`` as ``fdb_entries`` (a server snapshot) has them; the
        other networks are left alone, and so are the snapshot's other networks."""
        wanted = set(net_ids)
        for net_id in wanted:
            self.nets.pop(net_id, None)
        self.add({n: b for n, b in (fdb_entries or {}).items() if n in wanted})

    @classmethod
    def from_entries(cls, fdb_entries: Mapping[str, Any]) -> "FdbTable":
        table = cls()
        table.add(fdb_entries)
        return table

    def count(self) -> int:
        return sum(len(p) for n in self.nets.values() for p in n.ports.values())


def kernel_entries(table: FdbTable, local: Mapping[str, int], own_ip: str | None) -> set[KernelFdb]:
    """Entries the VXLAN devices of the ``local`` networks (network id -> VNI) must hold.

    The all-zero MAC appears once per remote VTEP (the kernel's flooding list). A
    unicast MAC can sit behind one VTEP only: if two VTEPs claim it (a port moving
    between hosts, entries crossing), the highest address wins, deterministically,
    until the server's next message settles it. Our own VTEP is never a destination.
    """
    out: set[KernelFdb] = set()
    for net_id, vni in local.items():
        net = table.nets.get(net_id)
        if net is None:
            continue
        ifname = vxlan_name(vni)
        unicast: dict[str, str] = {}
        for vtep, pairs in net.ports.items():
            if vtep == own_ip:
                continue
            for mac, _ip in pairs:
                if mac == ZERO_MAC:
                    out.add(KernelFdb(ifname, ZERO_MAC, vtep))
                elif mac not in unicast or vtep > unicast[mac]:
                    unicast[mac] = vtep
        out.update(KernelFdb(ifname, mac, dst) for mac, dst in unicast.items())
    return out


def diff(desired: set[KernelFdb], actual: set[KernelFdb]) -> tuple[list[KernelFdb], list[KernelFdb]]:
    """(to_add, to_delete), sorted for stable logs and tests. Deletes go first when
    applied, so a unicast MAC that moved VTEP is re-added after its old entry left."""
    return sorted(desired - actual), sorted(actual - desired)
