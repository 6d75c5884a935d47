"""The fixed parts of the ruleset: bridge-side anti-spoofing and the common inet accepts.

Anti-spoofing is stateless, so it lives in the bridge table (no conntrack there) and is
keyed on ``iifname``: per port only set elements (``port_elements``), never rules.
"""

from __future__ import annotations

import functools
import ipaddress

from lbtap.drivers.firewall.model import PortFilter

COUNTERS_BRIDGE = ("spoof_mac", "spoof_ip", "spoof_arp", "spoof_other", "rogue_server")
COUNTERS_INET = ("egress_drop", "ingress_drop", "invalid_drop")

# ND and DHCP must pass before the port's rules and before "ct state invalid": a guest
# cannot get an address or resolve neighbours otherwise, and conntrack does not track
# neighbour discovery.
EGRESS_BASE = (
    "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, "
    "mld-listener-report, mld-listener-done, mld2-listener-report } accept",
    "meta nfproto ipv4 udp sport 68 udp dport 67 accept",
    "meta nfproto ipv6 udp sport 546 udp dport 547 accept",
    "ct state invalid counter name invalid_drop drop",
)
INGRESS_BASE = (
    "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query } accept",
    "meta nfproto ipv4 udp sport 67 udp dport 68 accept",
    "meta nfproto ipv6 udp sport 547 udp dport 546 accept",
    "ct state invalid counter name invalid_drop drop",
)

# Exact (mac, ip) pairs live in hash sets, allowed-pair CIDRs in interval sets: hash
# elements load about twice as fast, and almost every pair is exact.
ANTISPOOF = (
    "iifname . ether saddr != @mac_ok counter name spoof_mac drop",
    "ether type { 8021q, 8021ad } counter name spoof_other drop",
    # A guest must not act as DHCP server or IPv6 router for its neighbours.
    "meta l4proto udp udp sport 67 udp dport 68 counter name rogue_server drop",
    "meta l4proto udp udp sport 547 udp dport 546 counter name rogue_server drop",
    "icmpv6 type nd-router-advert counter name rogue_server drop",
    # ARP probes (RFC 5227) carry sender IP 0.0.0.0.
    "arp operation request arp saddr ip 0.0.0.0 return",
    "iifname . arp saddr ether . arp saddr ip @ip4_ok return",
    "iifname . arp saddr ether . arp saddr ip @ip4_net return",
    "ether type arp counter name spoof_arp drop",
    "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return",
    "iifname . ether saddr . ip saddr @ip4_ok return",
    "iifname . ether saddr . ip saddr @ip4_net return",
    "ether type ip counter name spoof_ip drop",
    # DAD and MLD before the guest owns an address; link-local once the MAC is checked.
    "ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } return",
    "ip6 saddr fe80::/64 return",
    "iifname . ether saddr . ip6 saddr @ip6_ok return",
    "iifname . ether saddr . ip6 saddr @ip6_net return",
    "ether type ip6 counter name spoof_ip drop",
)
BRIDGE_SETS = ("mac_ok", "ip4_ok", "ip4_net", "ip6_ok", "ip6_net")


@functools.lru_cache(maxsize=16384)
def port_elements(port: PortFilter) -> tuple[tuple[str, str], ...]:
    """(bridge set, element) pairs of one port's anti-spoofing.

    Allowed-pair CIDRs of one MAC are collapsed first: the interval sets refuse
    overlapping elements (10.9.0.0/16 and 10.9.1.0/24 on one port, say).
    """
    q = f'"{port.tap}"'
    out = [("mac_ok", f"{q} . {m}") for m in port.macs()]
    nets: dict[tuple[str, int], list] = {}
    for mac, ip in port.source_pairs():
        if "/" in ip:
            net = ipaddress.ip_network(ip)
            nets.setdefault((mac, net.version), []).append(net)
        else:
            out.append(("ip6_ok" if ":" in ip else "ip4_ok", f"{q} . {mac} . {ip}"))
    for (mac, version), group in sorted(nets.items()):
        for net in ipaddress.collapse_addresses(group):
            out.append((f"ip{version}_net", f"{q} . {mac} . {net}"))
    return tuple(out)


def same_addresses(a: PortFilter, b: PortFilter) -> bool:
    """Whether two versions of a port have the same anti-spoofing elements."""
    return (a.tap, a.mac, a.ips, a.allowed_address_pairs) == (b.tap, b.mac, b.ips, b.allowed_address_pairs)
