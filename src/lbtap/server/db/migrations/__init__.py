"""Alembic migrations shipped inside the package; the Config is built in code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

HERE = Path(__file__).parent


def alembic_config(connection=None) -> Config:  # noqa: ANN001
    """An Alembic Config pointing at this directory; no alembic.ini needed on disk."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", str(HERE / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


MIGRATION_LOCK = 7_210_001  # arbitrary, fixed: the advisory lock key of lbtap's migrations


def upgrade_to_head(engine: Engine) -> None:
    """Bring the schema at ``engine`` to the newest revision (idempotent).

    Servers starting together on one database take turns: an advisory lock on
    PostgreSQL and MariaDB, the write lock (BEGIN IMMEDIATE) on SQLite.
    """
    with engine.connect() as conn:
        conn.execution_options(lbtap_write=True)
        dialect = conn.dialect.name
        if dialect == "mysql":
            conn.execute(text("SELECT GET_LOCK('lbtap_migrations', 300)"))
            conn.commit()  # the lock belongs to the session, not the transaction
        try:
            with conn.begin():
                if dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
                # "heads": features add their tables on their own migration branches.
                command.upgrade(alembic_config(conn), "heads")
        finally:
            if dialect == "mysql":
                conn.execute(text("SELECT RELEASE_LOCK('lbtap_migrations')"))
                conn.commit()


def current_heads(engine: Engine) -> frozenset[str]:
    """The revisions the database at ``engine`` is at (one per migration branch)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def script_heads() -> frozenset[str]:
    """The newest revision of every branch shipped in this package."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())
