"""``DetailsFlow``: what the L2 agent knows from the server about each device.

A device is wired only from details the server gave, so this flow decides what to
ask, which answers and pushes to take, and what a server cast undoes. ``AgentCore``
inherits it; the state lives in ``AgentCore.__init__`` next to the rest.

Why it is shaped this way:

* One request per device at a time (``asking``): a second would race the first. A
  change seen while asking (``port_update``, a push, an unsure report) sets
  ``ask_again`` instead, because the answer in flight may predate it; an answer that
  never comes stops blocking after ``DETAILS_ANSWER_TIMEOUT``.
* A device the server does not know, or binds to another host, is not wired: it is
  asked about again with backoff, as is one whose request failed.
* Deletion wins over anything read before it: an orphaned tap ignores stale answers,
  and a tombstone keeps a late push from resurrecting a deleted port's tap.
* Pushes (``offer_details``) arrive apart from other casts, so one is taken only where
  it cannot undo newer knowledge, and never seeds the reporter's idea of the server's
  status; see ``offer_details``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from lbtap.agent.core.devices import DeviceRecord, server_says_up
from lbtap.agent.core.plan import PortWiring
from lbtap.agent.core.reporter import Reporter
from lbtap.agent.core.retry import Backoff
from lbtap.domain.models import DeviceDetails
from lbtap.domain.naming import tap_name

log = logging.getLogger("lbtap.agent.core")

#: A details request unanswered for this long (the server left a device out of its
#: answer, or the runtime lost the batch) no longer blocks asking again.
DETAILS_ANSWER_TIMEOUT = 30.0
#: Taps of deleted ports remembered so a late push cannot resurrect them.
MAX_TOMBSTONES = 4096


def _newer(a: DeviceDetails, b: DeviceDetails) -> bool:
    """Whether ``a`` was read after ``b`` (both revisions at least as new, one newer);
    details without revisions (an older server) count as newer."""
    if a.revision is None or b.revision is None:
        return True
    return a.revision != b.revision and all(x >= y for x, y in zip(a.revision, b.revision))


class DetailsFlow:
    """Asking for device details, taking answers and pushes, and the server's casts
    that only change what is known about devices (a mixin of ``AgentCore``).

    ``AgentCore`` provides the state below and ``_tick``, ``_mark_dirty``,
    ``_drop_details`` and ``_set_network``.
    """

    reporter: Reporter
    counters: dict[str, int]
    _devices: dict[str, DeviceRecord]
    _want_details: set[str]
    _net_devices: dict[str, set[str]]
    _details_retry: Backoff
    _wire_retry: Backoff
    _pushed: dict[str, DeviceDetails]
    _tombstones: dict[str, None]
    _fresh: list[DeviceDetails]

    # ---- details from the server ---------------------------------------------------------------
    def devices_needing_details(self, now: float) -> list[str]:
        """Devices to ask the server about now; they count as asked until answered."""
        self._tick(now)
        out = [n for n in self._want_details if self._may_ask(n, now)]
        for name in out:
            dev = self._devices[name]
            dev.asking, dev.asked_at = True, now
        self.counters["details_requested"] += len(out)
        return sorted(out)

    def _may_ask(self, name: str, now: float) -> bool:
        dev = self._devices[name]
        if dev.asking and now - dev.asked_at < DETAILS_ANSWER_TIMEOUT:
            return False
        return self._details_retry.due(name, now)

    def observe_details(self, details: Iterable[DeviceDetails | Mapping[str, Any]], now: float) -> None:
        """Answers of ``get_devices_details_list`` (``DeviceDetails`` or wire dicts)."""
        self._tick(now)
        for item in details:
            d = item if isinstance(item, DeviceDetails) else DeviceDetails.from_wire(dict(item))
            dev = self._devices.get(d.device)
            if dev is None:
                continue  # went away while we asked
            dev.asking = False
            if dev.ask_again:
                dev.ask_again = False
            else:
                self._want_details.discard(d.device)
            if dev.orphan:
                continue  # deleted while we asked; a stale answer must not resurrect it
            if not d.known:
                self._unknown(dev, now, "bound to another host" if d.bound_elsewhere else "unknown to the server")
                continue
            self._accept(dev, d)

    def _accept(self, dev: DeviceRecord, d: DeviceDetails, *, with_status: bool = True) -> None:
        self._pushed.pop(dev.name, None)  # whatever was pushed earlier is older than this
        self._tombstones.pop(dev.name, None)
        self._details_retry.forget(dev.name)
        old = dev.details
        if old is not None and old.network_id != d.network_id:
            self._drop_details(dev)
        dev.details = d
        dev.wiring = PortWiring(dev.name, d.network_id or "", d.admin_state_up)
        self._net_devices.setdefault(d.network_id or "", set()).add(dev.name)
        self._set_network(d.network_id or "", d)
        if with_status:
            self.reporter.server_status(dev.name, server_says_up(d.status))
        self._wire_retry.forget(dev.name)  # new information: try at once
        dev.error = ""
        self._mark_dirty(dev)
        self._fresh.append(d)

    def offer_details(self, details: Iterable[DeviceDetails | Mapping[str, Any]], now: float) -> None:
        """Details the server pushed unasked (a port bound to this host was created or
        changed), so a tap that appears later needs no ``get_devices_details_list``.

        Pushes travel apart from other casts (and may come from another server), so one
        is only used where it cannot undo newer knowledge: it must be newer (port and
        network revisions) than the details held; it never answers a device being asked
        about, due a re-read (``network_update``), or whose last report is *unsure*; it
        never seeds the reporter's idea of the server's status (a stale ACTIVE would
        swallow an up, a stale DOWN cause a duplicate), so a tap with report history or a
        push claiming ACTIVE asks the server instead. A push for a deleted or moved-away
        port's tap (tombstone) is dropped; one for an orphaned tap whose port came back
        makes it ask. Pushes for absent taps wait, keyed by tap, until it appears;
        ``network_updated``/``network_deleted``, ``port_deleted`` and ``forget_pushed``
        (bus reconnect: casts may have been lost) drop them.
        """
        self._tick(now)
        unsure = set(self.reporter.unsure())
        for item in details:
            d = item if isinstance(item, DeviceDetails) else DeviceDetails.from_wire(dict(item))
            if not d.known or d.port_id is None:
                continue
            dev = self._devices.get(d.device)
            if dev is None:
                if d.device in self._tombstones or self.reporter.knows(d.device) or server_says_up(d.status):
                    continue  # it will ask when it appears
                held = self._pushed.get(d.device)
                if held is None or _newer(d, held):
                    self._pushed[d.device] = d
                continue
            if dev.orphan:
                self.port_updated(d.port_id, now)  # bound here again: read it, do not trust a push
                continue
            if dev.asking:
                dev.ask_again = True  # the answer in flight may predate this change
                continue
            if d.device in unsure or d.device in self._want_details:
                continue  # the server's answer decides
            if dev.details is not None and not _newer(d, dev.details):
                continue
            self.counters["details_pushed"] += 1
            self._accept(dev, d, with_status=False)

    def refresh_details(self, now: float) -> int:
        """Ask the server again about every device it told us about (the safety net for a
        lost ``port_update`` or push); returns how many. Status is only re-read, never
        re-reported: the reporter seeds nothing it already holds."""
        self._tick(now)
        names = [n for n, dev in self._devices.items() if dev.details is not None and not dev.orphan]
        for name in names:
            dev = self._devices[name]
            self._want_details.add(name)
            if dev.asking:
                dev.ask_again = True
        return len(names)

    def forget_pushed(self) -> None:
        """Drop every pushed-but-unused details (they may have missed later casts)."""
        self._pushed.clear()

    def take_fresh_details(self) -> list[DeviceDetails]:
        """Details accepted since the last call and still current (answers and pushes),
        for extensions: a port deleted meanwhile is not handed out again."""
        out, self._fresh = self._fresh, []
        return [d for d in out if (dev := self._devices.get(d.device)) is not None and dev.details is d]

    def _unknown(self, dev: DeviceRecord, now: float, why: str) -> None:
        """Do not wire what the server does not know; ask again with backoff."""
        self.counters["details_unknown"] += 1
        if dev.details is not None:
            self._drop_details(dev)
        self.reporter.forget(dev.name)
        self._want_details.add(dev.name)
        at = self._details_retry.failed(dev.name, now, error=why)
        log.info("device %s %s; asking again in %.1fs", dev.name, why, at - now)

    def details_failed(self, devices: list[str], now: float) -> None:
        """The details request for ``devices`` failed (RPC error): retry them later."""
        self._tick(now)
        for name in devices:
            dev = self._devices.get(name)
            if dev is None:
                continue
            dev.asking = False
            dev.ask_again = False
            self._want_details.add(name)
            self._details_retry.failed(name, now, error="details request failed")

    # ---- casts from the server -------------------------------------------------------------------
    def port_updated(self, port_id: str, now: float) -> None:
        """Re-read the port's details now (admin state, network, MTU may have changed)."""
        self._tick(now)
        dev = self._devices.get(tap_name(port_id))
        if dev is None:
            return
        dev.orphan = False
        self._want_details.add(dev.name)
        self._details_retry.forget(dev.name)
        if dev.asking:
            dev.ask_again = True

    def port_deleted(self, port_id: str, now: float) -> None:
        """Forget the port; its bridge goes once no tap is left in it."""
        self._tick(now)
        name = tap_name(port_id)
        self.reporter.forget(name)
        self._pushed.pop(name, None)
        self._tombstones[name] = None
        while len(self._tombstones) > MAX_TOMBSTONES:
            del self._tombstones[next(iter(self._tombstones))]
        dev = self._devices.get(name)
        if dev is None:
            return
        self._drop_details(dev)
        dev.orphan = True
        dev.ask_again = False
        self._want_details.discard(name)
        self._details_retry.forget(name)

    def network_deleted(self, network_id: str, now: float) -> None:
        for name in [n for n, d in self._pushed.items() if d.network_id == network_id]:
            del self._pushed[name]
        for name in sorted(self._net_devices.get(network_id, ())):
            dev = self._devices[name]
            self.port_deleted(dev.details.port_id if dev.details and dev.details.port_id else name[3:], now)

    def network_updated(self, network_id: str, now: float) -> None:
        """Segment attributes (MTU) may have changed: re-read details of its devices."""
        for name in [n for n, d in self._pushed.items() if d.network_id == network_id]:
            del self._pushed[name]
        for name in sorted(self._net_devices.get(network_id, ())):
            dev = self._devices[name]
            if dev.details is not None and dev.details.port_id:
                self.port_updated(dev.details.port_id, now)
