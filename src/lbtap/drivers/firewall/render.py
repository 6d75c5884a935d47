"""Pure rendering of the host's firewall into nftables scripts.

``compile_state(ports, groups)`` turns the model into a ``Compiled`` value (set and map
elements, chains); ``render_full`` writes a script that atomically replaces lbtap's two
tables, ``render_delta(old, new)`` one that turns ``old`` into ``new`` touching only what
differs. Each script is one nft transaction; no I/O here.

Layout (why: see the package docstring):

* ``table bridge lbtap`` — ``prerouting`` (priority -300) tags a frame from a
  filtered tap with ``0x4c000000 | index`` (``port_idx`` map keyed on ``iifname``) and
  checks its sources in ``antispoof`` against sets of ``iifname . ether saddr [. ip
  saddr]``, dropping the rest with named counters. ``forward`` (priority -200, so
  before br_netfilter's own hook at -1) re-tags a frame leaving through a filtered tap
  with ``0x4d000000 | index`` of that destination port.
* ``table inet lbtap`` — what br_netfilter shows bridged IP traffic, with conntrack.
  ``prerouting`` (priority -150, after conntrack) handles tag 0x4c (the source port's
  egress), ``forward`` tag 0x4d (the destination port's ingress): after the common
  accepts (established, ND, DHCP) both jump through the ``profile`` verdict map (port
  index -> ``p-<key>``) into the port's profile chain, whose rules test the direction
  inline, and drop what no rule accepted. Ports with the same security groups (or the
  same rules) share one profile, so the ruleset grows with distinct groups, not with
  ports x rules, and a group's rule change rewrites one chain in place.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from lbtap.drivers.firewall.model import (
    EGRESS, INGRESS, IPV4, PORT_PROTOCOLS, PortFilter, RemoteGroups, Rule,
)

TABLE = "lbtap"
EGRESS_TAG = 0x4C000000  # | port index: frame comes *from* a filtered tap
INGRESS_TAG = 0x4D000000  # | port index: frame goes *to* a filtered tap
MAX_INDEX = 0xFFFFFF
COUNTERS_BRIDGE = ("spoof_mac", "spoof_ip", "spoof_arp", "spoof_other", "rogue_server")
COUNTERS_INET = ("egress_drop", "ingress_drop", "invalid_drop")

# ND and DHCP must pass before the port's rules and before "ct state invalid": a guest
# cannot get an address or resolve neighbours otherwise, and conntrack does not track
# neighbour discovery.
_EGRESS_BASE = (
    "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, "
    "mld-listener-report, mld-listener-done, mld2-listener-report } accept",
    "meta nfproto ipv4 udp sport 68 udp dport 67 accept",
    "meta nfproto ipv6 udp sport 546 udp dport 547 accept",
    "ct state invalid counter name invalid_drop drop",
)
_INGRESS_BASE = (
    "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query } accept",
    "meta nfproto ipv4 udp sport 67 udp dport 68 accept",
    "meta nfproto ipv6 udp sport 547 udp dport 546 accept",
    "ct state invalid counter name invalid_drop drop",
)
# Exact (mac, ip) pairs live in hash sets, allowed-pair CIDRs in interval sets: hash
# elements load about twice as fast, and almost every pair is exact.
_ANTISPOOF = (
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
_BRIDGE_SETS = ("mac_ok", "ip4_ok", "ip4_net", "ip6_ok", "ip6_net")
_SET_REF = re.compile(r"@(g[46]-\S+)")
_IS_EGRESS = f"meta mark and 0xff000000 == {EGRESS_TAG:#010x}"
_IS_INGRESS = f"meta mark and 0xff000000 == {INGRESS_TAG:#010x}"


@dataclass(frozen=True)
class Compiled:
    """The rendered state as data, so two states can be diffed element by element."""

    index: Mapping[str, int] = field(default_factory=dict)  # tap -> port index
    profile: Mapping[str, str] = field(default_factory=dict)  # tap -> profile name
    elements: Mapping[str, frozenset[str]] = field(default_factory=dict)  # bridge set -> elements
    sets: Mapping[str, frozenset[str]] = field(default_factory=dict)  # "g4-<gid>" -> members
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # inet chain -> rules


def _q(ifname: str) -> str:
    return f'"{ifname}"'


def group_set(gid: str, version: int) -> str:
    return f"g{version}-{gid}"


@functools.lru_cache(maxsize=65536)
def rule_expr(rule: Rule) -> str:
    """nft match of one rule (no verdict), from the port's point of view."""
    fam = "ip" if rule.ethertype == IPV4 else "ip6"
    parts = [f"meta nfproto {'ipv4' if fam == 'ip' else 'ipv6'}"]
    remote = "saddr" if rule.direction == INGRESS else "daddr"
    if rule.remote_ip_prefix:
        parts.append(f"{fam} {remote} {rule.remote_ip_prefix}")
    elif rule.remote_group_id:
        parts.append(f"{fam} {remote} @{group_set(rule.remote_group_id, 4 if fam == 'ip' else 6)}")
    proto = rule.protocol_number
    lo, hi = rule.port_range_min, rule.port_range_max
    if proto is None:
        pass
    elif proto in PORT_PROTOCOLS and (lo is not None or hi is not None):
        lo = lo if lo is not None else 1
        hi = hi if hi is not None else 65535
        name = PORT_PROTOCOLS[proto]
        parts.append(f"{name} dport {lo}" if lo == hi else f"{name} dport {lo}-{hi}")
    elif proto in (1, 58) and lo is not None:
        icmp = "icmp" if proto == 1 else "icmpv6"
        parts.append(f"meta l4proto {proto} {icmp} type {lo}")
        if hi is not None:
            parts.append(f"{icmp} code {hi}")
    else:
        parts.append(f"meta l4proto {proto}")
    return " ".join(parts)


