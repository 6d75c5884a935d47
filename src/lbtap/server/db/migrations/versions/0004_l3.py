"""Routers and floating IPs (the L3 feature's own branch).

Revision ID: 0004_l3
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

# Registers the models on the shared Base whenever migrations run (model-vs-schema checks).
import lbtap.server.db.l3_models  # noqa: F401

revision = "0004_l3"
down_revision = "0001"
branch_labels = ("l3",)
depends_on = None

TABLE_OPTS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _std() -> list:
    return [
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "routers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("gw_port_id", sa.String(length=36), nullable=True),
        sa.Column("gw_network_id", sa.String(length=36), nullable=True),
        sa.Column("enable_snat", sa.Boolean(), nullable=False),
        sa.Column("routes", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        *_std(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routers")),
        **TABLE_OPTS,
    )
    op.create_index(op.f("ix_routers_tenant_id"), "routers", ["tenant_id"])
    op.create_index(op.f("ix_routers_host"), "routers", ["host"])
    op.create_table(
        "floatingips",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("floating_network_id", sa.String(length=36), nullable=False),
        sa.Column("floating_port_id", sa.String(length=36), nullable=False),
        sa.Column("floating_ip_address", sa.String(length=64), nullable=False),
        sa.Column("fixed_port_id", sa.String(length=36), nullable=True),
        sa.Column("fixed_ip_address", sa.String(length=64), nullable=True),
        sa.Column("router_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        *_std(),
        sa.ForeignKeyConstraint(["floating_network_id"], ["networks.id"], ondelete="CASCADE",
                                name=op.f("fk_floatingips_floating_network_id_networks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_floatingips")),
        sa.UniqueConstraint("floating_network_id", "floating_ip_address",
                            name=op.f("uq_floatingips_floating_network_id_floating_ip_address")),
        **TABLE_OPTS,
    )
    for col in ("tenant_id", "floating_network_id", "fixed_port_id", "router_id"):
        op.create_index(op.f(f"ix_floatingips_{col}"), "floatingips", [col])


def downgrade() -> None:
    op.drop_table("floatingips")
    op.drop_table("routers")
