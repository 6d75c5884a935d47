"""Security groups, their rules, default groups; QoS policies and bandwidth-limit rules.

Revision ID: 0003_security
Revises: 0001
Its own branch ("security"): other features add tables on theirs; upgrade runs to "heads".
"""
from alembic import op
import sqlalchemy as sa

revision = "0003_security"
down_revision = "0001"
branch_labels = ("security",)
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
        "securitygroups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("stateful", sa.Boolean(), nullable=False),
        *_std(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_securitygroups")),
        **TABLE_OPTS,
    )
    op.create_index(op.f("ix_securitygroups_tenant_id"), "securitygroups", ["tenant_id"])
    op.create_table(
        "securitygrouprules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.Column("remote_group_id", sa.String(length=36), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("ethertype", sa.String(length=40), nullable=False),
        sa.Column("protocol", sa.String(length=40), nullable=True),
        sa.Column("port_range_min", sa.Integer(), nullable=True),
        sa.Column("port_range_max", sa.Integer(), nullable=True),
        sa.Column("remote_ip_prefix", sa.String(length=64), nullable=True),
        *_std(),
        sa.ForeignKeyConstraint(["security_group_id"], ["securitygroups.id"],
                                name=op.f("fk_securitygrouprules_security_group_id_securitygroups"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["remote_group_id"], ["securitygroups.id"],
                                name=op.f("fk_securitygrouprules_remote_group_id_securitygroups"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_securitygrouprules")),
        **TABLE_OPTS,
    )
    op.create_index(op.f("ix_securitygrouprules_tenant_id"), "securitygrouprules", ["tenant_id"])
    op.create_index(op.f("ix_securitygrouprules_security_group_id"), "securitygrouprules", ["security_group_id"])
    op.create_index(op.f("ix_securitygrouprules_remote_group_id"), "securitygrouprules", ["remote_group_id"])
    op.create_table(
        "default_security_group",
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["security_group_id"], ["securitygroups.id"],
                                name=op.f("fk_default_security_group_security_group_id_securitygroups"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_default_security_group")),
        sa.UniqueConstraint("security_group_id", name=op.f("uq_default_security_group_security_group_id")),
        **TABLE_OPTS,
    )
    op.create_table(
        "qos_policies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        *_std(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qos_policies")),
        **TABLE_OPTS,
    )
    op.create_index(op.f("ix_qos_policies_tenant_id"), "qos_policies", ["tenant_id"])
    op.create_table(
        "qos_bandwidth_limit_rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("qos_policy_id", sa.String(length=36), nullable=False),
        sa.Column("max_kbps", sa.Integer(), nullable=False),
        sa.Column("max_burst_kbps", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["qos_policy_id"], ["qos_policies.id"],
                                name=op.f("fk_qos_bandwidth_limit_rules_qos_policy_id_qos_policies"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qos_bandwidth_limit_rules")),
        sa.UniqueConstraint("qos_policy_id", "direction",
                            name=op.f("uq_qos_bandwidth_limit_rules_qos_policy_id_direction")),
        **TABLE_OPTS,
    )
    op.create_index(op.f("ix_qos_bandwidth_limit_rules_qos_policy_id"), "qos_bandwidth_limit_rules",
                    ["qos_policy_id"])


def downgrade() -> None:
    op.drop_table("qos_bandwidth_limit_rules")
    op.drop_table("qos_policies")
    op.drop_table("default_security_group")
    op.drop_table("securitygrouprules")
    op.drop_table("securitygroups")
