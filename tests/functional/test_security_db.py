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
