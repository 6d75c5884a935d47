"""The routers and floating-IP HTTP API: Neutron bodies, member actions, errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lbtap.config import Settings
from lbtap.server.app import create_app
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.services import Services


@pytest.fixture
def client(tmp_path):
    settings = Settings(state_dir=str(tmp_path))
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    with TestClient(create_app(settings, Services(engine, settings)), raise_server_exceptions=False,
                    headers={"X-Project-Id": "p1", "X-Roles": "admin"}) as c:
        yield c
    engine.dispose()


def post(c, coll, member, **body):
    r = c.post(f"/v2.0/{coll}", json={member: body})
    assert r.status_code == 201, r.text
    return r.json()[member]


def test_router_lifecycle_over_http(client):
    ext = post(client, "networks", "network", name="pub", **{"router:external": True})
    post(client, "subnets", "subnet", network_id=ext["id"], cidr="198.51.100.0/24", ip_version=4)
    net = post(client, "networks", "network", name="a")
    sub = post(client, "subnets", "subnet", network_id=net["id"], cidr="10.0.0.0/24", ip_version=4)
    r = post(client, "routers", "router", name="r", external_gateway_info={"network_id": ext["id"]})
    assert r["external_gateway_info"]["external_fixed_ips"][0]["ip_address"].startswith("198.51.100.")

    resp = client.put(f"/v2.0/routers/{r['id']}/add_router_interface", json={"subnet_id": sub["id"]})
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["id"] == r["id"] and info["subnet_id"] == sub["id"] and info["port_id"]
    ports = client.get("/v2.0/ports", params={"device_id": r["id"]}).json()["ports"]
    assert sorted(p["device_owner"] for p in ports) == ["network:router_gateway", "network:router_interface"]

    fip = post(client, "floatingips", "floatingip", floating_network_id=ext["id"])
    assert client.get("/v2.0/floatingips").json()["floatingips"][0]["id"] == fip["id"]
    assert client.get("/v2.0/floatingips", params={"floating_ip_address": fip["floating_ip_address"]}
                      ).json()["floatingips"][0]["status"] == "DOWN"

    assert client.delete(f"/v2.0/routers/{r['id']}").json()["NeutronError"]["type"] == "RouterInUse"
    bad = client.put(f"/v2.0/routers/{r['id']}/remove_router_interface", json={})
    assert bad.status_code == 400 and "NeutronError" in bad.json()
    resp = client.put(f"/v2.0/routers/{r['id']}/remove_router_interface", json={"port_id": info["port_id"]})
    assert resp.status_code == 200 and resp.json()["port_id"] == info["port_id"]
    assert client.delete(f"/v2.0/floatingips/{fip['id']}").status_code == 204
    assert client.delete(f"/v2.0/routers/{r['id']}").status_code == 204
    assert client.get(f"/v2.0/routers/{r['id']}").status_code == 404
    assert client.get("/v2.0/ports").json()["ports"] == [], "gateway and floating-IP ports go with them"


def test_router_input_validation(client):
    net = post(client, "networks", "network", name="internal")
    r = client.post("/v2.0/routers", json={"router": {"external_gateway_info": {"network_id": net["id"]}}})
    assert r.status_code == 400, "an internal network cannot be a gateway"
    r = client.post("/v2.0/routers", json={"router": {"external_gateway_info": {"bogus": 1}}})
    assert r.status_code == 400
    r = client.post("/v2.0/routers", json={"router": {"routes": []}})
    assert r.status_code == 400, "routes are set by update only"
    missing = client.put("/v2.0/routers/00000000-0000-0000-0000-000000000000/add_router_interface",
                         json={"subnet_id": "00000000-0000-0000-0000-000000000001"})
    assert missing.status_code == 404
    assert client.post("/v2.0/floatingips", json={"floatingip": {}}).status_code == 400
