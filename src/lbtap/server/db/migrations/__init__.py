"""Alembic migrations shipped inside the package; the Config is built in code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

HERE = Path(__file__).parent


def alembic_config(connection=None) -> Config:  # noqa: ANN001
    """An Alembic Config pointing at this directory; no alembic.ini needed on disk."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", str(HERE / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    """Bring the schema at ``engine`` to the newest revision (idempotent)."""
    with engine.connect() as conn:
        conn.execution_options(lbtap_write=True)
        with conn.begin():
            command.upgrade(alembic_config(conn), "head")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
