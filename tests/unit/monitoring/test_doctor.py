"""doctor's checks on FakeHost snapshots, and --fix plans applied to the FakeHost."""

from __future__ import annotations

import pytest

from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.host.base import Route, VxlanInfo
from lbtap.drivers.host.fake import FakeHost
from lbtap.monitoring import doctor as doc
from lbtap.monitoring.hoststate import take_snapshot

NET = "5f1c2e3a-8b9d-4c0e-a1b2-c3d4e5f60718"
BR = bridge_name(NET)
PORT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
TAP = tap_name(PORT)


def snap(h: FakeHost, *, br_nf: int | None = 1, fw: tuple[str, ...] | None = ()):
    return take_snapshot(h, netns=None, sysctl=lambda *_: br_nf, firewall=lambda _: fw, now=lambda: 100.0)


def checks(h: FakeHost, **kw) -> dict[str, list[doc.Finding]]:
    out: dict[str, list[doc.Finding]] = {}
    for f in doc.run_checks(snap(h, **kw)):
        out.setdefault(f.check, []).append(f)
    return out


def seed_fault() -> FakeHost:
    """The seed's state: the NIC's IP added to its bridge but not deleted from the NIC."""
    h = FakeHost()
    h.create_physical("eth1")
    h.create_bridge(BR)
    h.enslave("eth1", BR)
    h.set_link(BR, up=True)
    h.add_address("eth1", "198.51.100.10/24")
    h.add_route(Route("default", "eth1", gateway="198.51.100.1"))
    h.add_address(BR, "198.51.100.10/24")
    h.add_address(BR, "203.0.113.5/24")  # the bridge's other address must survive --fix
    h.create_tap(TAP)
    h.enslave(TAP, BR)
    return h


def healthy() -> FakeHost:
    h = FakeHost()
    h.create_physical("eth1")
    h.create_bridge(BR)
    h.enslave("eth1", BR)
    h.set_link(BR, up=True)
    h.add_address(BR, "198.51.100.10/24")
    h.add_route(Route("default", BR, gateway="198.51.100.1"))
    h.create_tap(TAP)
    h.enslave(TAP, BR)
    return h


def test_healthy_host_has_no_findings_and_exit_0():
    findings = doc.run_checks(snap(healthy()))
    assert findings == []
    assert doc.exit_code(findings) == 0


def test_seed_fault_is_critical_and_names_nic_and_bridge():
    found = checks(seed_fault())
    [f] = found["duplicate-address"]
    assert f.severity == doc.CRITICAL and f.devices == ("eth1", BR)
    assert "198.51.100.10/24" in f.what and f.fixable
    assert doc.exit_code(doc.run_checks(snap(seed_fault()))) == 1


def test_seed_fault_fix_leaves_address_on_bridge_only_and_moves_default_route():
    h = seed_fault()
    findings = doc.run_checks(snap(h))
    results = doc.apply_fixes(h, findings)
    assert [err for _, err in results] == [None]
    assert [a.cidr for a in h.list_addresses("eth1")] == []
    assert sorted(a.cidr for a in h.list_addresses(BR)) == ["198.51.100.10/24", "203.0.113.5/24"]
    assert [(r.dst, r.gateway) for r in h.list_routes(BR)] == [("default", "198.51.100.1")]
    assert h.list_routes("eth1") == []
    assert doc.run_checks(snap(h)) == []


def test_fix_deletes_only_the_duplicate_from_the_nic():
    h = seed_fault()
    h.add_address("eth1", "198.51.100.11/24")  # secondary on the NIC: not a duplicate
    h.set_promote_secondaries("eth1", False)
    found = checks(h)
    doc.apply_fixes(h, found["duplicate-address"])
    # promote_secondaries set by the plan keeps the NIC's other address alive
    assert [a.cidr for a in h.list_addresses("eth1")] == ["198.51.100.11/24"]
    assert "198.51.100.10/24" in [a.cidr for a in h.list_addresses(BR)]
    assert [f.check for f in doc.run_checks(snap(h))] == ["address-on-bridge-port"]


def test_address_only_on_enslaved_nic_is_a_warning_without_fix():
    h = healthy()
    h.add_address("eth1", "10.9.9.9/24")
    [f] = checks(h)["address-on-bridge-port"]
    assert f.severity == doc.WARNING and not f.fixable


def test_orphan_tap():
    h = healthy()
    h.create_tap("tapdeadbeef00")
    [f] = checks(h)["orphan-tap"]
    assert f.devices == ("tapdeadbeef00",) and f.severity == doc.WARNING and not f.fixable


