"""Agent-side firewall: per-port anti-spoofing and stateful security groups in nftables.

Public API
----------
* ``PortFilter`` / ``Rule`` / ``RemoteGroups`` (``model``): the pure data.
* ``render(ports, groups) -> str``: ONE nftables script for the whole host; it
  recreates lbtap's own two tables (``bridge lbtap``, ``inet lbtap``) and touches no
  other table. ``compile_state`` / ``compile_update`` / ``compile_groups`` and
  ``render_full`` / ``render_delta`` are the same thing split into data and text, so
  a change can be applied as a small transaction.
* ``FirewallDriver(netns)``: ``converge(changed, removed, groups)`` (what the agent
  calls once per pass: a driver's first call is one full apply of every port, atomic
  over a previous agent's tables, so no port is ever unfiltered across a restart),
  ``apply(ports, groups)``, ``update_port(port)``, ``update_ports(ports)``,
  ``remove_port(tap)``, ``remove_ports(taps)``, ``update_groups(groups)``, ``clear()``,
  ``drop_counters()``, ``close()``. Every call is at most one nft transaction (never
  rule by rule), followed by the conntrack cleanup of what it took away.
* ``FakeFirewall``: the same interface in memory, for agent unit tests; its
  ``flushes`` list what the real driver would have deleted from conntrack.
* ``plan_flushes`` / ``Flush`` (``conntrack``): which conntrack entries a change ends.
* ``assign_zones`` (``zones``): the conntrack zone of each network (pure).

What this kernel can do (probed in lbtt- namespaces, 6.18)
---------------------------------------------------------
* Bridge family: ``iifname``/``oifname`` are the bridge *ports* (the taps), and
  ``ether saddr``, ``arp saddr ip/ether``, ``ip saddr``, concatenated and interval sets
  work. No conntrack (``ct state`` -> protocol error), no ``meta ibrname``. So
  anti-spoofing, which is stateless, lives there.
* br_netfilter (per-namespace ``net.bridge.bridge-nf-call-ip{,6}tables=1``) shows
  bridged IP packets to the inet family *with conntrack* (``ct state new`` and
  ``established`` both matched), but there ``iifname``/``oifname`` are the *bridge*
  (``br0``), not the taps: probed with counters on ``iifname "br0"`` vs
  ``iifname "tapa"`` (4 vs 0 packets). Per-port matching in the inet table therefore
  cannot use interface names.
* Conntrack zones: ``ct zone set`` in the bridge family is a protocol error too; in
  the inet family with ``iifname`` = the bridge it works for bridged traffic (at -300,
  as first probed, and at -450, where it is now), both directions (conntrack entries listed with ``zone=N``); ctnetlink dumps
  filtered on an address return entries of every zone, each with its ``CTA_ZONE``.

Design chosen: bridge marks the port, inet decides statefully
-------------------------------------------------------------
The bridge-family ``prerouting`` hook (priority -300, before br_netfilter's at 0) tags
a frame from a filtered tap with ``0x4c000000 | profile number`` (map keyed on
``iifname``); the bridge ``forward`` hook (priority -200, before br_netfilter's forward
hook at -1) re-tags it with ``0x4d000000 | number`` of the tap it leaves through. The
skb mark survives into the inet hooks br_netfilter calls, so ``inet lbtap`` sees
"egress of profile N" in prerouting (priority -150, after conntrack) and "ingress of
profile N" in forward, with ``ct state``: ``ct state established,related accept``;
neighbour discovery and DHCP accepted; ``ct state invalid`` dropped; then the profile's
rules, as lookups of ``meta mark . address . proto [. port | icmp type . code]`` in
twelve host-wide interval sets (``profiles``; each split in 8 shards by profile
number, see ``render``), and for what sets cannot hold (remote-group rules, mostly) a
verdict map keyed on the mark jumping to a small chain; default drop, counted. Remote
groups are interval sets (``g4-<id>``/``g6-<id>``), so membership changes are element
updates.

Why not iptables ``-m physdev`` (which works here too, and is Neutron's way): it
needs one rule per port per rule with no sets or verdict maps, and ``iptables-restore``
of the whole host per change; the marks give the same per-tap precision inside nft
transactions. Costs of the marks: lbtap owns the values 0x4c/0x4d000000 | number on
bridged frames (stale ones are cleared on entry), and traffic the host itself sends to
a guest (bridge-local output) is not filtered — it never passes the bridge forward
hook (Neutron's physdev rules filter it in OUTPUT).

Sizes and speed (measured here, see bench/firewall.py): each nft transaction pays a
cache fetch that grows with the number of chains (~3-6 us per chain) and every rule
costs ~30-100 us to load, while a set element costs a few us, so neither rules nor
chains scale with ports or profiles. Ports of the same security groups share one
profile (named after the groups, or after the rules when the groups are not given); a
group's rule change is a few set elements, and per-port state is set/map elements
only (~3 per port). 1000 ports x 10 rules with a distinct group each load in ~110-125 ms
(it was ~400-700 ms with a chain of rules per profile). Exact (MAC, IP) pairs are in
hash sets, allowed-pair CIDRs in interval sets; interval sets refuse overlapping
elements, so overlapping CIDRs are collapsed and overlapping rules of one profile kept
as chain rules.

Anti-spoofing details: a filtered port may send only its MAC and allowed-pair MACs;
IPv4/ARP only its (MAC, IP) pairs (pairs' CIDRs allowed), plus DHCP discover from
0.0.0.0 and ARP probes from 0.0.0.0; IPv6 only its addresses, any fe80::/64 source
(its MAC is already checked) and DAD/MLD from ::. It may not act as DHCP server or send
router advertisements, nor send VLAN-tagged frames. Drops are counted in named
counters (``spoof_mac``, ``spoof_ip``, ``spoof_arp``, ``spoof_other``,
``rogue_server``, ``egress_drop``, ``ingress_drop``, ``invalid_drop``). Ports with
``device_owner`` ``network:*`` or port security disabled are not filtered at all.

Conntrack zones (``zones`` module): every network on the host gets its own zone, set
before defragmentation and conntrack (``inet lbtap`` chains at priority -450, below
defrag's -400, so fragments are reassembled per network too; ``ct zone set iifname map
@zones`` keyed on the network's bridge, which is what br_netfilter shows as the
interface; ``oifname`` for the host's own output), so two networks with the same
addresses share no entries: an established flow of one never lets the same 5-tuple
through the other's rules. Zones are the lowest free numbers >= 1, kept while a port of
the network is here, and a zone of a network gone is flushed whole before its number
is reused; the map and the retired zones live in the table, so a restart keeps them.

Conntrack cleanup: after a change that takes something away (rule, member, address,
port) the driver deletes the entries of flows the new rules no longer allow — only in
the port's zone — through ctnetlink in its namespace (``conntrack`` module, where the
choice of what to delete is documented). Ports without a network id share zone 0,
as before.

Not done here: a full ``apply`` resets the counters.
"""

from lbtap.drivers.firewall.conntrack import ConntrackCleaner, Flush, plan_flushes
from lbtap.drivers.firewall.driver import FakeFirewall, FirewallDriver
from lbtap.drivers.firewall.model import EGRESS, INGRESS, IPV4, IPV6, PortFilter, RemoteGroups, Rule, from_details
from lbtap.drivers.firewall.render import compile_state, render, render_delta, render_full
from lbtap.drivers.firewall.zones import assign as assign_zones

__all__ = [
    "EGRESS", "INGRESS", "IPV4", "IPV6", "ConntrackCleaner", "FakeFirewall", "FirewallDriver", "Flush",
    "PortFilter", "RemoteGroups", "Rule", "assign_zones", "compile_state", "from_details", "plan_flushes", "render",
    "render_delta", "render_full",
]
