"""Engine set-up on SQLite, migrations, and the transaction runner's retry rules."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from lbtap.server.db.engine import Database, create_db_engine, upgrade
from lbtap.server.db.migrations import current_heads, script_heads
from lbtap.server.db.models import Agent, IPAllocation
from tests.support import fresh_db_url, migrated_engine

NOW = datetime(2026, 11, 29)


def agent(host: str, agent_type: str = "Linux bridge agent") -> Agent:
    return Agent(id=str(uuid.uuid4()), agent_type=agent_type, binary="b", host=host, topic="t",
                 configurations={}, created_at=NOW, started_at=NOW, heartbeat_timestamp=NOW)


def test_sqlite_settings_and_migrations(tmp_path):
    url = f"sqlite:///{tmp_path}/state/dir/lbtap.sqlite"
    engine = create_db_engine(url)
    upgrade(engine)
    upgrade(engine)
    assert current_heads(engine) == script_heads()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_write_reruns_a_transaction_that_lost_a_unique_race(tmp_path):
    db = Database(migrated_engine(fresh_db_url("sqlite", tmp_path)))
    db.write(lambda s: s.add(agent("h1")))
    attempts = []

    def fn(session):
        attempts.append(1)
        # First attempt collides with the committed row, as a racing writer would.
        session.add(agent("h1" if len(attempts) == 1 else "h2"))
        session.flush()
        return len(attempts)

    assert db.write(fn) == 2
    assert db.read(lambda s: s.scalar(select(func.count()).select_from(Agent))) == 2


def test_persistent_conflict_gives_up_with_the_given_error(tmp_path):
    db = Database(migrated_engine(fresh_db_url("sqlite", tmp_path)), max_attempts=3)
    db.write(lambda s: s.add(agent("h1")))
    calls = []

    def fn(session):
        calls.append(1)
        session.add(agent("h1"))
        session.flush()

    with pytest.raises(LookupError):
        db.write(fn, on_exhausted=lambda: LookupError("busy"))
    assert len(calls) == 3


def test_vanished_parent_reruns_and_rerun_decides(tmp_path):
    """A FK violation means the parent was deleted concurrently: the re-run sees it gone."""
    db = Database(migrated_engine(fresh_db_url("sqlite", tmp_path)))
    calls = []

    def fn(session):
        calls.append(1)
        if len(calls) == 1:
            session.add(IPAllocation(port_id="nope", ip_address="10.0.0.1", subnet_id="nope", network_id="nope"))
            session.flush()
        return "parent gone"

    assert db.write(fn) == "parent gone" and len(calls) == 2


def test_other_errors_are_not_retried(tmp_path):
    db = Database(migrated_engine(fresh_db_url("sqlite", tmp_path)))
    calls = []

    def fn(session):
        calls.append(1)
        session.add(Agent(id="x", agent_type=None, binary="b", host="h", topic="t", configurations={},
                          created_at=NOW, started_at=NOW, heartbeat_timestamp=NOW))
        session.flush()  # NOT NULL violation: a bug, not a race

    with pytest.raises(IntegrityError):
        db.write(fn)
    assert calls == [1]


def test_failed_transaction_rolls_back(tmp_path):
    db = Database(migrated_engine(fresh_db_url("sqlite", tmp_path)))

    def fn(session):
        session.add(agent("h1"))
        session.flush()
        raise ValueError("service error after a write")

    with pytest.raises(ValueError):
        db.write(fn)
    assert db.read(lambda s: s.scalar(select(func.count()).select_from(Agent))) == 0


def test_two_engines_on_one_file_never_see_database_is_locked(tmp_path):
    """Two engines stand for two processes: only BEGIN IMMEDIATE + busy_timeout
    (not the in-process lock) keeps their writers apart."""
    url = fresh_db_url("sqlite", tmp_path)
    # No retries: the locking alone must keep writers apart.
    dbs = [Database(migrated_engine(url), max_attempts=1), Database(create_db_engine(url), max_attempts=1)]
    start = threading.Barrier(16)

    def work(i: int) -> None:
        db = dbs[i % 2]
        start.wait()
        for j in range(10):
            def fn(session, host=f"h{i}-{j}"):
                n = session.scalar(select(func.count()).select_from(Agent))  # read, then write
                session.add(agent(host))
                session.execute(text("SELECT 1"))
                return n
            db.write(fn)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(16)))
    assert dbs[0].read(lambda s: s.scalar(select(func.count()).select_from(Agent))) == 160
