"""What changed between two sets of static leases.

The DHCP agent batches port creates/updates/deletes and asks this module whether the
batch changes anything dnsmasq serves; only then does it rewrite the files and send
one SIGHUP. 500 port creates thus cost a handful of reloads and no restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbtap.drivers.dhcp.model import DhcpNetwork, Port
from lbtap.drivers.dhcp.render import Lease, static_leases


@dataclass(frozen=True)
class LeaseDiff:
    """Static leases added, removed and changed (same MAC and address, new name).

    A port that moves to another address shows up as one removal and one addition:
    the old address must be released before another MAC can get it.
    """

    added: tuple[Lease, ...] = ()
    removed: tuple[Lease, ...] = ()
    changed: tuple[Lease, ...] = ()  # the new version of each changed lease

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def __len__(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


def diff_leases(old: list[Lease] | tuple[Lease, ...], new: list[Lease] | tuple[Lease, ...]) -> LeaseDiff:
    """Compare two lease lists keyed by (MAC, address)."""
    before = {(x.mac, x.ip): x for x in old}
    after = {(x.mac, x.ip): x for x in new}
    added = tuple(sorted(v for k, v in after.items() if k not in before))
    removed = tuple(sorted(v for k, v in before.items() if k not in after))
    changed = tuple(sorted(v for k, v in after.items() if k in before and before[k] != v))
    return LeaseDiff(added, removed, changed)


def diff_ports(network: DhcpNetwork, old_ports: list[Port] | tuple[Port, ...],
               new_ports: list[Port] | tuple[Port, ...]) -> LeaseDiff:
    """The lease changes of replacing ``old_ports`` by ``new_ports`` on ``network``."""
    return diff_leases(static_leases(network.with_ports(tuple(old_ports))),
                       static_leases(network.with_ports(tuple(new_ports))))
