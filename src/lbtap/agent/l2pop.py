"""l2population agent extension: the VXLAN devices' FDB follows the server's entries.

Only in unicast VXLAN mode (``local_ip`` set, no ``vxlan_group``): with a multicast
group the kernel floods to the group and learns, so there is nothing to program.

Flow (see ``lbtap.agent.extensions`` for the hooks):
* ``fdb_add`` / ``fdb_remove`` casts are queued by their handlers, applied to the
  ``FdbTable`` at the next ``process``;
* ``port_details`` tells which VXLAN networks (and VNIs) are present on this host;
* ``process`` turns table + local networks into the wanted kernel entries and applies
  the difference against what it applied last (``add_fdb`` / ``delete_fdb`` on the
  host worker); the kernel itself is re-read at start, after a resync, after a failure
  and every ``reconcile_interval``;
* resync: ``get_fdb_entries(host)`` at start, after the bus reconnects (fanout messages
  sent while we were away are lost) and every ``reconcile_interval``. It runs as a task
  so a slow server never stalls wiring; casts that arrive meanwhile are replayed on top
  of its answer, so nothing newer than the snapshot is lost;
* join pull: when a VXLAN network becomes local (``port_details``), its peers' entries
  are asked for (``get_fdb_entries(host, network_ids)``, one call for the networks that
  appeared in a pass, none when a full resync starts in that same pass). The server
  does not push them: it cannot tell reliably when a host joins (its reads may lag
  the host's reports), the agent can. Casts are taken into the table for every network,
  local or not, so one that came before the question is in the table (and older than the
  answer, which replaces the network's entries); one taken while the question is out is
  replayed on top of the answer, as for the resync.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Mapping

from lbtap.agent.extensions import BaseExtension, CastHandler
from lbtap.agent.l2pop_fdb import FdbTable, KernelFdb, diff, kernel_entries
from lbtap.domain import constants as c
from lbtap.domain.models import DeviceDetails
from lbtap.domain.naming import VXLAN_PREFIX
from lbtap.drivers.host.base import FdbEntry
from lbtap.drivers.host.errors import HostError
from lbtap.rpc import topics

if TYPE_CHECKING:
    from lbtap.agent.runtime import L2Agent

log = logging.getLogger("lbtap.agent.l2pop")

RESYNC_TIMEOUT = 5.0
BACKOFF_MAX = 10.0
BUS_WATCH_PERIOD = 0.5


class L2PopExtension(BaseExtension):
    """Keeps ``vxlan-<vni>`` FDBs in line with l2population entries."""

    name = "l2pop"

    def __init__(self) -> None:
        self.enabled = False
        self.table = FdbTable()
        self.local: dict[str, int] = {}  # network id -> VNI, VXLAN networks on this host
        self.devices: dict[str, str] = {}  # tap -> network id
        self.applied: set[KernelFdb] = set()
        self._casts: list[tuple[str, dict]] = []
        self._replay: list[tuple[str, dict]] | None = None  # casts during a resync
        self._resync_task: asyncio.Task | None = None
        self._resync_at: float | None = 0.0  # None: not due
        self._resync_failures = 0
        self._join_pending: set[str] = set()  # networks that became local, not asked yet
        self._join_task: asyncio.Task | None = None
        self._join_nets: set[str] = set()  # what the running join pull asks for
        self._join_replay: list[tuple[str, dict]] | None = None  # casts during it
        self._join_at = 0.0
        self._join_failures = 0
        self._dirty = True
        self._verify = True  # re-read the kernel before the next diff
        self._retry_at = 0.0
        self._failures = 0
        self._next_check = 0.0
        self._watch: asyncio.Task | None = None
        self.stats = {"resyncs": 0, "joins": 0, "added": 0, "deleted": 0, "errors": 0}

    # ---- hooks -----------------------------------------------------------------------
    def bind(self, agent: "L2Agent") -> None:
        super().bind(agent)
        cfg = agent.cfg
        self.own_ip = cfg.local_ip
        self.interval = cfg.reconcile_interval
        self.enabled = bool(cfg.local_ip) and not cfg.vxlan_group and cfg.l2_population

    async def start(self) -> None:
        if self.enabled:
            self._watch = asyncio.create_task(self._watch_bus(), name="lbtap-l2pop-bus-watch")

    async def stop(self) -> None:
        for task in (self._watch, self._resync_task, self._join_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def cast_handlers(self) -> Mapping[str, CastHandler]:
        if not self.enabled:
            return {}
        return {topics.FDB_ADD: lambda kw: self._queue(topics.FDB_ADD, kw),
                topics.FDB_REMOVE: lambda kw: self._queue(topics.FDB_REMOVE, kw)}

    def _queue(self, method: str, kwargs: dict[str, Any]) -> None:
        entries = kwargs.get("fdb_entries")
        if isinstance(entries, dict):
            self._casts.append((method, entries))

    def port_details(self, details: DeviceDetails) -> None:
        seg = details.segment
        if seg is not None and seg.network_type == c.TYPE_VXLAN and details.network_id and seg.segmentation_id:
            self.devices[details.device] = details.network_id
            if self.enabled and details.network_id not in self.local:
                self._join_pending.add(details.network_id)
            if self.local.get(details.network_id) != seg.segmentation_id:
                self.local[details.network_id] = seg.segmentation_id
                self._dirty = self._verify = True  # a (re)created device starts empty
        else:
            self.device_gone(details.device)

    def device_gone(self, device: str) -> None:
        net = self.devices.pop(device, None)
        if net is not None and net not in self.devices.values():
            self.local.pop(net, None)
            self._join_pending.discard(net)
            self._dirty = True

    def next_wakeup(self, now: float) -> float | None:
        if not self.enabled:
            return None
        times = [self._next_check]
        if self._dirty:
            times.append(self._retry_at)
        if self._resync_at is not None and self._resync_task is None:
            times.append(self._resync_at)
        if self._join_pending and self._join_task is None:
            times.append(self._join_at)
        return min(times)

    def snapshot(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "networks": len(self.local), "entries": len(self.applied),
                "table": self.table.count(), **self.stats}

    # ---- the work --------------------------------------------------------------------
    async def process(self, now: float) -> None:
        if not self.enabled:
            return
        self._take_casts()
        self._take_resync(now)
        self._take_join(now)
        if self._resync_task is None and self._resync_at is not None and now >= self._resync_at:
            self._replay = []
            self._resync_task = asyncio.create_task(self._resync(), name="lbtap-l2pop-resync")
            # The answer is taken at the next pass: ask for one as soon as it lands.
            self._resync_task.add_done_callback(lambda _t: self.agent.wake())
            # It covers every network with a port bound here, those just joined too.
            self._join_pending.clear()
        if self._join_pending and self._join_task is None and now >= self._join_at:
            # Replay from now on: no await between taking the casts and asking.
            self._join_nets, self._join_pending = self._join_pending, set()
            self._join_replay = []
            self._join_task = asyncio.create_task(self._pull(sorted(self._join_nets)), name="lbtap-l2pop-join")
            self._join_task.add_done_callback(lambda _t: self.agent.wake())
        if now >= self._next_check:
            self._dirty = self._verify = True
            self._next_check = now + self.interval
        if self._dirty and now >= self._retry_at:
            await self._sync(now)

    def _take_casts(self) -> None:
        casts, self._casts = self._casts, []
        for method, entries in casts:
            (self.table.add if method == topics.FDB_ADD else self.table.remove)(entries)
            if self._replay is not None:
                self._replay.append((method, entries))
            if self._join_replay is not None:
                self._join_replay.append((method, entries))
        if casts:
            self._dirty = True

    def _take_resync(self, now: float) -> None:
        task = self._resync_task
        if task is None or not task.done():
            return
        self._resync_task = None
        replay, self._replay = self._replay or [], None
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self._resync_failures += 1
            delay = min(BACKOFF_MAX, 0.5 * 2 ** (self._resync_failures - 1))
            log.warning("fdb resync failed (retry in %.1f s): %s", delay, exc)
            self._resync_at = now + delay
            return
        self._resync_failures = 0
        table = FdbTable.from_entries(task.result())
        for method, entries in replay:  # newer than (or as new as) the snapshot
            (table.add if method == topics.FDB_ADD else table.remove)(entries)
        self.table = table
        self.stats["resyncs"] += 1
        self._resync_at = now + self.interval
        self._dirty = self._verify = True

    def _take_join(self, now: float) -> None:
        task = self._join_task
        if task is None or not task.done():
            return
        self._join_task = None
        nets, self._join_nets = self._join_nets, set()
        replay, self._join_replay = self._join_replay or [], None
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self._join_failures += 1
            delay = min(BACKOFF_MAX, 0.5 * 2 ** (self._join_failures - 1))
            log.warning("fdb pull for %d joined network(s) failed (retry in %.1f s): %s", len(nets), delay, exc)
            self._join_pending |= {n for n in nets if n in self.local}
            self._join_at = now + delay
            return
        self._join_failures = 0
        self.table.replace(nets, task.result())
        for method, entries in replay:  # newer than (or as new as) the answer
            mine = {n: b for n, b in entries.items() if n in nets}
            if mine:
                (self.table.add if method == topics.FDB_ADD else self.table.remove)(mine)
        self.stats["joins"] += 1
        self._dirty = True

    async def _pull(self, net_ids: list[str]) -> dict[str, Any]:
        # A server without ``network_ids`` answers for every network: only these are taken.
        return await self.agent.plugin.get_fdb_entries(self.agent.cfg.host, net_ids, timeout=RESYNC_TIMEOUT)

    async def _resync(self) -> dict[str, Any]:
        return await self.agent.plugin.get_fdb_entries(self.agent.cfg.host, timeout=RESYNC_TIMEOUT)

    async def _sync(self, now: float) -> None:
        desired = kernel_entries(self.table, self.local, self.own_ip)
        ifnames = {e.ifname for e in desired} | {f"{VXLAN_PREFIX}{vni}" for vni in self.local.values()}
        if self._verify:
            actual = await self.agent.on_host(self._read, ifnames)
        else:
            # Devices of networks that left the host went with their entries.
            actual = {e for e in self.applied if e.ifname in ifnames}
        add, delete = diff(desired, actual)
        applied, errors = await self.agent.on_host(self._apply, add, delete, actual)
        self.applied = applied
        self.stats["added"] += len(add)
        self.stats["deleted"] += len(delete)
        if errors:
            self._failures += 1
            self.stats["errors"] += len(errors)
            delay = min(BACKOFF_MAX, 0.5 * 2 ** (self._failures - 1))
            log.warning("fdb: %d of %d changes failed (retry in %.1f s): %s", len(errors), len(add) + len(delete),
                        delay, "; ".join(errors[:3]))
            self._retry_at = now + delay
            self._verify = True
            return
        if add or delete:
            log.debug("fdb: %d added, %d deleted", len(add), len(delete))
        self._failures = 0
        self._dirty = self._verify = False

    # ---- host worker (these run on the driver's thread) -------------------------------
    def _read(self, ifnames: set[str]) -> set[KernelFdb]:
        return {KernelFdb(e.ifname, e.mac, e.dst) for e in self.agent.driver.list_fdb()
                if e.ifname in ifnames and e.master is None and e.dst}

    def _apply(self, add: list[KernelFdb], delete: list[KernelFdb],
               actual: set[KernelFdb]) -> tuple[set[KernelFdb], list[str]]:
        driver = self.agent.driver
        done = set(actual)
        errors = []
        for e in delete:
            try:
                driver.delete_fdb(FdbEntry(e.mac, e.ifname, dst=e.dst))
                done.discard(e)
            except HostError as err:
                errors.append(str(err))
        for e in add:
            try:
                driver.add_fdb(FdbEntry(e.mac, e.ifname, dst=e.dst))
                done.add(e)
            except HostError as err:
                errors.append(str(err))
        return done, errors

    # ---- bus watch ---------------------------------------------------------------------
    async def _watch_bus(self) -> None:
        """Resync once the bus is back after a connection loss (no I/O, just counters)."""
        bus = self.agent.bus
        seen = getattr(bus, "disconnects", 0)
        while True:
            await asyncio.sleep(BUS_WATCH_PERIOD)
            n = getattr(bus, "disconnects", 0)
            if n != seen and getattr(bus, "connected", True):
                seen = n
                log.info("bus reconnected: fdb resync")
                self._resync_at = 0.0
                self.agent.wake()
