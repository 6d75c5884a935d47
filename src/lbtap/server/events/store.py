"""Port lifecycle timeline in the database, written off the request path.

Producers (API notifiers, status and details listeners in RPC threads) call ``record``,
which only queues: an agent's ``update_device_list`` must not wait for an extra
transaction before its answer. One writer thread drains the queue in order, resolves
tap names to ports, drops repeats (a port already ACTIVE on a host does not get a second
"active" row when a storm re-reports it; the storm alarm says that) and inserts the
rows in one transaction per batch. Readers call ``flush`` first so that what was
reported before the request is visible. The table is bounded: every ``PRUNE_EVERY``
rows, rows older than ``max_age`` go, then all but the newest ``max_rows``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import delete, func, select

from lbtap.domain.naming import port_id_prefix
from lbtap.server.db.engine import Database
from lbtap.server.db.models import Port
from lbtap.server.db.models_events import Event

log = logging.getLogger("lbtap.server.events")

PRUNE_EVERY = 1000
# Per-port memory of the last lifecycle state (for dropping repeats); the DB answers misses.
CACHE_PORTS = 50_000
# Kinds that describe where a port is in its life (the repeat filter compares these).
_STATE_KINDS = ("created", "bound", "unbound", "device_seen", "active", "down", "deleted")


@dataclass
class Pending:
    """One queued event. ``device`` without ``port_id``: resolve the tap name first."""

    kind: str
    at: float
    port_id: str | None = None
    device: str | None = None
    host: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class EventStore:
    """Queue-fed writer plus readers of ``lbtap_events``."""

    def __init__(self, engine, *, max_rows: int = 100_000, max_age: float = 7 * 86400.0,  # noqa: ANN001
                 clock: Callable[[], float] = time.time, start: bool = True):
        self.db = Database(engine)
        self.max_rows = max_rows
        self.max_age = max_age
        self.clock = clock
        self._queue: queue.Queue[Pending | threading.Event | None] = queue.Queue()
        self._last: OrderedDict[str, tuple[str, str | None]] = OrderedDict()  # port -> (kind, host)
        self._since_prune = 0
        # port -> when it was bound, until its first ACTIVE: the bind latency.
        self._bound_at: OrderedDict[str, float] = OrderedDict()
        self.on_bind_latency: Callable[[float], None] | None = None
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ---- producers (any thread) ---------------------------------------------------
    def record(self, kind: str, *, port_id: str | None = None, device: str | None = None,
               host: str | None = None, at: float | None = None, **detail: Any) -> None:
        """Queue one event; never blocks, never raises into the caller."""
        self._queue.put(Pending(kind, self.clock() if at is None else at, port_id, device, host, detail))

    # ---- writer thread -------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lbtap-events", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued before this call is written (False on timeout)."""
        if self._thread is None:
            self.drain()
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[Pending] = []
            markers: list[threading.Event] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    batch.append(item)
                if len(batch) >= 5000:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._write_safely(batch)
            for m in markers:
                m.set()
            if stop:
                return

    def drain(self) -> None:
        """Write whatever is queued, in this thread (tests, and a store without thread)."""
        batch: list[Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Pending):
                batch.append(item)
            elif isinstance(item, threading.Event):
                item.set()
        self._write_safely(batch)

    def _write_safely(self, batch: list[Pending]) -> None:
        if not batch:
            return
        try:
            self._write(batch)
        except Exception:  # the timeline is diagnostics: losing a batch must not kill the writer
            log.exception("could not write %d port events", len(batch))
            self._last.clear()  # what was cached may not have reached the database

    def _write(self, batch: list[Pending]) -> None:
        resolved = self._resolve([p.device for p in batch if p.port_id is None and p.device])
        ports = {p.port_id or (resolved.get(p.device or "") or (None, None))[0] for p in batch} - {None}
        self._load_last([p for p in ports if p not in self._last])
        rows: list[Event] = []
        for p in batch:
            port_id, bound_host = p.port_id, None
            if port_id is None and p.device:
                port_id, bound_host = resolved.get(p.device, (None, None))
                if port_id is None:
                    continue  # a tap no port owns: nothing to put on a timeline
                if p.kind in ("active", "down") and bound_host != p.host and bound_host:
                    continue  # the server ignored it (port bound elsewhere)
            if p.kind == "device_seen" and port_id and self._last.get(port_id, ("", None))[1] != p.host:
                # Details are only given for ports bound to the asking host; an unbound
                # one was just claimed by it (RpcHandlers binds without a notification).
                rows.append(self._row(Pending("bound", p.at, port_id, p.device, p.host, {"by": "agent claim"})))
                self._remember(port_id, "bound", p.host, p.at)
            if port_id and p.kind in ("active", "down") and self._last.get(port_id) == ("bound", p.host):
                # The agent wired it from details the server pushed, without asking: its
                # first report is the first sign the device exists on that host.
                rows.append(self._row(Pending("device_seen", p.at, port_id, p.device, p.host,
                                              {"via": "status report"})))
                self._remember(port_id, "device_seen", p.host, p.at)
            if port_id and p.kind in _STATE_KINDS:
                last = self._last.get(port_id)
                if p.kind != "created" and (last == (p.kind, p.host) or (
                        p.kind == "device_seen" and last == ("active", p.host))):
                    continue  # a repeat (same state, same host) or a routine details re-read
                self._remember(port_id, p.kind, p.host, p.at)
            rows.append(self._row(Pending(p.kind, p.at, port_id, p.device, p.host, p.detail)))
            if port_id and p.kind == "active":
                self._bind_latency(port_id, p.at)
        if rows:
            self.db.write(lambda s: s.add_all(rows))
            self._since_prune += len(rows)
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.prune()

    @staticmethod
    def _row(p: Pending) -> Event:
        return Event(at=p.at, kind=p.kind, port_id=p.port_id, device=p.device, host=p.host, detail=p.detail or None)

    def _bind_latency(self, port_id: str, at: float) -> None:
        bound = self._bound_at.pop(port_id, None)
        if bound is not None and self.on_bind_latency is not None:
            self.on_bind_latency(max(0.0, at - bound))

    def _remember(self, port_id: str, kind: str, host: str | None, at: float | None = None) -> None:
        if kind == "bound" and at is not None:
            self._bound_at[port_id] = at
            while len(self._bound_at) > CACHE_PORTS:
                self._bound_at.popitem(last=False)
        elif kind in ("unbound", "deleted"):
            self._bound_at.pop(port_id, None)
        self._last[port_id] = (kind, host)
        self._last.move_to_end(port_id)
        while len(self._last) > CACHE_PORTS:
            self._last.popitem(last=False)

    def _load_last(self, port_ids: list[str]) -> None:
        """Fill the repeat filter from the database for ports not in the cache."""
        if not port_ids:
            return

        def run(session) -> dict[str, tuple[str, str | None]]:  # noqa: ANN001
            newest = (select(Event.port_id, func.max(Event.id).label("mid"))
                      .where(Event.port_id.in_(port_ids), Event.kind.in_(_STATE_KINDS))
                      .group_by(Event.port_id).subquery())
            q = select(Event.port_id, Event.kind, Event.host).join(newest, Event.id == newest.c.mid)
            return {pid: (kind, host) for pid, kind, host in session.execute(q)}

        for pid, state in self.db.read(run).items():
            self._remember(pid, *state)

    def _resolve(self, devices: list[str]) -> dict[str, tuple[str, str]]:
        """tap name -> (port id, binding host) for the devices that name a known port."""
        prefixes: dict[str, list[str]] = {}
        for d in set(devices):
            pre = port_id_prefix(d)
            if pre:
                prefixes.setdefault(pre, []).append(d)
        if not prefixes:
            return {}
        by_len: dict[int, list[str]] = {}
        for pre in prefixes:
            by_len.setdefault(len(pre), []).append(pre)

        def run(session) -> dict[str, tuple[str, str]]:  # noqa: ANN001
            out: dict[str, tuple[str, str]] = {}
            for length, pres in by_len.items():
                for i in range(0, len(pres), 900):
                    part = pres[i:i + 900]
                    q = select(Port.id, Port.binding_host_id).where(func.substr(Port.id, 1, length).in_(part))
                    for pid, host in session.execute(q.order_by(Port.id)):
                        for d in prefixes.get(pid[:length], ()):
                            out.setdefault(d, (pid, host))
            return out

        return self.db.read(run)

    def prune(self) -> int:
        """Delete rows beyond ``max_age`` and ``max_rows``; returns how many went."""
        cutoff = self.clock() - self.max_age

        def run(session) -> int:  # noqa: ANN001
            n = session.execute(delete(Event).where(Event.at < cutoff)).rowcount or 0
            # Two statements: MariaDB cannot delete from a table it reads in a subquery.
            edge = session.scalar(select(Event.id).order_by(Event.id.desc()).offset(self.max_rows).limit(1))
            if edge is not None:
                n += session.execute(delete(Event).where(Event.id <= edge)).rowcount or 0
            return n

        removed = self.db.write(run)
        if removed:
            self._last.clear()
            log.info("pruned %d port events", removed)
        return removed

    # ---- readers ---------------------------------------------------------------------
    def query(self, *, port_id: str | None = None, host: str | None = None, kind: str | None = None,
              limit: int = 200) -> list[dict[str, Any]]:
        """Matching events, oldest first (the newest ``limit`` of them)."""
        self.flush()

        def run(session) -> list[dict[str, Any]]:  # noqa: ANN001
            q = select(Event)
            if port_id:
                q = q.where(Event.port_id == port_id)
            if host:
                q = q.where(Event.host == host)
            if kind:
                q = q.where(Event.kind == kind)
            rows = session.scalars(q.order_by(Event.id.desc()).limit(limit)).all()
            return [r.to_dict() for r in reversed(rows)]

        return self.db.read(run)
