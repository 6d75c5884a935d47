"""Engine creation, migrations on start, and the transaction runner with retry.

Every service call is one transaction run through :class:`Database`. Writers on SQLite
are serialised twice: an in-process lock (so threads queue in Python instead of
spinning on SQLITE_BUSY) and ``BEGIN IMMEDIATE`` (so another process holding the write
lock makes us wait on ``busy_timeout`` at BEGIN, never fail half way with "database is
locked"). On PostgreSQL and MariaDB concurrent writers race freely and the unique
constraints decide; a transaction that loses (IntegrityError, serialization failure,
deadlock) is re-run from the start a bounded number of times, and its re-run sees the
winner's rows, so a genuine conflict then surfaces as the service's own 409.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
MAX_ATTEMPTS = 25

# Error codes that mean "your transaction lost a race, run it again".
_PG_RETRY_SQLSTATES = {"40001", "40P01", "23505"}  # serialization, deadlock, unique
_MYSQL_RETRY_CODES = {1213, 1205, 1062}  # deadlock, lock wait timeout, duplicate key


def create_db_engine(url: str) -> Engine:
    """An engine for ``url`` with lbtap's connection settings.

    SQLite: WAL, foreign keys, busy_timeout, and explicit BEGIN / BEGIN IMMEDIATE (see
    module docstring). The parent directory of a SQLite file is created if needed.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Writers wait for the lock before taking a connection, so a big pool only
        # serves concurrent readers (WAL lets them run beside the one writer).
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=10, max_overflow=50,
        )
        _configure_sqlite(engine)
        return engine
    kwargs: dict = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 60}
    if url.startswith("mysql"):
        kwargs["isolation_level"] = "READ COMMITTED"  # fewer gap-lock deadlocks
        if "charset=" not in url:
            url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Hand transaction control to us: pysqlite's implicit BEGIN cannot be IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        write = conn.get_execution_options().get("lbtap_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _enable_wal(cur) -> None:  # noqa: ANN001
    """Switch a database file to WAL (persistent, so usually already done).

    Switching needs the file to itself and SQLite answers "database is locked" at
    once instead of waiting when several connections open a new file together (the
    busy handler is not used), so retry for a few seconds.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


def upgrade(engine: Engine) -> None:
    """Run the Alembic migrations shipped in the package up to head."""
    from lbtap.server.db.migrations import upgrade_to_head

    upgrade_to_head(engine)


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` means the transaction lost a race and may simply be re-run."""
    if isinstance(exc, IntegrityError):
        # A unique violation: a concurrent writer took the same IP/MAC/segment first.
        # A foreign-key violation means a parent row (network, subnet) was deleted
        # under us: the re-run then answers the service's own 404.
        orig = exc.orig
        if getattr(orig, "sqlstate", None) in ("23505", "23503"):  # PostgreSQL
            return True
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int):  # MySQL/MariaDB error number
            return args[0] in (1062, 1452)
        return "UNIQUE constraint failed" in str(orig) or "FOREIGN KEY constraint failed" in str(orig)
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        code = getattr(orig, "sqlstate", None)
        if code in _PG_RETRY_SQLSTATES:
            return True
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRY_CODES:
            return True
        if isinstance(exc, OperationalError) and "database is locked" in str(orig):
            return True
    return False


_WRITE_LOCKS: "weakref.WeakKeyDictionary[Engine, threading.Lock]" = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


def _sqlite_write_lock(engine: Engine) -> threading.Lock:
    """One lock per engine, shared by every Database on it (API services and RPC
    handlers queue behind each other in Python rather than in busy_timeout)."""
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = threading.Lock()
        return lock


class Database:
    """Runs functions of a Session as single transactions, re-running lost races."""

    def __init__(self, engine: Engine, *, max_attempts: int = MAX_ATTEMPTS):
        self.engine = engine
        self.dialect = engine.dialect.name
        self.max_attempts = max_attempts
        self._write_lock = _sqlite_write_lock(engine) if self.dialect == "sqlite" else None

    def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a read transaction (no retry: readers never conflict)."""
        with self.engine.connect() as conn:
            with conn.begin():
                with Session(bind=conn, autoflush=False, expire_on_commit=False) as session:
                    return fn(session)

    def write(self, fn: Callable[[Session], T], *, on_exhausted: Callable[[], Exception] | None = None) -> T:
        """Run ``fn`` in a write transaction; re-run it if it loses a race.

        ``fn`` must have no effects outside the session: it may run several times.
        When every attempt lost, ``on_exhausted()`` (a service error) is raised, or the
        last database error if none is given.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._write_once(fn)
            except DBAPIError as e:
                if not is_retryable(e):
                    raise
                if attempt == self.max_attempts:
                    log.warning("transaction lost %d races, giving up: %s", attempt, e.orig)
                    if on_exhausted is not None:
                        raise on_exhausted() from e
                    raise
                # Jitter so that racing writers do not collide again in lockstep.
                time.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.1)))
        raise AssertionError("unreachable")

    def _write_once(self, fn: Callable[[Session], T]) -> T:
        if self._write_lock is not None:
            with self._write_lock:
                return self._run_write(fn)
        return self._run_write(fn)

    def _run_write(self, fn: Callable[[Session], T]) -> T:
        with self.engine.connect() as conn:
            conn.execution_options(lbtap_write=True)
            with conn.begin():
                with Session(bind=conn, autoflush=True, expire_on_commit=False) as session:
                    result = fn(session)
                    session.flush()
                    return result
