"""The port timeline store on every database backend: resolution of tap names, the
repeat filter reloaded from the database, and pruning (MariaDB forbids deleting from a
table read in a subquery)."""

from __future__ import annotations

import pytest

from lbtap.config import Settings
from lbtap.domain.naming import tap_name
from lbtap.server.context import Context
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.events.store import EventStore
from lbtap.server.services import Services
from tests.support import drop_db_url, fresh_db_url


@pytest.fixture(params=["sqlite", "pg", "mysql"])
def engine(request, tmp_path):
    url = fresh_db_url(request.param, tmp_path)
    eng = create_db_engine(url)
    upgrade(eng)
    yield eng
    eng.dispose()
    drop_db_url(url)


def test_timeline_and_prune(engine):
    svc = Services(engine, Settings())
    net = svc.create(Context.admin(), "networks", {"name": "n"})
    port = svc.create(Context.admin(), "ports", {"network_id": net["id"], "binding:host_id": "h1"})
    now = [1000.0]
    store = EventStore(engine, max_rows=100, max_age=500.0, clock=lambda: now[0], start=False)
    store.record("created", port_id=port["id"])
    store.record("device_seen", port_id=port["id"], device=tap_name(port["id"]), host="h1")
    store.record("active", device=tap_name(port["id"]), host="h1")
    store.record("active", device="tapdoesnotexi", host="h1")  # no such port: dropped
    store.drain()
    # A new store (server restart) reloads the last state: a repeated "active" is dropped.
    again = EventStore(engine, clock=lambda: now[0], start=False)
    again.record("active", device=tap_name(port["id"]), host="h1")
    again.drain()
    rows = store.query(port_id=port["id"])
    assert [(r["kind"], r["host"]) for r in rows] == [("created", None), ("bound", "h1"), ("device_seen", "h1"),
                                                      ("active", "h1")]
    assert rows[0]["at"] == 1000.0
    for i in range(300):
        store.record("created", port_id=f"p{i}", at=400.0 + i)
    store.drain()
    store.prune()  # older than 500 go (p0..p99), then all but the newest 100
    left = store.query(limit=1000)
    assert len(left) == 100 and left[-1]["port_id"] == "p299"
