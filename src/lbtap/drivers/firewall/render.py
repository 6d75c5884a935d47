"""Pure rendering of the host's firewall into nftables scripts.

``compile_state(ports, groups)`` turns the model into a ``Compiled`` value (set and map
elements, chains); ``render_full`` writes a script that atomically replaces lbtap's two
tables, ``render_delta(old, new)`` one that turns ``old`` into ``new`` touching only what
differs. Each script is one nft transaction; no I/O here.

Layout (why: see the package docstring):

* ``table bridge lbtap`` — ``prerouting`` (priority -300) tags a frame from a
  filtered tap with ``0x4c000000 | profile number`` (``port_idx`` map keyed on
  ``iifname``) and checks its sources in ``antispoof`` against sets of ``iifname .
  ether saddr [. ip saddr]``, dropping the rest with named counters. ``forward``
  (priority -200, so before br_netfilter's own hook at -1) re-tags a frame leaving
  through a filtered tap with ``0x4d000000 | number`` of that destination port.
* ``table inet lbtap`` — what br_netfilter shows bridged IP traffic, with conntrack.
  ``prerouting`` (priority -150, after conntrack) handles tag 0x4c (the source port's
  egress), ``forward`` tag 0x4d (the destination port's ingress): after the common
  accepts (established, ND, DHCP) six lookups of ``meta mark . address . ...`` in the
  data sets of ``profiles`` accept what the profile's rules allow; the rest of a
  profile's rules (remote groups, mostly) sit in a chain reached through the
  ``profile`` verdict map (full mark -> ``r-<digest>``); what nothing accepted is
  dropped and counted. The mark carries the *profile* number, not the port's: ports
  of the same security groups (or the same rules) share one profile, so the ruleset
  grows with distinct profiles, and a group's rule change is a few set elements.
  ``zone-in``/``zone-out`` (priority -450, before defragmentation and conntrack) put
  each network's traffic in its own conntrack zone: ``ct zone set iifname|oifname map
  @zones``, the map keyed on the network's bridge (see ``zones``); ``zones_retired``
  lists the zones of networks gone whose entries may not be flushed yet (read back
  after a restart).

Each data set is split in ``SHARDS`` (8) sets by profile number (``i4_port-3`` holds
the profiles whose number is 3 modulo 8), reached through a constant verdict map on the
mark's low bits: deleting one element from a concatenated-range set takes time in
proportion to the set (measured here: ~20 ms at 8000 elements, ~2-3 ms at 500-1000),
adding is cheap either way; 8 shards cost ~5 ms more on a full load of 1000 distinct
profiles, 16 cost ~15 ms.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from lbtap.drivers.firewall.antispoof import (
    ANTISPOOF, BRIDGE_SETS, COUNTERS_BRIDGE, COUNTERS_INET, EGRESS_BASE, INGRESS_BASE, port_elements,
    same_addresses,
)
from lbtap.drivers.firewall.model import PortFilter, RemoteGroups, Rule
from lbtap.drivers.firewall.profiles import (
    DATA_SETS, EGRESS_TAG, INGRESS_TAG, SETS, SHARDS, ProfileSets, collapse, compile_rules, data_lookup,
    data_set_type, digest, group_set, rule_expr,
)
from lbtap.drivers.firewall.zones import assign, bridge_of

__all__ = [
    "COUNTERS_BRIDGE", "COUNTERS_INET", "EGRESS_TAG", "INGRESS_TAG", "SETS", "SHARDS", "TABLE", "Compiled",
    "compile_groups", "compile_state", "compile_update", "render", "render_delta", "render_full", "rule_expr",
]

TABLE = "lbtap"
MAX_INDEX = 0xFFFFFF


@dataclass(frozen=True)
class Compiled:
    """The rendered state as data, so two states can be diffed element by element."""

    index: Mapping[str, int] = field(default_factory=dict)  # tap -> profile number (in the mark)
    profile: Mapping[str, str] = field(default_factory=dict)  # tap -> profile key
    numbers: Mapping[str, int] = field(default_factory=dict)  # profile key -> number
    rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)  # profile key -> rules programmed
    elements: Mapping[str, frozenset[str]] = field(default_factory=dict)  # bridge set -> elements
    data: Mapping[str, frozenset[str]] = field(default_factory=dict)  # inet data set -> elements
    jumps: Mapping[int, str] = field(default_factory=dict)  # full mark -> chain of spilled rules
    sets: Mapping[str, frozenset[str]] = field(default_factory=dict)  # "g4-<gid>" -> members
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # inet chain -> rules
    bridges: Mapping[str, str] = field(default_factory=dict)  # tap -> its network's bridge (all ports)
    zones: Mapping[str, int] = field(default_factory=dict)  # bridge -> conntrack zone
    retired: frozenset[int] = frozenset()  # zones of networks gone, not known to be flushed yet

    def rules_of(self, tap: str) -> tuple[Rule, ...] | None:
        """The rules the kernel applies to ``tap``; None when the tap is not filtered."""
        key = self.profile.get(tap)
        return None if key is None else self.rules[key]

    def zone_of(self, port: PortFilter) -> int:
        """The conntrack zone of ``port``'s traffic (0: no network, the shared zone)."""
        bridge = bridge_of(port.network_id)
        return self.zones.get(bridge, 0) if bridge else 0