@pytest.mark.parametrize("addr, fixable", [(None, True), ("198.51.100.7/24", False)])
def test_empty_brq_bridge(addr, fixable):
    h = healthy()
    h.create_bridge("brq0123456789a")
    if addr:
        h.add_address("brq0123456789a", addr)
    [f] = checks(h)["empty-bridge"]
    assert f.fixable is fixable
    doc.apply_fixes(h, [f])
    assert (h.get_link("brq0123456789a") is None) is fixable


def test_non_brq_bridges_are_not_ours():
    h = healthy()
    h.create_bridge("br-ex")
    assert "empty-bridge" not in checks(h)


def test_bridge_without_taps_is_info():
    h = healthy()
    h.delete_link(TAP)
    [f] = checks(h)["bridge-without-taps"]
    assert f.severity == doc.INFO
    assert doc.exit_code([f]) == 0


@pytest.mark.parametrize("value, fw, severity", [
    (1, ("nft:inet:lbtap",), None),
    (0, ("nft:inet:lbtap",), doc.CRITICAL),
    (None, ("iptables:neutron-filter-top",), doc.WARNING),
    (0, (), doc.INFO),
    (0, None, doc.INFO),
])
def test_br_netfilter(value, fw, severity):
    found = checks(healthy(), br_nf=value, fw=fw).get("br-netfilter", [])
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_tap_mtu_mismatch_and_fix():
    h = healthy()
    h.set_link(BR, mtu=1450)  # the bridge was set explicitly; the tap stays at 1500
    h.set_link(TAP, mtu=1500)
    assert (h.get_link(TAP).mtu, h.get_link(BR).mtu) == (1500, 1450)
    [f] = checks(h)["mtu-mismatch"]
    assert f.devices == (TAP, BR) and f.fixable
    doc.apply_fixes(h, [f])
    assert h.get_link(TAP).mtu == h.get_link(BR).mtu
    assert "mtu-mismatch" not in checks(h)


def vxlan_host(local: str, mtu: int = 1450, underlay_mtu: int = 1500) -> FakeHost:
    h = FakeHost()
    h.create_physical("eth1", mtu=underlay_mtu)
    h.add_address("eth1", "203.0.113.2/24")
    h.create_vxlan("vxlan-100", VxlanInfo(vni=100, local=local, dev="eth1"), mtu=mtu)
    return h


@pytest.mark.parametrize("mtu, underlay, expect", [(1450, 1500, False), (1451, 1500, True), (1500, 1500, True),
                                                   (8950, 9000, False)])
def test_vxlan_mtu(mtu, underlay, expect):
    found = checks(vxlan_host("203.0.113.2", mtu, underlay))
    assert ("vxlan-mtu" in found) is expect


def test_vxlan_wrong_local_ip():
    assert "vxlan-local-ip" not in checks(vxlan_host("203.0.113.2"))
    [f] = checks(vxlan_host("203.0.113.99"))["vxlan-local-ip"]
    assert f.severity == doc.CRITICAL and "203.0.113.99" in f.what


# ---------------------------------------------------------------------- host vs DB

def port(id: str, *, status="ACTIVE", host="node1", net=NET, owner="compute:nova") -> dict:
    return {"id": id, "network_id": net, "status": status, "binding:host_id": host, "device_owner": owner}


AGENT = {"host": "node1", "alive": True, "agent_type": "Linux bridge agent"}


def db_checks(h: FakeHost, ports: list[dict], networks=None, agent=AGENT) -> dict[str, list[doc.Finding]]:
    db = doc.DbView(host="node1", ports=ports, networks=networks, agent=agent)
    out: dict[str, list[doc.Finding]] = {}
    for f in doc.run_checks(snap(h), db):
        out.setdefault(f.check, []).append(f)
    return out


def test_db_consistent():
    assert db_checks(healthy(), [port(PORT)], networks=[{"id": NET}]) == {}


def test_db_active_port_without_tap():
    other = "11112222-3333-4444-5555-666677778888"
    found = db_checks(healthy(), [port(PORT), port(other), port("aaaa0000-0000", status="DOWN"),
                                  port("bbbb0000-0000", host="node2")])
    [f] = found["db-active-tap-missing"]
    assert f.devices == (tap_name(other),) and f.severity == doc.CRITICAL


def test_db_tap_on_wrong_bridge_is_fixed_by_enslaving():
    h = healthy()
    other_net = "77776666-5555-4444-3333-222211110000"
    h.create_bridge(bridge_name(other_net))
    t2 = tap_name("cafe0000-1111-2222-3333-444455556666")
    h.create_tap(t2)
    h.enslave(t2, BR)
    ports = [port(PORT), port("cafe0000-1111-2222-3333-444455556666", net=other_net)]
    [f] = db_checks(h, ports)["db-wrong-bridge"]
    assert f.fixable
    doc.apply_fixes(h, [f])
    assert h.get_link(t2).master == bridge_name(other_net)
    assert "db-wrong-bridge" not in db_checks(h, ports)


