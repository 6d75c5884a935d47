"""Ending the established flows a firewall change no longer allows (Neutron does this).

The inet table accepts ``ct state established,related`` before any rule, so without
this a flow accepted under the old rules would go on after its rule was deleted, until
it ends or its conntrack entry times out. After each successful transaction the driver
deletes the affected conntrack entries in its namespace; the next packet of such a flow
is then judged as new by the new rules (a mid-stream TCP segment is picked up as new, or
is invalid, and dropped either way).

What is deleted (the choice, and why):

* a port removed, or addresses removed from a port: every entry whose original
  direction has that address at either end — the port no longer owns it;
* a port whose rules lost something in a direction (a rule removed or narrowed, or the
  port newly filtered): the entries of its addresses in that direction (original
  destination for ingress, original source for egress: the rule that admitted a flow
  judged its first packet) *that its new rules do not allow* — so removing one rule of a
  shared group does not reset every SSH session of the group's ports;
* members removed from a remote group: the same, restricted to entries whose other end
  is a removed member, for the ports whose rules name the group in that direction.

* a network gone from the host (its conntrack zone retired, see ``zones``): every
  entry of that zone, so the number can be handed to another network later.

Every flush is limited to the conntrack zone of the port's network (``Flush.zone``; 0
for a port without a network): a network using the same addresses as another on this
host never loses a flow to the other's change. Decisions are pure (``plan_flushes``,
``doomed``, ``queries``); ``ConntrackCleaner`` does the I/O with pyroute2's
``NFCTSocket``.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from lbtap.drivers.firewall.model import EGRESS, INGRESS, IPV4, PORT_PROTOCOLS, PortFilter, RemoteGroups, Rule
from lbtap.drivers.host import errors
from lbtap.drivers.host.netns import in_namespace

# What the base chains accept before any rule (``antispoof.EGRESS_BASE``/``INGRESS_BASE``):
# such flows survive any rule change. UDP (family, sport, dport) and ICMPv6 types.
_BASE_UDP = {EGRESS: {(4, 68, 67), (6, 546, 547)}, INGRESS: {(4, 67, 68), (6, 547, 546)}}
_BASE_ICMP6 = {EGRESS: {133, 135, 136, 143, 131, 132}, INGRESS: {134, 135, 136, 130}}


@dataclass(frozen=True)
class Flush:
    """Conntrack entries of one port to delete.

    ``direction`` INGRESS: entries whose original destination is one of ``addresses``
    (flows toward the port); EGRESS: whose original source is; None: either, and then
    ``rules`` is None. Entries that ``rules`` (with ``groups``) still allow in that
    direction are kept; ``rules`` None deletes them all. ``remotes``, when set, limits
    the deletion to entries whose other end is one of those addresses. Only entries of
    conntrack zone ``zone`` are concerned; ``whole_zone`` deletes all of them
    (``Flush.of_zone``: a network left the host).
    """

    tap: str
    direction: str | None
    addresses: tuple[str, ...]
    rules: tuple[Rule, ...] | None = None
    remotes: tuple[str, ...] | None = None
    groups: RemoteGroups = field(default_factory=RemoteGroups, compare=False, repr=False)
    zone: int = 0
    whole_zone: bool = False

    @classmethod
    def of_zone(cls, zone: int) -> "Flush":
        """Every entry of conntrack zone ``zone``."""
        return cls("", None, (), zone=zone, whole_zone=True)


@dataclass(frozen=True)
class Entry:
    """The original-direction tuple of a conntrack entry."""

    family: int  # 4 or 6
    src: str
    dst: str
    proto: int
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    zone: int = 0


def port_addresses(port: PortFilter) -> tuple[str, ...]:
    """Addresses a port's flows can have on its side: fixed IPs and allowed pairs."""
    return tuple(dict.fromkeys((*port.ips, *(ip for ip, _ in port.allowed_address_pairs))))


