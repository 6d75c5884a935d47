"""The events server extension: storm alarms and the port lifecycle timeline.

``install(parts)`` (listed in ``lbtap.server.process.EXTENSION_MODULES``) feeds

* ``StormDetector`` (``storm.py``) from every applied status report, and
* ``EventStore`` (``store.py``, table ``lbtap_events``) from the data layer's port
  notifications (created, bound/unbound, admin up/down, deleted), the agents' details
  requests (device seen, and bound when an agent claims a port) and status reports
  (active, down), plus every storm alarm raised.

The read side (``Events.events`` / ``Events.explain``) serves
``GET /v2.0/lbtap/events`` and ``GET /v2.0/lbtap/ports/{id}/explain``
(``lbtap.server.api.events``), found through ``app.state.lbtap_events``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from prometheus_client import Histogram

from lbtap.domain import constants as c
from lbtap.domain.naming import tap_name
from lbtap.server.context import Context
from lbtap.server.events.explain import explain
from lbtap.server.events.storm import Alarm, StormCollector, StormDetector
from lbtap.server.events.store import EventStore

log = logging.getLogger("lbtap.server.events")

ADMIN = Context.admin()


class PortEventsNotifier:
    """A Notifier (port methods only) turning API changes into timeline events."""

    def __init__(self, store: EventStore):
        self.store = store

    def port_created(self, port: dict) -> None:
        host = port.get("binding:host_id") or None
        self.store.record("created", port_id=port["id"], device=tap_name(port["id"]), network_id=port.get("network_id"),
                          name=port.get("name") or "", device_owner=port.get("device_owner") or "")
        if host:
            self.store.record("bound", port_id=port["id"], host=host, by="api")
        if port.get("admin_state_up") is False:
            self.store.record("admin_down", port_id=port["id"])

    def port_updated(self, port: dict, original: dict) -> None:
        host, before = port.get("binding:host_id") or None, original.get("binding:host_id") or None
        if host != before:
            if host:
                self.store.record("bound", port_id=port["id"], host=host, by="api", previous=before)
            else:
                self.store.record("unbound", port_id=port["id"], previous=before)
        if port.get("admin_state_up") != original.get("admin_state_up"):
            self.store.record("admin_up" if port.get("admin_state_up") else "admin_down", port_id=port["id"])

    def port_deleted(self, port: dict) -> None:
        self.store.record("deleted", port_id=port["id"], host=port.get("binding:host_id") or None)


class Events:
    """The extension's state: detector, store, and the read side for the API."""

    def __init__(self, parts: Any, *, clock: Callable[[], float] = time.time):
        s = parts.settings.server
        self.parts = parts
        self.clock = clock
        self.store = EventStore(parts.engine, max_rows=s.events_max_rows, max_age=s.events_max_age, clock=clock)
        self.detector = StormDetector(window=s.storm_window, max_reports=s.storm_max_reports,
                                      hold=s.storm_alarm_hold, clock=clock, on_raise=self._raised)

    def _raised(self, alarm: Alarm) -> None:
        log.warning("STORM ALARM %s on agent %s: %s; devices: %s", alarm.reason, alarm.host, alarm.detail,
                    ", ".join(sorted(alarm.devices)[:20]) + (" ..." if alarm.devices_total > 20 else ""),
                    extra={"host": alarm.host, "reason": alarm.reason})
        self.store.record("storm_alarm", host=alarm.host, at=alarm.first_at, reason=alarm.reason,
                          detail=alarm.detail, devices=sorted(alarm.devices), alarm_id=alarm.id)

    # ---- listeners (RPC worker threads) ---------------------------------------------
    def on_status(self, host: str, up: list[str], down: list[str]) -> None:
        self.detector.observe(host, list(up), list(down))
        for d in up:
            self.store.record("active", device=d, host=host)
        for d in down:
            self.store.record("down", device=d, host=host)

    def on_details(self, host: str, devices: list[str], details: list[dict]) -> None:
        for d in details or ():
            if isinstance(d, dict) and d.get("port_id"):
                self.store.record("device_seen", port_id=d["port_id"], device=d.get("device"), host=host)

    # ---- read side ---------------------------------------------------------------------
    def events(self, *, port_id: str | None = None, host: str | None = None, kind: str | None = None,
               limit: int = 200) -> dict[str, Any]:
        alarms = self.detector.alarms()
        if host:
            alarms = [a for a in alarms if a["host"] == host]
        if port_id:
            alarms = [a for a in alarms if tap_name(port_id) in a["devices"]]
        return {"alarms": alarms, "events": self.store.query(port_id=port_id, host=host, kind=kind, limit=limit)}

    def explain(self, port_id: str) -> dict[str, Any]:
        """Raises the services' PortNotFound for an unknown port."""
        from lbtap.monitoring.apiview import parse_agent_time
        from lbtap.server.services.query import ListQuery

        services = self.parts.services
        port = services.get(ADMIN, "ports", port_id)
        try:
            network = services.get(ADMIN, "networks", port["network_id"])
        except Exception:  # deleted under us: explain the port anyway
            network = None
        host = port.get("binding:host_id") or ""
        agent = None
        age = None
        if host:
            agents = services.list(ADMIN, "agents", ListQuery(filters={"host": [host]})).items
            agent = next((a for a in agents if a.get("agent_type") == c.AGENT_TYPE_LINUXBRIDGE), None)
            if agent is not None:
                hb = parse_agent_time(agent.get("heartbeat_timestamp"))
                age = None if hb is None else max(0.0, self.clock() - hb)
        timeline = self.store.query(port_id=port_id, limit=1000)
        result = explain(port, network=network, agent=agent, agent_heartbeat_age=age, timeline=timeline,
                         alarms=self.detector.alarms(active_only=True), now=self.clock())
        result["timeline"] = timeline
        return result


def install(parts: Any) -> None:
    """Hook the events extension into a server being built (see ``ServerParts``)."""
    ev = Events(parts)
    parts.status_listeners.append(ev.on_status)
    if hasattr(parts, "details_listeners"):
        parts.details_listeners.append(ev.on_details)
    parts.notifiers.append(PortEventsNotifier(ev.store))
    parts.app.state.lbtap_events = ev
    metrics = getattr(parts.app.state, "metrics", None)
    if metrics is not None:
        # The app's own registry, not the process-wide one: several servers in one test
        # process must not see each other's alarms.
        metrics.registry.register(StormCollector(ev.detector))
        bind = Histogram("lbtap_port_bind_seconds", "Seconds from a port's binding to a host until it is ACTIVE.",
                         registry=metrics.registry,
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        ev.store.on_bind_latency = bind.observe
