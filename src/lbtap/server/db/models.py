"""SQLAlchemy 2 models of the server's tables.

Column names follow Neutron where operators query them directly (the seed's
``select * from ports`` shows ``tenant_id``, ``device_owner``, ``dns_name`` ...), so the
project column is called ``tenant_id`` in every table. Port binding columns live on
the port row (Neutron keeps them in ``ml2_port_bindings``; one host per port is all
lbtap supports). Uniqueness that allocation relies on is enforced by constraints, not
by application checks alone: (network_id, mac_address) on ports, (network_id,
ip_address) on IP allocations, and the segment tuple on segment allocations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class StandardAttrs:
    """Neutron's standard attributes, carried by every user-visible resource."""

    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    revision_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    description: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)


class Network(StandardAttrs, Base):
    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    shared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    router_external: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    mtu: Mapped[int] = mapped_column(Integer, nullable=False)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    qos_policy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    network_type: Mapped[str] = mapped_column(String(32), nullable=False)
    physical_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    segmentation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Subnet(StandardAttrs, Base):
    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), index=True, nullable=False
    )
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    ip_version: Mapped[int] = mapped_column(Integer, nullable=False)
    cidr: Mapped[str] = mapped_column(String(64), nullable=False)
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # [{"start": ..., "end": ...}], kept in address order
    allocation_pools: Mapped[list[dict[str, str]]] = mapped_column(JSON, nullable=False)
    dns_nameservers: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    host_routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, nullable=False)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Port(StandardAttrs, Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), index=True, nullable=False
    )
    mac_address: Mapped[str] = mapped_column(String(32), nullable=False)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    device_id: Mapped[str] = mapped_column(String(255), index=True, nullable=False, default="")
    device_owner: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    dns_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    binding_host_id: Mapped[str] = mapped_column(String(255), index=True, nullable=False, default="")
    binding_vif_type: Mapped[str] = mapped_column(String(64), nullable=False)
    binding_vif_details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    binding_vnic_type: Mapped[str] = mapped_column(String(64), nullable=False)
    binding_profile: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    qos_policy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    security_groups: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    # [{"ip_address": ..., "mac_address": ...}]
    allowed_address_pairs: Mapped[list[dict[str, str]]] = mapped_column(JSON, nullable=False)


class IPAllocation(Base):
    """One fixed IP of a port. ``network_id`` is denormalised for the unique key."""

    __tablename__ = "ipallocations"
    __table_args__ = (UniqueConstraint("network_id", "ip_address"),)

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    subnet_id: Mapped[str] = mapped_column(
        ForeignKey("subnets.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), nullable=False
    )


class SegmentAllocation(Base):
    """A taken segment. ``physical_network`` is "" (not NULL) for tunnel types so the
    primary key stays unique on every backend; flat segments use segmentation_id 0."""

    __tablename__ = "segment_allocations"

    network_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    physical_network: Mapped[str] = mapped_column(String(64), primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), index=True, nullable=False
    )


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("agent_type", "host"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_type: Mapped[str] = mapped_column(String(255), nullable=False)
    binary: Mapped[str] = mapped_column(String(255), nullable=False)
    host: Mapped[str] = mapped_column(String(255), nullable=False)
    topic: Mapped[str] = mapped_column(String(255), nullable=False)
    configurations: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    resource_versions: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    description: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    heartbeat_timestamp: Mapped[datetime] = mapped_column(DateTime, nullable=False)
