"""Drive ``AgentCore`` + ``executor.apply`` over a ``FakeHost`` the way the runtime
does, with a fake server and simulated time. No threads, no bus, no root."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from lbtap.agent.core.agent import AgentCore
from lbtap.agent.core.executor import ApplyResult, apply
from lbtap.config import AgentSettings
from lbtap.domain import constants as c
from lbtap.domain.models import DeviceDetails, Segment
from lbtap.domain.naming import tap_name
from lbtap.drivers.host.base import LinkEvent
from lbtap.drivers.host.fake import FakeHost

NET_A = "aaaaaaaa-1111-2222-3333-444444444444"
NET_B = "bbbbbbbb-1111-2222-3333-444444444444"


def port_id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def settings(**kw) -> AgentSettings:
    base = dict(host="h1", physical_interface_mappings={"physnet1": "eth1"}, local_ip="203.0.113.1",
                retry_initial=0.5, retry_max=30.0)
    base.update(kw)
    return AgentSettings(**base)


class FakeServer:
    """The server's side of the two RPC calls, with per-device message counters."""

    def __init__(self) -> None:
        self.ports: dict[str, DeviceDetails] = {}  # by tap name
        self.reachable = True
        self.lose_answers = False  # apply reports but lose the answer (outage mid-call)
        self.fail_up: set[str] = set()  # devices the server lists as failed_devices_up
        self.up_msgs: Counter[str] = Counter()
        self.down_msgs: Counter[str] = Counter()
        self.batches = 0
        self.details_calls = 0

    def add_port(self, pid: str, network_id: str = NET_A, segment: Segment | None = None, **kw) -> str:
        # As the real server: every port has a MAC (the firewall anchors anti-spoofing on it).
        h = pid.replace("-", "")[-6:].rjust(6, "0")
        kw.setdefault("mac_address", f"fa:16:3e:{h[0:2]}:{h[2:4]}:{h[4:6]}")
        d = DeviceDetails.for_port(pid, network_id=network_id, segment=segment or Segment(c.TYPE_LOCAL, mtu=1500),
                                   status=kw.pop("status", c.PORT_STATUS_DOWN), **kw)
        self.ports[d.device] = d
        return d.device

    def details(self, devices: list[str]) -> list[DeviceDetails]:
        self.details_calls += 1
        return [self.ports.get(d) or DeviceDetails(device=d) for d in devices]

    def update_device_list(self, up: list[str], down: list[str]) -> dict | None:
        if not self.reachable:
            return None
        self.batches += 1
        failed = [d for d in up if d in self.fail_up]
        for d in up:
            self.up_msgs[d] += 1
            if d in self.ports and d not in failed:
                self.ports[d] = replace(self.ports[d], status=c.PORT_STATUS_ACTIVE)
        for d in down:
            self.down_msgs[d] += 1
            if d in self.ports:
                self.ports[d] = replace(self.ports[d], status=c.PORT_STATUS_DOWN)
        if self.lose_answers:
            return None
        return {"devices_up": [d for d in up if d not in failed], "devices_down": down,
                "failed_devices_up": failed, "failed_devices_down": []}


class Harness:
    """One host: FakeHost + AgentCore + FakeServer, stepped like ``L2Agent.iterate``."""

    def __init__(self, cfg: AgentSettings | None = None, host: FakeHost | None = None, server: FakeServer | None = None):
        self.host = host or FakeHost()
        self.server = server or FakeServer()
        self.core = AgentCore(cfg or settings())
        self.now = 0.0
        self.events: list[LinkEvent] = []
        self.stop_watch = self.host.watch_links(self.events.append)
        self.results: list[ApplyResult] = []
        self.full_scan_due = True
        self.failures: list[tuple[float, str]] = []  # (time, device) of every failed wiring
        self.ops_applied = 0

    def tap(self, pid: str, **kw) -> str:
        name = tap_name(pid)
        self.host.create_tap(name, **kw)
        return name

    def step(self, now: float | None = None) -> list:
        """One runtime iteration; returns the ops applied."""
        if now is not None:
            self.now = now
        core, now = self.core, self.now
        self._drain()
        if self.full_scan_due:
            core.observe_links(self.host.list_links(), full=True, now=now)
            core.observe_addresses(self.host.list_addresses(), self.host.list_routes())
            self.full_scan_due = False
        devices = core.devices_needing_details(now)
        if devices:
            core.observe_details(self.server.details(devices), now)
        ops = core.plan(now)
        if ops:
            result = apply(self.host, ops)
            self.results.append(result)
            self.ops_applied += len(ops)
            self.failures += [(now, d) for d in sorted(result.failed)]
            core.applied(result, now)
            if result.touched_addresses:
                core.observe_addresses(self.host.list_addresses(), self.host.list_routes())
        up, down = core.pending_reports()
        if up or down:
            core.reports_sent(up, down, self.server.update_device_list(up, down), now)
        return ops

    def _drain(self) -> None:
        events = list(self.events)
        self.events.clear()  # the watcher holds this very list
        changed = []
        for ev in events:
            if ev.kind == "overflow":
                self.full_scan_due = True
            elif ev.kind == "del":
                if changed:
                    self.core.observe_links(changed, full=False, now=self.now)
                    changed = []
                self.core.observe_link_deleted(ev.link.name if ev.link else ev.name, self.now)
            elif ev.link is not None:
                changed.append(ev.link)
        if changed:
            self.core.observe_links(changed, full=False, now=self.now)

    def settle(self, max_steps: int = 50) -> None:
        """Step at the current time until nothing is due now."""
        for _ in range(max_steps):
            self.step()
            wake = self.core.next_wakeup(self.now)
            if not self.events and (wake is None or wake > self.now):
                return
        raise AssertionError("core did not settle")

    def run_until(self, end: float, *, tick: float | None = None, reconcile: float | None = None) -> int:
        """Advance simulated time to ``end``, waking when the core asks (or every
        ``tick``); with ``reconcile``, a full scan every that many seconds."""
        steps = 0
        next_reconcile = self.now + reconcile if reconcile else None
        while self.now < end:
            if next_reconcile is not None and self.now >= next_reconcile:
                self.full_scan_due = True
                next_reconcile += reconcile
            self.settle()
            steps += 1
            wake = self.core.next_wakeup(self.now)
            nxt = end if wake is None else min(max(wake, self.now), end)
            if next_reconcile is not None:
                nxt = min(nxt, next_reconcile)
            if tick is not None:
                nxt = min(nxt, self.now + tick)
            if nxt <= self.now:
                nxt = self.now + 1e-3
            self.now = nxt
        self.settle()
        return steps

    # ---- state assertions ------------------------------------------------------------
    def master(self, name: str) -> str | None:
        link = self.host.get_link(name)
        return link.master if link else None

    def addresses(self, ifname: str) -> set[str]:
        return {a.cidr for a in self.host.list_addresses(ifname)}
