"""l2population on the server: tell agents where remote ports of VXLAN networks live.

Neutron's mechanism, lbtap-sized. Each agent's VTEP is ``configurations.tunneling_ip``
of its heartbeat; a port counts once it is ACTIVE on its bound host. The messages carry
Neutron's ``fdb_entries`` shape::

    {network_id: {"segment_id": vni, "network_type": "vxlan",
                  "ports": {vtep_ip: [[mac, ip], ..., FLOODING_ENTRY]}}}

* ports of host H go up on network N: one fanout ``fdb_add`` with their [mac, ip] pairs
  under H's VTEP, always with H's flooding entry (agents hold entries in sets: a repeat
  changes nothing, and no kernel call);
* ports go down or are deleted: one fanout ``fdb_remove`` (with the flooding entry once
  H has no ACTIVE port left on N);
* ``get_fdb_entries(host, network_ids=None)``: everything a (re)starting agent needs,
  for its resync, or the networks that just appeared on the host (the agent asks when a
  VXLAN network becomes local: it knows when, the server does not, see below).

Decisions (what to send) are pure functions of rows; ``L2Population`` reads the rows
and hands messages to one sender task, so casts leave in the order they were decided
(an add and the remove that follows it must never swap).

Why no decision depends on "is it H's first port on N": the rows are read by the
l2population thread after the report was committed, possibly after H's next report
too; two reads could then both see two ACTIVE ports and neither would send the
flooding entry or H's full set. The flooding entry therefore travels with every add,
and H pulls N's full set itself. Only the removal of the flooding entry still counts
ports, and errs towards keeping it: a late read sees ports that went ACTIVE since
(kept), and an add decided later is sent later, flooding entry included.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.rpc import topics
from lbtap.server.db.engine import Database
from lbtap.server.db.models import Agent, IPAllocation, Network, Port
from lbtap.server.metrics import REGISTRY
from lbtap.server.outbox import InFlight
from lbtap.server.services.base import chunks

log = logging.getLogger(__name__)

FLOODING_ENTRY = ["00:00:00:00:00:00", "0.0.0.0"]

L2POP_MESSAGES = Counter(
    "lbtap_l2pop_messages_total", "l2population messages sent to agents, by method and target.",
    ["method", "target"], registry=REGISTRY,
)


@dataclass(frozen=True)
class PortFdb:
    """What l2population needs of one port."""

    id: str
    network_id: str
    host: str
    mac: str
    ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetSeg:
    segment_id: int
    network_type: str = c.TYPE_VXLAN


# ---------------------------------------------------------------------------- pure
def port_entries(port: PortFdb) -> list[list[str]]:
    """[mac, ip] per fixed IP; a port without IPs still needs its MAC forwarded."""
    return [[port.mac, ip] for ip in sorted(port.ips)] or [[port.mac, "0.0.0.0"]]


def _net_block(seg: NetSeg) -> dict[str, Any]:
    return {"segment_id": seg.segment_id, "network_type": seg.network_type, "ports": {}}


def full_entries(ports: Iterable[PortFdb], nets: dict[str, NetSeg], vteps: dict[str, str],
                 *, exclude_vtep: str | None = None) -> dict[str, Any]:
    """Every ACTIVE port of ``ports`` under its host's VTEP, with one flooding entry per
    VTEP, for the networks in ``nets``; ports of hosts without a VTEP are left out."""
    out: dict[str, Any] = {}
    for p in sorted(ports, key=lambda p: p.id):
        ip = vteps.get(p.host)
        if p.network_id not in nets or not ip or ip == exclude_vtep:
            continue
        block = out.setdefault(p.network_id, _net_block(nets[p.network_id]))
        entries = block["ports"].setdefault(ip, [list(FLOODING_ENTRY)])
        entries.extend(port_entries(p))
    return out


def transition_entries(changed: Iterable[PortFdb], still_active: dict[str, int], nets: dict[str, NetSeg],
                       vtep: str) -> dict[str, Any]:
    """Entries for ports of one host that changed state (all up, or all down).

    ``still_active[net]`` is how many of the host's ports on ``net`` are ACTIVE beyond
    the changed ones: 0 means the host joins (up) or leaves (down) the network, so the
    flooding entry travels along."""
    out: dict[str, Any] = {}
    for p in sorted(changed, key=lambda p: p.id):
        if p.network_id not in nets:
            continue
        block = out.setdefault(p.network_id, _net_block(nets[p.network_id]))
        first = still_active.get(p.network_id, 0) == 0
        entries = block["ports"].setdefault(vtep, [list(FLOODING_ENTRY)] if first else [])
        entries.extend(port_entries(p))
    return out


def merge_entries(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``into`` extended by ``more`` (same shape): two messages of one kind sent as one."""
    for net_id, block in more.items():
        mine = into.setdefault(net_id, {**block, "ports": {}})
        for vtep, entries in block["ports"].items():
            have = mine["ports"].setdefault(vtep, [])
            have.extend(e for e in entries if e not in have)
    return into


