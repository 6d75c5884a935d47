"""Migrations and concurrent allocation on every supported database backend.

Each test module run creates fresh databases (dropped at the end); PostgreSQL and
MariaDB come from LBTAP_TEST_PG_URL / LBTAP_TEST_MYSQL_URL (skipped when unreachable,
failed under LBTAP_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import ipaddress
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.db.migrations import current_heads, script_heads
from lbtap.server.db.models import Base
from lbtap.server.services import ListQuery, Services
from tests.support import drop_db_url, fresh_db_url

KINDS = ["sqlite", "pg", "mysql"]
# Tenant networks are VXLAN here (the shipped default is "local"): it exercises allocation.
VXLAN = Settings(server={"tenant_network_types": ["vxlan"]})
ADMIN = Context.admin()


@pytest.fixture(params=KINDS)
def engine(request, tmp_path):
    url = fresh_db_url(request.param, tmp_path)
    eng = create_db_engine(url)
    upgrade(eng)
    yield eng
    eng.dispose()
    drop_db_url(url)


def test_migrations_reach_head_and_match_models(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert current_heads(engine) == script_heads()
    upgrade(engine)  # idempotent: a restarted server runs it again
    tables = set(inspect(engine).get_table_names())
    assert {"networks", "subnets", "ports", "ipallocations", "segment_allocations", "agents"} <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # MariaDB reports JSON as LONGTEXT; every other difference is a real drift.
    real = [d for d in diff if not (d[0] == "modify_type" if isinstance(d, tuple) else False)
            and not (isinstance(d, list) and all(x[0] == "modify_type" for x in d))]
    assert real == []


def test_fifty_concurrent_port_creates_get_distinct_addresses(engine):
    services = Services(engine, VXLAN)
    net = services.create(ADMIN, "networks", {"name": "n"})
    services.create(ADMIN, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.9.0.0/24"})
    start = threading.Barrier(50)

    def create(i: int) -> dict:
        start.wait()
        return services.create(ADMIN, "ports", {"network_id": net["id"], "name": f"p{i}"})

    with ThreadPoolExecutor(50) as pool:
        ports = list(pool.map(create, range(50)))  # any error (5xx-like) propagates here

    ips = [p["fixed_ips"][0]["ip_address"] for p in ports]
    macs = [p["mac_address"] for p in ports]
    assert len(set(ips)) == 50 and len(set(macs)) == 50
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.9.0.0/24") for ip in ips)
    listed = services.list(ADMIN, "ports", ListQuery(filters={"network_id": [net["id"]]})).items
    assert sorted(p["fixed_ips"][0]["ip_address"] for p in listed) == sorted(ips)


def test_concurrent_requests_for_one_ip_one_wins_others_409(engine):
    services = Services(engine, VXLAN)
    net = services.create(ADMIN, "networks", {"name": "n"})
    services.create(ADMIN, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.8.0.0/24"})
    start = threading.Barrier(10)

    def create(_i: int) -> str:
        start.wait()
        try:
            services.create(ADMIN, "ports", {"network_id": net["id"],
                                             "fixed_ips": [{"ip_address": "10.8.0.50"}]})
            return "ok"
        except errors.IpAddressInUse:
            return "409"

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(create, range(10)))
    assert outcomes.count("ok") == 1 and outcomes.count("409") == 9


def test_concurrent_networks_get_distinct_vnis(engine):
    services = Services(engine, VXLAN)
    start = threading.Barrier(20)

    def create(i: int) -> dict:
        start.wait()
        return services.create(ADMIN, "networks", {"name": f"n{i}"})

    with ThreadPoolExecutor(20) as pool:
        nets = list(pool.map(create, range(20)))
    vnis = [n["provider:segmentation_id"] for n in nets]
    assert len(set(vnis)) == 20 and all(1 <= v <= 1000 for v in vnis)


def test_bulk_create_and_delete_cycle(engine):
    services = Services(engine, VXLAN)
    net = services.create(ADMIN, "networks", {"name": "n"})
    sub = services.create(ADMIN, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.7.0.0/22"})
    ports = services.create_bulk(ADMIN, "ports", [{"network_id": net["id"]} for _ in range(60)])
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 60
    with pytest.raises(errors.SubnetInUse):
        services.delete(ADMIN, "subnets", sub["id"])
    with pytest.raises(errors.NetworkInUse):
        services.delete(ADMIN, "networks", net["id"])
    for p in ports:
        services.delete(ADMIN, "ports", p["id"])
    services.delete(ADMIN, "networks", net["id"])
    with pytest.raises(errors.SubnetNotFound):
        services.get(ADMIN, "subnets", sub["id"])


NASTY_STRINGS = ["\x00", "x\x00y", "🙂" * 10, "é" * 255, "'; DROP TABLE ports; --", "%", "_", "\\"]


def test_nasty_values_are_stored_or_rejected_with_4xx(engine):
    services = Services(engine, VXLAN)
    net = services.create(ADMIN, "networks", {"name": "n"})
    for value in NASTY_STRINGS:
        for attr in ("name", "description"):
            try:
                got = services.update(ADMIN, "networks", net["id"], {attr: value})
                assert got[attr] == value
                assert services.get(ADMIN, "networks", net["id"])[attr] == value
            except errors.NeutronError as e:
                assert e.status == 400 and "\x00" in value
            try:
                items = services.list(ADMIN, "networks", ListQuery(filters={attr: [value]})).items
                assert [n[attr] for n in items] in ([], [value])
            except errors.NeutronError as e:
                assert e.status == 400 and "\x00" in value
    for resource in ("networks", "subnets", "ports", "agents"):
        for bad_id in ("x\x00y", "🙂", "' OR 1=1 --"):
            with pytest.raises(errors.NeutronError) as info:
                services.get(ADMIN, resource, bad_id)
            assert 400 <= info.value.status < 500
            with pytest.raises(errors.NeutronError):
                services.list(ADMIN, resource, ListQuery(marker=bad_id))
    for key, value in (("mtu", "99999999999"), ("revision_number", "-99999999999"), ("mtu", "1e3")):
        with pytest.raises(errors.BadRequest):
            services.list(ADMIN, "networks", ListQuery(filters={key: [value]}))
    # Names compare exactly (case and accents) on every backend.
    services.update(ADMIN, "networks", net["id"], {"name": "Net"})
    assert services.list(ADMIN, "networks", ListQuery(filters={"name": ["net"]})).items == []
    assert len(services.list(ADMIN, "networks", ListQuery(filters={"name": ["Net"]})).items) == 1


def test_status_reports_and_details_on_backend(engine):
    from lbtap.domain.naming import tap_name
    from lbtap.server.rpc_handlers import RpcHandlers

    services = Services(engine, VXLAN)
    rpc = RpcHandlers(engine, VXLAN)
    net = services.create(ADMIN, "networks", {"name": "n"})
    services.create(ADMIN, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.6.0.0/22"})
    ports = services.create_bulk(ADMIN, "ports", [{"network_id": net["id"]} for _ in range(200)])
    rpc.report_state({"agent_type": "Linux bridge agent", "host": "h1", "binary": "b", "topic": "t"})
    devs = [tap_name(p["id"]) for p in ports]
    details = rpc.get_devices_details_list(devs, "a", "h1")
    assert [d["port_id"] for d in details] == [p["id"] for p in ports]
    assert rpc.update_device_list(devs, [], "a", "h1")["failed_devices_up"] == []
    listed = services.list(ADMIN, "ports", ListQuery(filters={"status": ["ACTIVE"]})).items
    assert len(listed) == 200 and {p["binding:vif_type"] for p in listed} == {"bridge"}


def test_network_delete_racing_port_creates_never_orphans_a_created_port(engine):
    """Either the delete sees the port (409) or the create sees no network (404); a
    port reported as created is never swept away by the cascade."""
    services = Services(engine, VXLAN)
    for _round in range(4):
        net = services.create(ADMIN, "networks", {})
        services.create(ADMIN, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.3.0.0/24"})
        start = threading.Barrier(9)
        created, outcomes = [], []

        def create_port() -> None:
            start.wait()
            try:
                created.append(services.create(ADMIN, "ports", {"network_id": net["id"]})["id"])
            except errors.NetworkNotFound:
                outcomes.append("404")

        def delete_network() -> None:
            start.wait()
            try:
                services.delete(ADMIN, "networks", net["id"])
                outcomes.append("deleted")
            except errors.NetworkInUse:
                outcomes.append("409")

        threads = [threading.Thread(target=create_port) for _ in range(8)]
        threads.append(threading.Thread(target=delete_network))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(created) + outcomes.count("404") == 8
        for port_id in created:
            assert services.get(ADMIN, "ports", port_id)["network_id"] == net["id"]
        if "deleted" in outcomes:
            assert created == []


@pytest.mark.parametrize("kind", KINDS)
def test_servers_starting_together_migrate_once(kind, tmp_path):
    url = fresh_db_url(kind, tmp_path)
    engines = [create_db_engine(url) for _ in range(8)]
    start = threading.Barrier(8)

    def run(eng):
        start.wait()
        upgrade(eng)

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, engines))
        assert current_heads(engines[0]) == script_heads()
    finally:
        for eng in engines:
            eng.dispose()
        drop_db_url(url)
