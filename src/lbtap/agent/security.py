"""``security`` L2 agent extension: anti-spoofing and stateful security groups per port.

The seed's port-update flow, applied to the firewall: the extension keeps a local copy
of what it applied (one ``PortFilter`` per tap, the rules of each group, the member
addresses of remote groups) and turns every change into the smallest firewall call.

* ``port_details`` (new device, ``port_update``, restart) marks the device dirty;
* ``security_groups_rule_updated`` marks those groups' rules stale and their devices
  dirty; ``security_groups_member_updated`` carries the member addresses added and
  removed per group, applied to the local copy of every group this host uses as a
  remote group (a server that sends no delta makes those groups stale instead) — so
  rule and member changes reach every host with an affected port, and only there;
* ``process`` asks the server (``security_group_info_for_devices``, one call) only for
  dirty devices that use a group whose rules or members it does not hold or holds
  stale — a new port in a group already on this host costs no message — rebuilds
  their ``PortFilter``s and hands only those that differ from the applied copy to the
  firewall driver with the removed ports and the remote-group membership, all in one
  transaction (``converge``; the first one after a start is a full apply of every
  port, replacing a previous agent's tables atomically), so a member joining a group
  touches only its sets, a fixed-IP change anti-spoofing elements, a group change a
  profile.
  ``network:*`` ports and ports with port security off are kept unfiltered
  (``PortFilter.filtered``);
* every ``reconcile_interval`` and after a bus reconnect (casts may have been lost)
  every group in use is re-read once;
* ``holds(device)``: a port is not reported up before its first filter is in place
  (the runtime holds its ``update_device_up`` until then).

Kernel work runs on the agent's host worker (``agent.on_host``): the driver enters the
agent's namespace per call, and is created there lazily. An agent on a ``FakeHost``
(unit tests) gets a ``FakeFirewall`` so a test never touches a real ruleset. Failures
(server unreachable, nft refused) keep the work dirty and retry with capped backoff.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from lbtap.agent.extensions import BaseExtension, CastHandler
from lbtap.bus.base import BusError
from lbtap.domain.models import DeviceDetails
from lbtap.drivers.firewall import FakeFirewall, FirewallDriver, PortFilter, RemoteGroups, Rule, from_details
from lbtap.rpc import topics

log = logging.getLogger("lbtap.agent.security")

SG_INFO = "security_group_info_for_devices"
SG_RULE_UPDATED = "security_groups_rule_updated"
SG_MEMBER_UPDATED = "security_groups_member_updated"
RULE_FIELDS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix",
               "remote_group_id")
RPC_TIMEOUT = 10.0


def kernel_backed(agent: Any) -> bool:
    """Whether the agent drives a real kernel (NetlinkHost, possibly fault-wrapped):
    only then may extensions create real nft/tc drivers."""
    from lbtap.drivers.host.netlink import NetlinkHost

    driver = getattr(agent, "driver", None)
    driver = getattr(driver, "_inner", driver)
    return isinstance(driver, NetlinkHost)


class Backoff:
    """Capped exponential retry delay for a whole extension's pending work."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0):
        self.initial, self.maximum = initial, maximum
        self.failures = 0
        self.retry_at = 0.0

    def failed(self, now: float) -> None:
        self.failures += 1
        self.retry_at = now + min(self.maximum, self.initial * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0

    def due(self, now: float) -> bool:
        return now >= self.retry_at


def rules_from_wire(rules: list[Mapping[str, Any]]) -> tuple[Rule, ...]:
    out = []
    for r in rules:
        try:
            out.append(Rule(**{k: r.get(k) for k in RULE_FIELDS}))
        except (TypeError, ValueError) as e:  # the server validated it; never stop on one rule
            log.error("ignoring security group rule %s: %s", dict(r), e)
    return tuple(out)


class SecurityExtension(BaseExtension):
    name = "security"

    def __init__(self, firewall_factory: Callable[[Any], Any] | None = None):
        self._factory = firewall_factory
        self.fw: Any = None  # created on the host worker at first use
        self.details: dict[str, DeviceDetails] = {}
        self.applied: dict[str, PortFilter] = {}
        self.rules: dict[str, tuple[Rule, ...]] = {}  # security group -> its rules
        self.members: dict[str, frozenset[str]] = {}  # remote group -> member addresses
        self._stale: set[str] = set()  # groups whose rules / members must be re-read
        self._dirty: set[str] = set()
        self._gone: set[str] = set()
        self._groups_changed = False  # member deltas arrived: re-check the sets
        self._replay: list[tuple[str, frozenset[str], frozenset[str]]] | None = None  # during a read
        self._resync_at = 0.0
        self._bus_disconnects = 0
        self.backoff = Backoff()
        self.stats = {"rpc_calls": 0, "port_updates": 0, "group_updates": 0, "member_deltas": 0, "removals": 0,
                      "errors": 0}

    def bind(self, agent: Any) -> None:
        super().bind(agent)
        self.backoff = Backoff(agent.cfg.retry_initial, agent.cfg.retry_max)
        self._resync_period = float(getattr(agent.cfg, "reconcile_interval", 60.0))
        self._bus_disconnects = getattr(getattr(agent, "bus", None), "disconnects", 0)

    def holds(self, device: str) -> bool:
        """True while a port of this host has details but no filter applied yet."""
        return device in self.details and device not in self.applied

    # ---- hooks: record intent only ------------------------------------------------------
    def port_details(self, details: DeviceDetails) -> None:
        self.details[details.device] = details
        self._gone.discard(details.device)
        self._dirty.add(details.device)

    def device_gone(self, device: str) -> None:
        self.details.pop(device, None)
        self._dirty.discard(device)
        if device in self.applied:
            self._gone.add(device)

    def cast_handlers(self) -> Mapping[str, CastHandler]:
        return {SG_RULE_UPDATED: self._rule_updated, SG_MEMBER_UPDATED: self._member_updated}

    def _rule_updated(self, kwargs: dict[str, Any]) -> None:
        groups = set(kwargs.get("security_groups") or ())
        self._stale |= groups & set(self.rules)
        self._dirty.update(d for d, det in self.details.items() if groups & set(det.security_groups))

    def _member_updated(self, kwargs: dict[str, Any]) -> None:
        groups = set(kwargs.get("security_groups") or ())
        deltas = kwargs.get("members")
        if isinstance(deltas, Mapping):
            for gid, change in deltas.items():
                added = frozenset((change or {}).get("added") or ())
                removed = frozenset((change or {}).get("removed") or ())
                if self._replay is not None:
                    self._replay.append((gid, added, removed))  # the answer in flight may predate it
                if gid in self.members:  # else not a remote group here: read in full if it becomes one
                    self._apply_delta(gid, added, removed)
            return
        self._stale |= groups & set(self.members)
        for dev, det in self.details.items():
            remote = {r.remote_group_id for g in det.security_groups for r in self.rules.get(g, ())}
            if groups & remote:
                self._dirty.add(dev)

    def _apply_delta(self, gid: str, added: frozenset[str], removed: frozenset[str]) -> None:
        self.members[gid] = (self.members[gid] - removed) | added
        self._groups_changed = True
        self.stats["member_deltas"] += 1

    def next_wakeup(self, now: float) -> float | None:
        times = [self._resync_at] if self.details and self._resync_at else []
        if (self._dirty or self._gone or self._groups_changed) and self.backoff.retry_at:
            times.append(self.backoff.retry_at)
        elif self._groups_changed:
            times.append(now)
        return min(times) if times else None

    def snapshot(self) -> dict[str, Any]:
        return {"ports": len(self.applied), "filtered": sum(p.filtered for p in self.applied.values()),
                "pending": len(self._dirty) + len(self._gone), **self.stats}

    # ---- the work ----------------------------------------------------------------------
    async def process(self, now: float) -> None:
        self._maybe_resync(now)
        if not (self._dirty or self._gone or self._groups_changed) or not self.backoff.due(now):
            return
        # Take the work; casts arriving while we await add to fresh sets.
        dirty, self._dirty = {d for d in self._dirty if d in self.details}, set()
        gone, self._gone = set(self._gone), set()
        self._groups_changed = False
        try:
            await self._fetch(sorted(d for d in dirty if self._must_read(self.details[d])))
            changed = [f for f in (self._filter(self.details[d]) for d in sorted(dirty) if d in self.details)
                       if f is not None and self.applied.get(f.tap) != f]
            new_applied = {**self.applied, **{f.tap: f for f in changed}}
            for tap in gone:
                new_applied.pop(tap, None)
            groups = self._remote_groups(new_applied.values())
            if changed or gone or groups != self._applied_groups():
                await self.agent.on_host(self._apply, changed, sorted(gone), groups)
        except Exception as e:  # noqa: BLE001 - BusError, HostError: retry the same work later
            self._dirty |= dirty
            self._gone |= gone
            self._groups_changed = True
            self.stats["errors"] += 1
            self.backoff.failed(now)
            log.warning("security groups: %d ports not updated, retry in %.1f s: %s", len(dirty) + len(gone),
                        self.backoff.retry_at - now, e, exc_info=not isinstance(e, BusError))
            return
        self.backoff.succeeded()
        self.applied = new_applied

    @staticmethod
    def _needs_rules(d: DeviceDetails) -> bool:
        return bool(d.security_groups) and d.port_security_enabled and not d.device_owner.startswith("network:")

    def _maybe_resync(self, now: float) -> None:
        disconnects = getattr(self.agent.bus, "disconnects", 0)
        if self._resync_at == 0.0:
            self._resync_at = now + self._resync_period
        if disconnects == self._bus_disconnects and now < self._resync_at:
            return
        self._bus_disconnects = disconnects
        self._resync_at = now + self._resync_period
        self._stale |= set(self.rules) | set(self.members)
        self._dirty |= {d for d, det in self.details.items() if self._needs_rules(det)}

    def _must_read(self, d: DeviceDetails) -> bool:
        """Whether filtering ``d`` needs data this host does not hold (or holds stale)."""
        if not self._needs_rules(d):
            return False
        for g in d.security_groups:
            if g not in self.rules or g in self._stale:
                return True
            for r in self.rules[g]:
                if r.remote_group_id and (r.remote_group_id not in self.members or r.remote_group_id in self._stale):
                    return True
        return False

    async def _fetch(self, devices: list[str]) -> None:
        if not devices:
            return
        self.stats["rpc_calls"] += 1
        self._replay = []
        try:
            info = await self.agent.bus.call(topics.PLUGIN, SG_INFO, timeout=RPC_TIMEOUT, devices=devices)
        finally:
            replay, self._replay = self._replay, None
        for gid, rules in (info.get("security_groups") or {}).items():
            self.rules[gid] = rules_from_wire(rules)
            self._stale.discard(gid)
        remote = {r.remote_group_id for rs in self.rules.values() for r in rs if r.remote_group_id}
        for gid in remote & set(info.get("sg_member_ips") or {}):
            fams = info["sg_member_ips"][gid]
            self.members[gid] = frozenset(ip for ips in fams.values() for ip in ips)
            self._stale.discard(gid)
        for gid, added, removed in replay:  # deltas that arrived while we asked
            if gid in self.members:
                self._apply_delta(gid, added, removed)

    def _filter(self, d: DeviceDetails) -> PortFilter | None:
        rules = tuple(dict.fromkeys(r for g in d.security_groups for r in self.rules.get(g, ())))
        try:
            return from_details(d, rules)
        except (ValueError, TypeError, AttributeError) as e:  # e.g. no MAC: nothing to anchor it on
            # Not retried (the same details fail the same way) and its up report stays
            # held: an unprotected port must not look ACTIVE.
            log.error("cannot filter %s: %s", d.device, e)
            return None

    def _remote_groups(self, filters: Any) -> RemoteGroups:
        wanted = {r.remote_group_id for f in filters if f.filtered for r in f.rules if r.remote_group_id}
        return RemoteGroups.of({g: self.members.get(g, frozenset()) for g in sorted(wanted)})

    def _applied_groups(self) -> RemoteGroups | None:
        return self.fw.groups if self.fw is not None else None

    def _apply(self, changed: list[PortFilter], gone: list[str], groups: RemoteGroups) -> None:
        """On the host worker: the whole pass — membership, changed ports, removals — as
        ONE firewall transaction (``converge``). A driver's first one (agent start or
        restart) is a full apply holding every port of the pass, so the tables a
        previous agent left are replaced atomically: no port is ever unfiltered."""
        if self.fw is None:
            self.fw = (self._factory or self._default_factory)(self.agent)
        regroup = groups != self.fw.groups
        if not (changed or gone or regroup):
            return
        self.fw.converge(changed, gone, groups)
        self.stats["group_updates"] += regroup
        self.stats["port_updates"] += len(changed)
        self.stats["removals"] += len(gone)

    @staticmethod
    def _default_factory(agent: Any) -> Any:
        if kernel_backed(agent):
            return FirewallDriver(agent.cfg.netns)
        return FakeFirewall(agent.cfg.netns)
