"""QoS rules over HTTP: bursts tc cannot apply, and direction clashes on update."""

from __future__ import annotations

from lbtap.drivers.qos import max_burst_kbps
from lbtap.server.db.engine import Database
from tests.unit.server.test_api_http import assert_neutron_error, client  # noqa: F401 - the fixture

RULES = "/v2.0/qos/policies/{}/bandwidth_limit_rules"


def policy(client):  # noqa: F811
    return client.post("/v2.0/qos/policies", json={"policy": {"name": "slow"}}).json()["policy"]["id"]


def add_rule(client, pid, **rule):  # noqa: F811
    return client.post(RULES.format(pid), json={"bandwidth_limit_rule": rule})


def test_a_burst_tc_cannot_express_is_refused(client):  # noqa: F811
    pid = policy(client)
    # 1000 s worth of 1 Mbit/s: TBF's 32-bit buffer (in psched ticks) holds about 275 s
    err = assert_neutron_error(add_rule(client, pid, max_kbps=1000, max_burst_kbps=1_000_000), 400)
    assert "max_burst_kbps" in err["message"] and str(max_burst_kbps(1000)) in err["message"]
    ok = add_rule(client, pid, max_kbps=1000, max_burst_kbps=max_burst_kbps(1000))
    assert ok.status_code == 201, ok.text
    rid = ok.json()["bandwidth_limit_rule"]["id"]
    # on update, checked against the stored rate too
    assert_neutron_error(client.put(f"{RULES.format(pid)}/{rid}", json={"bandwidth_limit_rule": {"max_kbps": 10}}),
                         400)
    assert_neutron_error(client.put(f"{RULES.format(pid)}/{rid}",
                                    json={"bandwidth_limit_rule": {"max_burst_kbps": 2**31 - 1}}), 400)
    assert client.get(f"{RULES.format(pid)}/{rid}").json()["bandwidth_limit_rule"]["max_kbps"] == 1000


def test_changing_a_rule_to_a_taken_direction_is_a_conflict_at_once(client, monkeypatch):  # noqa: F811
    pid = policy(client)
    assert add_rule(client, pid, max_kbps=1000, direction="egress").status_code == 201
    ingress = add_rule(client, pid, max_kbps=2000, direction="ingress").json()["bandwidth_limit_rule"]["id"]
    attempts = []
    real = Database._write_once

    def counting(self, fn):
        attempts.append(fn)
        return real(self, fn)

    monkeypatch.setattr(Database, "_write_once", counting)
    resp = client.put(f"{RULES.format(pid)}/{ingress}", json={"bandwidth_limit_rule": {"direction": "egress"}})
    assert_neutron_error(resp, 409, "QoSRulesConflict")
    assert len(attempts) == 1, "not retried as a lost race"
    # its own direction is no clash
    same = client.put(f"{RULES.format(pid)}/{ingress}", json={"bandwidth_limit_rule": {"direction": "ingress",
                                                                                       "max_kbps": 3000}})
    assert same.status_code == 200, same.text
