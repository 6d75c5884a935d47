"""Pure rendering of a router's NAT as one nftables table, applied in one transaction.

The script first declares the table (a no-op if it exists), deletes it, and declares
it again with its full content, so ``nft -f`` replaces the whole NAT state atomically:
packets see the old rules or the new ones, never a mix, and applying the same script
twice is a no-op. Floating IPs are two maps (floating → fixed for DNAT, fixed →
floating for SNAT), so a router with thousands of floating IPs still has a handful
of rules.

Rule order in postrouting mirrors Neutron's iptables chains:
1. traffic between internal subnets, not DNATed, keeps its addresses;
2. a fixed IP with a floating IP leaves as its floating IP;
3. other traffic from internal subnets leaving through the gateway is SNATed to the
   gateway address (only with ``enable_snat``);
4. DNATed traffic that came from inside (a guest using another guest's floating IP,
   "hairpin") is masqueraded so the reply comes back through the router.
"""

from __future__ import annotations

import ipaddress

from lbtap.drivers.router.model import Router
from lbtap.drivers.router.naming import gateway_device

TABLE_FAMILY = "ip"
TABLE_NAME = "lbtap_nat"


def gateway_ipv4(router: Router) -> str | None:
    """The first IPv4 address of the gateway port (the SNAT source), or None."""
    if router.gateway is None:
        return None
    for iface in router.gateway.port.interfaces:
        if iface.version == 4:
            return str(iface.ip)
    return None


def _elements(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{a} : {b}" for a, b in pairs)


def render_nat(router: Router) -> str:
    """The ``nft -f`` script holding all NAT of ``router`` (an empty table if none)."""
    t = f"{TABLE_FAMILY} {TABLE_NAME}"
    lines = [f"table {t} {{}}", f"delete table {t}", f"table {t} {{"]
    gw_ip = gateway_ipv4(router)
    if router.gateway is None or gw_ip is None:
        lines.append("}")
        return "\n".join(lines) + "\n"

    qg = gateway_device(router.gateway.port.id)
    internal = [str(n) for n in router.internal_networks if n.version == 4]
    fips = router.active_floating_ips
    dnat = [(f.floating_ip_address, f.fixed_ip_address) for f in fips]
    # One fixed IP may have several floating IPs; outgoing traffic uses the first.
    snat: dict[str, str] = {}
    for f in fips:
        snat.setdefault(f.fixed_ip_address, f.floating_ip_address)
    snat_pairs = sorted(snat.items(), key=lambda kv: ipaddress.ip_address(kv[0]))

    if internal:
        lines += ["  set internal {", "    type ipv4_addr; flags interval;",
                  f"    elements = {{ {', '.join(internal)} }}", "  }"]
    if dnat:
        lines += ["  map fip_dnat {", "    type ipv4_addr : ipv4_addr;",
                  f"    elements = {{ {_elements(dnat)} }}", "  }"]
        lines += ["  map fip_snat {", "    type ipv4_addr : ipv4_addr;",
                  f"    elements = {{ {_elements(snat_pairs)} }}", "  }"]

    lines.append("  chain prerouting {")
    lines.append("    type nat hook prerouting priority dstnat; policy accept;")
    if dnat:
        lines.append("    dnat to ip daddr map @fip_dnat")
    lines.append("  }")
    # The router's own traffic to a floating IP (e.g. a health check from inside the
    # namespace) must reach the fixed IP too.
    lines.append("  chain output {")
    lines.append("    type nat hook output priority -100; policy accept;")
    if dnat:
        lines.append("    dnat to ip daddr map @fip_dnat")
    lines.append("  }")

    lines.append("  chain postrouting {")
    lines.append("    type nat hook postrouting priority srcnat; policy accept;")
    lines.append(f'    iifname != "{qg}" oifname != "{qg}" ct status & dnat == 0 accept')
    if dnat:
        lines.append("    snat to ip saddr map @fip_snat")
    if router.gateway.enable_snat and internal:
        lines.append(f'    oifname "{qg}" ip saddr @internal snat to {gw_ip}')
    lines.append(f'    iifname != "{qg}" ct status dnat masquerade')
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
