"""The HTTP surface itself: version discovery, extensions, framework errors, OpenAPI, metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lbtap.config import Settings
from lbtap.server.app import create_app
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.metrics import count_rpc
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


def assert_neutron_error(resp, status: int, type_name: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["NeutronError"]
    assert set(err) == {"type", "message", "detail"}
    assert "Traceback" not in resp.text
    if type_name:
        assert err["type"] == type_name
    return err


def test_version_document_points_at_v2(client):
    doc = client.get("/").json()
    (version,) = doc["versions"]
    assert version["id"] == "v2.0" and version["status"] == "CURRENT"
    assert version["links"] == [{"rel": "self", "href": "http://testserver/v2.0/"}]


def test_responses_carry_a_request_id(client):
    first = client.get("/v2.0/networks").headers["X-Openstack-Request-Id"]
    second = client.get("/v2.0/networks/nope").headers["X-Openstack-Request-Id"]
    assert first.startswith("req-") and second.startswith("req-") and first != second


def test_v2_root_lists_the_collections(client):
    resources = client.get("/v2.0/").json()["resources"]
    assert {r["collection"] for r in resources} >= {"networks", "subnets", "ports", "agents"}
    assert client.get("/v2.0", follow_redirects=True).status_code == 200


def test_extensions_are_only_what_is_implemented(client):
    aliases = {e["alias"] for e in client.get("/v2.0/extensions").json()["extensions"]}
    assert {"binding", "provider", "external-net", "agent", "pagination", "sorting",
            "standard-attr-description", "standard-attr-timestamp", "standard-attr-revisions",
            "project-id", "allowed-address-pairs", "security-group", "qos", "router", "extraroute",
            "ext-gw-mode"} <= aliases
    # Not implemented here: e.g. BGP VPNs, tag API, quotas.
    assert not aliases & {"bgpvpn", "standard-attr-tag", "quotas"}
    assert client.get("/v2.0/extensions/binding").json()["extension"]["alias"] == "binding"
    assert_neutron_error(client.get("/v2.0/extensions/bgpvpn"), 404, "ExtensionNotFound")


def test_unknown_route_is_a_neutron_404(client):
    assert_neutron_error(client.get("/v2.0/bgpvpns"), 404, "HTTPNotFound")
    assert_neutron_error(client.get("/nothing/here"), 404)


def test_wrong_method_is_a_neutron_405(client):
    assert_neutron_error(client.patch("/v2.0/networks/x", json={}), 405, "HTTPMethodNotAllowed")
    assert_neutron_error(client.post("/v2.0/agents", json={"agent": {}}), 405)
    assert_neutron_error(client.delete("/v2.0/networks"), 405)


@pytest.mark.parametrize("body", [b"{bad json", b"", b"   ", b"[NaN]", b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_malformed_bodies_are_400(client, body):
    resp = client.post("/v2.0/networks", content=body, headers={"content-type": "application/json"})
    assert_neutron_error(resp, 400)


@pytest.mark.parametrize("body", [[], "net", 5, None, {"net": {}}, {"network": []}, {"network": "x"},
                                  {"networks": []}, {"networks": {}}, {"networks": [1]},
                                  {"network": {}, "networks": [{}]}, {"network": {}, "extra": 1}])
def test_wrong_wrappers_are_400(client, body):
    assert_neutron_error(client.post("/v2.0/networks", json=body), 400)
    assert client.get("/v2.0/networks").json()["networks"] == []


def test_update_needs_the_singular_wrapper(client):
    net = client.post("/v2.0/networks", json={"network": {"name": "a"}}).json()["network"]
    for body in ({"networks": [{"name": "b"}]}, {"name": "b"}, [], {"network": "b"}):
        assert_neutron_error(client.put(f"/v2.0/networks/{net['id']}", json=body), 400)
    assert client.get(f"/v2.0/networks/{net['id']}").json()["network"]["name"] == "a"


def test_too_large_body_is_413(client):
    big = b'{"network": {"name": "' + b"x" * (9 * 1024 * 1024) + b'"}}'
    assert_neutron_error(client.post("/v2.0/networks", content=big), 413, "RequestEntityTooLarge")


@pytest.mark.parametrize("query", ["limit=abc", "limit=-1", "limit=1&limit=2", "page_reverse=maybe",
                                   "sort_key=name&sort_dir=up", "sort_key=name&sort_dir=asc&sort_dir=desc",
                                   "sort_key=", "no_such_attr=1", "sort_key=no_such_attr",
                                   "admin_state_up=perhaps", "mtu=big"])
def test_bad_query_strings_are_400(client, query):
    assert_neutron_error(client.get(f"/v2.0/networks?{query}"), 400)


def test_openapi_describes_bodies_and_query_parameters(client):
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/v2.0/ports"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"port", "ports"} == {next(iter(alt["required"])) for alt in schema["oneOf"]}
    params = {p["name"] for p in doc["paths"]["/v2.0/ports"]["get"]["parameters"]}
    assert {"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse", "network_id",
            "device_owner"} <= params
    assert "put" in doc["paths"]["/v2.0/ports/{id}"] and "delete" in doc["paths"]["/v2.0/ports/{id}"]


def test_metrics_count_requests_ports_and_rpc(client):
    net = client.post("/v2.0/networks", json={"network": {"name": "m"}}).json()["network"]
    client.post("/v2.0/ports", json={"ports": [{"network_id": net["id"]}] * 3})
    client.get("/v2.0/nothing")
    count_rpc("update_device_list")
    text = client.get("/metrics").text
    assert 'lbtap_ports{status="DOWN"} 3.0' in text
    assert 'lbtap_api_requests_total{method="POST",route="/v2.0/ports",status="201"} 1.0' in text
    assert 'lbtap_api_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'lbtap_rpc_messages_total{method="update_device_list"}' in text
    assert "lbtap_ports_scrape_ok 1.0" in text


def test_rpc_counter_keeps_labels_bounded(client):
    for i in range(200):
        count_rpc(f"bogus_method_{i}")
    count_rpc("not an identifier; drop table")
    count_rpc("update_device_up")  # known methods keep their own label whatever came before
    text = client.get("/metrics").text
    methods = {line.split('"')[1] for line in text.splitlines() if line.startswith("lbtap_rpc_messages_total{")}
    assert "other" in methods and "update_device_up" in methods
    assert len([m for m in methods if m.startswith("bogus_method_")]) <= 16