@functools.lru_cache(maxsize=16384)
def _bodies(rules: tuple[Rule, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(egress rules, ingress rules) as nft lines. Every rule is an accept, so order is
    irrelevant: sorting makes equal rule sets render equal."""
    out = []
    for direction in (EGRESS, INGRESS):
        out.append(tuple(sorted({rule_expr(r) + " accept" for r in rules if r.direction == direction})))
    return out[0], out[1]


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=16384)
def _port_elements(port: PortFilter) -> tuple[tuple[str, str], ...]:
    """(bridge set, element) pairs of one port's anti-spoofing."""
    q = _q(port.tap)
    out = [("mac_ok", f"{q} . {m}") for m in port.macs()]
    for mac, ip in port.source_pairs():
        name = ("ip6" if ":" in ip else "ip4") + ("_net" if "/" in ip else "_ok")
        out.append((name, f"{q} . {mac} . {ip}"))
    return tuple(out)


def _same_addresses(a: PortFilter, b: PortFilter) -> bool:
    return (a.tap, a.mac, a.ips, a.allowed_address_pairs) == (b.tap, b.mac, b.ips, b.allowed_address_pairs)


@functools.lru_cache(maxsize=16384)
def _key_of_groups(groups: tuple[str, ...]) -> str:
    return _digest(",".join(groups))


@functools.lru_cache(maxsize=16384)
def _key_of_rules(rules: tuple[Rule, ...]) -> str:
    return _digest(repr(_bodies(rules)))


def _profile_key(port: PortFilter) -> str:
    return _key_of_groups(port.security_groups) if port.security_groups else _key_of_rules(port.rules)


@functools.lru_cache(maxsize=16384)
def _profile_chain(key: str, bodies: tuple[tuple[str, ...], tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    # One chain per profile, the direction tested inline: nft's per-transaction cache
    # fetch grows with the number of chains (~3-6 us each here), rules cost less.
    return {f"p-{key}": (*(f"{_IS_EGRESS} {r}" for r in bodies[0]), *(f"{_IS_INGRESS} {r}" for r in bodies[1]))}


@functools.lru_cache(maxsize=16384)
def _gids(rules: tuple[Rule, ...]) -> frozenset[str]:
    return frozenset(r.remote_group_id for r in rules if r.remote_group_id)


def compile_state(ports: Iterable[PortFilter], groups: RemoteGroups, previous: Compiled | None = None) -> Compiled:
    """The desired state of all ``ports``. Indexes of ports already in ``previous`` are
    kept, so a delta never renumbers other ports.

    Ports of the same security groups share a profile named after the groups. Should
    two of them disagree on the rules (data caught half-way through an update), the
    first by tap name wins; ``compile_update`` lets the updated port win instead.
    """
    ports = sorted(ports, key=lambda p: p.tap)
    if len({p.tap for p in ports}) != len(ports):
        raise ValueError("duplicate tap in port list")
    filtered = [p for p in ports if p.filtered]
    old = previous.index if previous else {}
    index = {p.tap: old[p.tap] for p in filtered if p.tap in old}
    used = set(index.values())
    free = (i for i in range(1, MAX_INDEX + 1) if i not in used)
    elements: dict[str, set[str]] = {n: set() for n in _BRIDGE_SETS}
    chains: dict[str, tuple[str, ...]] = {}
    profile: dict[str, str] = {}
    gids = set(groups.members)
    for p in filtered:
        if p.tap not in index:
            index[p.tap] = next(free)
        for name, e in _port_elements(p):
            elements[name].add(e)
        key = _profile_key(p)
        if f"p-{key}" not in chains:
            chains.update(_profile_chain(key, _bodies(p.rules)))
        profile[p.tap] = f"p-{key}"
        gids |= _gids(p.rules)
    sets = {group_set(g, v): groups.by_family(g, v) for g in gids for v in (4, 6)}
    return Compiled(index=index, profile=profile, sets=sets, chains=chains,
                    elements={n: frozenset(v) for n, v in elements.items()})


def compile_update(prev: Compiled, changes: Iterable[tuple[PortFilter | None, PortFilter | None]],
                   groups: RemoteGroups) -> Compiled:
    """``prev`` with some ports replaced (each change is ``(old, new)``, either may be
    None), in time proportional to those ports rather than to the host. An updated
    port's rules win for its profile: ports sharing its security groups see the change
    too, which is what a group's rule change means."""
    index, profile = dict(prev.index), dict(prev.profile)
    chains, sets = dict(prev.chains), dict(prev.sets)
    elements = dict(prev.elements)
    diff: dict[str, tuple[set[str], set[str]]] = {}
    left: set[str] = set()
    done: set[str] = set()
    for old, new in changes:
        old = old if old is not None and old.filtered else None
        new = new if new is not None and new.filtered else None
        if old is None and new is None:
            continue
        if (old is not None and new is not None and new.security_groups
                and old.security_groups == new.security_groups and _same_addresses(old, new)):
            # The common bulk case (a rule of a shared group changed): the port keeps
            # its profile and elements; only the profile's chain is rewritten, once.
            key = _key_of_groups(new.security_groups)
            if key not in done:
                _set_profile(chains, sets, done, key, new, groups)
            continue
        tap = (new or old).tap
        # A group's rule change updates many ports whose addresses did not move: skip
        # their anti-spoofing elements entirely.
        if not (old and new and _same_addresses(old, new)):
            for name, e in _port_elements(old) if old else ():
                diff.setdefault(name, (set(), set()))[0].add(e)
            for name, e in _port_elements(new) if new else ():
                diff.setdefault(name, (set(), set()))[1].add(e)
        if tap in profile:
            left.add(profile.pop(tap))
        if new is None:
            index.pop(tap, None)
            continue
        if tap not in index:
            used = set(index.values())
            index[tap] = next(i for i in range(1, MAX_INDEX + 1) if i not in used)
        key = _profile_key(new)
        if key not in done:
            _set_profile(chains, sets, done, key, new, groups)
        profile[tap] = f"p-{key}"
    for name, (gone, added) in diff.items():
        if gone != added:
            elements[name] = (elements.get(name, frozenset()) - gone) | added
    if left:
        for chain in left - set(profile.values()):
            chains.pop(chain, None)
    return Compiled(index=index, profile=profile, sets=sets, chains=chains, elements=elements)


def _set_profile(chains: dict, sets: dict, done: set, key: str, port: PortFilter, groups: RemoteGroups) -> None:
    chains.update(_profile_chain(key, _bodies(port.rules)))
    done.add(key)
    for g in _gids(port.rules):
        for v in (4, 6):
            if group_set(g, v) not in sets:
                sets[group_set(g, v)] = groups.by_family(g, v)


def compile_groups(prev: Compiled, groups: RemoteGroups) -> Compiled:
    """``prev`` with new remote-group membership. Sets still referenced by a rule are
    kept (emptied if the group is gone) so no chain is left pointing at nothing."""
    referenced = {m for body in prev.chains.values() for line in body for m in _SET_REF.findall(line)}
    names = referenced | {group_set(g, v) for g in groups.members for v in (4, 6)}
    sets = {n: groups.by_family(n[3:], int(n[1])) for n in names}
    return Compiled(index=prev.index, profile=prev.profile, sets=sets, chains=prev.chains, elements=prev.elements)


def _elements(items: Iterable[str]) -> str:
    items = sorted(items)
    return f" elements = {{ {', '.join(items)} }}" if items else ""


def _set_type(name: str) -> str:
    return {"mac_ok": "ifname . ether_addr", "ip4_ok": "ifname . ether_addr . ipv4_addr",
            "ip4_net": "ifname . ether_addr . ipv4_addr", "ip6_ok": "ifname . ether_addr . ipv6_addr",
            "ip6_net": "ifname . ether_addr . ipv6_addr"}.get(name) or (
        "ipv4_addr" if name.startswith("g4-") else "ipv6_addr")


def _set_flags(name: str) -> str:
    return "" if name in ("mac_ok", "ip4_ok", "ip6_ok") else " flags interval;"


def _idx_items(c: Compiled) -> list[str]:
    return [f"{_q(t)} : {i:#x}" for t, i in c.index.items()]


def _profile_items(c: Compiled) -> list[str]:
    return [f"{c.index[t]:#x} : jump {p}" for t, p in c.profile.items()]


def render_full(c: Compiled) -> str:
    """A script that atomically replaces lbtap's tables (and touches no other)."""
    out = [f"table bridge {TABLE}", f"delete table bridge {TABLE}", f"table bridge {TABLE} {{"]
    out += [f"  counter {n} {{ }}" for n in COUNTERS_BRIDGE]
    out += [f"  set {n} {{ type {_set_type(n)};{_set_flags(n)}{_elements(c.elements.get(n, ()))} }}"
            for n in _BRIDGE_SETS]
    out += [
        f"  map port_idx {{ type ifname : mark;{_elements(_idx_items(c))} }}",
        "  chain prerouting { type filter hook prerouting priority -300; policy accept;",
        # Clear a stale tag of ours (e.g. kept by a decapsulated VXLAN frame).
        "    meta mark and 0xfe000000 == 0x4c000000 meta mark set 0",
        f"    meta mark set iifname map @port_idx meta mark set meta mark or {EGRESS_TAG:#010x} jump antispoof",
        "  }",
        "  chain antispoof {", *(f"    {r}" for r in _ANTISPOOF), "  }",
        "  chain forward { type filter hook forward priority -200; policy accept;",
        # A frame to a non-filtered port keeps the source tag, which "forward" in the
        # inet table ignores.
        f"    meta mark set oifname map @port_idx meta mark set meta mark or {INGRESS_TAG:#010x}",
        "  }",
        "}",
        f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{",
    ]
    out += [f"  counter {n} {{ }}" for n in COUNTERS_INET]
    out += [f"  set {n} {{ type {_set_type(n)}; flags interval;{_elements(e)} }}" for n, e in sorted(c.sets.items())]
    for name, body in (("e-base", _EGRESS_BASE), ("i-base", _INGRESS_BASE), *sorted(c.chains.items())):
        out += [f"  chain {name} {{", *(f"    {r}" for r in body), "  }"]
    out += [
        f"  map profile {{ type mark : verdict;{_elements(_profile_items(c))} }}",
        "  chain prerouting { type filter hook prerouting priority -150; policy accept;",
        "    ct state established,related accept",
        f"    meta mark and 0xff000000 != {EGRESS_TAG:#010x} accept",
        "    jump e-base",
        "    meta mark and 0x00ffffff vmap @profile",
        "    counter name egress_drop drop",
        "  }",
        "  chain forward { type filter hook forward priority 0; policy accept;",
        "    ct state established,related accept",
        f"    meta mark and 0xff000000 != {INGRESS_TAG:#010x} accept",
        "    jump i-base",
        "    meta mark and 0x00ffffff vmap @profile",
        "    counter name ingress_drop drop",
        "  }",
        "}",
    ]
    return "\n".join(out) + "\n"


def _elem_diff(out: list[str], fam: str, name: str, old: Iterable[str], new: Iterable[str]) -> None:
    if old is new:
        return
    old, new = set(old), set(new)
    if old - new:
        out.append(f"delete element {fam} {TABLE} {name} {{ {', '.join(sorted(old - new))} }}")
    if new - old:
        out.append(f"add element {fam} {TABLE} {name} {{ {', '.join(sorted(new - old))} }}")


def _changed(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def render_delta(old: Compiled, new: Compiled) -> str:
    """A script turning ``old`` into ``new`` ("" when equal). It assumes the kernel holds
    ``old``; the driver falls back to ``render_full`` when that turns out false."""
    out: list[str] = []
    for name in sorted(set(new.sets) - set(old.sets)):
        out.append(f"add set inet {TABLE} {name} {{ type {_set_type(name)}; flags interval; }}")
    for name in sorted(new.sets):
        _elem_diff(out, "inet", name, old.sets.get(name, frozenset()), new.sets[name])
    # All new chains exist before any rule jumps to one of them.
    changed = [n for n in sorted(new.chains) if old.chains.get(n) != new.chains[n]]
    out += [f"add chain inet {TABLE} {n}" for n in changed if n not in old.chains]
    for n in changed:
        if n in old.chains:
            out.append(f"flush chain inet {TABLE} {n}")
        out += [f"add rule inet {TABLE} {n} {r}" for r in new.chains[n]]
    taps = set(_changed(old.profile, new.profile)) | set(_changed(old.index, new.index))
    _elem_diff(out, "inet", "profile",
               [f"{old.index[t]:#x} : jump {old.profile[t]}" for t in taps if t in old.profile],
               [f"{new.index[t]:#x} : jump {new.profile[t]}" for t in taps if t in new.profile])
    _elem_diff(out, "bridge", "port_idx",
               [f"{_q(t)} : {old.index[t]:#x}" for t in taps if t in old.index],
               [f"{_q(t)} : {new.index[t]:#x}" for t in taps if t in new.index])
    for name in _BRIDGE_SETS:
        _elem_diff(out, "bridge", name, old.elements.get(name, frozenset()), new.elements.get(name, frozenset()))
    # Deletions last: the kernel refuses to delete what is still referenced.
    out += [f"delete chain inet {TABLE} {n}" for n in sorted(set(old.chains) - set(new.chains))]
    out += [f"delete set inet {TABLE} {n}" for n in sorted(set(old.sets) - set(new.sets))]
    return "\n".join(out) + "\n" if out else ""


def render(ports: Iterable[PortFilter], groups: RemoteGroups | None = None) -> str:
    """ONE complete nftables script for the host's ports (see the module docstring)."""
    return render_full(compile_state(ports, groups or RemoteGroups()))