def _q(ifname: str) -> str:
    return f'"{ifname}"'


@functools.lru_cache(maxsize=65536)
def _key_of(ident: tuple) -> str:
    return digest(repr(ident))


def _profile_key(port: PortFilter) -> str:
    # Named after the groups when known (a group's rule change keeps the profile and
    # its number), else after what the rules compile to.
    return _key_of(("g", port.security_groups) if port.security_groups else ("r", compile_rules(port.rules)))


class _Numbers:
    """Hands out the smallest profile numbers not in use."""

    def __init__(self, used: Iterable[int]):
        self.used = set(used)
        self.next = 1

    def take(self) -> int:
        while self.next in self.used:
            self.next += 1
        if self.next > MAX_INDEX:
            raise ValueError("more than 2^24 firewall profiles")
        self.used.add(self.next)
        return self.next


def _group_sets(gids: Iterable[str], groups: RemoteGroups) -> dict[str, frozenset[str]]:
    return {group_set(g, v): collapse(groups.by_family(g, v)) for g in gids for v in (4, 6)}


def compile_state(ports: Iterable[PortFilter], groups: RemoteGroups, previous: Compiled | None = None) -> Compiled:
    """The desired state of all ``ports``. Numbers of profiles already in ``previous``
    are kept, so a delta never renumbers other ports; so are the conntrack zones of
    networks still present (the zones of the others are retired, see ``zones``).

    Ports of the same security groups share a profile named after the groups. Should
    two of them disagree on the rules (data caught half-way through an update), the
    first by tap name wins; ``compile_update`` lets the updated port win instead.
    """
    ports = sorted(ports, key=lambda p: p.tap)
    if len({p.tap for p in ports}) != len(ports):
        raise ValueError("duplicate tap in port list")
    profile: dict[str, str] = {}
    rules: dict[str, tuple[Rule, ...]] = {}
    elements: dict[str, set[str]] = {n: set() for n in BRIDGE_SETS}
    for p in ports:
        if not p.filtered:
            continue
        key = _profile_key(p)
        profile[p.tap] = key
        rules.setdefault(key, p.rules)
        for name, e in port_elements(p):
            elements[name].add(e)
    old = previous.numbers if previous else {}
    numbers = {k: old[k] for k in rules if k in old}
    free = _Numbers(numbers.values())
    b = ProfileSets({n: frozenset() for n in SETS}, {}, {})
    gids = set(groups.members)
    for key, rs in rules.items():
        if key not in numbers:
            numbers[key] = free.take()
        body = compile_rules(rs)
        b.add(numbers[key], body)
        gids |= body.gids
    data, jumps, chains = b.finish()
    bridges = {p.tap: bridge_of(p.network_id) for p in ports if p.network_id}
    zones, retired = assign(bridges.values(), previous.zones if previous else {},
                            previous.retired if previous else frozenset())
    return Compiled(index={t: numbers[k] for t, k in profile.items()}, profile=profile, numbers=numbers,
                    rules=rules, elements={n: frozenset(v) for n, v in elements.items()}, data=data,
                    jumps=jumps, sets=_group_sets(gids, groups), chains=chains, bridges=bridges, zones=zones,
                    retired=retired)


