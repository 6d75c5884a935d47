"""CRUD, bulk create, filters, fields, sorting and pagination links over a SQLite DB."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

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
    # A project-scoped admin: owns what it creates and may set every attribute.
    with TestClient(create_app(settings, Services(engine, settings)), raise_server_exceptions=False,
                    headers={"X-Project-Id": "p1", "X-Roles": "admin"}) as c:
        yield c
    engine.dispose()


@pytest.fixture
def net(client):
    resp = client.post("/v2.0/networks", json={"network": {"name": "net1", "project_id": "p1"}})
    assert resp.status_code == 201, resp.text
    return resp.json()["network"]


@pytest.fixture
def subnet(client, net):
    resp = client.post("/v2.0/subnets", json={"subnet": {
        "network_id": net["id"], "cidr": "10.1.0.0/24", "ip_version": 4, "name": "sub1"}})
    assert resp.status_code == 201, resp.text
    return resp.json()["subnet"]


def test_network_crud_round_trip(client):
    resp = client.post("/v2.0/networks", json={"network": {"name": "n", "project_id": "p1"}})
    assert resp.status_code == 201
    net = resp.json()["network"]
    assert net["name"] == "n" and net["tenant_id"] == "p1" and net["admin_state_up"] is True
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"]["id"] == net["id"]
    resp = client.put(f"/v2.0/networks/{net['id']}", json={"network": {"name": "renamed"}})
    assert resp.status_code == 200 and resp.json()["network"]["name"] == "renamed"
    assert resp.json()["network"]["revision_number"] > net["revision_number"]
    resp = client.delete(f"/v2.0/networks/{net['id']}")
    assert resp.status_code == 204 and resp.content == b""
    assert client.get(f"/v2.0/networks/{net['id']}").status_code == 404
    assert client.delete(f"/v2.0/networks/{net['id']}").json()["NeutronError"]["type"] == "NetworkNotFound"


def test_new_port_is_down_and_unbound_with_an_ip(client, net, subnet):
    resp = client.post("/v2.0/ports", json={"port": {"network_id": net["id"], "name": "p"}})
    assert resp.status_code == 201, resp.text
    port = resp.json()["port"]
    assert port["status"] == "DOWN" and port["binding:vif_type"] == "unbound"
    assert port["mac_address"].startswith("fa:16:3e:")
    (ip,) = port["fixed_ips"]
    assert ip["subnet_id"] == subnet["id"] and ip["ip_address"].startswith("10.1.0.")


def test_bulk_create_returns_all_items(client, net, subnet):
    resp = client.post("/v2.0/ports", json={"ports": [{"network_id": net["id"], "name": f"b{i}"} for i in range(20)]})
    assert resp.status_code == 201, resp.text
    ports = resp.json()["ports"]
    assert [p["name"] for p in ports] == [f"b{i}" for i in range(20)]
    assert len({p["mac_address"] for p in ports}) == 20
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 20


def test_bulk_create_is_all_or_nothing(client, net, subnet):
    body = {"ports": [{"network_id": net["id"]}, {"network_id": net["id"], "mac_address": "nope"}]}
    assert client.post("/v2.0/ports", json=body).status_code == 400
    assert client.get("/v2.0/ports").json()["ports"] == []


def test_filters_or_within_a_key_and_across_keys(client, net, subnet):
    for name, owner in (("a", "compute:nova"), ("b", "network:dhcp"), ("c", "compute:nova")):
        client.post("/v2.0/ports", json={"port": {"network_id": net["id"], "name": name, "device_owner": owner}})
    names = lambda q: sorted(p["name"] for p in client.get(f"/v2.0/ports?{q}").json()["ports"])  # noqa: E731
    assert names("name=a&name=b") == ["a", "b"]
    assert names("device_owner=compute:nova") == ["a", "c"]
    assert names("device_owner=compute:nova&name=c&name=b") == ["c"]
    assert names(f"network_id={net['id']}") == ["a", "b", "c"]
    assert names("name=zzz") == []


def test_fields_select_attributes(client, net):
    nets = client.get("/v2.0/networks?fields=id&fields=name").json()["networks"]
    assert nets == [{"id": net["id"], "name": "net1"}]
    one = client.get(f"/v2.0/networks/{net['id']}?fields=status").json()["network"]
    assert one == {"status": "ACTIVE"}


def test_sorting(client):
    for name in ("b", "c", "a"):
        client.post("/v2.0/networks", json={"network": {"name": name}})
    get = lambda q: [n["name"] for n in client.get(f"/v2.0/networks?{q}").json()["networks"]]  # noqa: E731
    assert get("sort_key=name") == ["a", "b", "c"]
    assert get("sort_key=name&sort_dir=desc") == ["c", "b", "a"]


def _page(client, url):
    body = client.get(url).json()
    links = {link["rel"]: link["href"] for link in body.get("networks_links", [])}
    return [n["name"] for n in body["networks"]], links


def test_pagination_links_walk_forward_and_back(client):
    names = [f"n{i:02d}" for i in range(7)]
    client.post("/v2.0/networks", json={"networks": [{"name": n} for n in names]})
    seen, url, pages = [], "/v2.0/networks?limit=3&sort_key=name&fields=name", []
    while url:
        page, links = _page(client, url)
        seen += page
        pages.append((page, links))
        url = links.get("next")
    assert seen == names
    assert [len(p) for p, _ in pages] == [3, 3, 1]
    assert "previous" not in pages[0][1] and "next" not in pages[-1][1]
    # The next href keeps the client's other parameters and carries the marker.
    query = parse_qs(urlparse(pages[0][1]["next"]).query)
    assert query["limit"] == ["3"] and query["sort_key"] == ["name"] and query["fields"] == ["name"]
    # Walking back from the last page reaches the first.
    back, _ = _page(client, pages[-1][1]["previous"])
    assert back == names[3:6]


def test_page_reverse_from_marker(client):
    created = client.post("/v2.0/networks", json={"networks": [{"name": f"r{i}"} for i in range(5)]}).json()
    by_name = {n["name"]: n["id"] for n in created["networks"]}
    page, links = _page(client, f"/v2.0/networks?sort_key=name&limit=2&marker={by_name['r4']}&page_reverse=true")
    assert page == ["r2", "r3"]
    assert "next" in links and "previous" in links
    page, links = _page(client, links["previous"])
    assert page == ["r0", "r1"] and "previous" not in links


def test_unknown_ids_are_404_per_resource(client):
    for coll, type_name in (("networks", "NetworkNotFound"), ("subnets", "SubnetNotFound"),
                            ("ports", "PortNotFound"), ("agents", "AgentNotFound")):
        resp = client.get(f"/v2.0/{coll}/00000000-0000-0000-0000-000000000000")
        assert resp.status_code == 404 and resp.json()["NeutronError"]["type"] == type_name
        resp = client.put(f"/v2.0/{coll}/nope", json={coll[:-1]: {"description": "x"}})
        assert resp.status_code == 404


def test_subnet_create_and_network_lists_it(client, net, subnet):
    assert subnet["cidr"] == "10.1.0.0/24" and subnet["gateway_ip"] == "10.1.0.1"
    assert subnet["allocation_pools"] == [{"start": "10.1.0.2", "end": "10.1.0.254"}]
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"]["subnets"] == [subnet["id"]]
    assert client.delete(f"/v2.0/networks/{net['id']}").status_code == 204
    assert client.get("/v2.0/subnets").json()["subnets"] == []
