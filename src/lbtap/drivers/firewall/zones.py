"""Conntrack zones: one per network on the host, so overlapping tenant addresses of two
networks never share conntrack entries (Neutron's iptables firewall does the same).

Why zones: the inet table accepts ``ct state established,related`` before any rule.
Without zones, a packet of network B whose 5-tuple equals that of an established flow
of network A (same tenant addresses, same ports) is "established" and skips B's
ingress rules; and a conntrack cleanup keyed on an address of A resets B's flow too.

Where the zone is set (probed in lbtt- namespaces, kernel 6.18): br_netfilter shows a
bridged packet to the inet hooks with ``iifname`` = the *bridge*, and every port of a
network — its taps, and its VXLAN/uplink port — sits on that network's bridge
(``brq`` + the network id's first 11 characters, ``naming.bridge_name``). So one rule in
a chain of the inet table at priority -450 (before defragmentation at -400 and conntrack
at -200), ``ct zone set iifname map @zones``, puts both directions of every flow crossing
the bridge in its network's zone, whichever port the packet came from (a reply enters the
bridge through the other port: still the same bridge). A second chain in the output
hook does the same by ``oifname`` for what the host itself sends into a bridge, so the
host's own flows with a guest are zoned the same way in both directions. The bridge
family cannot do it: ``ct zone set`` there is a protocol error (no bridge conntrack in
this kernel), and keying on taps in the inet family is impossible (they are not the
interface there).

Allocation (``assign``, pure): the zones are keyed by bridge name (one per network); a
bridge keeps its zone while any port of its network (filtered or not) is on the host; a
new one gets the lowest number >= 1 that is neither in use nor *retired*. A zone is
retired when its network leaves: nothing maps to it any more, the driver deletes every
conntrack entry of the zone after that transaction, and only once that succeeded is the
number free again — so a zone is never handed to a network while entries of the
previous one may remain. Both the map and the retired numbers are in the kernel
(``zones`` map, ``zones_retired`` set), so a restarted agent keeps every network's zone
(and its flows) and still flushes a zone retired before the restart.

Fragments: nf_defrag (priority -400, prerouting and output) reassembles in the zone of
the conntrack template already on the packet, which is what ``ct zone set`` attaches; the
zone chains run before it, so IP fragments are reassembled in their network's zone. At
-300 (after defrag, as Neutron's iptables zones in the raw table) they were reassembled
in zone 0, shared: probed in lbtt- namespaces, a last fragment sent in network B
completed a datagram whose first fragment came from network A (same addresses, IP id
and protocol), and the whole went on as A's packet, carrying B's data to A's guest.

Limit (Neutron's iptables zones, which also key on ``-i brq…``, share it): a flow the
host's own namespace *routes* between a network's bridge and another interface would see
its two directions in different zones (the agent's host routes nothing: routers live in
their own namespaces, plugged into the bridge like any port).
"""

from __future__ import annotations

from typing import AbstractSet, Iterable, Mapping

from lbtap.domain.naming import bridge_name

MAX_ZONE = 0xFFFF  # conntrack zones are 16 bits; 0 is the default zone everyone shares


def bridge_of(network_id: str | None) -> str | None:
    """The bridge (zone key) of a network; None for a port without a network."""
    return bridge_name(network_id) if network_id else None


def assign(bridges: Iterable[str], previous: Mapping[str, int],
           retired: AbstractSet[int] = frozenset()) -> tuple[dict[str, int], frozenset[int]]:
    """Zones for ``bridges``: (bridge -> zone, retired zones).

    A bridge in ``previous`` keeps its zone; a zone of ``previous`` whose bridge is not
    in ``bridges`` joins the retired ones; new bridges (in name order) get the lowest
    numbers >= 1 neither kept nor retired. ``previous`` may come from the kernel
    (restart), so it is not trusted to be consistent: a zone claimed twice or also
    retired is kept by neither of the later claimants.
    """
    want = set(bridges)
    out: dict[str, int] = {}
    gone = set(retired)
    kept: set[int] = set()
    for b, z in sorted(previous.items()):
        if not 1 <= z <= MAX_ZONE:
            continue
        if b in want and z not in gone and z not in kept:
            out[b] = z
            kept.add(z)
        elif b not in want:
            gone.add(z)
    gone -= kept  # a zone claimed by a present bridge and an absent one stays in use
    used = kept | gone
    n = 1
    for b in sorted(want - out.keys()):
        while n in used:
            n += 1
        if n > MAX_ZONE:
            raise ValueError(f"more than {MAX_ZONE} conntrack zones")
        out[b] = n
        used.add(n)
    return out, frozenset(gone)
