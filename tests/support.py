"""Shared test helpers: external services, privileges, namespace names."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

SERVICE_DEFAULTS = {
    "LBTAP_TEST_PG_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "LBTAP_TEST_MYSQL_URL": "mysql+pymysql://root@127.0.0.1:3306/test",
    "LBTAP_TEST_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
}

# Every namespace a test creates starts with this, so cleanup never touches others.
NETNS_PREFIX = "lbtt-"


def _reachable(url: str) -> bool:
    u = urlparse(url.replace("+psycopg", "").replace("+pymysql", ""))
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 0), timeout=5):
            return True
    except OSError:
        return False


def service_url(env_name: str) -> str:
    """URL of an external service for a test; skip (or fail in CI) when unreachable."""
    url = os.environ.get(env_name, SERVICE_DEFAULTS[env_name])
    if not _reachable(url):
        msg = f"service for {env_name} unreachable at {url}"
        if os.environ.get("LBTAP_REQUIRE_SERVICES") == "1":
            pytest.fail(msg + " (LBTAP_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    return url


def require_root() -> None:
    """Skip functional/fullstack tests where we cannot create namespaces."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


def unique_netns(tag: str = "") -> str:
    """A fresh namespace name with the test prefix."""
    return f"{NETNS_PREFIX}{tag}{uuid.uuid4().hex[:8]}"


def fresh_db_url(kind: str, tmp_path=None) -> str:  # noqa: ANN001
    """A SQLAlchemy URL of a new, empty database of ``kind`` ("sqlite", "pg", "mysql").

    "sqlite": a file in ``tmp_path`` (or a new temporary directory). "pg"/"mysql": a
    uniquely named database created on the test service (skipped or failed like
    ``service_url`` when unreachable) and dropped at interpreter exit, or earlier
    with ``drop_db_url(url)``. Migrations are not run: call
    ``lbtap.server.db.engine.upgrade`` yourself.
    """
    import atexit
    import tempfile

    if kind == "sqlite":
        base = tmp_path if tmp_path is not None else tempfile.mkdtemp(prefix="lbtap-db-")
        return f"sqlite:///{base}/lbtap-{uuid.uuid4().hex[:8]}.sqlite"
    env = {"pg": "LBTAP_TEST_PG_URL", "postgresql": "LBTAP_TEST_PG_URL",
           "mysql": "LBTAP_TEST_MYSQL_URL", "mariadb": "LBTAP_TEST_MYSQL_URL"}[kind]
    admin_url = service_url(env)
    name = f"lbtap_t_{uuid.uuid4().hex[:12]}"
    charset = " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if env == "LBTAP_TEST_MYSQL_URL" else ""
    _admin_execute(admin_url, f"CREATE DATABASE {name}{charset}")
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    atexit.register(drop_db_url, url)
    return url


def drop_db_url(url: str) -> None:
    """Drop a database made by ``fresh_db_url`` (no-op for SQLite; idempotent)."""
    if url.startswith("sqlite"):
        return
    from sqlalchemy import make_url

    u = make_url(url)
    name = u.database
    if not name or not name.startswith("lbtap_t_"):
        return  # never drop a database this helper did not create
    admin_url = u.set(database="postgres" if u.get_backend_name() == "postgresql" else "mysql")
    force = " WITH (FORCE)" if u.get_backend_name() == "postgresql" else ""
    try:
        _admin_execute(admin_url.render_as_string(hide_password=False), f"DROP DATABASE IF EXISTS {name}{force}")
    except Exception:  # best effort at exit: the server may already be gone
        pass


def _admin_execute(url: str, sql: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


class FakeClock:
    """A settable clock for services and RPC handlers (seconds since the epoch)."""

    def __init__(self, now: float = 1_795_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def migrated_engine(url: str):  # noqa: ANN201
    """An lbtap engine for ``url`` with the migrations applied."""
    from lbtap.server.db.engine import create_db_engine, upgrade

    engine = create_db_engine(url)
    upgrade(engine)
    return engine
