"""Security groups on every database backend: the default group under concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from lbtap.config import Settings
from lbtap.server.context import Context
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.services import ListQuery, Services
from tests.support import drop_db_url, fresh_db_url

CAROL = Context(project_id="carol", roles=frozenset({"member"}))


@pytest.fixture(params=["sqlite", "pg", "mysql"])
def engine(request, tmp_path):
    url = fresh_db_url(request.param, tmp_path)
    eng = create_db_engine(url)
    upgrade(eng)
    yield eng
    eng.dispose()
    drop_db_url(url)


def test_racing_first_ports_share_one_default_group(engine):
    svc = Services(engine, Settings())
    net = svc.create(CAROL, "networks", {"name": "n"})
    svc.create(CAROL, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"})
    with ThreadPoolExecutor(8) as pool:
        ports = list(pool.map(lambda _: svc.create(CAROL, "ports", {"network_id": net["id"]}), range(16)))
    groups = svc.list(CAROL, "security_groups", ListQuery()).items
    assert [g["name"] for g in groups] == ["default"]
    assert {p["security_groups"][0] for p in ports} == {groups[0]["id"]}
    assert len(groups[0]["security_group_rules"]) == 4


def test_agent_rpc_reads_groups_members_and_qos_on_every_backend(engine):
    """The agent-facing calls decode JSON columns the way each driver returns them
    (psycopg hands back lists where SQLite gives text)."""
    from lbtap.domain.naming import tap_name
    from lbtap.server.db.engine import Database
    from lbtap.server.rpc_handlers import RpcHandlers
    from lbtap.server.security_ext import SecurityRpc, still_members

    svc = Services(engine, Settings())
    rpc = RpcHandlers(engine, Settings())
    rpc.report_state({"agent_state": {"agent_type": "Linux bridge agent", "host": "h1", "binary": "lbtap-agent",
                                      "topic": "q-agent-notifier", "configurations": {}}})  # h1 alive: binds
    net = svc.create(CAROL, "networks", {"name": "n"})
    svc.create(CAROL, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"})
    admin = Context(project_id="carol", roles=frozenset({"admin", "member"}))
    a = svc.create(admin, "ports", {"network_id": net["id"], "binding:host_id": "h1",
                                    "allowed_address_pairs": [{"ip_address": "10.0.0.200"}]})
    b = svc.create(CAROL, "ports", {"network_id": net["id"]})
    (group,) = a["security_groups"]
    info = SecurityRpc(engine).security_group_info_for_devices([tap_name(a["id"])])
    assert info["devices"][tap_name(a["id"])]["security_groups"] == [group]
    members = set(info["sg_member_ips"][group]["IPv4"])
    assert {f["ip_address"] for p in (a, b) for f in p["fixed_ips"]} | {"10.0.0.200"} == members
    held = Database(engine).read(lambda s: still_members(s, {group: {"10.0.0.200", "10.0.0.250"}}))
    assert held == {group: {"10.0.0.200"}}, "a removed address another member still holds stays"
    (pushed,) = rpc.pushable_details([a["id"]], "h1")
    assert pushed["security_groups"] == [group] and pushed["qos_policy_id"] is None
