"""Tables of security groups and QoS policies (issue 6), on the same declarative Base.

Kept apart from ``models.py`` so the feature owns its schema and its own Alembic branch
(``0003_security``). Ports keep their ``security_groups`` as a JSON list of ids (0001);
the tables here hold the groups, their rules, the per-project default group and QoS
policies with their bandwidth-limit rules.
"""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lbtap.server.db.models import Base, StandardAttrs


class SecurityGroup(StandardAttrs, Base):
    __tablename__ = "securitygroups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    stateful: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class SecurityGroupRule(StandardAttrs, Base):
    """One rule. ``remote_group_id`` cascades: a deleted group takes the rules that
    referenced it along (Neutron does the same)."""

    __tablename__ = "securitygrouprules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("securitygroups.id", ondelete="CASCADE"), index=True, nullable=False)
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("securitygroups.id", ondelete="CASCADE"), index=True, nullable=True)
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
    ethertype: Mapped[str] = mapped_column(String(40), nullable=False)
    protocol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)


class DefaultSecurityGroup(Base):
    """The project's ``default`` group. The primary key makes two racing requests
    creating it collide; the loser's transaction re-runs and finds the winner's."""

    __tablename__ = "default_security_group"

    project_id: Mapped[str] = mapped_column("tenant_id", String(255), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(
        ForeignKey("securitygroups.id", ondelete="CASCADE"), nullable=False, unique=True)


class QosPolicy(StandardAttrs, Base):
    __tablename__ = "qos_policies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    shared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class QosBandwidthLimitRule(Base):
    """At most one rule per direction and policy (Neutron's constraint)."""

    __tablename__ = "qos_bandwidth_limit_rules"
    __table_args__ = (UniqueConstraint("qos_policy_id", "direction"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    qos_policy_id: Mapped[str] = mapped_column(
        ForeignKey("qos_policies.id", ondelete="CASCADE"), index=True, nullable=False)
    max_kbps: Mapped[int] = mapped_column(Integer, nullable=False)
    max_burst_kbps: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
