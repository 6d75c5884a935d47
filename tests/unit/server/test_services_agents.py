"""Agents through the API services: read, update, delete; never created by POST."""

from __future__ import annotations

import pytest

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.rpc_handlers import RpcHandlers
from lbtap.server.services import ListQuery, Services
from tests.support import FakeClock, fresh_db_url, migrated_engine

ADMIN = Context.admin()
ALICE = Context(project_id="alice", roles=frozenset({"member"}))


@pytest.fixture
def world(tmp_path):
    engine = migrated_engine(fresh_db_url("sqlite", tmp_path))
    clock = FakeClock()
    svc = Services(engine, Settings(), clock=clock)
    RpcHandlers(engine, Settings(), clock=clock).report_state(
        {"agent_type": "Linux bridge agent", "host": "h1", "binary": "lbtap-agent", "topic": "t",
         "configurations": {"interface_mappings": {"physnet1": "eth1"}}})
    [agent] = svc.list(ADMIN, "agents", ListQuery()).items
    return svc, agent, clock


def test_agent_shape(world):
    _svc, agent, _clock = world
    assert agent["heartbeat_timestamp"].count(":") == 2 and agent["alive"] is True
    assert agent["configurations"] == {"interface_mappings": {"physnet1": "eth1"}}


def test_update_and_delete(world):
    svc, agent, _clock = world
    up = svc.update(ADMIN, "agents", agent["id"], {"admin_state_up": False, "description": "maint"})
    assert (up["admin_state_up"], up["description"]) == (False, "maint")
    with pytest.raises(errors.BadRequest):
        svc.update(ADMIN, "agents", agent["id"], {"host": "h2"})
    svc.delete(ADMIN, "agents", agent["id"])
    with pytest.raises(errors.AgentNotFound):
        svc.get(ADMIN, "agents", agent["id"])


def test_create_not_allowed_and_hidden_from_non_admins(world):
    svc, agent, _clock = world
    with pytest.raises(errors.MethodNotAllowed):
        svc.create(ADMIN, "agents", {"host": "x"})
    assert svc.list(ALICE, "agents", ListQuery()).items == []
    with pytest.raises(errors.AgentNotFound):
        svc.get(ALICE, "agents", agent["id"])


def test_alive_turns_false_after_agent_down_time(world):
    svc, agent, clock = world
    clock.advance(76)
    assert svc.get(ADMIN, "agents", agent["id"])["alive"] is False
    assert svc.list(ADMIN, "agents", ListQuery(filters={"alive": ["false"]})).items[0]["id"] == agent["id"]
