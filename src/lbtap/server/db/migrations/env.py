"""Alembic environment: always runs on a connection handed in through the Config."""

from __future__ import annotations

from alembic import context

from lbtap.server.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - lbtap never runs Alembic without one
    raise RuntimeError("lbtap migrations run through lbtap.server.db.engine.upgrade()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
