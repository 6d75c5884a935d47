"""Pure decisions of ``lbtap cleanup``: what of a dead deployment to remove.

Inputs are what the host side read: the DHCP state directories (``<state>/dhcp/<net>``)
with the dnsmasq PID each one's pid file names *if* that process was verified to be
a dnsmasq started for that directory, the namespace records (``lbtap.agents.state``)
and the machine's namespace list. Only lbtap's own state and names count:

- a dnsmasq is stopped only by a verified PID from a pid file of the state dir;
- a namespace is removed only if a record of the state dir names it and lbtap's
  naming function gives exactly that name for the record's kind, id and host suffix,
  or, with ``host`` given, if it is ``qdhcp-<id>-<host>`` / ``qrouter-<id>-<host>``
  (the names agents managing a host namespace give; a Neutron never adds a host);
- ``host`` also narrows the records (and the dnsmasq of networks recorded for
  another host) to that agent host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lbtap.agents.state import KINDS, NamespaceRecord
from lbtap.drivers.router.naming import owned_ids


@dataclass(frozen=True)
class DhcpState:
    """One ``<state>/dhcp/<network_id>`` directory; ``pid``: its dnsmasq, verified."""

    network_id: str
    pid: int | None = None


@dataclass
class CleanupPlan:
    """What to remove, in this order: dnsmasq processes, namespaces, DHCP files, records."""

    dnsmasq: list[tuple[str, int]] = field(default_factory=list)  # (network id, pid)
    namespaces: list[str] = field(default_factory=list)
    dhcp_files: list[str] = field(default_factory=list)  # network ids
    records: list[str] = field(default_factory=list)  # namespace names whose record goes

    @property
    def empty(self) -> bool:
        """Nothing a user would see removed (stale records alone go silently)."""
        return not (self.dnsmasq or self.namespaces or self.dhcp_files)


def plan_cleanup(*, dhcp: list[DhcpState], records: list[NamespaceRecord], namespaces: list[str],
                 host: str | None = None) -> CleanupPlan:
    """What to remove; ``host`` None: everything the state dir records."""
    present = set(namespaces)
    ours = [r for r in records if r.valid() and (host is None or r.host == host)]
    remove = {r.name for r in ours if r.name in present}
    if host:
        for prefix, name_for in KINDS.values():
            remove |= {name_for(rid, host) for rid in owned_ids(sorted(present), prefix, host)}
    hosts_of: dict[str, set[str]] = {}
    for r in records:
        if r.kind == "dhcp" and r.valid():
            hosts_of.setdefault(r.resource_id, set()).add(r.host)
    chosen = [d for d in dhcp if host is None or not hosts_of.get(d.network_id) or host in hosts_of[d.network_id]]
    return CleanupPlan(
        dnsmasq=sorted((d.network_id, d.pid) for d in chosen if d.pid is not None),
        namespaces=sorted(remove),
        dhcp_files=sorted(d.network_id for d in chosen),
        records=sorted({r.name for r in ours}),
    )