# ---------------------------------------------------------------------------- I/O
class L2Population:
    """Reads ports and VTEPs from the database and queues ``fdb_*`` messages.

    ``send(method, fdb_entries, host)`` delivers one message (host None: fanout); it is
    called from the one sender task, in decision order.
    """

    def __init__(self, db: Database, send: Callable[[str, dict, str | None], Any], *, threaded: bool = True):
        self.db = db
        self._send = send
        # Hooks only queue work: one thread does the reads, in arrival order, so a
        # status report's answer never waits for l2population's queries.
        self._work: queue.SimpleQueue | None = queue.SimpleQueue() if threaded else None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.in_flight = InFlight()

    def _defer(self, fn: Callable[..., None], *args: Any) -> None:
        if self._work is None:
            fn(*args)
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name="lbtap-l2pop", daemon=True)
                self._thread.start()
        self.in_flight.add()
        self._work.put((fn, args))

    def _worker(self) -> None:
        assert self._work is not None
        while True:
            fn, args = self._work.get()
            try:
                fn(*args)
            except Exception:  # one bad event must not stop l2population
                log.exception("l2population %s failed", getattr(fn, "__name__", fn))
            finally:
                self.in_flight.done()

    def idle(self) -> bool:
        """True when no read is queued and every message from one has been sent."""
        sender_idle = getattr(self._send, "idle", None)
        return self.in_flight.idle() and (sender_idle is None or sender_idle())

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until the queued reads are done and their messages sent; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self.in_flight.wait_idle(timeout):
            return False
        sender_drain = getattr(self._send, "drain", None)
        return True if sender_drain is None else await sender_drain(max(0.0, deadline - loop.time()))

    # -- reads --------------------------------------------------------------------
    @staticmethod
    def _vteps(session: Session) -> dict[str, str]:
        rows = session.execute(select(Agent.host, Agent.configurations).where(
            Agent.agent_type == c.AGENT_TYPE_LINUXBRIDGE))
        return {h: conf.get("tunneling_ip") for h, conf in rows if (conf or {}).get("tunneling_ip")}

    @staticmethod
    def _nets(session: Session, ids: Iterable[str]) -> dict[str, NetSeg]:
        out = {}
        for part in chunks(sorted(set(ids))):
            for nid, ntype, seg in session.execute(select(Network.id, Network.network_type, Network.segmentation_id)
                                                   .where(Network.id.in_(part), Network.network_type == c.TYPE_VXLAN)):
                out[nid] = NetSeg(seg, ntype)
        return out

    @staticmethod
    def _ports(session: Session, where) -> list[PortFdb]:  # noqa: ANN001
        rows = session.execute(select(Port.id, Port.network_id, Port.binding_host_id, Port.mac_address).where(*where)).all()
        ips: dict[str, list[str]] = {r.id: [] for r in rows}
        for part in chunks(list(ips)):
            for pid, ip in session.execute(select(IPAllocation.port_id, IPAllocation.ip_address)
                                           .where(IPAllocation.port_id.in_(part))):
                ips[pid].append(ip)
        return [PortFdb(r.id, r.network_id, r.binding_host_id, r.mac_address, tuple(ips[r.id])) for r in rows]

    def _active_counts(self, session: Session, host: str, nets: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in chunks(sorted(set(nets))):
            for (nid,) in session.execute(select(Port.network_id).where(
                    Port.network_id.in_(part), Port.binding_host_id == host, Port.status == c.PORT_STATUS_ACTIVE)):
                out[nid] = out.get(nid, 0) + 1
        return out

    # -- events -------------------------------------------------------------------
    def status_changed(self, host: str, devices_up: list[str], devices_down: list[str]) -> None:
        """Status listener: after a host's report was applied (queues the work)."""
        if devices_up or devices_down:
            self._defer(self._status_changed, host, list(devices_up), list(devices_down))

    def _status_changed(self, host: str, devices_up: list[str], devices_down: list[str]) -> None:
        from lbtap.server.rpc_handlers import RpcHandlers

        if not devices_up and not devices_down:
            return

        def run(session: Session) -> list[tuple[str, dict, str | None]]:
            vtep = self._vteps(session).get(host)
            if not vtep:
                return []
            found = RpcHandlers._resolve(session, list(devices_up) + list(devices_down))
            want_up = {found[d].id for d in devices_up if d in found}
            want_down = {found[d].id for d in devices_down if d in found} - want_up
            rows = [r for r in {r.id: r for r in found.values()}.values() if r.binding_host_id == host]
            up_ids = {r.id for r in rows if r.id in want_up and r.status == c.PORT_STATUS_ACTIVE}
            down_ids = {r.id for r in rows if r.id in want_down and r.status != c.PORT_STATUS_ACTIVE}
            if not up_ids and not down_ids:
                return []
            nets = self._nets(session, {r.network_id for r in rows if r.id in up_ids | down_ids})
            if not nets:
                return []
            changed = {p.id: p for p in self._ports(session, (Port.id.in_(sorted(up_ids | down_ids)),))}
            msgs: list[tuple[str, dict, str | None]] = []
            ups = [changed[i] for i in up_ids if i in changed]
            if ups:
                # As if first on every network: the flooding entry always travels along.
                add = transition_entries(ups, {}, nets, vtep)
                if add:
                    msgs.append((topics.FDB_ADD, add, None))
            downs = [changed[i] for i in down_ids if i in changed]
            if downs:
                active = self._active_counts(session, host, nets)
                remove = transition_entries(downs, active, nets, vtep)
                if remove:
                    msgs.append((topics.FDB_REMOVE, remove, None))
            return msgs

        self._enqueue(self.db.read(run))

    def port_deleted(self, port: dict) -> None:
        """Notifier hook: a bound port that is deleted leaves its host's entries."""
        self._port_gone(port)

    def port_updated(self, port: dict, original: dict | None = None) -> None:
        """Notifier hook: a port moved to another host leaves the old host's entries."""
        old_host = (original or {}).get("binding:host_id")
        if original and old_host and old_host != port.get("binding:host_id"):
            self._port_gone(original)

    def _port_gone(self, port: dict) -> None:
        self._defer(self._port_gone_now, port)

    def _port_gone_now(self, port: dict) -> None:
        host = port.get("binding:host_id") or ""
        if not host:
            return
        # Whatever its status: a port deleted just after going DOWN may have had its
        # down report processed here only once the row was gone (nothing withdrawn then).
        # Withdrawing entries the agents no longer hold is a no-op for them.
        gone = PortFdb(port["id"], port["network_id"], host, port["mac_address"],
                       tuple(f["ip_address"] for f in port.get("fixed_ips") or ()))

        def run(session: Session) -> list[tuple[str, dict, str | None]]:
            vtep = self._vteps(session).get(host)
            nets = self._nets(session, [gone.network_id])
            if not vtep or not nets:
                return []
            active = self._active_counts(session, host, nets)
            # The deleted row is gone already; a moved one no longer counts for ``host``.
            remove = transition_entries([gone], active, nets, vtep)
            return [(topics.FDB_REMOVE, remove, None)] if remove else []

        self._enqueue(self.db.read(run))

    def get_fdb_entries(self, host: str, network_ids: Iterable[str] | None = None, **_ignored: Any) -> dict[str, Any]:
        """RPC: the full remote set of every VXLAN network ``host`` has ports bound on
        (only those of ``network_ids`` when given: networks that just became local)."""
        def run(session: Session) -> dict[str, Any]:
            vteps = self._vteps(session)
            query = select(Port.network_id).where(Port.binding_host_id == host)
            if network_ids is not None:
                wanted = sorted({network_ids} if isinstance(network_ids, str) else {str(n) for n in network_ids})
                if not wanted:
                    return {}
                net_ids = set()
                for part in chunks(wanted):
                    net_ids |= {n for (n,) in session.execute(query.where(Port.network_id.in_(part)).distinct())}
            else:
                net_ids = {n for (n,) in session.execute(query.distinct())}
            nets = self._nets(session, net_ids)
            if not nets:
                return {}
            peers = self._ports(session, (Port.network_id.in_(sorted(nets)), Port.status == c.PORT_STATUS_ACTIVE,
                                          Port.binding_host_id != host))
            return full_entries(peers, nets, vteps, exclude_vtep=vteps.get(host))

        return self.db.read(run)

    # -- sending ------------------------------------------------------------------
    def _enqueue(self, msgs: list[tuple[str, dict, str | None]]) -> None:
        for m in msgs:
            self._send(*m)


class _Sender:
    """One task on the server loop sends the queued messages in order."""

    def __init__(self, bus: Any, loop: asyncio.AbstractEventLoop):
        from lbtap.rpc.proxies import AgentNotifier

        self.agents = AgentNotifier(bus)
        self.loop = loop
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.in_flight = InFlight()  # messages handed over and not yet sent (or given up)

    def __call__(self, method: str, entries: dict, host: str | None) -> None:
        # Called from worker threads (status listeners, API notifier) or from the loop.
        self.in_flight.add()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._put((method, entries, host))
            return
        try:
            self.loop.call_soon_threadsafe(self._put, (method, entries, host))
        except RuntimeError as e:  # the server's loop has ended: nobody is left to send
            self.in_flight.done()
            log.warning("l2population %s dropped: %s", method, e)

    def _put(self, item: tuple[str, dict, str | None]) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.task = self.loop.create_task(self._run(), name="lbtap-l2pop-sender")
        self.queue.put_nowait(item)

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            method, entries, host = await self.queue.get()
            taken = 1
            # Under a burst, reports queue up faster than casts leave: fold the run of
            # queued messages of the same kind and target into one (order is kept).
            while not self.queue.empty():
                nxt = self.queue._queue[0]  # type: ignore[attr-defined]
                if (nxt[0], nxt[2]) != (method, host):
                    break
                merge_entries(entries, self.queue.get_nowait()[1])
                taken += 1
            send = self.agents.fdb_add if method == topics.FDB_ADD else self.agents.fdb_remove
            try:
                await send(entries, host=host)
                L2POP_MESSAGES.labels(method=method, target="host" if host else "fanout").inc()
            except Exception as e:  # agents resync after a reconnect and periodically
                log.warning("l2population %s not sent: %s", method, e)
            finally:
                self.in_flight.done(taken)

    def idle(self) -> bool:
        return self.in_flight.idle()

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every message handed over so far has been sent; False on timeout."""
        return await self.in_flight.wait_idle(timeout)


def install(parts: Any) -> None:
    """Server extension hook: status listener, notifier and the resync RPC method."""
    l2pop = L2Population(Database(parts.engine), _Sender(parts.bus, parts.loop))
    parts.status_listeners.append(l2pop.status_changed)
    parts.notifiers.append(l2pop)
    parts.rpc_handlers[topics.GET_FDB_ENTRIES] = l2pop.get_fdb_entries
    parts.l2pop = l2pop  # for tests and diagnostics