def test_db_tap_without_port_and_bridge_without_network():
    h = healthy()
    found = db_checks(h, [], networks=[])
    assert [f.devices for f in found["tap-without-port"]] == [(TAP,)]
    assert [f.devices for f in found["bridge-without-network"]] == [(BR,)]


def test_floating_ip_ports_need_no_tap():
    assert db_checks(healthy(), [port(PORT), port("f1f1f1f1-0000", owner="network:floatingip")]) == {}


@pytest.mark.parametrize("agent, severity", [(None, doc.WARNING), ({"host": "node1", "alive": False}, doc.CRITICAL)])
def test_agent_missing_or_dead(agent, severity):
    [f] = db_checks(healthy(), [port(PORT)], agent=agent)["agent"]
    assert f.severity == severity


def test_fix_failure_is_reported_per_finding_and_others_still_applied():
    h = seed_fault()
    h.create_bridge("brq0123456789a")
    from lbtap.drivers.host import errors
    h.fail("delete_address", "eth1", errors.PermissionDenied)
    results = dict(doc.apply_fixes(h, doc.run_checks(snap(h))))
    by_check = {f.check: err for f, err in results.items()}
    assert "delete_address" in by_check["duplicate-address"]
    assert by_check["empty-bridge"] is None and h.get_link("brq0123456789a") is None


def test_bridge_serving_no_port_of_this_host():
    h = healthy()
    h.create_bridge(bridge_name("77776666-5555-4444-3333-222211110000"))
    found = db_checks(h, [port(PORT)], networks=[{"id": NET}, {"id": "77776666-5555-4444-3333-222211110000"}])
    assert [f.devices for f in found["bridge-without-port"]] == [(bridge_name("77776666-5555-4444-3333-222211110000"),)]
    assert "bridge-without-network" not in found


@pytest.mark.parametrize("process, flagged", [
    ({"cpu_percent": 5.0}, False),
    ({"cpu_percent": 95.0}, True),  # an agent that reports only its last interval
    ({"cpu_percent": None}, False),
    ({"cpu_percent": 95.0, "cpu_percent_sustained": None}, False),  # younger than a minute
    ({"cpu_percent": 95.0, "cpu_percent_sustained": 12.0}, False),  # one busy interval is work
    ({"cpu_percent": 95.0, "cpu_percent_sustained": 90.0}, True),   # busy all minute: a storm
])
def test_agent_cpu(process, flagged):
    agent = dict(AGENT, configurations={"process": process})
    assert ("agent-cpu" in db_checks(healthy(), [port(PORT)], agent=agent)) is flagged


def test_same_ip_on_two_unrelated_links():
    h = healthy()
    h.create_physical("eth2")
    h.add_address("eth2", "198.51.100.10/24")
    [f] = checks(h)["same-ip-two-links"]
    assert f.devices == (BR, "eth2") and not f.fixable
    assert "same-ip-two-links" not in checks(seed_fault())  # NIC + its bridge: duplicate-address instead


def test_seed_fault_with_32_and_unreachable_gateway_is_not_auto_fixed():
    """The seed's literal case (a /32 on NIC and bridge): moving the default route to
    the bridge would fail after the NIC lost it, so --fix must leave it alone."""
    h = FakeHost()
    h.create_physical("eth1")
    h.create_bridge(BR)
    h.enslave("eth1", BR)
    h.set_link(BR, up=True)
    h.add_address("eth1", "192.168.44.160/24")
    h.add_route(Route("default", "eth1", gateway="192.168.44.1"))
    h.add_address("eth1", "198.51.100.160/32")
    h.add_address(BR, "198.51.100.160/32")
    [f] = checks(h)["duplicate-address"]
    assert f.severity == doc.CRITICAL and not f.fixable and "not automatic" in f.remedy
    doc.apply_fixes(h, [f])
    assert [(r.ifname, r.gateway) for r in h.list_routes()] == [("eth1", "192.168.44.1")]


def test_seed_fault_32_without_routes_is_fixed():
    h = FakeHost()
    h.create_physical("eth1")
    h.create_bridge(BR)
    h.enslave("eth1", BR)
    h.add_address("eth1", "192.168.44.160/32")
    h.add_address(BR, "192.168.44.160/32")
    [f] = checks(h)["duplicate-address"]
    doc.apply_fixes(h, [f])
    assert h.list_addresses("eth1") == [] and [a.cidr for a in h.list_addresses(BR)] == ["192.168.44.160/32"]
