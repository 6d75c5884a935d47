"""Tenancy and auth: noauth headers, static tokens, project isolation, roles."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from lbtap.config import ConfigError, Settings
from lbtap.server.app import create_app
from lbtap.server.auth import load_token_file
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.services import Services

TOKENS = """
# No project: the cloud admin, who sees every project's resources.
[tokens.t-admin]
roles = ["admin"]

[tokens.t-alice]
project_id = "alice"
roles = ["member"]

[tokens.t-bob]
project_id = "bob"
roles = ["member"]

[tokens.t-carol]
project_id = "alice"
roles = ["reader"]
"""


def _client(tmp_path, **server):
    settings = Settings(state_dir=str(tmp_path), server=server)
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    return TestClient(create_app(settings, Services(engine, settings)), raise_server_exceptions=False), engine


@pytest.fixture
def token_client(tmp_path):
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS)
    client, engine = _client(tmp_path, auth_strategy="token", token_file=str(path))
    with client:
        yield client
    engine.dispose()


@pytest.fixture
def noauth_client(tmp_path):
    client, engine = _client(tmp_path)
    with client:
        yield client
    engine.dispose()


def as_(token):
    return {"X-Auth-Token": token}


def _error_type(resp, status):
    assert resp.status_code == status, resp.text
    return resp.json()["NeutronError"]["type"]


def test_missing_or_bad_token_is_401(token_client):
    assert _error_type(token_client.get("/v2.0/networks"), 401)
    assert _error_type(token_client.get("/v2.0/networks", headers=as_("wrong")), 401)
    assert _error_type(token_client.post("/v2.0/networks", json={"network": {}}, headers=as_("")), 401)
    # Version discovery stays open: clients read it before authenticating.
    assert token_client.get("/").status_code == 200


def test_projects_only_see_their_own_and_shared(token_client):
    c = token_client
    mine = c.post("/v2.0/networks", json={"network": {"name": "a"}}, headers=as_("t-alice")).json()["network"]
    assert mine["tenant_id"] == "alice" and mine["project_id"] == "alice"
    shared = c.post("/v2.0/networks", json={"network": {"name": "s", "shared": True, "project_id": "ops"}},
                    headers=as_("t-admin")).json()["network"]
    bob_sees = {n["id"] for n in c.get("/v2.0/networks", headers=as_("t-bob")).json()["networks"]}
    assert bob_sees == {shared["id"]}
    assert _error_type(c.get(f"/v2.0/networks/{mine['id']}", headers=as_("t-bob")), 404) == "NetworkNotFound"
    assert c.put(f"/v2.0/networks/{mine['id']}", json={"network": {"name": "x"}},
                 headers=as_("t-bob")).status_code == 404
    assert c.delete(f"/v2.0/networks/{mine['id']}", headers=as_("t-bob")).status_code == 404
    # Bob cannot put ports on alice's private network either.
    assert c.post("/v2.0/ports", json={"port": {"network_id": mine["id"]}},
                  headers=as_("t-bob")).status_code == 404
    admin_sees = {n["id"] for n in c.get("/v2.0/networks", headers=as_("t-admin")).json()["networks"]}
    assert admin_sees == {mine["id"], shared["id"]}
    assert c.get(f"/v2.0/networks/{mine['id']}", headers=as_("t-alice")).json()["network"]["name"] == "a"


def test_reader_cannot_write(token_client):
    c = token_client
    net = c.post("/v2.0/networks", json={"network": {"name": "a"}}, headers=as_("t-alice")).json()["network"]
    assert c.get(f"/v2.0/networks/{net['id']}", headers=as_("t-carol")).status_code == 200
    assert _error_type(c.post("/v2.0/networks", json={"network": {}}, headers=as_("t-carol")), 403)
    assert _error_type(c.put(f"/v2.0/networks/{net['id']}", json={"network": {"name": "b"}},
                             headers=as_("t-carol")), 403)
    assert _error_type(c.delete(f"/v2.0/networks/{net['id']}", headers=as_("t-carol")), 403)
    assert c.get(f"/v2.0/networks/{net['id']}", headers=as_("t-alice")).json()["network"]["name"] == "a"


def test_only_admins_set_provider_and_binding(token_client):
    c = token_client
    before = c.get("/v2.0/networks", headers=as_("t-admin")).json()["networks"]
    resp = c.post("/v2.0/networks", json={"network": {"provider:network_type": "vxlan",
                                                      "provider:segmentation_id": 77}}, headers=as_("t-alice"))
    assert _error_type(resp, 403) == "PolicyNotAuthorized"
    assert c.get("/v2.0/networks", headers=as_("t-admin")).json()["networks"] == before
    net = c.post("/v2.0/networks", json={"network": {"name": "a"}}, headers=as_("t-alice")).json()["network"]
    assert "provider:network_type" not in net  # admin-only attributes are hidden from members
    resp = c.post("/v2.0/ports", json={"port": {"network_id": net["id"], "binding:host_id": "h1"}},
                  headers=as_("t-alice"))
    assert _error_type(resp, 403) == "PolicyNotAuthorized"
    port = c.post("/v2.0/ports", json={"port": {"network_id": net["id"]}}, headers=as_("t-alice")).json()["port"]
    assert _error_type(c.put(f"/v2.0/ports/{port['id']}", json={"port": {"binding:host_id": "h1"}},
                             headers=as_("t-alice")), 403)
    resp = c.put(f"/v2.0/ports/{port['id']}", json={"port": {"binding:host_id": "h1"}}, headers=as_("t-admin"))
    assert resp.status_code == 200 and resp.json()["port"]["binding:host_id"] == "h1"


def test_noauth_without_project_is_admin_and_with_project_is_member(noauth_client):
    c = noauth_client
    resp = c.post("/v2.0/networks", json={"network": {"name": "p", "provider:network_type": "vxlan"}},
                  headers={"X-Project-Id": "p1"})
    assert _error_type(resp, 403) == "PolicyNotAuthorized"
    net = c.post("/v2.0/networks", json={"network": {"name": "p"}}, headers={"X-Project-Id": "p1"}).json()["network"]
    assert net["tenant_id"] == "p1"
    assert c.get(f"/v2.0/networks/{net['id']}", headers={"X-Project-Id": "p2"}).status_code == 404
    assert c.get(f"/v2.0/networks/{net['id']}").json()["network"]["provider:network_type"] == "local"  # the tenant default
    reader = {"X-Project-Id": "p1", "X-Roles": "reader"}
    assert c.get(f"/v2.0/networks/{net['id']}", headers=reader).status_code == 200
    assert c.delete(f"/v2.0/networks/{net['id']}", headers=reader).status_code == 403
    assert _error_type(c.get("/v2.0/networks", headers={"X-Project-Id": "p1", "X-Roles": "god"}), 400)


def test_token_file_json_and_errors(tmp_path):
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"tokens": {"x": {"project_id": "p", "roles": ["reader"]}}}))
    assert load_token_file(good)["x"].roles == frozenset({"reader"})
    for bad in ({"tokens": {"x": {"project_id": "p", "roles": ["root"]}}},
                {"tokens": {"x": {"roles": ["member"]}}}, {"nope": 1}):
        good.write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            load_token_file(good)
    with pytest.raises(ConfigError):
        load_token_file(tmp_path / "missing.toml")
