"""``qos`` L2 agent extension: Neutron bandwidth limits on this host's taps, with tc.

Local copy: the ``PortLimits`` applied per tap and the policy that gave them. Changes:

* ``port_details`` (new device, ``port_update`` — e.g. its ``qos_policy_id`` changed —,
  or ``network_update``, which re-reads the details of the network's ports, so a
  network's policy change arrives the same way) marks the device dirty; the details
  carry the policy in effect (the port's, else its network's);
* ``qos_policy_updated(policy_id)`` (a rule of that policy was created, changed or
  deleted) forgets that policy's rules and marks the devices it applies to;
* ``process`` asks the server (``qos_rules_for_devices``, one call) only for dirty
  devices whose policy's rules it does not hold — a port without a policy, or with
  one already known, costs no message — and calls the tc driver only for taps whose
  limits differ from the applied copy; ``device_gone`` clears the tap's limits (and
  its ifb).

After a start the applied copy is empty while the kernel may still hold an earlier
run's limits, so the first time a tap is handled it is reconciled with the kernel: its
limits are set, or — when it should be unlimited — read back (``limits(tap)``) and
cleared if any are there. The first pass also removes lbtap's ifb devices whose tap is
gone (ports deleted while the agent was down). tc errors are per tap: a failing tap
is retried on its own backoff while the others proceed.

So a QoS change touches only tc; the firewall never sees it. tc work runs on the host
worker (pyroute2's sync API needs a thread without a running loop); an agent on a
``FakeHost`` gets a ``FakeQos``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from lbtap.agent.extensions import BaseExtension, CastHandler
from lbtap.agent.security import RPC_TIMEOUT, Backoff, kernel_backed
from lbtap.bus.base import BusError
from lbtap.domain.models import DeviceDetails
from lbtap.drivers.qos import FakeQos, PortLimits, TcQosDriver, from_rules
from lbtap.rpc import topics

log = logging.getLogger("lbtap.agent.qos")

QOS_RULES = "qos_rules_for_devices"
QOS_POLICY_UPDATED = "qos_policy_updated"


class QosExtension(BaseExtension):
    name = "qos"

    def __init__(self, qos_factory: Callable[[Any], Any] | None = None):
        self._factory = qos_factory
        self.tc: Any = None  # created on the host worker at first use
        self.devices: set[str] = set()
        self.policy: dict[str, str | None] = {}  # tap -> effective policy id, from the server
        self.rules: dict[str, list[Mapping[str, Any]]] = {}  # policy id -> its bandwidth-limit rules
        self._asking: set[str] | None = None  # policies updated while a read is in flight
        self._forget_at = 0.0
        self._period = 60.0
        self._bus_disconnects = 0
        self.applied: dict[str, PortLimits] = {}
        self._known: set[str] = set()  # taps whose kernel state was set or read since start
        self._swept = False  # orphan ifb devices removed (once per start)
        # Taps holding qdiscs when the first pass ran (None: the driver cannot list them):
        # only those can carry an earlier run's limits; a tap created later starts clean.
        self._limited_at_start: set[str] | None = None
        self._tap_backoff: dict[str, Backoff] = {}  # taps whose last tc update failed
        self._dirty: set[str] = set()
        self._gone: set[str] = set()
        self.backoff = Backoff()
        self.stats = {"rpc_calls": 0, "tc_updates": 0, "errors": 0}

    def bind(self, agent: Any) -> None:
        super().bind(agent)
        self.backoff = Backoff(agent.cfg.retry_initial, agent.cfg.retry_max)
        self._period = float(getattr(agent.cfg, "reconcile_interval", 60.0))
        self._bus_disconnects = getattr(getattr(agent, "bus", None), "disconnects", 0)

    # ---- hooks: record intent only ------------------------------------------------------
    def port_details(self, details: DeviceDetails) -> None:
        self.devices.add(details.device)
        self.policy[details.device] = details.qos_policy_id
        self._gone.discard(details.device)
        self._dirty.add(details.device)

    def device_gone(self, device: str) -> None:
        self.devices.discard(device)
        self._dirty.discard(device)
        self.policy.pop(device, None)
        self._known.discard(device)  # a tap of that name later is a new device
        if device in self.applied:
            self._gone.add(device)
        else:
            self._tap_backoff.pop(device, None)

    def cast_handlers(self) -> Mapping[str, CastHandler]:
        return {QOS_POLICY_UPDATED: self._policy_updated}

    def _policy_updated(self, kwargs: dict[str, Any]) -> None:
        pid = kwargs.get("policy_id")
        self.rules.pop(pid, None)
        if self._asking is not None:
            self._asking.add(pid)  # an answer in flight may hold the old rules
        self._dirty.update(d for d in self.devices if self.policy.get(d) == pid)

    def _maybe_forget_rules(self, now: float) -> None:
        """Re-read every policy every ``reconcile_interval`` and after a bus reconnect
        (a lost ``qos_policy_updated`` must not keep old limits for good)."""
        disconnects = getattr(self.agent.bus, "disconnects", 0)
        if self._forget_at == 0.0:
            self._forget_at = now + self._period
        if disconnects == self._bus_disconnects and now < self._forget_at:
            return
        self._bus_disconnects, self._forget_at = disconnects, now + self._period
        if self.rules:
            self.rules.clear()
            self._dirty.update(d for d in self.devices if self.policy.get(d))

    def next_wakeup(self, now: float) -> float | None:
        times = []
        pending = (self._dirty & self.devices) | self._gone
        if pending:
            first = min(self._tap_backoff[d].retry_at if d in self._tap_backoff else now for d in pending)
            times.append(max(now, self.backoff.retry_at, first))
        elif not self._swept:
            times.append(max(now, self.backoff.retry_at))
        if self.rules and self._forget_at:
            times.append(self._forget_at)
        return min(times) if times else None

    def snapshot(self) -> dict[str, Any]:
        return {"limited": len(self.applied), "pending": len(self._dirty) + len(self._gone), **self.stats}

    # ---- the work ----------------------------------------------------------------------
    async def process(self, now: float) -> None:
        self._maybe_forget_rules(now)
        if not (self._dirty or self._gone or not self._swept) or not self.backoff.due(now):
            return
        self._dirty &= self.devices
        dirty = {d for d in self._dirty if self._tap_due(d, now)}
        gone = {d for d in self._gone if self._tap_due(d, now)}
        if not (dirty or gone or not self._swept):
            return
        self._dirty -= dirty
        self._gone -= gone
        failed: dict[str, Exception] = {}
        try:
            ask = sorted(d for d in dirty if self.policy.get(d) and self.policy[d] not in self.rules)
            fresh: dict[str, list[Mapping[str, Any]]] = {}
            if ask:
                self.stats["rpc_calls"] += 1
                self._asking = set()
                try:
                    answer = await self.agent.bus.call(topics.PLUGIN, QOS_RULES, timeout=RPC_TIMEOUT, devices=ask)
                finally:
                    stale, self._asking = self._asking, None
                for dev in ask:
                    entry = (answer or {}).get(dev) or {}
                    pid = entry.get("qos_policy_id")
                    self.policy[dev] = pid
                    if pid:
                        fresh[pid] = list(entry.get("rules") or [])
                # A policy updated while we asked: apply this answer for now, but do not
                # keep it — its ports are read again on the next pass.
                self.rules.update({pid: r for pid, r in fresh.items() if pid not in stale})
                self._dirty.update(d for d in self.devices if self.policy.get(d) in stale)
            known = {**self.rules, **fresh}
            wanted = {dev: self._limits(dev, known.get(self.policy.get(dev) or "", [])) for dev in dirty}
            # A tap not seen since start is reconciled with the kernel even when "wanted
            # unlimited" equals "nothing applied": an earlier run may have limited it.
            changes = {d: lim for d, lim in wanted.items()
                       if d not in self._known or self.applied.get(d, PortLimits()) != lim}
            if changes or gone or not self._swept:
                failed = await self.agent.on_host(self._apply, changes, sorted(gone))
        except Exception as e:  # noqa: BLE001 - BusError, HostError: retry the same work later
            self._dirty |= dirty
            self._gone |= gone
            self.stats["errors"] += 1
            self.backoff.failed(now)
            log.warning("qos: %d ports not updated, retry in %.1f s: %s", len(dirty) + len(gone),
                        self.backoff.retry_at - now, e, exc_info=not isinstance(e, BusError))
            return
        self.backoff.succeeded()
        for tap in (dirty | gone) - failed.keys():
            self._tap_backoff.pop(tap, None)
        for tap, e in sorted(failed.items()):
            b = self._tap_backoff.setdefault(tap, Backoff(self.backoff.initial, self.backoff.maximum))
            b.failed(now)
            (self._dirty if tap in self.devices else self._gone).add(tap)
            self.stats["errors"] += 1
            log.warning("qos: %s not updated, retry in %.1f s: %s", tap, b.retry_at - now, e)

    def _tap_due(self, tap: str, now: float) -> bool:
        b = self._tap_backoff.get(tap)
        return b is None or b.due(now)

    @staticmethod
    def _limits(dev: str, rules: list[Mapping[str, Any]]) -> PortLimits:
        try:
            return from_rules(rules)
        except (KeyError, ValueError) as e:
            log.error("ignoring QoS rules of %s: %s", dev, e)
            return PortLimits()

    def _apply(self, changes: dict[str, PortLimits], gone: list[str]) -> dict[str, Exception]:
        """On the host worker; returns the taps that failed. ``applied`` follows each tap
        that succeeded, and one tap's error does not stop the others."""
        if self.tc is None:
            self.tc = (self._factory or self._default_factory)(self.agent)
        if not self._swept:
            self._swept = True  # housekeeping: tried once per start, never retried in a loop
            listing = getattr(self.tc, "limited_taps", None)
            try:
                self._limited_at_start = set(listing()) if listing is not None else None
            except Exception as e:  # noqa: BLE001 - then each tap is read on its own
                log.warning("qos: could not list limited taps: %s", e)
            sweep = getattr(self.tc, "remove_orphan_ifbs", None)
            try:
                removed = sweep() if sweep is not None else []
                if removed:
                    log.info("qos: removed ifb devices of deleted ports: %s", ", ".join(removed))
            except Exception as e:  # noqa: BLE001
                log.warning("qos: could not remove ifb devices of deleted ports: %s", e)
        failed: dict[str, Exception] = {}
        for tap, lim in sorted(changes.items()):
            try:
                self._apply_one(tap, lim)
            except Exception as e:  # noqa: BLE001 - HostError and the like: this tap only
                failed[tap] = e
        for tap in gone:
            try:
                self.tc.clear(tap)
            except Exception as e:  # noqa: BLE001
                failed[tap] = e
                continue
            self.applied.pop(tap, None)
        return failed

    def _apply_one(self, tap: str, lim: PortLimits) -> None:
        if not lim.empty:
            self.tc.set_limits(tap, lim.ingress, lim.egress)
            self.applied[tap] = lim
            self.stats["tc_updates"] += 1
        elif tap in self._known or self._kernel_limited(tap):
            self.tc.clear(tap)
            self.applied.pop(tap, None)
            self.stats["tc_updates"] += 1
        self._known.add(tap)

    def _kernel_limited(self, tap: str) -> bool:
        """Whether the kernel holds limits on ``tap`` (an earlier run's); True when the
        driver cannot tell, so the tap is cleared."""
        if self._limited_at_start is not None:
            return tap in self._limited_at_start
        read = getattr(self.tc, "limits", None)
        if read is None:
            return True
        try:
            return not read(tap).empty
        except Exception:  # noqa: BLE001 - e.g. the tap is gone: clear() removes its ifb
            return True

    @staticmethod
    def _default_factory(agent: Any) -> Any:
        if kernel_backed(agent):
            return TcQosDriver(agent.cfg.netns)
        return FakeQos(agent.cfg.netns)

    async def stop(self) -> None:
        if self.tc is not None and hasattr(self.tc, "close"):
            await self.agent.on_host(self.tc.close)