def plan_flushes(old_state, new_state, old_ports: Mapping[str, PortFilter],  # noqa: ANN001 - Compiled
                 new_ports: Mapping[str, PortFilter], old_groups: RemoteGroups,
                 new_groups: RemoteGroups) -> list[Flush]:
    """The flushes a change from (``old_state``, ``old_ports``, ``old_groups``) to the
    new ones calls for (see the module docstring). The states are ``render.Compiled``:
    they tell the rules the kernel actually applied to each tap, and each port's
    conntrack zone. ``old_state`` None (nothing programmed yet) means no rule-based
    flushes; the zones the new state retired are flushed whole."""
    old_retired = old_state.retired if old_state is not None else frozenset()
    out: list[Flush] = [Flush.of_zone(z) for z in sorted(new_state.retired - old_retired)]
    shrunk: dict[str, frozenset[str]] = {}
    if old_groups is not new_groups:
        for g, members in old_groups.members.items():
            gone = members - new_groups.members.get(g, frozenset())
            if gone:
                shrunk[g] = gone
    memo: dict[tuple[int, int], list[tuple[str, tuple[str, ...] | None]]] = {}
    for tap, old in old_ports.items():
        new = new_ports.get(tap)
        if new is None or (new is not old and new.network_id != old.network_id):
            # Gone, or moved to another network (another zone): everything of its
            # addresses in the zone it was in.
            before = port_addresses(old)
            if before:
                out.append(Flush(tap, None, before, zone=_zone(old_state, old)))
            continue
        rules = new_state.rules_of(tap)
        was = old_state.rules_of(tap) if old_state is not None else None
        same = new is old or (new.ips == old.ips and new.allowed_address_pairs == old.allowed_address_pairs)
        losses: list[tuple[str, tuple[str, ...] | None]] = []
        if rules is not None and old_state is not None and (was is not rules or shrunk):
            # Ports of one profile share both tuples: decide once per pair.
            key = (id(was), id(rules))
            if key not in memo:
                memo[key] = _losses(was, rules, shrunk)
            losses = memo[key]
        if same and not losses:
            continue  # the bulk of a big host on every call: keep it cheap
        zone = new_state.zone_of(new)
        kept = before = port_addresses(old)
        if not same:
            after = port_addresses(new)
            gone = tuple(a for a in before if a not in after)
            if gone:
                out.append(Flush(tap, None, gone, zone=zone))
            kept = tuple(a for a in before if a in after)
        if kept:
            out += [Flush(tap, d, kept, rules, remotes, new_groups, zone) for d, remotes in losses]
    return out


def _zone(state, port: PortFilter) -> int:  # noqa: ANN001 - render.Compiled
    return state.zone_of(port) if state is not None else 0


def _losses(was: tuple[Rule, ...] | None, rules: tuple[Rule, ...],
            shrunk: Mapping[str, frozenset[str]]) -> list[tuple[str, tuple[str, ...] | None]]:
    """(direction, remotes) in which a port going from rules ``was`` (None: not
    filtered) to ``rules`` lost something; remotes None: lost rules, any remote."""
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for d in (INGRESS, EGRESS):
        now = {r for r in rules if r.direction == d}
        if was is None or (was is not rules and {r for r in was if r.direction == d} - now):
            out.append((d, None))
            continue
        removed: set[str] = set()
        for r in now:
            if r.remote_group_id in shrunk:
                removed |= shrunk[r.remote_group_id]
        if removed:
            out.append((d, tuple(sorted(removed))))
    return out


@functools.lru_cache(maxsize=4096)
def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def _within(addr: str, nets: Iterable[str]) -> bool:
    a = ipaddress.ip_address(addr)
    return any(a in _net(n) for n in nets)


