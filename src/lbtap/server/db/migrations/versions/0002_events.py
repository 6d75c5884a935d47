"""Port lifecycle events and storm alarms (the events extension's own branch).

Revision ID: 0002_events
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

# Registers the model on the shared Base whenever migrations run, so a model-vs-schema
# comparison (tests/functional/test_db_backends.py) sees this branch's table too.
import lbtap.server.db.models_events  # noqa: F401


revision = "0002_events"
down_revision = "0001"
branch_labels = ("events",)
depends_on = None

TABLE_OPTS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "lbtap_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("port_id", sa.String(length=36), nullable=True),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lbtap_events")),
        **TABLE_OPTS,
    )
    op.create_index(op.f("ix_lbtap_events_at"), "lbtap_events", ["at"], unique=False)
    op.create_index(op.f("ix_lbtap_events_kind"), "lbtap_events", ["kind"], unique=False)
    op.create_index(op.f("ix_lbtap_events_port_id"), "lbtap_events", ["port_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_lbtap_events_port_id"), table_name="lbtap_events")
    op.drop_index(op.f("ix_lbtap_events_kind"), table_name="lbtap_events")
    op.drop_index(op.f("ix_lbtap_events_at"), table_name="lbtap_events")
    op.drop_table("lbtap_events")