def compile_update(prev: Compiled, changes: Iterable[tuple[PortFilter | None, PortFilter | None]],
                   groups: RemoteGroups) -> Compiled:
    """``prev`` with some ports replaced (each change is ``(old, new)``, either may be
    None), in time proportional to those ports rather than to the host. An updated
    port's rules win for its profile: ports sharing its security groups see the change
    too, which is what a group's rule change means."""
    index, profile = dict(prev.index), dict(prev.profile)
    numbers, rules = dict(prev.numbers), dict(prev.rules)
    sets = dict(prev.sets)
    b = ProfileSets(prev.data, prev.jumps, prev.chains)
    bridge: dict[str, tuple[set[str], set[str]]] = {}
    left: set[str] = set()
    done: set[str] = set()
    free: _Numbers | None = None

    def set_profile(key: str, rs: tuple[Rule, ...]) -> None:
        nonlocal free
        done.add(key)
        if key in numbers:
            if rules[key] == rs:
                return
            before, after = compile_rules(rules[key]), compile_rules(rs)
            rules[key] = rs
            if before != after:
                b.remove(numbers[key], before)
                b.add(numbers[key], after)
        else:
            free = free or _Numbers(numbers.values())
            numbers[key] = free.take()
            rules[key] = rs
            after = compile_rules(rs)
            b.add(numbers[key], after)
        for g in after.gids:
            for v in (4, 6):
                sets.setdefault(group_set(g, v), collapse(groups.by_family(g, v)))

    bridges: dict[str, str] | None = None
    for old, new in changes:
        was, now = bridge_of(old.network_id) if old else None, bridge_of(new.network_id) if new else None
        if was != now:
            if bridges is None:
                bridges = dict(prev.bridges)
            if now is None:
                bridges.pop(old.tap, None)
            else:
                bridges[new.tap] = now
        old = old if old is not None and old.filtered else None
        new = new if new is not None and new.filtered else None
        if old is None and new is None:
            continue
        if (old is not None and new is not None and new.security_groups
                and old.security_groups == new.security_groups and same_addresses(old, new)):
            # The common bulk case (a rule of a shared group changed): the port keeps
            # its profile and elements; the profile's elements change once.
            key = _profile_key(new)
            if key not in done:
                set_profile(key, new.rules)
            continue
        tap = (new or old).tap
        if not (old and new and same_addresses(old, new)):
            for name, e in port_elements(old) if old else ():
                bridge.setdefault(name, (set(), set()))[0].add(e)
            for name, e in port_elements(new) if new else ():
                bridge.setdefault(name, (set(), set()))[1].add(e)
        if tap in profile:
            left.add(profile.pop(tap))
            index.pop(tap)
        if new is None:
            continue
        key = _profile_key(new)
        if key not in done:
            set_profile(key, new.rules)
        profile[tap], index[tap] = key, numbers[key]
    if left:
        for key in left - set(profile.values()):
            b.remove(numbers.pop(key), compile_rules(rules.pop(key)))
    elements = dict(prev.elements)
    for name, (gone, added) in bridge.items():
        if gone != added:
            elements[name] = (elements.get(name, frozenset()) - gone) | added
    data, jumps, chains = b.finish()
    zones, retired = prev.zones, prev.retired
    if bridges is None:
        bridges = prev.bridges
    elif set(bridges.values()) != zones.keys():
        zones, retired = assign(bridges.values(), zones, retired)
    return Compiled(index=index, profile=profile, numbers=numbers, rules=rules, elements=elements, data=data,
                    jumps=jumps, sets=sets, chains=chains, bridges=bridges, zones=zones, retired=retired)


def compile_groups(prev: Compiled, groups: RemoteGroups) -> Compiled:
    """``prev`` with new remote-group membership. Sets still referenced by a rule are
    kept (emptied if the group is gone) so no chain is left pointing at nothing."""
    referenced: set[str] = set()
    for rs in prev.rules.values():
        referenced |= compile_rules(rs).gids
    sets = _group_sets(referenced | set(groups.members), groups)
    return dataclasses.replace(prev, sets=sets)


# -- text --------------------------------------------------------------------------------
def _elements(items: Iterable[str]) -> str:
    items = sorted(items)
    return f" elements = {{ {', '.join(items)} }}" if items else ""


