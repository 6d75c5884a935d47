"""The ``lbtap_events`` table: port lifecycle events and storm alarms, one row each.

Kept apart from ``models.py`` because it lives on its own migration branch
(``0002_events``, branch label ``events``) and belongs to the events extension
(``lbtap.server.events``). Times are epoch seconds in a double: sub-second order
matters (bound → seen → ACTIVE happen within milliseconds) and a DATETIME keeps
fractions on neither MariaDB nor SQLite without dialect-specific types.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Double, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from lbtap.server.db.models import Base

EVENT_KINDS = ("created", "bound", "unbound", "admin_down", "admin_up", "device_seen", "active", "down",
               "deleted", "storm_alarm")


class Event(Base):
    """One thing that happened to a port (``port_id`` set) or an agent (storm alarms)."""

    __tablename__ = "lbtap_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double, index=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), index=True, nullable=False)
    port_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "kind": self.kind, "port_id": self.port_id,
                "device": self.device, "host": self.host, "detail": self.detail or {}}