def allows(rules: Sequence[Rule], groups: RemoteGroups, direction: str, e: Entry) -> bool:
    """Whether the first packet of ``e`` passes these rules (or the base accepts) in
    ``direction``, as the nft rules judge it."""
    if e.proto == 17 and (e.family, e.sport, e.dport) in _BASE_UDP[direction]:
        return True
    if e.proto == 58 and e.icmp_type in _BASE_ICMP6[direction]:
        return True
    remote = e.src if direction == INGRESS else e.dst
    for r in rules:
        if r.direction != direction or (r.ethertype == IPV4) != (e.family == 4):
            continue
        if r.remote_ip_prefix and not _within(remote, (r.remote_ip_prefix,)):
            continue
        if r.remote_group_id and not _within(remote, groups.members.get(r.remote_group_id, ())):
            continue
        proto = r.protocol_number
        if proto is None:
            return True
        if proto != e.proto:
            continue
        lo, hi = r.port_range_min, r.port_range_max
        if proto in PORT_PROTOCOLS and (lo is not None or hi is not None):
            if e.dport is None or not (lo or 1) <= e.dport <= (hi or 65535):
                continue
        elif proto in (1, 58) and lo is not None:
            if e.icmp_type != lo or (hi is not None and e.icmp_code != hi):
                continue
        return True
    return False


def doomed(f: Flush, e: Entry) -> bool:
    """Whether flush ``f`` deletes entry ``e``."""
    if e.zone != f.zone:
        return False
    if f.whole_zone:
        return True
    for d in (INGRESS, EGRESS) if f.direction is None else (f.direction,):
        local, remote = (e.dst, e.src) if d == INGRESS else (e.src, e.dst)
        if not _within(local, f.addresses):
            continue
        if f.remotes is not None and not _within(remote, f.remotes):
            continue
        if f.rules is None or not allows(f.rules, f.groups, d, e):
            return True
    return False


def queries(flushes: Iterable[Flush]) -> list[tuple[int, str, str]] | None:
    """Kernel-side dump filters covering every entry the flushes may delete, as
    (family, "saddr" | "daddr", address); None when a CIDR is among the addresses
    (the kernel filter takes exact addresses only) or a whole zone is flushed. The
    filters do not restrict the zone: ``doomed`` checks it on each entry."""
    out = set()
    for f in flushes:
        if f.whole_zone:
            return None
        for d in (INGRESS, EGRESS) if f.direction is None else (f.direction,):
            if f.remotes is not None:  # the narrower side
                key, addrs = ("saddr" if d == INGRESS else "daddr"), f.remotes
            else:
                key, addrs = ("daddr" if d == INGRESS else "saddr"), f.addresses
            for a in addrs:
                if "/" in a:
                    return None
                out.add((6 if ":" in a else 4, key, a))
    return sorted(out)


class FlushIndex:
    """The flushes by address, so judging an entry looks at the few that name one of
    its ends instead of at every flush (a group's rule change yields one per port)."""

    def __init__(self, flushes: Iterable[Flush]):
        self.exact: dict[str, list[Flush]] = {}
        self.wide: list[Flush] = []  # flushes with a CIDR among their addresses
        self.zones: set[int] = set()  # zones flushed whole
        for f in flushes:
            if f.whole_zone:
                self.zones.add(f.zone)
                continue
            if any("/" in a for a in f.addresses):
                self.wide.append(f)
                continue
            for a in f.addresses:
                self.exact.setdefault(ipaddress.ip_address(a).compressed, []).append(f)

    def doomed(self, e: Entry) -> bool:
        if e.zone in self.zones:
            return True
        candidates = [*self.exact.get(e.src, ()), *self.exact.get(e.dst, ()), *self.wide]
        return any(doomed(f, e) for f in candidates)


