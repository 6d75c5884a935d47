"""A profile's security-group rules as data: set elements where possible, rules where not.

A *profile* is what the ports of the same security groups share. Its rules are turned
into elements of twelve host-wide interval sets, keyed on the packet mark (which
carries the profile number and the direction, see ``render``)::

    {e,i}{4,6}_proto  mark . remote address . l4proto              (any port)
    {e,i}{4,6}_port   mark . remote address . l4proto . dport      (tcp/udp/sctp/udplite)
    {e,i}{4,6}_icmp   mark . remote address . icmp type . code     (icmp / icmpv6)

so one lookup rule per set serves every profile: the kernel loads ~10 set elements per
profile instead of ~10 rules per profile (rules cost 30-100 us each to load, elements a
few us). What cannot be an element stays a rule in a small chain that the profile jumps
to: rules naming a remote group (their addresses are the group's own set, which an
element cannot refer to), ICMP types under the other family's protocol number, and a
rule whose element would overlap another of the same profile and set (the kernel's
concatenated-range sets refuse overlapping elements).

``ProfileSets`` places compiled profiles in those sets: elements carry the direction's
tag and the profile number (``EGRESS_TAG | n``), in the set's shard ``n % SHARDS``
(``i4_port-3``; ``render`` says why), and each spilled direction gets a chain named
after its content (``r-<digest>``), shared by every profile with the same lines.

Everything here is pure (``ProfileSets`` mutates only itself) and cached on the rules
tuple: ports of the same groups hit the cache.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Mapping

from lbtap.drivers.firewall.model import EGRESS, INGRESS, IPV4, PORT_PROTOCOLS, Rule

EGRESS_TAG = 0x4C000000  # | profile number: frame comes *from* a filtered tap
INGRESS_TAG = 0x4D000000  # | profile number: frame goes *to* a filtered tap
DIRECTIONS = (EGRESS, INGRESS)
_DIRECTION_TAGS = (EGRESS_TAG, INGRESS_TAG)
_DIR_LETTER = {EGRESS: "e", INGRESS: "i"}
KINDS = ("proto", "port", "icmp")
DATA_SETS = tuple(f"{d}{v}_{k}" for d in "ei" for v in (4, 6) for k in KINDS)
SHARDS = 8  # a power of two: the shard is ``mark and (SHARDS - 1)``
SETS = tuple(f"{n}-{k}" for n in DATA_SETS for k in range(SHARDS))  # the data sets as named in nft
_ANY = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}


def digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def group_set(gid: str, version: int) -> str:
    """Name of the set holding the IPv``version`` members of remote group ``gid``."""
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


def data_set_type(name: str) -> str:
    """nft type of a data set (see the module docstring; a ``-<shard>`` suffix is
    ignored)."""
    name = name.split("-")[0]
    v, kind = name[1], name[3:]
    addr = "ipv4_addr" if v == "4" else "ipv6_addr"
    tail = {"proto": "inet_proto", "port": "inet_proto . inet_service",
            "icmp": "icmp_type . icmp_code" if v == "4" else "icmpv6_type . icmpv6_code"}[kind]
    return f"mark . {addr} . {tail}"


def data_lookup(name: str) -> str:
    """The one rule that consults data set ``name`` (the mark holds tag and profile)."""
    v, kind = name[1], name.split("-")[0][3:]
    fam = "ip" if v == "4" else "ip6"
    remote = "daddr" if name[0] == "e" else "saddr"
    tail = {"proto": "meta l4proto", "port": "meta l4proto . th dport",
            "icmp": "icmp type . icmp code" if v == "4" else "icmpv6 type . icmpv6 code"}[kind]
    return f"meta mark . {fam} {remote} . {tail} @{name} accept"


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


Box = tuple[tuple[int, int], ...]


@functools.lru_cache(maxsize=4096)
def _remote(prefix: str | None, version: int) -> tuple[str, tuple[int, int]]:
    net = ipaddress.ip_network(prefix) if prefix else _ANY[version]
    return str(net), (int(net.network_address), int(net.broadcast_address))


@functools.lru_cache(maxsize=65536)
def as_element(rule: Rule) -> tuple[str, str, Box] | None:
    """(data set, element without the mark, box of integer ranges) for ``rule``, or
    None when it must stay a chain rule. The box is what overlap is judged on; its
    most selective dimension (the last) comes first."""
    if rule.remote_group_id:
        return None
    v = 4 if rule.ethertype == IPV4 else 6
    net, addr = _remote(rule.remote_ip_prefix, v)
    prefix = f"{_DIR_LETTER[rule.direction]}{v}"
    proto = rule.protocol_number
    lo, hi = rule.port_range_min, rule.port_range_max
    if proto is None:
        return f"{prefix}_proto", f"{net} . 0-255", ((0, 255), addr)
    if proto in PORT_PROTOCOLS and (lo is not None or hi is not None):
        lo = lo if lo is not None else 1
        hi = hi if hi is not None else 65535
        return f"{prefix}_port", f"{net} . {proto} . {_span(lo, hi)}", ((lo, hi), (proto, proto), addr)
    if proto in (1, 58) and lo is not None:
        if (proto == 1) != (v == 4):
            return None  # e.g. an IPv4 rule on protocol 58 with a type: nft's rule says it exactly
        code = (hi, hi) if hi is not None else (0, 255)
        return f"{prefix}_icmp", f"{net} . {lo} . {_span(*code)}", (code, (lo, lo), addr)
    return f"{prefix}_proto", f"{net} . {proto}", ((proto, proto), addr)


def overlaps(a: Box, b: Box) -> bool:
    """Whether two boxes share a point (every dimension's ranges intersect)."""
    # A plain loop: the first dimension (ports, mostly) usually settles it, and this
    # runs for every pair of a profile's rules.
    for x, y in zip(a, b):
        if x[0] > y[1] or y[0] > x[1]:
            return False
    return True


def contains(outer: Box, inner: Box) -> bool:
    for o, i in zip(outer, inner):
        if i[0] < o[0] or o[1] < i[1]:
            return False
    return True


def _volume(box: Box) -> int:
    v = 1
    for lo, hi in box:
        v *= hi - lo + 1
    return v


@dataclass(frozen=True)
class Body:
    """A profile's rules compiled: ``data`` are (set, element without the mark) pairs;
    ``lines`` the (egress, ingress) rules that stay rules; ``gids`` the remote groups
    those refer to."""

    data: tuple[tuple[str, str], ...]
    lines: tuple[tuple[str, ...], tuple[str, ...]]
    gids: frozenset[str]


@functools.lru_cache(maxsize=16384)
def compile_rules(rules: tuple[Rule, ...]) -> Body:
    """Split ``rules`` into set elements and chain rules. Every rule is an accept, so
    the order of rules does not matter: the result depends on the set of rules only."""
    spill: set[Rule] = set()
    by_element: dict[tuple[str, str, Box], list[Rule]] = {}
    for r in rules:
        e = as_element(r)
        if e is None:
            spill.add(r)
        else:
            by_element.setdefault(e, []).append(r)
    per_set: dict[str, list[tuple[str, Box]]] = {}
    for name, text, box in by_element:
        per_set.setdefault(name, []).append((text, box))
    data: list[tuple[str, str]] = []
    for name in sorted(per_set):
        items = per_set[name]
        if len(items) == 1:
            data.append((name, items[0][0]))
            continue
        # Broadest first, so a narrower rule inside a broader one is simply dropped
        # (it accepts nothing more) instead of spilling into a chain.
        kept: list[Box] = []
        for text, box in sorted(items, key=lambda e: (-_volume(e[1]), e[0])):
            hits = [b for b in kept if overlaps(box, b)]
            if not hits:
                kept.append(box)
                data.append((name, text))
            elif not any(contains(b, box) for b in hits):
                spill.update(by_element[(name, text, box)])
    lines = tuple(tuple(sorted({rule_expr(r) + " accept" for r in spill if r.direction == d})) for d in DIRECTIONS)
    return Body(data=tuple(data), lines=(lines[0], lines[1]),
                gids=frozenset(r.remote_group_id for r in rules if r.remote_group_id))


def collapse(members: frozenset[str]) -> frozenset[str]:
    """Members as disjoint networks: interval sets refuse overlapping elements, and a
    member's allowed-pair CIDR often covers another member's address. Plain
    addresses (the common case) cannot overlap and are returned as they are."""
    if not any("/" in m for m in members):
        return members
    return _collapse(members)


@functools.lru_cache(maxsize=1024)
def _collapse(members: frozenset[str]) -> frozenset[str]:
    nets = [ipaddress.ip_network(m) for m in members]
    out = set()
    for version in (4, 6):
        for n in ipaddress.collapse_addresses(x for x in nets if x.version == version):
            out.add(str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n))
    return frozenset(out)


