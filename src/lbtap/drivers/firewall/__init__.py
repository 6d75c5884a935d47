"""Agent-side firewall: per-port anti-spoofing and stateful security groups in nftables.

Public API
----------
* ``PortFilter`` / ``Rule`` / ``RemoteGroups`` (``model``): the pure data.
* ``render(ports, groups) -> str``: ONE nftables script for the whole host; it
  recreates lbtap's own two tables (``bridge lbtap``, ``inet lbtap``) and touches no
  other table. ``compile_state`` / ``compile_update`` / ``compile_groups`` and
  ``render_full`` / ``render_delta`` are the same thing split into data and text, so
  a change can be applied as a small transaction.
* ``FirewallDriver(netns)``: ``apply(ports, groups)``, ``update_port(port)``,
  ``update_ports(ports)``, ``remove_port(tap)``, ``update_groups(groups)``, ``clear()``,
  ``drop_counters()``. Every call is at most one nft transaction (never rule by rule).
* ``FakeFirewall``: the same interface in memory, for agent unit tests.

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

Design chosen: bridge marks the port, inet decides statefully
-------------------------------------------------------------
The bridge-family ``prerouting`` hook (priority -300, before br_netfilter's at 0) tags
a frame from a filtered tap with ``0x4c000000 | port index`` (map keyed on
``iifname``); the bridge ``forward`` hook (priority -200, before br_netfilter's forward
hook at -1) re-tags it with ``0x4d000000 | index`` of the tap it leaves through. The skb
mark survives into the inet hooks br_netfilter calls, so ``inet lbtap`` sees "egress of
port N" in prerouting (priority -150, after conntrack) and "ingress of port N" in
forward, with ``ct state``. There a verdict map keyed on the index jumps to the port's
profile chain: ``ct state established,related accept``; neighbour discovery and DHCP
accepted; ``ct state invalid`` dropped; the port's rules (``accept``); default drop,
counted. Remote groups are interval sets (``g4-<id>``/``g6-<id>``), so membership
changes are element updates.

Why not iptables ``-m physdev`` (which works here too, and is Neutron's way): it
needs one rule per port per rule with no sets or verdict maps, and ``iptables-restore``
of the whole host per change; the marks give the same per-tap precision inside nft
transactions. Costs of the marks: lbtap owns the values 0x4c/0x4d000000 | index on
bridged frames (stale ones are cleared on entry), and traffic the host itself sends to
a guest (bridge-local output) is not filtered — it never passes the bridge forward
hook (Neutron's physdev rules filter it in OUTPUT).

Sizes and speed (measured here, see bench/firewall.py): each nft transaction pays a
cache fetch that grows with the number of chains (~3-6 us per chain) and every rule
costs ~30-100 us to load, so rules must not scale with ports. Ports of the same
security groups share one profile chain (named after the groups, or after a hash of
the rules when the groups are not given); a group's rule change rewrites that chain in
place (``flush chain`` + rules) and per-port state is set/map elements only (~4 per
port). Exact (MAC, IP) pairs are in hash sets, allowed-pair CIDRs in interval sets.

Anti-spoofing details: a filtered port may send only its MAC and allowed-pair MACs;
IPv4/ARP only its (MAC, IP) pairs (pairs' CIDRs allowed), plus DHCP discover from
0.0.0.0 and ARP probes from 0.0.0.0; IPv6 only its addresses, any fe80::/64 source
(its MAC is already checked) and DAD/MLD from ::. It may not act as DHCP server or send
router advertisements, nor send VLAN-tagged frames. Drops are counted in named
counters (``spoof_mac``, ``spoof_ip``, ``spoof_arp``, ``spoof_other``,
``rogue_server``, ``egress_drop``, ``ingress_drop``, ``invalid_drop``). Ports with
``device_owner`` ``network:*`` or port security disabled are not filtered at all.

Not done here: conntrack entries of a removed rule are not flushed (an established
flow survives the rule's deletion until it ends or times out; Neutron deletes them
with ``conntrack -D``); a full ``apply`` resets the counters.
"""

from lbtap.drivers.firewall.driver import FakeFirewall, FirewallDriver
from lbtap.drivers.firewall.model import EGRESS, INGRESS, IPV4, IPV6, PortFilter, RemoteGroups, Rule, from_details
from lbtap.drivers.firewall.render import compile_state, render, render_delta, render_full

__all__ = [
    "EGRESS", "INGRESS", "IPV4", "IPV6", "FakeFirewall", "FirewallDriver", "PortFilter",
    "RemoteGroups", "Rule", "compile_state", "from_details", "render", "render_delta", "render_full",
]