class ConntrackCleaner:
    """Deletes the conntrack entries that flushes doom, in namespace ``netns``.

    Sockets are created and always used inside the namespace: a netlink socket stays
    bound to the namespace it was created in, and pyroute2 creates its socket lazily,
    per thread. They are kept open between calls (``close()`` ends them): closing a
    netfilter netlink socket right after an nft transaction that deleted something
    waits for that transaction's RCU cleanup (10-20 ms measured here), which
    otherwise passes in the background. Also measured here: every dump walks the
    kernel's whole (host-wide) conntrack hash, ~10 ms even for an empty table, and
    parsing costs ~85 us per entry; so an empty table is detected first (a cheap
    count) and kernel-filtered dumps are used only when they save parsing.
    """

    FILTERED_DUMP_COST = 120  # one filtered dump costs about as much as parsing this many entries

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._sockets: dict = {}

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets = {}

    def flush(self, flushes: Sequence[Flush]) -> int:
        """Delete what ``flushes`` doom; the number of entries deleted."""
        if not flushes:
            return 0
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            with in_namespace(self.netns):
                return self._flush(flushes)
        except (NetlinkError, OSError) as e:
            self.close()  # start afresh next time
            code = e.code if isinstance(e, NetlinkError) else e.errno
            raise errors.from_errno(code, f"conntrack: {e}", op="conntrack_flush") from e

    def _sock(self, family: int):  # noqa: ANN202 - a pyroute2 NFCTSocket
        """The socket for ``family``, created on first use; call inside the namespace.
        Deletion needs the entry's own family in the request; AF_UNSPEC dumps both."""
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

        if family not in self._sockets:
            self._sockets[family] = NFCTSocket(nfgen_family=family)
        return self._sockets[family]

    def _flush(self, flushes: Sequence[Flush]) -> int:
        from pyroute2.netlink.exceptions import NetlinkError

        count = self._sock(socket.AF_UNSPEC).count()[0].get_attr("CTA_STATS_GLOBAL_ENTRIES") or 0
        if count == 0:
            return 0
        index = FlushIndex(flushes)
        victims = {}
        for msg in self._dump(flushes, count):
            family = msg["nfgen_family"]
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            entry, raw = parse_entry(msg, 4 if family == socket.AF_INET else 6)
            if index.doomed(entry):
                # Keyed with the zone: two networks may hold the very same tuple.
                victims[(family, entry.zone, repr(raw))] = (family, raw, msg.get_attr("CTA_ZONE"))
        deleted = 0
        for family, raw, zone in victims.values():
            try:
                self._sock(family).entry("del", tuple_orig=raw, zone=zone)
                deleted += 1
            except NetlinkError as e:
                if e.code != errno.ENOENT:  # ended on its own meanwhile: fine
                    raise
        return deleted

    def _dump(self, flushes: Sequence[Flush], count: int) -> list:
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        plan = queries(flushes)
        if plan is None or len(plan) * self.FILTERED_DUMP_COST >= count:
            return list(self._sock(socket.AF_UNSPEC).dump())
        messages = []
        for v, key, addr in plan:
            family = socket.AF_INET if v == 4 else socket.AF_INET6
            messages += self._sock(family).dump(tuple_orig=NFCTAttrTuple(family=family, **{key: addr}))
        return messages


def _canonical(addr: str) -> str:
    return ipaddress.ip_address(addr).compressed


def parse_entry(msg, version: int) -> tuple[Entry, dict]:  # noqa: ANN001 - a pyroute2 nfct_msg
    """(``Entry``, the original tuple as attributes to send back for deletion)."""
    orig = msg.get_attr("CTA_TUPLE_ORIG")
    ip, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    v = "V4" if version == 4 else "V6"
    icmp = "ICMP" if version == 4 else "ICMPV6"
    entry = Entry(
        family=version, src=ip.get_attr(f"CTA_IP_{v}_SRC"), dst=ip.get_attr(f"CTA_IP_{v}_DST"),
        proto=proto.get_attr("CTA_PROTO_NUM"), sport=proto.get_attr("CTA_PROTO_SRC_PORT"),
        dport=proto.get_attr("CTA_PROTO_DST_PORT"), icmp_type=proto.get_attr(f"CTA_PROTO_{icmp}_TYPE"),
        icmp_code=proto.get_attr(f"CTA_PROTO_{icmp}_CODE"), zone=msg.get_attr("CTA_ZONE") or 0)
    # Every attribute of the tuple goes back as it came (GRE keys, ICMP ids, ...): the
    # kernel looks the entry up by its complete tuple.
    raw = {"attrs": [["CTA_TUPLE_IP", {"attrs": [[a[0], a[1]] for a in ip["attrs"]]}],
                     ["CTA_TUPLE_PROTO", {"attrs": [[a[0], a[1]] for a in proto["attrs"]]}]]}
    return entry, raw