def _tag(set_name: str) -> int:
    return EGRESS_TAG if set_name[0] == "e" else INGRESS_TAG


def _chain_name(lines: tuple[str, ...]) -> str:
    return f"r-{digest(chr(10).join(lines))}"


class ProfileSets:
    """Profiles as they sit in the ruleset, being changed: data set elements (marked
    with tag and profile number, in the profile's shard), verdict-map jumps (full
    mark -> chain) and the chains of spilled rules. Element changes are recorded as
    (gone, added) per set, so each set is rebuilt once in ``finish``."""

    def __init__(self, data: Mapping[str, frozenset[str]], jumps: Mapping[int, str],
                 chains: Mapping[str, tuple[str, ...]]):
        self.data = dict(data)
        self.jumps = dict(jumps)
        self.chains = dict(chains)
        self.diff: dict[str, tuple[set[str], set[str]]] = {}
        self.unjumped: set[str] = set()

    def add(self, number: int, body: Body) -> None:
        for name, text in body.data:
            self.diff.setdefault(f"{name}-{number % SHARDS}", (set(), set()))[1].add(
                f"{_tag(name) | number:#x} . {text}")
        for tag, lines in zip(_DIRECTION_TAGS, body.lines):
            if lines:
                chain = _chain_name(lines)
                self.chains.setdefault(chain, lines)
                self.jumps[tag | number] = chain

    def remove(self, number: int, body: Body) -> None:
        for name, text in body.data:
            self.diff.setdefault(f"{name}-{number % SHARDS}", (set(), set()))[0].add(
                f"{_tag(name) | number:#x} . {text}")
        for tag in _DIRECTION_TAGS:
            chain = self.jumps.pop(tag | number, None)
            if chain is not None:
                self.unjumped.add(chain)

    def finish(self) -> tuple[dict, dict, dict]:
        for name, (gone, added) in self.diff.items():
            if gone != added:
                self.data[name] = (self.data.get(name, frozenset()) - (gone - added)) | (added - gone)
        if self.unjumped:
            for chain in self.unjumped - set(self.jumps.values()):
                self.chains.pop(chain, None)
        return self.data, self.jumps, self.chains