def _bridge_set_type(name: str) -> str:
    return {"mac_ok": "ifname . ether_addr", "ip4_ok": "ifname . ether_addr . ipv4_addr",
            "ip4_net": "ifname . ether_addr . ipv4_addr", "ip6_ok": "ifname . ether_addr . ipv6_addr",
            "ip6_net": "ifname . ether_addr . ipv6_addr"}[name]


def _group_set_type(name: str) -> str:
    return "ipv4_addr" if name.startswith("g4-") else "ipv6_addr"


def _bridge_set_flags(name: str) -> str:
    return "" if name in ("mac_ok", "ip4_ok", "ip6_ok") else " flags interval;"


def _idx(tap: str, number: int) -> str:
    return f"{_q(tap)} : {number:#x}"


def _jump(mark: int, chain: str) -> str:
    return f"{mark:#x} : jump {chain}"


def _shard_chains(direction: str) -> list[str]:
    out = []
    for k in range(SHARDS):
        out += [f"  chain {direction}-s{k} {{", *(f"    {data_lookup(f'{n}-{k}')}" for n in DATA_SETS
                                                 if n[0] == direction), "  }"]
    return out


def _hook(name: str, hook: str, priority: int, tag: int, base: str, direction: str, drop: str) -> list[str]:
    shards = ", ".join(f"{k} : jump {direction}-s{k}" for k in range(SHARDS))
    return [
        f"  chain {name} {{ type filter hook {hook} priority {priority}; policy accept;",
        "    ct state established,related accept",
        f"    meta mark and 0xff000000 != {tag:#010x} accept",
        f"    jump {base}",
        # The profile's shard of the data sets; back here if none accepted.
        f"    meta mark and {SHARDS - 1:#x} vmap {{ {shards} }}",
        "    meta mark vmap @profile",
        f"    counter name {drop} drop",
        "  }",
    ]


def _zone(bridge: str, zone: int) -> str:
    return f"{_q(bridge)} : {zone}"


def _zone_lines(c: Compiled) -> list[str]:
    # Priority -450: the zone must be set before defragmentation (-400, in both hooks),
    # which reassembles in the zone of the conntrack template ``ct zone set`` attaches,
    # so fragments of two networks never complete each other's datagrams; and so before
    # conntrack (-200) looks the packet up. A packet whose interface is not a network's
    # bridge stays in zone 0.
    return [
        f"  map zones {{ typeof iifname : ct zone;{_elements(_zone(b, z) for b, z in c.zones.items())} }}",
        f"  set zones_retired {{ typeof ct zone;{_elements(str(z) for z in c.retired)} }}",
        "  chain zone-in { type filter hook prerouting priority -450; policy accept;",
        "    ct zone set iifname map @zones",
        "  }",
        "  chain zone-out { type filter hook output priority -450; policy accept;",
        "    ct zone set oifname map @zones",
        "  }",
    ]


