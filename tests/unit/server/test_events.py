"""The events extension on SQLite: timeline from notifications and RPC listeners,
pruning, ``explain`` verdicts, and the admin-only API routes with their 400/403/404s."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from lbtap.config import Settings
from lbtap.domain.naming import tap_name
from lbtap.server import events as ev_mod
from lbtap.server.app import create_app
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.events.store import EventStore
from lbtap.server.process import FanoutNotifier
from lbtap.server.notifier import NullNotifier
from lbtap.server.rpc_handlers import RpcHandlers
from lbtap.server.services import Services

ADMIN_HEADERS = {"X-Project-Id": "p1", "X-Roles": "admin"}


@pytest.fixture
def system(tmp_path):
    settings = Settings(state_dir=str(tmp_path), server={"agent_down_time": 75.0})
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    notifier = FanoutNotifier(NullNotifier())
    services = Services(engine, settings, notifier=notifier)
    app = create_app(settings, services)
    parts = SimpleNamespace(engine=engine, services=services, app=app, settings=settings,
                            status_listeners=[], details_listeners=[], notifiers=[])
    ev_mod.install(parts)
    notifier.extra.extend(parts.notifiers)
    rpc = RpcHandlers(engine, settings)
    with TestClient(app, raise_server_exceptions=False, headers=ADMIN_HEADERS) as client:
        yield SimpleNamespace(parts=parts, client=client, rpc=rpc, ev=app.state.lbtap_events, settings=settings)
    app.state.lbtap_events.store.close()
    engine.dispose()


def make_port(s, **body):
    net = s.client.post("/v2.0/networks", json={"network": {"name": "n"}}).json()["network"]
    r = s.client.post("/v2.0/ports", json={"port": {"network_id": net["id"], **body}})
    assert r.status_code == 201, r.text
    return r.json()["port"]


def heartbeat(s, host, **conf):
    s.rpc.report_state({"agent_state": {"agent_type": "Linux bridge agent", "host": host, "binary": "lbtap-agent",
                                        "topic": "q-agent-notifier", "configurations": conf}})


def agent_asks(s, host, port):
    """What serve_rpc does for get_devices_details_list: the RPC, then the listeners."""
    details = s.rpc.get_devices_details_list([tap_name(port["id"])], "a1", host)
    for listener in s.parts.details_listeners:
        listener(host, [tap_name(port["id"])], details)


def report(s, host, up=(), down=()):
    s.rpc.update_device_list(list(up), list(down), "a1", host)
    for listener in s.parts.status_listeners:
        listener(host, list(up), list(down))


def kinds(s, port_id):
    return [(e["kind"], e["host"]) for e in s.ev.store.query(port_id=port_id)]


def explain(s, port_id):
    r = s.client.get(f"/v2.0/lbtap/ports/{port_id}/explain")
    assert r.status_code == 200, r.text
    return r.json()["explanation"]


def test_full_lifecycle_timeline_without_repeats(system):
    s = system
    port = make_port(s, name="vm1")
    tap = tap_name(port["id"])
    heartbeat(s, "h1")
    assert explain(s, port["id"])["verdict"] == "unbound"
    agent_asks(s, "h1", port)  # the agent claims the unbound port
    assert explain(s, port["id"])["verdict"] == "pending"
    report(s, "h1", up=[tap])
    report(s, "h1", up=[tap])  # a storm's duplicate: alarm, but no second "active" row
    agent_asks(s, "h1", port)  # a routine re-read after port_update: not a new "seen"
    report(s, "h1", down=[tap])
    # The writer resolves a report's tap to its port when it writes: let it, before the
    # port is gone (a report racing its port's deletion is not on the timeline).
    assert s.ev.store.flush()
    s.client.delete(f"/v2.0/ports/{port['id']}")
    assert kinds(s, port["id"]) == [("created", None), ("bound", "h1"), ("device_seen", "h1"), ("active", "h1"),
                                    ("down", "h1"), ("deleted", "h1")]
    times = [e["at"] for e in s.ev.store.query(port_id=port["id"])]
    assert times == sorted(times)
    body = s.client.get("/v2.0/lbtap/events").json()
    (alarm,) = body["alarms"]
    assert alarm["host"] == "h1" and alarm["devices"] == [tap] and alarm["reason"] == "duplicate_up"
    assert any(e["kind"] == "storm_alarm" and e["host"] == "h1" and e["detail"]["devices"] == [tap]
               for e in body["events"])
    metrics = s.client.get("/metrics").text
    assert 'lbtap_storm_alarms_active{host="h1",reason="duplicate_up"} 1.0' in metrics
    assert "lbtap_port_bind_seconds_count 1.0" in metrics  # bound -> ACTIVE once, duplicates not counted


def test_api_binding_and_admin_state_are_on_the_timeline(system):
    s = system
    port = make_port(s)
    s.client.put(f"/v2.0/ports/{port['id']}", json={"port": {"binding:host_id": "h2"}})
    s.client.put(f"/v2.0/ports/{port['id']}", json={"port": {"admin_state_up": False}})
    assert kinds(s, port["id"]) == [("created", None), ("bound", "h2"), ("admin_down", None)]
    assert s.ev.store.query(port_id=port["id"])[1]["detail"] == {"by": "api", "previous": None}


def test_reports_for_ports_bound_elsewhere_are_not_on_the_timeline(system):
    s = system
    port = make_port(s, **{"binding:host_id": "h2"})
    report(s, "h1", up=[tap_name(port["id"])])
    assert kinds(s, port["id"]) == [("created", None), ("bound", "h2")]


def test_explain_verdicts(system):
    s = system
    p = make_port(s)
    assert explain(s, p["id"])["verdict"] == "unbound"
    s.client.put(f"/v2.0/ports/{p['id']}", json={"port": {"binding:host_id": "nowhere"}})
    e = explain(s, p["id"])
    assert e["verdict"] == "agent_missing" and "nowhere" in e["reason"] and not e["active"]
    heartbeat(s, "h1")
    s.client.put(f"/v2.0/ports/{p['id']}", json={"port": {"binding:host_id": "h1"}})
    e = explain(s, p["id"])
    assert e["verdict"] == "device_never_seen" and tap_name(p["id"]) in e["reason"]
    heartbeat(s, "h1", retrying_devices={tap_name(p["id"]): {"attempts": 3, "error": "AddressInUse: File exists"}})
    e = explain(s, p["id"])
    assert e["verdict"] == "device_failing" and "File exists" in e["reason"] and e["attempts"] == 3
    heartbeat(s, "h1")
    agent_asks(s, "h1", p)
    report(s, "h1", up=[tap_name(p["id"])])
    e = explain(s, p["id"])
    assert e["verdict"] == "active" and e["active"] and [t["kind"] for t in e["timeline"]][-1] == "active"
    report(s, "h1", down=[tap_name(p["id"])])
    assert explain(s, p["id"])["verdict"] == "device_down"
    s.client.put(f"/v2.0/ports/{p['id']}", json={"port": {"admin_state_up": False}})
    assert explain(s, p["id"])["verdict"] == "admin_down"


def test_explain_dead_agent(system):
    s = system
    p = make_port(s, **{"binding:host_id": "h1"})
    now = time.time()
    s.rpc.clock = lambda: now - 3600  # its last heartbeat was an hour ago...
    s.ev.clock = lambda: now  # ...exactly, however long the test takes
    heartbeat(s, "h1")
    e = explain(s, p["id"])
    assert e["verdict"] == "agent_dead" and "last heartbeat 360" in e["reason"]


@pytest.mark.parametrize("path, status", [
    ("/v2.0/lbtap/events?port_id=nope", 400),
    ("/v2.0/lbtap/events?limit=0", 400),
    ("/v2.0/lbtap/events?limit=abc", 400),
    ("/v2.0/lbtap/events?kind=bogus", 400),
    ("/v2.0/lbtap/events?colour=red", 400),
    ("/v2.0/lbtap/ports/nope/explain", 400),
    ("/v2.0/lbtap/ports/11112222-3333-4444-5555-666677778888/explain", 404),
])
def test_bad_input_is_a_neutron_error(system, path, status):
    r = system.client.get(path)
    assert r.status_code == status, r.text
    assert set(r.json()["NeutronError"]) == {"type", "message", "detail"}


def test_routes_are_admin_only(system):
    r = system.client.get("/v2.0/lbtap/events", headers={"X-Roles": "member", "X-Project-Id": "p1"})
    assert r.status_code == 403 and "NeutronError" in r.json()


def test_prune_keeps_newest_rows_and_drops_old_ones(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path}/e.sqlite")
    upgrade(engine)
    now = [1000.0]
    store = EventStore(engine, max_rows=100, max_age=50.0, clock=lambda: now[0], start=False)
    for i in range(250):
        store.record("created", port_id=f"p{i}", at=900.0 + i)
    store.drain()
    store.prune()
    rows = store.query(limit=1000)
    # rows older than 950 went (max_age), then all but the newest 100 (max_rows)
    assert len(rows) == 100 and rows[0]["port_id"] == "p150" and rows[-1]["port_id"] == "p249"
    engine.dispose()
