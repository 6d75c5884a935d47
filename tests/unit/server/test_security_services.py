"""Security groups, rules and QoS policies in the data layer; the agents' RPC over them."""

from __future__ import annotations

import pytest

from lbtap.config import Settings
from lbtap.domain.naming import tap_name
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.notifier import RecordingNotifier
from lbtap.server.security_ext import SecurityRpc, changed_groups
from lbtap.server.services import ListQuery, Services
from tests.support import FakeClock, fresh_db_url, migrated_engine

ADMIN = Context.admin()
ALICE = Context(project_id="alice", roles=frozenset({"member"}))
BOB = Context(project_id="bob", roles=frozenset({"member"}))


class Recorder(RecordingNotifier):
    def security_group_rule_updated(self, groups):
        self.calls.append(("security_group_rule_updated", (groups,)))

    def qos_policy_updated(self, policy_id):
        self.calls.append(("qos_policy_updated", (policy_id,)))


class World:
    def __init__(self, tmp_path):
        self.engine = migrated_engine(fresh_db_url("sqlite", tmp_path))
        self.notifier = Recorder()
        self.svc = Services(self.engine, Settings(), notifier=self.notifier, clock=FakeClock())
        self.rpc = SecurityRpc(self.engine)
        self.net = self.svc.create(ALICE, "networks", {"name": "n"})
        self.svc.create(ALICE, "subnets", {"network_id": self.net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"})

    def port(self, ctx=ALICE, **kw):
        return self.svc.create(ctx, "ports", {"network_id": self.net["id"], **kw})

    def group(self, ctx=ALICE, name="web"):
        return self.svc.create(ctx, "security_groups", {"name": name})

    def rule(self, sg, ctx=ALICE, **kw):
        return self.svc.create(ctx, "security_group_rules", {"security_group_id": sg["id"], **kw})

    def calls(self, name):
        return [args for n, args in self.notifier.calls if n == name]


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def _shape(rules):
    return sorted((r["direction"], r["ethertype"], r["remote_group_id"] is not None) for r in rules)


def test_default_group_on_first_port_allows_egress_and_members(w):
    p = w.port()
    [sg] = w.svc.list(ALICE, "security_groups", ListQuery()).items
    assert sg["name"] == "default" and p["security_groups"] == [sg["id"]]
    assert _shape(sg["security_group_rules"]) == [("egress", "IPv4", False), ("egress", "IPv6", False),
                                                  ("ingress", "IPv4", True), ("ingress", "IPv6", True)]
    assert all(r["remote_group_id"] == sg["id"] for r in sg["security_group_rules"] if r["direction"] == "ingress")
    assert w.port()["security_groups"] == [sg["id"]], "one default group per project"
    with pytest.raises(errors.Conflict):
        w.svc.delete(ALICE, "security_groups", sg["id"])


def test_new_group_starts_with_egress_rules_only(w):
    sg = w.group()
    assert _shape(sg["security_group_rules"]) == [("egress", "IPv4", False), ("egress", "IPv6", False)]


@pytest.mark.parametrize("rule,status,kind", [
    ({"direction": "sideways"}, 400, "InvalidInput"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80}, 400,
     "SecurityGroupInvalidPortRange"),
    ({"direction": "ingress", "protocol": "bogus"}, 400, "SecurityGroupRuleInvalidProtocol"),
    ({"direction": "ingress", "ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"}, 400,
     "SecurityGroupRuleParameterConflict"),
    ({"direction": "ingress", "protocol": "icmp", "port_range_min": 300}, 400, "SecurityGroupInvalidIcmpValue"),
    ({"direction": "ingress", "remote_group_id": "8c0a6d8e-7a2b-4a53-9d39-1b6a5d0b6b38"}, 404,
     "SecurityGroupNotFound"),
    ({"direction": "egress", "ethertype": "IPv4"}, 409, "SecurityGroupRuleExists"),
])
def test_rule_validation(w, rule, status, kind):
    sg = w.group()
    with pytest.raises(errors.NeutronError) as e:
        w.rule(sg, **rule)
    assert (e.value.status, e.value.type_name) == (status, kind)


def test_rules_notify_and_normalise(w):
    sg = w.group()
    r = w.rule(sg, direction="ingress", protocol="TCP", port_range_min=22, port_range_max=22,
               remote_ip_prefix="10.1.2.3/8")
    assert r["protocol"] == "tcp" and r["remote_ip_prefix"] == "10.0.0.0/8"
    w.svc.delete(ALICE, "security_group_rules", r["id"])
    assert w.calls("security_group_rule_updated") == [([sg["id"]],), ([sg["id"]],)]
    with pytest.raises(errors.NotFound):  # another project's group is invisible
        w.rule(sg, ctx=BOB, direction="ingress")


def test_port_groups_must_exist_and_be_visible(w):
    bobs = w.group(BOB)
    with pytest.raises(errors.NotFound) as e:
        w.port(security_groups=[bobs["id"]])
    assert e.value.type_name == "SecurityGroupNotFound"
    mine = w.group()
    with pytest.raises(errors.BadRequest):
        w.port(security_groups=[mine["id"], mine["id"]])
    assert w.port(security_groups=[mine["id"]])["security_groups"] == [mine["id"]]
    with pytest.raises(errors.Conflict) as e:
        w.svc.delete(ALICE, "security_groups", mine["id"])
    assert e.value.type_name == "SecurityGroupInUse"


def test_port_security_off_needs_no_groups_and_no_pairs(w):
    off = w.port(port_security_enabled=False)
    assert off["security_groups"] == []
    with pytest.raises(errors.Conflict) as e:
        w.port(port_security_enabled=False, security_groups=[w.group()["id"]])
    assert e.value.type_name == "PortSecurityPortHasSecurityGroup"
    with pytest.raises(errors.Conflict) as e:
        w.port(port_security_enabled=False, allowed_address_pairs=[{"ip_address": "10.0.0.99"}])
    assert e.value.type_name == "AddressPairAndPortSecurityRequired"
    p = w.port()
    with pytest.raises(errors.Conflict):
        w.svc.update(ALICE, "ports", p["id"], {"port_security_enabled": False})
    done = w.svc.update(ALICE, "ports", p["id"], {"port_security_enabled": False, "security_groups": []})
    assert done["security_groups"] == [] and done["port_security_enabled"] is False


def test_network_ports_get_no_default_group(w):
    assert w.port(ctx=ADMIN, device_owner="network:dhcp")["security_groups"] == []


def test_rpc_security_info_has_rules_and_member_addresses(w):
    p1 = w.port(allowed_address_pairs=[{"ip_address": "10.0.0.200/30"}])
    p2 = w.port()
    web = w.group()
    w.rule(web, direction="ingress", remote_group_id=p1["security_groups"][0])
    p3 = w.port(security_groups=[web["id"]])
    info = w.rpc.security_group_info_for_devices([tap_name(p["id"]) for p in (p1, p3)] + ["tapnothing00"])
    default = p1["security_groups"][0]
    assert set(info["devices"]) == {tap_name(p1["id"]), tap_name(p3["id"])}
    assert set(info["security_groups"]) == {default, web["id"]}
    members = info["sg_member_ips"][default]["IPv4"]
    assert sorted(members) == sorted([p1["fixed_ips"][0]["ip_address"], p2["fixed_ips"][0]["ip_address"],
                                      "10.0.0.200/30"])
    assert p3["fixed_ips"][0]["ip_address"] not in members


def test_qos_policies_rules_and_attachment(w):
    pol = w.svc.create(ALICE, "qos_policies", {"name": "slow"})
    qs = w.svc.service("qos_policies")
    rule = qs.create_rule(ALICE, pol["id"], {"max_kbps": 1000})
    assert rule["direction"] == "egress" and rule["max_burst_kbps"] == 0
    with pytest.raises(errors.Conflict):
        qs.create_rule(ALICE, pol["id"], {"max_kbps": 5, "direction": "egress"})
    with pytest.raises(errors.BadRequest):
        qs.create_rule(ALICE, pol["id"], {"max_kbps": 5, "direction": "up"})
    qs.update_rule(ALICE, pol["id"], rule["id"], {"max_kbps": 2000})
    assert w.calls("qos_policy_updated") == [(pol["id"],), (pol["id"],)]
    assert w.svc.get(ALICE, "qos_policies", pol["id"])["rules"][0]["max_kbps"] == 2000
    with pytest.raises(errors.NotFound):
        w.port(qos_policy_id=w.svc.create(BOB, "qos_policies", {"name": "b"})["id"])
    own = w.port(qos_policy_id=pol["id"])
    inherits = w.port()
    dhcp = w.port(ctx=ADMIN, device_owner="network:dhcp")
    net_pol = w.svc.create(ALICE, "qos_policies", {"name": "net"})
    w.svc.update(ALICE, "networks", w.net["id"], {"qos_policy_id": net_pol["id"]})
    got = w.rpc.qos_rules_for_devices([tap_name(p["id"]) for p in (own, inherits, dhcp)])
    assert got[tap_name(own["id"])]["qos_policy_id"] == pol["id"]
    assert got[tap_name(own["id"])]["rules"][0]["max_kbps"] == 2000
    assert got[tap_name(inherits["id"])] == {"qos_policy_id": net_pol["id"], "rules": []}
    assert got[tap_name(dhcp["id"])]["qos_policy_id"] is None
    with pytest.raises(errors.Conflict):
        w.svc.delete(ALICE, "qos_policies", pol["id"])


def test_member_changes_are_computed_from_groups_and_addresses():
    a = {"security_groups": ["g1"], "fixed_ips": [{"ip_address": "10.0.0.1"}], "allowed_address_pairs": []}
    assert changed_groups(a, None) == ["g1"] and changed_groups(None, a) == ["g1"]
    assert changed_groups(dict(a, name="x"), a) == []
    assert changed_groups(dict(a, security_groups=["g2"]), a) == ["g1", "g2"]
    assert changed_groups(dict(a, fixed_ips=[{"ip_address": "10.0.0.2"}], security_groups=["g1", "g3"]), a) == [
        "g1", "g3"]


async def test_member_updates_are_coalesced_into_one_fanout():
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from lbtap.server.security_ext import SG_MEMBER_UPDATED, SecurityNotifier

    class Bus:
        def __init__(self):
            self.sent = []

        async def fanout(self, topic, method, **kw):
            self.sent.append((method, kw))

    async def sent_after(step):
        # The loop is not running while ``step`` does, so the coalescing timer cannot
        # fire between its calls however slow the machine is; then wait (generously)
        # until everything it handed over has been sent.
        before = len(bus.sent)
        step()
        assert await n.drain(timeout=30)
        return bus.sent[before:]

    def from_worker_threads(*calls):
        # As in the server: the data layer notifies from worker threads. The loop's
        # thread blocks until all of them are done.
        with ThreadPoolExecutor(len(calls)) as pool:
            for f in [pool.submit(c) for c in calls]:
                f.result()

    bus = Bus()
    n = SecurityNotifier(bus, asyncio.get_running_loop())
    port = {"security_groups": ["g1"], "fixed_ips": [{"ip_address": "10.0.0.1"}], "allowed_address_pairs": []}
    sent = await sent_after(lambda: from_worker_threads(
        *(lambda g=g: n.port_created(dict(port, security_groups=[g])) for g in ("g1", "g2", "g1"))))
    assert sent == [(SG_MEMBER_UPDATED, {"security_groups": ["g1", "g2"], "members": {
        "g1": {"added": ["10.0.0.1"], "removed": []}, "g2": {"added": ["10.0.0.1"], "removed": []}}})]
    # A port leaving a group is a removal; the last change of an address within the window wins.
    moved = dict(port, fixed_ips=[{"ip_address": "10.0.0.9"}])

    def move_then_delete():
        n.port_updated(moved, port)
        n.port_deleted(moved)

    assert await sent_after(move_then_delete) == [(SG_MEMBER_UPDATED, {"security_groups": ["g1"], "members": {
        "g1": {"added": [], "removed": ["10.0.0.1", "10.0.0.9"]}}})]
    assert await sent_after(lambda: n.security_group_rule_updated(["g3"])) == [
        ("security_groups_rule_updated", {"security_groups": ["g3"]})]
