"""Agents as the API shows them: list, show, update (admin_state_up, description),
delete. Agents create themselves through ``report_state`` (see rpc_handlers); only
admins see them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, false, select, true
from sqlalchemy.orm import Session

from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.models import Agent
from lbtap.server.services import attributes
from lbtap.server.services.base import ResourceService, check_can_write, chunks
from lbtap.server.services.binding import is_alive

AGENT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # Neutron's format for agent timestamps


def agent_time(dt: datetime | None) -> str | None:
    return dt.strftime(AGENT_TIME_FORMAT) if dt is not None else None


class AgentService(ResourceService):
    """Agents, admin-only; ``alive`` is computed from the heartbeat at read time."""

    resource = "agents"
    model = Agent
    not_found = errors.AgentNotFound

    def visibility(self, ctx: Context) -> ColumnElement[bool]:
        return true() if ctx.is_admin else false()

    def missing(self, id: str) -> errors.NotFound:
        return errors.AgentNotFound(f"Agent {id} could not be found.")

    def to_dict(self, a: Agent, now: datetime) -> dict[str, Any]:
        return {
            "id": a.id, "agent_type": a.agent_type, "binary": a.binary, "host": a.host, "topic": a.topic,
            "configurations": dict(a.configurations), "resource_versions": a.resource_versions,
            "admin_state_up": a.admin_state_up, "description": a.description,
            "created_at": agent_time(a.created_at), "started_at": agent_time(a.started_at),
            "heartbeat_timestamp": agent_time(a.heartbeat_timestamp),
            "alive": is_alive(a.heartbeat_timestamp, now, self.settings.server.agent_down_time),
            "availability_zone": None, "resources_synced": None,
        }

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows: dict[str, Agent] = {}
        for part in chunks(ids):
            rows.update((a.id, a) for a in session.scalars(select(Agent).where(Agent.id.in_(part))))
        now = self.now()
        return [self.to_dict(rows[i], now) for i in ids if i in rows]

    def python_filter(self, ctx: Context, key: str, values: list[Any]):  # noqa: ANN201
        if key != "alive":
            return None
        now, down = self.now(), self.settings.server.agent_down_time
        wanted = set(values)
        return ("heartbeat_timestamp", Agent.heartbeat_timestamp,
                lambda r: is_alive(r["heartbeat_timestamp"], now, down) in wanted)

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)

        def run(session: Session) -> dict:
            agent = self.fetch(session, ctx, id)
            for key, value in given.items():
                setattr(agent, key, value)
            session.flush()
            return self.to_dict(agent, self.now())

        return self.db.write(run)

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> None:
            self.fetch(session, ctx, id)
            session.execute(delete(Agent).where(Agent.id == id))

        self.db.write(run)
