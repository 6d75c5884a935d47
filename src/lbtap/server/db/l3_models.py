"""Tables of the L3 feature: routers and floating IPs (migration ``0004_l3``).

On the shared declarative ``Base`` of ``lbtap.server.db.models``. Router ports are
ordinary ``ports`` rows found by ``device_id`` = router id and ``device_owner``
(``network:router_interface`` / ``network:router_gateway``), as in Neutron; the
router row keeps its gateway port id, and ``host`` is the L3 agent hosting it ("" =
not scheduled yet: the first L3 agent syncing claims it).
"""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sqlalchemy import JSON

from lbtap.server.db.models import Base, StandardAttrs


class Router(StandardAttrs, Base):
    __tablename__ = "routers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    gw_port_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    gw_network_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    enable_snat: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # [{"destination": cidr, "nexthop": ip}]
    routes: Mapped[list[dict[str, str]]] = mapped_column(JSON, nullable=False)
    host: Mapped[str] = mapped_column(String(255), index=True, nullable=False, default="")


class FloatingIP(StandardAttrs, Base):
    """A floating IP: its own ``network:floatingip`` port on the external network, and
    optionally the fixed port/IP it maps to and the router that does the NAT."""

    __tablename__ = "floatingips"
    __table_args__ = (UniqueConstraint("floating_network_id", "floating_ip_address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column("tenant_id", String(255), index=True, nullable=False)
    floating_network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), index=True, nullable=False)
    floating_port_id: Mapped[str] = mapped_column(String(36), nullable=False)
    floating_ip_address: Mapped[str] = mapped_column(String(64), nullable=False)
    fixed_port_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
