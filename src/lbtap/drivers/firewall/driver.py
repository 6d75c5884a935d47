"""The firewall driver: keeps the host's ports, renders, applies one transaction per change.

``FirewallDriver`` is the real one (nftables in a namespace, then conntrack cleanup);
``FakeFirewall`` has the same interface and records what would have been applied and
flushed, for agent unit tests.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import Iterable

from lbtap.drivers.firewall.conntrack import ConntrackCleaner, Flush, plan_flushes
from lbtap.drivers.firewall.model import PortFilter, RemoteGroups
from lbtap.drivers.firewall.nft import Nft
from lbtap.drivers.firewall.render import (
    COUNTERS_BRIDGE, COUNTERS_INET, TABLE, Compiled, compile_groups, compile_state, compile_update,
    render_delta, render_full,
)
from lbtap.drivers.firewall.zones import MAX_ZONE
from lbtap.drivers.host import errors
from lbtap.drivers.host.netns import in_namespace

BR_NF_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")


class FirewallDriver:
    """Anti-spoofing and stateful security groups for the ports of one host.

    Interface (all idempotent, each call at most one nft transaction):

    * ``apply(ports, groups)`` — replace everything (lbtap's tables only) with this.
    * ``update_port(port)`` — add or change one port; only its elements/chain move.
    * ``update_ports(ports)`` — several at once, still one transaction.
    * ``remove_port(tap)`` — forget a port.
    * ``update_groups(groups)`` — new remote-group membership (set elements only).
    * ``converge(changed, removed, groups)`` — all of an agent pass at once: ports
      added or changed, taps removed and the new membership, in ONE transaction (the
      first call of a driver, e.g. a restarted agent's first pass, is one full apply
      of every port given: the previous agent's tables are replaced atomically, never
      emptied first). The others are special cases of it.
    * ``drop_counters()`` — named drop counters, e.g. ``{"spoof_ip": 3, ...}``.
    * ``clear()`` — delete lbtap's tables; ``close()`` — release sockets.

    After a transaction that took something away (a port, an address, a rule, a remote
    group member) the conntrack entries of flows the new rules no longer allow are
    deleted (``conntrack`` module; ``last_flushes`` shows the plan). If that fails the
    error propagates after the ruleset and the driver's state have moved on; a
    retriable failure keeps the flushes and retries them with the next call.

    Incremental calls diff the previous ``Compiled`` state against the new one; if that
    transaction fails (someone flushed the ruleset, say) the driver re-applies the full
    script once, so the kernel converges to the desired state either way. A failure of
    that full apply propagates (a ``HostError``) and leaves the driver's state as it was.

    Conntrack zones (``zones``): each network of the ports gets one; a network's last
    port leaving retires its zone, whose entries are deleted after that transaction;
    the number is reused only once that deletion succeeded. The first apply of a
    driver (a restarted agent) reads the zones and retired zones lbtap's table holds,
    so every network keeps its zone and its flows, and zones retired before the
    restart are flushed. ``clear()`` flushes every zone it knew.

    A full apply also switches br_netfilter on in the driver's namespace (without it
    bridged IP traffic never reaches the inet table). Not thread-safe: one caller, the
    agent's executor, drives it.
    """

    def __init__(self, netns: str | None = None, *, nft: Nft | None = None, enable_br_netfilter: bool = True,
                 conntrack: ConntrackCleaner | None = None):
        self.netns = netns
        self.nft = nft or Nft(netns)
        self.conntrack = conntrack or ConntrackCleaner(netns)
        self.enable_br_netfilter = enable_br_netfilter
        self._ports: dict[str, PortFilter] = {}
        self._groups = RemoteGroups()
        self._state: Compiled | None = None
        self._pending: list[Flush] = []
        self._clean: set[int] = set()  # retired zones flushed since: free for the next compile
        self.last_script = ""
        self.last_flushes: tuple[Flush, ...] = ()

    # -- public interface -------------------------------------------------------------
    def apply(self, ports: Iterable[PortFilter], groups: RemoteGroups | None = None) -> None:
        ports = {p.tap: p for p in ports}
        groups = groups or RemoteGroups()
        new = compile_state(ports.values(), groups, self._base() if self._state else self._kernel_zones())
        self._ensure_br_netfilter()
        self._run(render_full(new), "firewall_apply")
        self._commit(ports, groups, new)

    def converge(self, changed: Iterable[PortFilter] = (), removed: Iterable[str] = (),
                 groups: RemoteGroups | None = None, op: str = "firewall_converge") -> None:
        """Ports added or changed, taps removed (unknown ones ignored; a tap both
        changed and removed is removed) and the new remote-group membership (None:
        unchanged), as ONE transaction — none when nothing differs, except that the
        first call of a driver always applies in full."""
        removed = set(removed)
        gone = removed & self._ports.keys()
        batch = {p.tap: p for p in changed if p.tap not in removed}  # last one per tap wins
        changes = [(self._ports.get(t), p) for t, p in batch.items()]
        changes += [(self._ports[t], None) for t in sorted(gone)]
        groups = self._groups if groups is None else groups
        if self._state is not None and not changes and groups == self._groups and not self._pending:
            return  # (a retriable conntrack cleanup left pending is retried even so)
        self._converge(changes, groups, op)

    def update_port(self, port: PortFilter) -> None:
        self.update_ports([port])

    def update_ports(self, ports: Iterable[PortFilter]) -> None:
        self.converge(ports, op="firewall_update_port")

    def remove_port(self, tap: str) -> None:
        self.remove_ports([tap])

    def remove_ports(self, taps: Iterable[str]) -> None:
        taps = [t for t in taps if t in self._ports]
        if taps:
            self.converge((), taps, op="firewall_remove_port")

    def update_groups(self, groups: RemoteGroups) -> None:
        self._converge([], groups, "firewall_update_groups")

    def clear(self) -> None:
        """Delete lbtap's tables, then every entry of the zones they used: with the
        map gone, a later driver cannot know those zones were ever used."""
        self._run(f"table bridge {TABLE}\ndelete table bridge {TABLE}\n"
                  f"table inet {TABLE}\ndelete table inet {TABLE}\n", "firewall_clear")
        state, pending = self._state, self._pending
        self._ports, self._groups, self._state, self._pending, self._clean = {}, RemoteGroups(), None, [], set()
        zones = set(state.zones.values()) | state.retired if state is not None else set()
        todo = [*pending, *(Flush.of_zone(z) for z in sorted(zones))]
        if todo:
            self.last_flushes = tuple(todo)
            self.conntrack.flush(todo)

    def drop_counters(self) -> dict[str, int]:
        """Packets dropped, per named counter (anti-spoofing and security groups)."""
        out = {n: 0 for n in (*COUNTERS_BRIDGE, *COUNTERS_INET)}
        out.update(self.nft.counters("bridge", TABLE))
        out.update(self.nft.counters("inet", TABLE))
        return out

    def close(self) -> None:
        """Release the nft context and the conntrack sockets (the ruleset stays)."""
        self.nft.close()
        close = getattr(self.conntrack, "close", None)
        if close is not None:
            close()

    @property
    def ports(self) -> dict[str, PortFilter]:
        """The ports as last applied, by tap."""
        return dict(self._ports)

    @property
    def groups(self) -> RemoteGroups:
        return self._groups

    @property
    def state(self) -> Compiled | None:
        """What the kernel is believed to hold (None before the first apply)."""
        return self._state

    # -- internals --------------------------------------------------------------------
    def _converge(self, changes: list[tuple[PortFilter | None, PortFilter | None]], groups: RemoteGroups,
                  op: str) -> None:
        ports = dict(self._ports)
        for old, new in changes:
            if new is None:
                ports.pop(old.tap, None)
            else:
                ports[new.tap] = new
        if self._state is None:
            self.apply(ports.values(), groups)
            return
        state = compile_update(self._base(), changes, groups)
        if groups is not self._groups and groups != self._groups:
            state = compile_groups(state, groups)
        device = changes[0][1].tap if len(changes) == 1 and changes[0][1] else None
        script = render_delta(self._state, state)
        try:
            if script:
                self._run(script, op, device)
        except errors.HostError:
            # The kernel did not hold what we believed: one full replace repairs it.
            state = compile_state(ports.values(), groups, self._base())
            self._ensure_br_netfilter()
            self._run(render_full(state), op, device)
        self._commit(ports, groups, state, device)

    def _commit(self, ports: dict[str, PortFilter], groups: RemoteGroups, state: Compiled,
                device: str | None = None) -> None:
        """The transaction is in: record the new state, then end the flows it forbids."""
        flushes = plan_flushes(self._state, state, self._ports, ports, self._groups, groups)
        self._ports, self._groups, self._state = ports, groups, state
        self._clean &= state.retired  # the others left the retired set with this transaction
        todo, self._pending = [*self._pending, *flushes], []
        if not todo:
            return
        self.last_flushes = tuple(todo)
        try:
            self.conntrack.flush(todo)
        except errors.HostError as e:
            if e.retriable:
                self._pending = todo
            e.device = e.device or device
            raise
        self._clean |= {f.zone for f in todo if f.whole_zone} & state.retired

    def _base(self) -> Compiled:
        """The state to compile the next one from: the kernel's, but with the retired
        zones flushed since counted as free (the next transaction drops them from
        ``zones_retired``)."""
        if not self._clean:
            return self._state
        return dataclasses.replace(self._state, retired=self._state.retired - self._clean)

    def _kernel_zones(self) -> Compiled | None:
        """What a previous driver left in the kernel: its zone map and retired zones, as
        a state to compile from (None when there is no such table)."""
        def elements(kind: str, name: str) -> list:
            try:
                items = self.nft.json(f"list {kind} inet {TABLE} {name}")
            except errors.NotFound:  # no table (first start), or one of an older lbtap
                return []
            return [e for i in items if kind in i for e in i[kind].get("elem", ())]

        zones = {e[0]: e[1] for e in elements("map", "zones")
                 if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], int)}
        retired = {e for e in elements("set", "zones_retired") if isinstance(e, int) and 0 < e <= MAX_ZONE}
        if not zones and not retired:
            return None
        return Compiled(zones=zones, retired=frozenset(retired))

    def _run(self, script: str, op: str, device: str | None = None) -> None:
        self.last_script = script
        try:
            self.nft.run(script, op=op)
        except errors.HostError as e:
            e.device = e.device or device
            raise

    def _ensure_br_netfilter(self) -> None:
        """Bridged IP traffic reaches the inet tables (and conntrack) only with these on."""
        if not self.enable_br_netfilter:
            return
        with in_namespace(self.netns):
            for name in BR_NF_SYSCTLS:
                p = f"/proc/sys/net/bridge/{name}"
                try:
                    with open(p, "r+") as f:
                        if f.read().strip() != "1":
                            f.seek(0)
                            f.write("1")
                except FileNotFoundError as e:
                    raise errors.NotSupported("br_netfilter is not available", op="br_netfilter", code=errno.ENOENT) from e
                except OSError as e:
                    raise errors.from_errno(e.errno, f"cannot set {name}: {e}", op="br_netfilter") from e


class FakeFirewall:
    """In-memory stand-in with ``FirewallDriver``'s interface.

    ``ports``/``groups`` hold the last applied data, ``compiled`` the state the real
    driver would have programmed, ``transactions`` counts applied changes and
    ``flushes`` lists every conntrack ``Flush`` the real driver would have run, in
    order; ``fail_next`` makes the next call raise (to test the caller's retry path).
    """

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self.ports: dict[str, PortFilter] = {}
        self.groups = RemoteGroups()
        self.compiled: Compiled | None = None
        self.transactions = 0
        self.flushes: list[Flush] = []
        self.fail_next: errors.HostError | None = None

    def _commit(self, ports: dict[str, PortFilter], groups: RemoteGroups) -> None:
        if self.fail_next is not None:
            e, self.fail_next = self.fail_next, None
            raise e
        compiled = compile_state(ports.values(), groups, self.compiled)
        self.flushes += plan_flushes(self.compiled, compiled, self.ports, ports, self.groups, groups)
        # Retired zones are flushed at once here, so their numbers are free again.
        self.compiled = dataclasses.replace(compiled, retired=frozenset())
        self.ports, self.groups = ports, groups
        self.transactions += 1

    def apply(self, ports: Iterable[PortFilter], groups: RemoteGroups | None = None) -> None:
        self._commit({p.tap: p for p in ports}, groups or RemoteGroups())

    def update_port(self, port: PortFilter) -> None:
        self._commit({**self.ports, port.tap: port}, self.groups)

    def update_ports(self, ports: Iterable[PortFilter]) -> None:
        self._commit({**self.ports, **{p.tap: p for p in ports}}, self.groups)

    def remove_port(self, tap: str) -> None:
        if tap in self.ports:
            self._commit({t: p for t, p in self.ports.items() if t != tap}, self.groups)

    def update_groups(self, groups: RemoteGroups) -> None:
        self._commit(dict(self.ports), groups)

    def remove_ports(self, taps: Iterable[str]) -> None:
        taps = set(taps) & set(self.ports)
        if taps:
            self._commit({t: p for t, p in self.ports.items() if t not in taps}, self.groups)

    def converge(self, changed: Iterable[PortFilter] = (), removed: Iterable[str] = (),
                 groups: RemoteGroups | None = None, op: str = "firewall_converge") -> None:
        removed = set(removed)
        ports = {**self.ports, **{p.tap: p for p in changed if p.tap not in removed}}
        ports = {t: p for t, p in ports.items() if t not in removed}
        groups = self.groups if groups is None else groups
        if self.compiled is not None and ports == self.ports and groups == self.groups:
            return
        self._commit(ports, groups)

    def clear(self) -> None:
        self.ports, self.groups, self.compiled = {}, RemoteGroups(), None

    def drop_counters(self) -> dict[str, int]:
        return {n: 0 for n in (*COUNTERS_BRIDGE, *COUNTERS_INET)}

    def close(self) -> None:
        pass