def render_full(c: Compiled) -> str:
    """A script that atomically replaces lbtap's tables (and touches no other)."""
    out = [f"table bridge {TABLE}", f"delete table bridge {TABLE}", f"table bridge {TABLE} {{"]
    out += [f"  counter {n} {{ }}" for n in COUNTERS_BRIDGE]
    out += [f"  set {n} {{ type {_bridge_set_type(n)};{_bridge_set_flags(n)}{_elements(c.elements.get(n, ()))} }}"
            for n in BRIDGE_SETS]
    out += [
        f"  map port_idx {{ type ifname : mark;{_elements(_idx(t, i) for t, i in c.index.items())} }}",
        "  chain prerouting { type filter hook prerouting priority -300; policy accept;",
        # Clear a stale tag of ours (e.g. kept by a decapsulated VXLAN frame).
        "    meta mark and 0xfe000000 == 0x4c000000 meta mark set 0",
        f"    meta mark set iifname map @port_idx meta mark set meta mark or {EGRESS_TAG:#010x} jump antispoof",
        "  }",
        "  chain antispoof {", *(f"    {r}" for r in ANTISPOOF), "  }",
        "  chain forward { type filter hook forward priority -200; policy accept;",
        # A frame to a non-filtered port keeps the source tag, which "forward" in the
        # inet table ignores.
        f"    meta mark set oifname map @port_idx meta mark set meta mark or {INGRESS_TAG:#010x}",
        "  }",
        "}",
        f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{",
    ]
    out += [f"  counter {n} {{ }}" for n in COUNTERS_INET]
    out += [f"  set {n} {{ type {_group_set_type(n)}; flags interval;{_elements(e)} }}"
            for n, e in sorted(c.sets.items())]
    out += [f"  set {n} {{ type {data_set_type(n)}; flags interval;{_elements(c.data.get(n, ()))} }}"
            for n in SETS]
    for name, body in (("e-base", EGRESS_BASE), ("i-base", INGRESS_BASE), *sorted(c.chains.items())):
        out += [f"  chain {name} {{", *(f"    {r}" for r in body), "  }"]
    out += _shard_chains("e") + _shard_chains("i")
    out.append(f"  map profile {{ type mark : verdict;{_elements(_jump(m, ch) for m, ch in c.jumps.items())} }}")
    out += _zone_lines(c)
    out += _hook("prerouting", "prerouting", -150, EGRESS_TAG, "e-base", "e", "egress_drop")
    out += _hook("forward", "forward", 0, INGRESS_TAG, "i-base", "i", "ingress_drop")
    out.append("}")
    return "\n".join(out) + "\n"


def _elem_diff(out: list[str], fam: str, name: str, old: Iterable[str], new: Iterable[str]) -> None:
    if old is new:
        return
    old, new = set(old), set(new)
    # Deletions first: a concatenated-range set refuses an element overlapping one
    # that is still there.
    if old - new:
        out.append(f"delete element {fam} {TABLE} {name} {{ {', '.join(sorted(old - new))} }}")
    if new - old:
        out.append(f"add element {fam} {TABLE} {name} {{ {', '.join(sorted(new - old))} }}")


def _changed(old: Mapping, new: Mapping) -> list:
    if old is new:
        return []
    return [k for k in old.keys() | new.keys() if old.get(k) != new.get(k)]


def render_delta(old: Compiled, new: Compiled) -> str:
    """A script turning ``old`` into ``new`` ("" when equal). It assumes the kernel holds
    ``old``; the driver falls back to ``render_full`` when that turns out false."""
    out: list[str] = []
    for name in sorted(set(new.sets) - set(old.sets)):
        out.append(f"add set inet {TABLE} {name} {{ type {_group_set_type(name)}; flags interval; }}")
    for name in sorted(new.sets):
        _elem_diff(out, "inet", name, old.sets.get(name, frozenset()), new.sets[name])
    for name in SETS:
        _elem_diff(out, "inet", name, old.data.get(name, frozenset()), new.data.get(name, frozenset()))
    # Chains are named after their content, so a chain is only ever added or deleted;
    # all new chains exist before any map element jumps to one of them.
    for n in sorted(set(new.chains) - set(old.chains)):
        out.append(f"add chain inet {TABLE} {n}")
        out += [f"add rule inet {TABLE} {n} {r}" for r in new.chains[n]]
    marks = _changed(old.jumps, new.jumps)
    _elem_diff(out, "inet", "profile", [_jump(m, old.jumps[m]) for m in marks if m in old.jumps],
               [_jump(m, new.jumps[m]) for m in marks if m in new.jumps])
    bridges = _changed(old.zones, new.zones)
    _elem_diff(out, "inet", "zones", [_zone(b, old.zones[b]) for b in bridges if b in old.zones],
               [_zone(b, new.zones[b]) for b in bridges if b in new.zones])
    _elem_diff(out, "inet", "zones_retired", [str(z) for z in old.retired], [str(z) for z in new.retired])
    taps = _changed(old.index, new.index)
    _elem_diff(out, "bridge", "port_idx", [_idx(t, old.index[t]) for t in taps if t in old.index],
               [_idx(t, new.index[t]) for t in taps if t in new.index])
    for name in BRIDGE_SETS:
        _elem_diff(out, "bridge", name, old.elements.get(name, frozenset()), new.elements.get(name, frozenset()))
    # Deletions last: the kernel refuses to delete what is still referenced.
    out += [f"delete chain inet {TABLE} {n}" for n in sorted(set(old.chains) - set(new.chains))]
    out += [f"delete set inet {TABLE} {n}" for n in sorted(set(old.sets) - set(new.sets))]
    return "\n".join(out) + "\n" if out else ""


def render(ports: Iterable[PortFilter], groups: RemoteGroups | None = None) -> str:
    """ONE complete nftables script for the host's ports (see the module docstring)."""
    return render_full(compile_state(ports, groups or RemoteGroups()))
