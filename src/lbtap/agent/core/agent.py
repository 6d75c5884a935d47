"""``AgentCore``: the L2 agent's decisions, fed by observations, with no I/O.

The runtime (``lbtap.agent.runtime``) calls it from one loop; see the contract in
``docs/ARCHITECTURE.md``. Per device the core tracks: is it on the host, what the server
said about it, whether its wiring is verified, when to retry what failed. Work is
incremental -- only *dirty* devices (new details, a link change, a due retry) are
planned -- and failures stay with the device that failed: there is no ``sync`` flag to
widen one error into a resync of every healthy device (the seed's storm).

Single-flight assumptions, matching the runtime: each ``devices_needing_details`` batch
is answered by ``observe_details`` or ``details_failed``; each ``plan`` is followed by
``applied`` before the next ``plan``; each non-empty ``pending_reports`` by
``reports_sent``.

Asking for details, taking answers and pushes, and the casts that only change what
is known about a device are ``details.DetailsFlow``, which ``AgentCore`` inherits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lbtap.agent.core import ops as o
# MAX_TOMBSTONES is re-exported: it was defined here before the details flow moved out.
from lbtap.agent.core.details import DETAILS_ANSWER_TIMEOUT, MAX_TOMBSTONES, DetailsFlow  # noqa: F401
from lbtap.agent.core.devices import DeviceRecord, is_port_link
from lbtap.agent.core.diff import scan_diff
from lbtap.agent.core.executor import ApplyResult
from lbtap.agent.core.hostview import HostView
from lbtap.agent.core.plan import Desired, NetworkWiring, PortWiring, network_wiring
from lbtap.agent.core.plan import plan as plan_ops
from lbtap.agent.core.reporter import Reporter
from lbtap.agent.core.retry import Backoff
from lbtap.config import AgentSettings
from lbtap.domain.models import DeviceDetails
from lbtap.domain.naming import is_bridge
from lbtap.drivers.host.base import Address, Link, Route

log = logging.getLogger("lbtap.agent.core")


class AgentCore(DetailsFlow):
    """Sans-IO L2 agent core implementing the ``docs/ARCHITECTURE.md`` contract."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.host = HostView()
        self._devices: dict[str, DeviceRecord] = {}
        self._dirty: set[str] = set()  # devices whose wiring must be (re)checked
        self._want_details: set[str] = set()
        self._net_devices: dict[str, set[str]] = {}  # network -> devices with details
        self._networks: dict[str, NetworkWiring] = {}
        self._link_nets: dict[str, str] = {}  # bridge / uplink name -> network
        # brq bridges to look at: an unwanted one may have to go, a wanted one's
        # network-level wiring (bridge, uplink, host-IP move) is re-checked.
        self._bridges_to_check: set[str] = set()
        self._inflight_scopes: set[str] = set()  # failure keys of device-less ops out
        self._inflight_devices: set[str] = set()
        self._uplink_nics = frozenset(settings.physical_interface_mappings.values())
        r0, rmax = settings.retry_initial, settings.retry_max
        self._wire_retry = Backoff(r0, rmax)
        self._details_retry = Backoff(r0, rmax)
        self._cleanup_retry = Backoff(r0, rmax)  # by bridge: network-level work, teardown
        self.reporter = Reporter(r0, rmax)
        self._pushed: dict[str, DeviceDetails] = {}  # tap -> details pushed before it appeared
        self._tombstones: dict[str, None] = {}  # taps of ports deleted/moved away (ordered, bounded)
        self._fresh: list[DeviceDetails] = []  # accepted details not yet handed to extensions
        self._now = 0.0
        self.counters = {"full_scans": 0, "plans": 0, "ops": 0, "device_failures": 0,
                         "cleanup_failures": 0, "details_requested": 0, "details_unknown": 0,
                         "details_pushed": 0}

    # ---- observations: links ---------------------------------------------------------
    def observe_links(self, links: list[Link], *, full: bool, now: float) -> None:
        """A full snapshot of the namespace's links (``full``) or links that changed."""
        self._tick(now)
        if full:
            self._full_scan(links, now)
            return
        for link in links:
            old = self.host.put_link(link)
            if is_port_link(link):
                dev = self._devices.get(link.name)
                if dev is None:
                    self._add_device(link.name, link.index)
                elif dev.index != link.index:
                    self._recreated(dev, link.index)
                elif old is None or (old.master, old.mtu, old.up) != (link.master, link.mtu, link.up):
                    self._mark_dirty(dev)
                if old is not None and old.master != link.master and old.master and is_bridge(old.master):
                    self._bridges_to_check.add(old.master)
            elif link.name in self._link_nets:
                net_id = self._link_nets[link.name]
                if old is None:
                    # A missing uplink NIC appeared (hotplug): its ports need not wait
                    # out the slow backoff of a configuration failure.
                    for name in self._net_devices.get(net_id, ()):
                        if name in self._wire_retry:
                            self._wire_retry.forget(name)
                if old is None or (old.master, old.mtu, old.up, old.kind) != (link.master, link.mtu, link.up, link.kind):
                    self._recheck_network(net_id)

    def _full_scan(self, links: list[Link], now: float) -> None:
        self.counters["full_scans"] += 1
        previous = {name: dev.index for name, dev in self._devices.items()}
        current = {link.name: link.index for link in links if is_port_link(link)}
        self.host.set_links(links)
        sets = scan_diff(previous, current)
        for name in sets.removed:
            self._remove_device(name)
        for name in sets.added:
            self._add_device(name, current[name])
        for name in sets.updated:
            self._recreated(self._devices[name], current[name])
        # Re-verify every known device's wiring against the fresh snapshot. This plans
        # repairs only; reports depend on acked state, so healthy devices stay silent.
        for dev in self._devices.values():
            if dev.details is not None:
                self._mark_dirty(dev)
        self._bridges_to_check.update(name for name, link in self.host.links.items() if link.kind == "bridge" and is_bridge(name))

    def observe_link_deleted(self, name: str, now: float) -> None:
        self._tick(now)
        old = self.host.drop_link(name)
        if name in self._devices:
            self._remove_device(name)
        elif name in self._link_nets:
            self._recheck_network(self._link_nets[name])
        if old is not None and old.master and is_bridge(old.master):
            self._bridges_to_check.add(old.master)

    def observe_addresses(self, addresses: list[Address], routes: list[Route]) -> None:
        """All addresses and routes of the namespace (uplink NICs and bridges matter)."""
        self.host.set_addresses(addresses, routes)
        # A NIC regaining an address (operator, DHCP client) must be moved again.
        for ifname in {a.ifname for a in addresses} | {r.ifname for r in routes}:
            network = self._link_nets.get(ifname)
            if network is not None and ifname in self._uplink_nics:
                link = self.host.get(ifname)
                if link is not None and link.master is not None:
                    self._recheck_network(network)

    # ---- device lifecycle ------------------------------------------------------------------
    def _add_device(self, name: str, index: int) -> None:
        dev = self._devices[name] = DeviceRecord(name, index)
        pushed = self._pushed.pop(name, None)
        if pushed is not None and not self.reporter.knows(name):
            self.counters["details_pushed"] += 1
            self._accept(dev, pushed, with_status=False)
        else:
            self._want_details.add(name)

    def _recreated(self, dev: DeviceRecord, index: int) -> None:
        """Same name, new ifindex: the old wiring is gone; re-wire and re-read details."""
        dev.index = index
        dev.orphan = False
        dev.wired = False
        self._want_details.add(dev.name)
        self._details_retry.forget(dev.name)
        self._wire_retry.forget(dev.name)
        if dev.details is not None:
            self._mark_dirty(dev)

    def _remove_device(self, name: str) -> None:
        dev = self._devices.pop(name)
        self._dirty.discard(name)
        self._want_details.discard(name)
        self._wire_retry.forget(name)
        self._details_retry.forget(name)
        if dev.details is not None:
            self.reporter.device_gone(name)
            self._drop_details(dev)

    def _drop_details(self, dev: DeviceRecord) -> None:
        details, dev.details, dev.wiring, dev.wired, dev.error = dev.details, None, None, False, ""
        self._dirty.discard(dev.name)
        self._wire_retry.forget(dev.name)
        if details is None or details.network_id is None:
            return
        net_id = details.network_id
        members = self._net_devices.get(net_id)
        if members is not None:
            members.discard(dev.name)
            if not members:
                self._forget_network(net_id)

    def _forget_network(self, net_id: str) -> None:
        self._net_devices.pop(net_id, None)
        net = self._networks.pop(net_id, None)
        if net is None:
            return
        self._bridges_to_check.add(net.bridge)
        for name in (net.bridge, net.uplink.name if net.uplink else None):
            if name is not None and self._link_nets.get(name) == net_id:
                del self._link_nets[name]

    def _set_network(self, net_id: str, details: DeviceDetails) -> None:
        net = network_wiring(net_id, details.segment, self.settings)
        old = self._networks.get(net_id)
        if old == net:
            return
        self._networks[net_id] = net
        self._link_nets[net.bridge] = net_id
        if net.uplink is not None:
            self._link_nets[net.uplink.name] = net_id
        if old is not None:
            self._dirty_network(net_id)  # e.g. MTU changed: every port is re-checked

    def _mark_dirty(self, dev: DeviceRecord) -> None:
        self._dirty.add(dev.name)

    def _recheck_network(self, net_id: str) -> None:
        """Re-plan the network's bridge and uplink (not its ports) at its next due time."""
        net = self._networks.get(net_id)
        if net is not None:
            self._bridges_to_check.add(net.bridge)

    def _dirty_network(self, net_id: str) -> None:
        for name in self._net_devices.get(net_id, ()):
            self._dirty.add(name)

    def _tick(self, now: float) -> None:
        if now > self._now:
            self._now = now

    # ---- planning and its outcome ---------------------------------------------------------------
    def plan(self, now: float) -> list[o.Op]:
        """Ops for the work due now: dirty devices out of backoff, unwanted bridges."""
        self._tick(now)
        ports: dict[str, PortWiring] = {}
        networks: dict[str, NetworkWiring] = {}
        for name in list(self._dirty):
            dev = self._devices.get(name)
            if dev is None or dev.details is None or dev.orphan:
                self._dirty.discard(name)
                continue
            if dev.inflight or not self._wire_retry.due(name, now):
                continue
            wiring = dev.wiring
            assert wiring is not None
            ports[name] = wiring
            if wiring.network_id not in networks:
                networks[wiring.network_id] = self._networks[wiring.network_id]
        wanted = {net.bridge: net_id for net_id, net in self._networks.items() if self._net_devices.get(net_id)}
        due = [b for b in self._bridges_to_check if b not in self._inflight_scopes and self._cleanup_retry.due(b, now)]
        self._bridges_to_check.difference_update(due)
        remove = []
        for bridge in due:
            net_id = wanted.get(bridge)
            if net_id is None:
                remove.append(bridge)
            elif net_id not in networks:
                networks[net_id] = self._networks[net_id]
        if not networks and not remove:
            return []
        ops = plan_ops(Desired(networks, ports, remove, self._uplink_nics), self.host)
        self.counters["plans"] += 1
        self.counters["ops"] += len(ops)
        involved = o.devices_of(ops)
        for name in ports:
            dev = self._devices[name]
            self._dirty.discard(name)
            if name in involved:
                dev.inflight, dev.planned = True, dev.details
                self._inflight_devices.add(name)
            else:
                self._wired(dev)
        self._inflight_scopes.update(op.failure_key for op in ops if not op.devices)
        if self._inflight_scopes:
            log.debug("planned %d ops, bridge-level work on %s", len(ops), sorted(self._inflight_scopes))
        return ops

    def _wired(self, dev: DeviceRecord) -> None:
        assert dev.details is not None
        dev.wired, dev.error = True, ""
        if dev.name in self._wire_retry:
            self._wire_retry.forget(dev.name)
        self.reporter.want(dev.name, dev.details.admin_state_up)

    def applied(self, result: ApplyResult, now: float) -> None:
        """Fold the executor's outcome in: host model, per-device success or backoff."""
        self._tick(now)
        for op in result.applied:
            if isinstance(op, (o.Enslave, o.WirePort)) and op.bridge:
                # A tap pulled out of another brq bridge may have left that one empty.
                before = self.host.get(op.subject)
                if before is not None and before.master and before.master != op.bridge and is_bridge(before.master):
                    self._bridges_to_check.add(before.master)
            self.host.assume(op)
        for name, err in result.failed.items():
            dev = self._devices.get(name)
            if dev is None or dev.details is None:
                continue
            dev.inflight, dev.planned, dev.wired = False, None, False
            dev.error = f"{type(err).__name__}: {err}"
            self.counters["device_failures"] += 1
            at = self._wire_retry.failed(name, now, retriable=err.retriable, error=dev.error)
            attempts = self._wire_retry.attempts(name)
            log.warning("device %s not wired (attempt %d): %s; retry in %.1fs", name, attempts, dev.error, at - now,
                        extra={"device": name, "attempt": attempts, "retry_in": round(at - now, 3)})
            self._dirty.add(name)
        for name in result.succeeded:
            dev = self._devices.get(name)
            if dev is None or not dev.inflight:
                continue
            planned, dev.inflight, dev.planned = dev.planned, False, None
            if dev.details is not None and dev.details is planned:
                self._wired(dev)
            else:
                self._dirty.add(name)  # details changed while applying: check again
        for key, err in result.other_failures.items():
            self.counters["cleanup_failures"] += 1
            at = self._cleanup_retry.failed(key, now, retriable=err.retriable, error=str(err))
            log.warning("bridge-level work on %s failed: %s; retry in %.1fs", key, err, at - now)
            self._bridges_to_check.add(key)
        for key in self._inflight_scopes - result.other_failures.keys():
            self._cleanup_retry.forget(key)
        self._inflight_scopes.clear()
        # Anything still marked in flight was not reported on (cannot happen with
        # ``executor.apply``): look at it again rather than leave it stuck.
        for name in self._inflight_devices:
            dev = self._devices.get(name)
            if dev is not None and dev.inflight:
                dev.inflight, dev.planned = False, None
                self._dirty.add(name)
        self._inflight_devices.clear()

    # ---- status reports ---------------------------------------------------------------------------
    def pending_reports(self, now: float | None = None) -> tuple[list[str], list[str]]:
        """(devices_up, devices_down) to send now, marked in flight until ``reports_sent``."""
        return self.reporter.take(self._now if now is None else max(now, self._now))

    def reports_sent(self, up: list[str], down: list[str], result: Mapping[str, Any] | None, now: float) -> None:
        """Outcome of ``update_device_list``; ``result`` None when the server was unreachable."""
        self._tick(now)
        self.reporter.sent(up, down, result, now)
        if result is None:
            # Re-read the server's status of every device whose report may or may not
            # have landed, instead of risking a second ``up``.
            for name in self.reporter.unsure():
                dev = self._devices.get(name)
                if dev is not None:
                    self._want_details.add(name)
                    if dev.asking:
                        dev.ask_again = True

    # ---- scheduling and metrics ----------------------------------------------------------------------
    def next_wakeup(self, now: float) -> float | None:
        """Earliest time some work is due (``now`` if some already is), None if idle."""
        times: list[float] = []
        if any(self._may_ask(n, now) for n in self._want_details):
            return now
        asking = [self._devices[n].asked_at for n in self._want_details if self._devices[n].asking]
        if asking:
            times.append(min(asking) + DETAILS_ANSWER_TIMEOUT)
        if any(self._dirty_due(n, now) for n in self._dirty):
            return now
        if any(b not in self._inflight_scopes and self._cleanup_retry.due(b, now) for b in self._bridges_to_check):
            return now
        for t in (
            self._details_retry.next_due(now),
            self._wire_retry.next_due(now),
            self._cleanup_retry.next_due(now) if self._bridges_to_check else None,
            self.reporter.next_due(now),
        ):
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def _dirty_due(self, name: str, now: float) -> bool:
        dev = self._devices.get(name)
        if dev is None or dev.details is None or dev.orphan:
            return True  # plan() drops it: still work, and cheap
        return not dev.inflight and self._wire_retry.due(name, now)

    def snapshot(self) -> dict[str, Any]:
        """Counters and per-device state for metrics and ``report_state``."""
        states: dict[str, int] = {}
        for dev in self._devices.values():
            s = dev.state()
            states[s] = states.get(s, 0) + 1
        retrying = {
            name: {"attempts": st.attempts, "next_at": st.next_at, "error": st.last_error}
            for name, st in self._wire_retry.waiting().items()
        }
        bridges_retrying = {
            name: {"attempts": st.attempts, "next_at": st.next_at, "error": st.last_error}
            for name, st in self._cleanup_retry.waiting().items()
        }
        return {
            "devices": len(self._devices),
            "networks": len(self._net_devices),
            "states": states,
            "retrying": retrying,
            "bridges_retrying": bridges_retrying,
            "waiting_details": len(self._want_details),
            "reports_pending": self.reporter.pending_count,
            "report_retrying": self.reporter.retrying(),
            "counters": {**self.counters, **{f"report_{k}": v for k, v in self.reporter.counters.items()}},
            "per_device": {name: dev.state() for name, dev in self._devices.items()},
        }

    def device_state(self, name: str) -> str | None:
        """``wired``, ``failed``, ``unknown``, ... for one device (None if not on the host)."""
        dev = self._devices.get(name)
        return dev.state() if dev else None
