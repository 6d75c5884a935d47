"""The ``security`` and ``qos`` agent extensions: diff logic against FakeFirewall/FakeQos.

A stub agent answers the two RPC calls from in-test tables and runs host work inline,
so each test can assert exactly which ports reached the driver and how often.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from lbtap.agent.qos import QOS_POLICY_UPDATED, QOS_RULES, QosExtension
from lbtap.agent.security import SG_INFO, SG_MEMBER_UPDATED, SG_RULE_UPDATED, SecurityExtension
from lbtap.bus.base import BusError
from lbtap.domain.models import DeviceDetails, FixedIP
from lbtap.drivers.firewall import FakeFirewall
from lbtap.drivers.host.errors import HostError
from lbtap.drivers.qos import BandwidthLimit, FakeQos

EGRESS_ALL = {"direction": "egress", "ethertype": "IPv4"}


class StubAgent:
    def __init__(self):
        self.cfg = SimpleNamespace(retry_initial=0.5, retry_max=4.0, netns=None)
        self.groups: dict[str, list[dict]] = {}
        self.members: dict[str, list[str]] = {}
        self.qos: dict[str, dict] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.fail_rpc = False
        self.disconnects = 0

    async def call(self, topic, method, timeout=None, **kw):
        self.calls.append((method, kw["devices"]))
        if self.fail_rpc:
            raise BusError("server away")
        if method == SG_INFO:
            used = {g for rs in self.groups.values() for r in rs for g in [r.get("remote_group_id")] if g}
            return {"security_groups": {g: list(r) for g, r in self.groups.items()},
                    "sg_member_ips": {g: {"IPv4": self.members.get(g, []), "IPv6": []} for g in used}}
        assert method == QOS_RULES
        return {d: self.qos.get(d, {"qos_policy_id": None, "rules": []}) for d in kw["devices"]}

    async def on_host(self, fn, *args):
        return fn(*args)

    @property
    def bus(self):
        return self


def details(n: int, *, sgs=("sg-a",), ip=None, psec=True, owner="compute:nova", pairs=(), policy=None):
    return DeviceDetails(device=f"tap{n:011d}", port_id=f"{n:08d}-0000-0000-0000-000000000000", network_id="net",
                         mac_address=f"fa:16:3e:00:00:{n:02x}", fixed_ips=(FixedIP("s", ip or f"10.0.0.{n}"),),
                         device_owner=owner, port_security_enabled=psec, security_groups=tuple(sgs),
                         allowed_address_pairs=tuple(pairs), qos_policy_id=policy)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def sec():
    agent = StubAgent()
    agent.groups = {"sg-a": [EGRESS_ALL, {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "sg-a"}],
                    "sg-b": [EGRESS_ALL]}
    agent.members = {"sg-a": ["10.0.0.1", "10.0.0.2"]}
    fw = FakeFirewall()
    ext = SecurityExtension(firewall_factory=lambda a: fw)
    ext.bind(agent)
    return SimpleNamespace(agent=agent, ext=ext, fw=fw)


def test_new_ports_get_rules_and_remote_group_members(sec):
    sec.ext.port_details(details(1))
    sec.ext.port_details(details(2))
    run(sec.ext.process(0.0))
    assert sorted(sec.fw.ports) == ["tap00000000001", "tap00000000002"]
    assert sec.fw.groups.members["sg-a"] == frozenset({"10.0.0.1", "10.0.0.2"})
    assert any(r.remote_group_id == "sg-a" for r in sec.fw.ports["tap00000000001"].rules)
    assert sec.agent.calls == [(SG_INFO, ["tap00000000001", "tap00000000002"])], "one RPC for the batch"


def test_unchanged_details_do_not_touch_the_firewall(sec):
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    tx = sec.fw.transactions
    sec.ext.port_details(details(1))  # e.g. a port_update for admin_state_up
    run(sec.ext.process(1.0))
    assert sec.fw.transactions == tx


def test_fixed_ip_change_updates_only_that_port(sec):
    sec.ext.port_details(details(1))
    sec.ext.port_details(details(2))
    run(sec.ext.process(0.0))
    before = dict(sec.fw.ports)
    sec.ext.port_details(details(1, ip="10.0.0.99"))
    run(sec.ext.process(1.0))
    assert sec.fw.ports["tap00000000001"].ips == ("10.0.0.99",)
    assert sec.fw.ports["tap00000000002"] is before["tap00000000002"]


def test_rule_update_reaches_only_ports_of_that_group(sec):
    sec.ext.port_details(details(1))
    sec.ext.port_details(details(2, sgs=("sg-b",)))
    run(sec.ext.process(0.0))
    sec.agent.calls.clear()
    sec.agent.groups["sg-b"] = [EGRESS_ALL, {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                                             "port_range_min": 22, "port_range_max": 22}]
    sec.ext.cast_handlers()[SG_RULE_UPDATED]({"security_groups": ["sg-b"]})
    sec.ext.cast_handlers()[SG_RULE_UPDATED]({"security_groups": ["sg-unknown"]})
    run(sec.ext.process(1.0))
    assert sec.agent.calls == [(SG_INFO, ["tap00000000002"])]
    assert any(r.port_range_min == 22 for r in sec.fw.ports["tap00000000002"].rules)


def test_member_update_changes_set_elements_only_where_referenced(sec):
    sec.ext.port_details(details(1))
    sec.ext.port_details(details(2, sgs=("sg-b",)))
    run(sec.ext.process(0.0))
    sec.agent.calls.clear()
    sec.agent.members["sg-a"] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    sec.ext.cast_handlers()[SG_MEMBER_UPDATED]({"security_groups": ["sg-a"]})
    run(sec.ext.process(1.0))
    assert sec.agent.calls == [(SG_INFO, ["tap00000000001"])]
    assert "10.0.0.3" in sec.fw.groups.members["sg-a"]


def test_member_delta_changes_the_sets_without_asking(sec):
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    sec.agent.calls.clear()
    ports_tx = dict(sec.fw.ports)
    sec.ext.cast_handlers()[SG_MEMBER_UPDATED]({"security_groups": ["sg-a", "sg-b"], "members": {
        "sg-a": {"added": ["10.0.0.7"], "removed": ["10.0.0.2"]}, "sg-b": {"added": ["10.0.0.8"], "removed": []}}})
    assert sec.ext.next_wakeup(1.0) == 1.0
    run(sec.ext.process(1.0))
    assert sec.agent.calls == [], "the delta is enough: no round trip"
    assert sec.fw.groups.members["sg-a"] == frozenset({"10.0.0.1", "10.0.0.7"})
    assert "sg-b" not in sec.fw.groups.members, "sg-b is no remote group here"
    assert sec.fw.ports == ports_tx, "port rules untouched by a member change"


def test_new_port_in_a_known_group_needs_no_rpc(sec):
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    sec.agent.calls.clear()
    sec.ext.port_details(details(2))
    run(sec.ext.process(1.0))
    assert sec.agent.calls == []
    assert sorted(sec.fw.ports) == ["tap00000000001", "tap00000000002"]


def test_delta_arriving_during_a_read_is_not_lost(sec):
    handler = sec.ext.cast_handlers()[SG_MEMBER_UPDATED]
    real_call = sec.agent.call

    async def slow_call(topic, method, timeout=None, **kw):
        answer = await real_call(topic, method, timeout=timeout, **kw)  # computed before the delta
        handler({"security_groups": ["sg-a"], "members": {"sg-a": {"added": ["10.0.0.5"], "removed": []}}})
        return answer

    sec.agent.call = slow_call
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    run(sec.ext.process(0.1))
    assert "10.0.0.5" in sec.fw.groups.members["sg-a"]


def test_port_is_held_until_its_filter_is_applied(sec):
    sec.agent.fail_rpc = True
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    assert sec.ext.holds("tap00000000001"), "no filter yet: its up report must wait"
    sec.agent.fail_rpc = False
    run(sec.ext.process(sec.ext.backoff.retry_at))
    assert not sec.ext.holds("tap00000000001")
    assert not sec.ext.holds("tap-not-mine")


def test_groups_are_reread_after_a_bus_reconnect(sec):
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    sec.agent.calls.clear()
    sec.agent.members["sg-a"] = ["10.0.0.1"]  # a removal whose cast was lost with the connection
    sec.agent.disconnects = 1
    run(sec.ext.process(1.0))
    assert sec.agent.calls == [(SG_INFO, ["tap00000000001"])]
    assert sec.fw.groups.members["sg-a"] == frozenset({"10.0.0.1"})


def test_unfiltered_ports_need_no_rules(sec):
    sec.ext.port_details(details(1, sgs=(), psec=False))
    sec.ext.port_details(details(2, sgs=(), owner="network:dhcp"))
    run(sec.ext.process(0.0))
    assert sec.agent.calls == []
    assert not any(p.filtered for p in sec.fw.ports.values())
    assert sec.fw.compiled.index == {}, "no anti-spoofing for unfiltered ports"


def test_device_gone_removes_the_port(sec):
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    sec.ext.device_gone("tap00000000001")
    run(sec.ext.process(1.0))
    assert sec.fw.ports == {} and sec.ext.applied == {}


def test_failures_keep_the_work_and_back_off(sec):
    sec.agent.fail_rpc = True
    sec.ext.port_details(details(1))
    run(sec.ext.process(0.0))
    assert sec.fw.ports == {} and sec.ext.next_wakeup(0.0) == 0.5
    sec.agent.fail_rpc = False
    run(sec.ext.process(0.2))  # not due yet
    assert sec.fw.ports == {}
    sec.fw.fail_next = HostError("nft refused", op="nft")
    run(sec.ext.process(0.6))
    assert sec.fw.ports == {} and sec.ext.backoff.retry_at == pytest.approx(1.6)
    run(sec.ext.process(2.0))
    # nothing left to retry: only the periodic re-read of the groups is scheduled
    assert list(sec.fw.ports) == ["tap00000000001"] and sec.ext.next_wakeup(2.0) == pytest.approx(60.0)


@pytest.fixture
def qos():
    agent = StubAgent()
    tc = FakeQos()
    ext = QosExtension(qos_factory=lambda a: tc)
    ext.bind(agent)
    return SimpleNamespace(agent=agent, ext=ext, tc=tc)


def rule(kbps, direction="egress"):
    return {"max_kbps": kbps, "max_burst_kbps": 0, "direction": direction, "type": "bandwidth_limit"}


def test_qos_applies_only_differences(qos):
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(1000)]}
    qos.ext.port_details(details(1, policy="pol"))
    qos.ext.port_details(details(2))
    run(qos.ext.process(0.0))
    assert qos.tc.limits("tap00000000001").egress == BandwidthLimit(1000)
    assert qos.tc.calls == 1, "the unlimited port needs no tc call"
    assert qos.agent.calls == [(QOS_RULES, ["tap00000000001"])], "a port without a policy needs no RPC"
    qos.ext.port_details(details(1, policy="pol"))  # nothing changed
    run(qos.ext.process(1.0))
    assert qos.tc.calls == 1
    # A second port under a policy already held: limited without asking the server.
    qos.ext.port_details(details(3, policy="pol"))
    run(qos.ext.process(2.0))
    assert qos.tc.limits("tap00000000003").egress == BandwidthLimit(1000)
    assert len(qos.agent.calls) == 1


def test_qos_policy_update_reaches_its_ports_only(qos):
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(1000)]}
    qos.agent.qos["tap00000000002"] = {"qos_policy_id": "other", "rules": [rule(500)]}
    qos.ext.port_details(details(1, policy="pol"))
    qos.ext.port_details(details(2, policy="other"))
    run(qos.ext.process(0.0))
    qos.agent.calls.clear()
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(2000), rule(300, "ingress")]}
    qos.ext.cast_handlers()[QOS_POLICY_UPDATED]({"policy_id": "pol"})
    run(qos.ext.process(1.0))
    assert qos.agent.calls == [(QOS_RULES, ["tap00000000001"])]
    assert qos.tc.limits("tap00000000001").egress == BandwidthLimit(2000)
    assert qos.tc.limits("tap00000000001").ingress == BandwidthLimit(300)
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": None, "rules": []}
    qos.ext.port_details(details(1))
    run(qos.ext.process(2.0))
    assert qos.tc.limits("tap00000000001").empty and "tap00000000001" not in qos.ext.applied


def test_qos_device_gone_clears(qos):
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(1000)]}
    qos.ext.port_details(details(1, policy="pol"))
    run(qos.ext.process(0.0))
    qos.ext.device_gone("tap00000000001")
    run(qos.ext.process(1.0))
    assert qos.tc.limits_by_tap == {}


def test_qos_answer_racing_a_policy_update_is_not_kept(qos):
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(1000)]}
    handler = qos.ext.cast_handlers()[QOS_POLICY_UPDATED]
    real_call = qos.agent.call

    async def racing_call(topic, method, timeout=None, **kw):
        answer = await real_call(topic, method, timeout=timeout, **kw)  # read before the update
        qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(5000)]}
        handler({"policy_id": "pol"})
        return answer

    qos.agent.call = racing_call
    qos.ext.port_details(details(1, policy="pol"))
    run(qos.ext.process(0.0))
    assert qos.ext.next_wakeup(0.1) == 0.1, "its port is due again at once"
    qos.agent.call = real_call
    run(qos.ext.process(0.1))
    assert qos.tc.limits("tap00000000001").egress == BandwidthLimit(5000)


def test_qos_rules_are_read_again_after_a_bus_reconnect(qos):
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(1000)]}
    qos.ext.port_details(details(1, policy="pol"))
    run(qos.ext.process(0.0))
    qos.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(2000)]}  # its cast was lost
    qos.agent.disconnects = 1
    run(qos.ext.process(1.0))
    assert qos.tc.limits("tap00000000001").egress == BandwidthLimit(2000)
