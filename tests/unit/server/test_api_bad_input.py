"""Bad input gets the right 4xx NeutronError and leaves the database as it was."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lbtap.config import Settings
from lbtap.server.app import create_app
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.services import Services

COLLECTIONS = ("networks", "subnets", "ports")


@pytest.fixture
def client(tmp_path):
    settings = Settings(state_dir=str(tmp_path))
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    # A project-scoped admin: owns what it creates and may set every attribute.
    with TestClient(create_app(settings, Services(engine, settings)), raise_server_exceptions=False,
                    headers={"X-Project-Id": "p1", "X-Roles": "admin"}) as c:
        yield c
    engine.dispose()


@pytest.fixture
def world(client):
    """One network with a /24 subnet (small pool) and one port."""
    net = client.post("/v2.0/networks", json={"network": {"name": "n"}}).json()["network"]
    sub = client.post("/v2.0/subnets", json={"subnet": {
        "network_id": net["id"], "cidr": "10.9.0.0/24", "ip_version": 4,
        "allocation_pools": [{"start": "10.9.0.10", "end": "10.9.0.20"}]}}).json()["subnet"]
    port = client.post("/v2.0/ports", json={"port": {"network_id": net["id"]}}).json()["port"]
    return {"net": net, "sub": sub, "port": port}


def snapshot(client) -> dict:
    return {c: client.get(f"/v2.0/{c}?sort_key=id").json()[c] for c in COLLECTIONS}


def _cases(w):
    net, sub, port = w["net"]["id"], w["sub"]["id"], w["port"]["id"]
    ip = lambda a: [{"subnet_id": sub, "ip_address": a}]  # noqa: E731
    return [
        # (method, path, body or raw bytes, status)
        ("POST", "/v2.0/networks", b'{"network": {"name": "x"', 400),
        ("POST", "/v2.0/networks", {"network": {"name": "x", "colour": "red"}}, 400),
        ("POST", "/v2.0/networks", {"network": {"name": 5}}, 400),
        ("POST", "/v2.0/networks", {"network": {"admin_state_up": "sure"}}, 400),
        ("POST", "/v2.0/networks", {"network": {"mtu": "big"}}, 400),
        ("POST", "/v2.0/networks", {"network": {"name": "x" * 256}}, 400),
        ("POST", "/v2.0/networks", {"network": {"status": "DOWN"}}, 400),
        ("POST", "/v2.0/networks", {"networks": [{"name": "ok"}, {"name": "x" * 256}]}, 400),
        ("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/33", "ip_version": 4}}, 400),
        ("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "banana", "ip_version": 4}}, 400),
        ("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.9.0.0/25", "ip_version": 4}}, 400),
        ("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.8.0.0/24", "ip_version": 4,
                                              "allocation_pools": [{"start": "10.8.0.2", "end": "10.8.0.50"},
                                                                   {"start": "10.8.0.40", "end": "10.8.0.60"}]}},
         400),
        ("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.7.0.0/24", "ip_version": 4,
                                              "allocation_pools": [{"start": "10.6.0.2", "end": "10.6.0.9"}]}},
         400),
        ("POST", "/v2.0/subnets", {"subnet": {"network_id": "00000000-0000-0000-0000-000000000000",
                                              "cidr": "10.5.0.0/24", "ip_version": 4}}, 404),
        ("POST", "/v2.0/ports", {"port": {"network_id": net, "mac_address": "zz:zz"}}, 400),
        ("POST", "/v2.0/ports", {"port": {"network_id": net, "mac_address": "01:00:5e:00:00:01"}}, 400),
        ("POST", "/v2.0/ports", {"port": {"network_id": net, "mac_address": w["port"]["mac_address"]}}, 409),
        ("POST", "/v2.0/ports", {"port": {"network_id": net, "fixed_ips": ip("10.10.0.5")}}, 400),
        ("POST", "/v2.0/ports", {"port": {"network_id": net, "fixed_ips": ip("not-an-ip")}}, 400),
        ("POST", "/v2.0/ports", {"port": {"network_id": net,
                                          "fixed_ips": ip(w["port"]["fixed_ips"][0]["ip_address"])}}, 409),
        ("POST", "/v2.0/ports", {"port": {"network_id": net, "admin_state_up": []}}, 400),
        ("POST", "/v2.0/ports", {"port": {"network_id": "nope"}}, 400),
        ("POST", "/v2.0/ports", {"port": {"network_id": "00000000-0000-0000-0000-000000000000"}}, 404),
        ("POST", "/v2.0/ports", {"port": {"name": "no network"}}, 400),
        ("PUT", f"/v2.0/ports/{port}", {"port": {"device_id": "x" * 256}}, 400),
        ("PUT", f"/v2.0/ports/{port}", {"port": {"status": "ACTIVE"}}, 400),
        ("PUT", f"/v2.0/ports/{port}", {"port": {"network_id": net}}, 400),
        ("PUT", f"/v2.0/ports/{port}", {"port": {"fixed_ips": ip("10.10.0.5")}}, 400),
        ("PUT", f"/v2.0/subnets/{sub}", {"subnet": {"cidr": "10.9.0.0/16"}}, 400),
        ("PUT", "/v2.0/ports/00000000-0000-0000-0000-000000000000", {"port": {"name": "x"}}, 404),
        ("DELETE", "/v2.0/ports/00000000-0000-0000-0000-000000000000", None, 404),
        ("DELETE", f"/v2.0/subnets/{sub}", None, 409),
        ("DELETE", f"/v2.0/networks/{net}", None, 409),
    ]


def test_bad_input_is_rejected_and_changes_nothing(client, world):
    before = snapshot(client)
    failures = []
    for method, path, body, status in _cases(world):
        kwargs = {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
        resp = client.request(method, path, **kwargs)
        ok = resp.status_code == status and set(resp.json().get("NeutronError", {})) == {"type", "message", "detail"}
        if not ok:
            failures.append(f"{method} {path} {str(body)[:80]}: expected {status}, got {resp.status_code} {resp.text}")
    assert not failures, "\n".join(failures)
    assert snapshot(client) == before


def test_exhausted_pool_is_409_and_changes_nothing(client, world):
    net = world["net"]["id"]
    # The pool 10.9.0.10-20 holds 11 addresses and one is taken.
    assert client.post("/v2.0/ports", json={"ports": [{"network_id": net}] * 10}).status_code == 201
    before = snapshot(client)
    resp = client.post("/v2.0/ports", json={"ports": [{"network_id": net}] * 2})
    assert resp.status_code == 409 and resp.json()["NeutronError"]["type"] == "IpAddressGenerationFailure"
    assert snapshot(client) == before
