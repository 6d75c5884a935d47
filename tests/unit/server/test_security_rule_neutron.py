"""Security group rules as Neutron validates and de-duplicates them: one-ended TCP/UDP
port ranges, protocol names and numbers, IPv6-only protocols on IPv4, duplicates
compared after normalising, and bulk requests applied all or nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.app import create_app
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.services import Services
from lbtap.server.services.security_groups import rule_key
from tests.unit.server.test_security_services import ALICE, World


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def _rules(w, sg):
    return w.svc.get(ALICE, "security_groups", sg["id"])["security_group_rules"]


def _fails(w, sg, **rule):
    with pytest.raises(errors.NeutronError) as e:
        w.rule(sg, **rule)
    return e.value.status, e.value.type_name


@pytest.mark.parametrize("rule,status,kind", [
    # Neutron: a port protocol needs both ends (equal for one port); no more min..65535.
    ({"protocol": "tcp", "port_range_min": 90}, 400, "SecurityGroupInvalidPortRange"),
    ({"protocol": "udp", "port_range_max": 90}, 400, "SecurityGroupInvalidPortRange"),
    ({"protocol": "6", "port_range_min": 90}, 400, "SecurityGroupInvalidPortRange"),
    ({"protocol": "sctp", "port_range_min": 90}, 400, "SecurityGroupInvalidPortRange"),
    ({"protocol": "tcp", "port_range_min": 0, "port_range_max": 0}, 400, "SecurityGroupInvalidPortValue"),
    ({"port_range_min": 80, "port_range_max": 80}, 400, "SecurityGroupProtocolRequiredWithPorts"),
    ({"protocol": "gre", "port_range_min": 80, "port_range_max": 80}, 400, "SecurityGroupInvalidProtocolForPort"),
    ({"protocol": "icmp", "port_range_max": 0}, 400, "SecurityGroupMissingIcmpType"),
    ({"protocol": "icmp", "port_range_min": 8, "port_range_max": 256}, 400, "SecurityGroupInvalidIcmpValue"),
    # IPv6-only protocols on an IPv4 rule.
    ({"protocol": "icmpv6"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "ipv6-icmp"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "58"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": 58, "ethertype": "IPv4"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "256"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"protocol": "dccp-ish"}, 400, "SecurityGroupRuleInvalidProtocol"),
])
def test_rule_refused_like_neutron(w, rule, status, kind):
    sg = w.group()
    before = _rules(w, sg)
    assert _fails(w, sg, direction="ingress", **rule) == (status, kind)
    assert _rules(w, sg) == before


@pytest.mark.parametrize("rule", [
    {"protocol": "tcp", "port_range_min": 80, "port_range_max": 80},
    {"protocol": "udp", "port_range_min": 1, "port_range_max": 65535},
    {"protocol": "icmp", "port_range_min": 8},
    {"protocol": "icmp", "port_range_min": 8, "port_range_max": 0},
    {"protocol": "icmp", "port_range_min": 3, "port_range_max": 1},  # type > code is fine for ICMP
    {"protocol": "icmpv6", "ethertype": "IPv6", "port_range_min": 128},
    {"protocol": "ipv6-icmp", "ethertype": "IPv6"},
    {"protocol": "icmp", "ethertype": "IPv6"},
    {"protocol": "58", "ethertype": "IPv6"},
    {"protocol": "gre"},
    {"protocol": "132", "port_range_min": 9, "port_range_max": 9},
])
def test_rule_accepted(w, rule):
    sg = w.group()
    r = w.rule(sg, direction="ingress", **rule)
    assert (r["port_range_min"], r["port_range_max"]) == (rule.get("port_range_min"), rule.get("port_range_max"))


@pytest.mark.parametrize("first,second", [
    ({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
     {"protocol": "6", "port_range_min": 22, "port_range_max": 22}),
    ({"protocol": "6", "port_range_min": 22, "port_range_max": 22},
     {"protocol": "TCP", "port_range_min": 22, "port_range_max": 22}),
    ({"protocol": "udp"}, {"protocol": 17}),
    ({"protocol": "icmp"}, {"protocol": "1"}),
    ({"protocol": "icmp", "ethertype": "IPv6"}, {"protocol": "ipv6-icmp", "ethertype": "IPv6"}),
    ({"protocol": "icmp", "ethertype": "IPv6"}, {"protocol": "icmpv6", "ethertype": "IPv6"}),
    ({"protocol": "ipv6-icmp", "ethertype": "IPv6", "port_range_min": 128},
     {"protocol": "58", "ethertype": "IPv6", "port_range_min": 128}),
    ({"protocol": "tcp", "remote_ip_prefix": "0.0.0.0/0"}, {"protocol": "tcp"}),
    ({"protocol": "tcp", "ethertype": "IPv6"}, {"protocol": "tcp", "ethertype": "IPv6", "remote_ip_prefix": "::/0"}),
    ({"remote_ip_prefix": "10.1.2.3/8"}, {"remote_ip_prefix": "10.0.0.0/8"}),
])
def test_duplicates_are_compared_normalised(w, first, second):
    sg = w.group()
    existing = w.rule(sg, direction="ingress", **first)
    before = _rules(w, sg)
    with pytest.raises(errors.Conflict) as e:
        w.rule(sg, direction="ingress", **second)
    assert e.value.type_name == "SecurityGroupRuleExists" and existing["id"] in e.value.msg
    assert _rules(w, sg) == before


def test_default_egress_rules_match_an_explicit_any_prefix(w):
    sg = w.group()  # starts with egress IPv4 and IPv6 to anywhere
    assert _fails(w, sg, direction="egress", remote_ip_prefix="0.0.0.0/0") == (409, "SecurityGroupRuleExists")
    assert _fails(w, sg, direction="egress", ethertype="IPv6", remote_ip_prefix="::/0") == (
        409, "SecurityGroupRuleExists")


def test_not_duplicates(w):
    sg = w.group()
    w.rule(sg, direction="ingress", protocol="icmp")
    w.rule(sg, direction="ingress", protocol="icmp", ethertype="IPv6")  # ICMP vs ICMPv6
    w.rule(sg, direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22)
    w.rule(sg, direction="ingress", protocol="tcp", port_range_min=22, port_range_max=23)
    w.rule(sg, direction="ingress", protocol="tcp", remote_ip_prefix="10.0.0.0/8")
    w.rule(sg, direction="egress", protocol="tcp")


def _bulk(w, sg, *rules):
    return w.svc.create_bulk(ALICE, "security_group_rules",
                             [{"security_group_id": sg["id"], "direction": "ingress", **r} for r in rules])


@pytest.mark.parametrize("rules,status,kind", [
    ([{"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
      {"protocol": "6", "port_range_min": 22, "port_range_max": 22}], 409, "DuplicateSecurityGroupRuleInPost"),
    ([{"protocol": "icmp", "ethertype": "IPv6"}, {"protocol": "ipv6-icmp", "ethertype": "IPv6"}],
     409, "DuplicateSecurityGroupRuleInPost"),
    ([{"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
      {"protocol": "tcp", "port_range_min": 90}], 400, "SecurityGroupInvalidPortRange"),
    ([{"protocol": "tcp", "port_range_min": 22, "port_range_max": 22}, {"protocol": "icmpv6"}],
     400, "SecurityGroupEthertypeConflictWithProtocol"),
    ([{"protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
      {"protocol": "udp", "port_range_min": 53, "port_range_max": 53},
      {"protocol": "17", "port_range_min": 5353, "port_range_max": 5353},
      {"protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0"}], 409, "SecurityGroupRuleExists"),
])
def test_bulk_is_all_or_nothing(w, rules, status, kind):
    sg = w.group()
    w.rule(sg, direction="ingress", protocol="1")
    before = _rules(w, sg)
    w.notifier.calls.clear()
    with pytest.raises(errors.NeutronError) as e:
        _bulk(w, sg, *rules)
    assert (e.value.status, e.value.type_name) == (status, kind)
    assert _rules(w, sg) == before
    assert w.calls("security_group_rule_updated") == []


def test_same_rule_in_two_groups_of_one_bulk_is_fine(w):
    a, b = w.group(name="a"), w.group(name="b")
    created = w.svc.create_bulk(ALICE, "security_group_rules", [
        {"security_group_id": g["id"], "direction": "ingress", "protocol": "tcp",
         "port_range_min": 22, "port_range_max": 22} for g in (a, b)])
    assert len(created) == 2


def test_rule_key_tolerates_old_data():
    """Rows stored before the checks (unknown names, one-ended ranges) still compare."""
    old = {"direction": "ingress", "ethertype": "IPv4", "protocol": "weird", "port_range_min": 90,
           "port_range_max": None, "remote_ip_prefix": "0.0.0.0/0", "remote_group_id": None}
    assert rule_key(old) == ("ingress", "IPv4", "weird", 90, None, None, None)


def test_http_errors_have_neutron_bodies(tmp_path):
    settings = Settings(state_dir=str(tmp_path))
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    with TestClient(create_app(settings, Services(engine, settings)), raise_server_exceptions=False,
                    headers={"X-Project-Id": "p1", "X-Roles": "member"}) as c:
        sg = c.post("/v2.0/security-groups", json={"security_group": {"name": "web"}}).json()["security_group"]
        base = {"security_group_id": sg["id"], "direction": "ingress"}
        r = c.post("/v2.0/security-group-rules", json={"security_group_rule": {
            **base, "protocol": "tcp", "port_range_min": 90}})
        assert r.status_code == 400 and r.json()["NeutronError"]["type"] == "SecurityGroupInvalidPortRange"
        assert "port_range_max is missing" in r.json()["NeutronError"]["message"]
        r = c.post("/v2.0/security-group-rules", json={"security_group_rule": {**base, "protocol": "ipv6-icmp"}})
        assert r.status_code == 400
        assert r.json()["NeutronError"]["type"] == "SecurityGroupEthertypeConflictWithProtocol"
        r = c.post("/v2.0/security-group-rules", json={"security_group_rules": [
            {**base, "protocol": "tcp", "port_range_min": 22, "port_range_max": 22},
            {**base, "protocol": "6", "port_range_min": 22, "port_range_max": 22}]})
        assert r.status_code == 409 and r.json()["NeutronError"]["type"] == "DuplicateSecurityGroupRuleInPost"
        assert c.post("/v2.0/security-group-rules", json={"security_group_rule": {
            **base, "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}}).status_code == 201
        r = c.post("/v2.0/security-group-rules", json={"security_group_rule": {
            **base, "protocol": "6", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}})
        assert r.status_code == 409 and r.json()["NeutronError"]["type"] == "SecurityGroupRuleExists"
        rules = c.get("/v2.0/security-group-rules", params={"security_group_id": sg["id"]}).json()
        assert len(rules["security_group_rules"]) == 3  # two default egress + the one tcp/22
    engine.dispose()
