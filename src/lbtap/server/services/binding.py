"""Port binding: which vif_type and vif_details a port gets for its host.

A port binds to ``bridge`` when its ``binding:host_id`` names a live Linux-bridge
agent; with no live agent there it is ``binding_failed``; with no host it is
``unbound``. Shared by the port service (API writes) and the RPC handlers (an agent
asking for a port's details claims an unbound port for its host).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.domain.naming import bridge_name
from lbtap.server.db.models import Agent


def vif_details(network_id: str) -> dict[str, Any]:
    return {"connectivity": "l2", "port_filter": True, "bridge_name": bridge_name(network_id)}


def binding_for(host: str, agent_alive: bool, network_id: str) -> tuple[str, dict[str, Any]]:
    """(vif_type, vif_details) of a port on ``host``."""
    if not host:
        return c.VIF_TYPE_UNBOUND, {}
    if not agent_alive:
        return c.VIF_TYPE_BINDING_FAILED, {}
    return c.VIF_TYPE_BRIDGE, vif_details(network_id)


def is_alive(heartbeat: datetime, now: datetime, down_time: float) -> bool:
    return now - heartbeat <= timedelta(seconds=down_time)


def live_l2_hosts(session: Session, hosts: Iterable[str], now: datetime, down_time: float) -> set[str]:
    """Hosts among ``hosts`` whose Linux-bridge agent reported within ``down_time``."""
    wanted = sorted({h for h in hosts if h})
    if not wanted:
        return set()
    rows = session.execute(
        select(Agent.host, Agent.heartbeat_timestamp).where(
            Agent.agent_type == c.AGENT_TYPE_LINUXBRIDGE, Agent.host.in_(wanted))
    )
    return {h for h, hb in rows if is_alive(hb, now, down_time)}
