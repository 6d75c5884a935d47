"""Conntrack zones per network: allocation (pure), rendering, which entries a change
flushes in which zone, and the driver's retire-flush-reuse cycle (against the
recording nft/conntrack of ``test_driver``)."""

from __future__ import annotations

import errno
import socket

import pytest

from lbtap.domain.naming import bridge_name
from lbtap.drivers.firewall import FakeFirewall, FirewallDriver, PortFilter, RemoteGroups, Rule, assign_zones
from lbtap.drivers.firewall.conntrack import ConntrackCleaner, Entry, Flush, FlushIndex, doomed, plan_flushes, queries
from lbtap.drivers.firewall.model import EGRESS, INGRESS
from lbtap.drivers.firewall.render import compile_state, compile_update, render_delta, render_full
from lbtap.drivers.firewall.zones import MAX_ZONE
from lbtap.drivers.host import errors
from tests.unit.firewall.nftsim import Ruleset
from tests.unit.firewall.test_conntrack import FakeMsg, FakeSock, ct_msg
from tests.unit.firewall.test_driver import RecordingConntrack, RecordingNft, kernel_equals_full_render

INET = ("inet", "lbtap")
SSH = Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22)
OUT = Rule(EGRESS)
NA, NB, NC = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002", \
    "cccccccc-0000-4000-8000-000000000003"
BA, BB, BC = bridge_name(NA), bridge_name(NB), bridge_name(NC)


def port(i: int, net: str | None, *rules: Rule, ip: str | None = None, **kw) -> PortFilter:
    return PortFilter(f"tap{i}", f"fa:16:3e:00:00:{i:02x}", (ip or f"10.0.0.{i}",), rules=rules or (OUT,),
                      security_groups=("sg",), network_id=net, **kw)


# -- allocation (pure) -----------------------------------------------------------------
def test_new_bridges_get_the_lowest_free_numbers_from_one_in_name_order():
    assert assign_zones(["brqb", "brqa"], {}) == ({"brqa": 1, "brqb": 2}, frozenset())


def test_a_bridge_keeps_its_zone_and_a_gone_one_retires_it():
    zones, retired = assign_zones(["brqb", "brqc"], {"brqa": 1, "brqb": 2})
    assert zones == {"brqb": 2, "brqc": 3}, "1 is retired: not handed out"
    assert retired == {1}


def test_a_retired_zone_is_reused_only_once_no_longer_retired():
    zones, retired = assign_zones(["brqc"], {}, frozenset({1}))
    assert zones == {"brqc": 2} and retired == {1}
    assert assign_zones(["brqc", "brqd"], zones, frozenset()) == ({"brqc": 2, "brqd": 1}, frozenset())


def test_inconsistent_previous_zones_from_the_kernel_are_not_trusted():
    # Zone 3 claimed twice; zone 4 also retired; 0 and 70000 are not zones of ours.
    zones, retired = assign_zones(["brqa", "brqb", "brqc", "brqd", "brqe"],
                                  {"brqa": 3, "brqb": 3, "brqc": 4, "brqd": 0, "brqe": 70000}, frozenset({4}))
    assert zones["brqa"] == 3 and len(set(zones.values())) == 5
    assert 4 not in zones.values() and retired == {4}


def test_zones_run_out_at_16_bits():
    with pytest.raises(ValueError):
        assign_zones(["brqa"], {}, frozenset(range(1, MAX_ZONE + 1)))


# -- compile and render ------------------------------------------------------------------
def test_every_network_with_a_port_gets_a_zone_filtered_or_not():
    ports = [port(1, NA), port(2, NA), port(3, NB, device_owner="network:dhcp"),
             port(4, NC, port_security_enabled=False), port(5, None)]
    s = compile_state(ports, RemoteGroups())
    assert s.zones == {BA: 1, BB: 2, BC: 3}
    assert [s.zone_of(p) for p in ports] == [1, 1, 2, 3, 0]


def test_the_zone_chains_set_the_zone_before_defragmentation_and_conntrack_from_one_map():
    s = compile_state([port(1, NA), port(2, NB)], RemoteGroups())
    inet = Ruleset().load(render_full(s)).tables[INET]
    assert inet.chains["zone-in"] == ["#hook type filter hook prerouting priority -450; policy accept;",
                                      "ct zone set iifname map @zones"]
    assert inet.chains["zone-out"] == ["#hook type filter hook output priority -450; policy accept;",
                                       "ct zone set oifname map @zones"]
    assert inet.sets["zones"] == {f'"{BA}" : 1', f'"{BB}" : 2'} and inet.sets["zones_retired"] == set()
    assert "map zones { typeof iifname : ct zone;" in render_full(s)


def test_network_leaving_retires_its_zone_and_a_new_one_takes_the_next():
    s0 = compile_state([port(1, NA), port(2, NB)], RemoteGroups())
    s1 = compile_update(s0, [(port(1, NA), None), (None, port(3, NC))], RemoteGroups())
    assert s1.zones == {BB: 2, BC: 3} and s1.retired == {1}
    assert render_delta(s0, s1).count("zones") == 3  # one map element out, one in, one retired
    assert f'add element inet lbtap zones {{ "{BC}" : 3 }}' in render_delta(s0, s1)
    assert "add element inet lbtap zones_retired { 1 }" in render_delta(s0, s1)
    rs = Ruleset().load(render_full(s0)).load(render_delta(s0, s1))
    assert rs.snapshot() == Ruleset().load(render_full(s1)).snapshot()


def test_a_rule_change_leaves_the_zones_alone():
    s0 = compile_state([port(1, NA), port(2, NA)], RemoteGroups())
    s1 = compile_update(s0, [(port(1, NA), port(1, NA, OUT, SSH))], RemoteGroups())
    assert s1.zones is s0.zones and "zones" not in render_delta(s0, s1)


def test_a_port_of_a_network_already_here_adds_no_zone():
    s0 = compile_state([port(1, NA)], RemoteGroups())
    s1 = compile_update(s0, [(None, port(2, NA))], RemoteGroups())
    assert s1.zones == s0.zones and s1.bridges == {"tap1": BA, "tap2": BA}


# -- which entries, in which zone --------------------------------------------------------
def change(old_ports, new_ports):  # noqa: ANN001
    old = {p.tap: p for p in old_ports}
    new = {p.tap: p for p in new_ports}
    s0 = compile_state(old.values(), RemoteGroups())
    s1 = compile_update(s0, [(old.get(t), new.get(t)) for t in sorted(old.keys() | new.keys())
                             if old.get(t) != new.get(t)], RemoteGroups())
    return plan_flushes(s0, s1, old, new, RemoteGroups(), RemoteGroups())


def test_flushes_are_limited_to_the_ports_zone():
    # Two networks' ports with the same address (and groups of their own).
    b = PortFilter("tap2", "fa:16:3e:00:00:02", ("10.0.0.5",), rules=(OUT, SSH), security_groups=("sg-b",),
                   network_id=NB)
    (f,) = change([port(1, NA, OUT, SSH, ip="10.0.0.5"), b], [port(1, NA, OUT, ip="10.0.0.5"), b])
    assert (f.tap, f.direction, f.zone) == ("tap1", INGRESS, 1)
    in_a = Entry(4, "10.9.0.1", "10.0.0.5", 6, 40000, 22, zone=1)
    in_b = Entry(4, "10.9.0.1", "10.0.0.5", 6, 40000, 22, zone=2)
    assert doomed(f, in_a) and not doomed(f, in_b)


def test_the_last_port_of_a_network_leaving_flushes_its_whole_zone():
    flushes = change([port(1, NA), port(2, NB)], [port(2, NB)])
    assert Flush.of_zone(1) in flushes
    assert Flush("tap1", None, ("10.0.0.1",), zone=1) in flushes


def test_a_port_moved_to_another_network_loses_its_flows_in_the_old_zone():
    flushes = change([port(1, NA), port(2, NA)], [port(1, NB), port(2, NA)])
    assert flushes == [Flush("tap1", None, ("10.0.0.1",), zone=1)]


def test_whole_zone_flushes_in_the_index_and_the_dump_plan():
    index = FlushIndex([Flush.of_zone(3), Flush("tap1", None, ("10.0.0.1",))])
    assert index.doomed(Entry(4, "10.1.1.1", "10.2.2.2", 6, zone=3))
    assert not index.doomed(Entry(4, "10.1.1.1", "10.2.2.2", 6, zone=4))
    assert not index.doomed(Entry(4, "10.0.0.1", "10.2.2.2", 6, zone=4)), "tap1 is in zone 0"
    assert index.doomed(Entry(4, "10.0.0.1", "10.2.2.2", 6))
    assert queries([Flush.of_zone(3)]) is None, "no address filter covers a zone: full dump"


def test_the_cleaner_deletes_only_the_entry_of_the_flushed_zone():
    def zoned(zone: int) -> FakeMsg:
        m = ct_msg("10.9.0.1", "10.0.0.1", 6, 80)
        if zone:
            m["attrs"].append(("CTA_ZONE", zone))
        return m

    class ZoneSock(FakeSock):
        def entry(self, cmd, tuple_orig, zone=None):  # noqa: ANN001, ANN201
            self.deleted.append((zone, tuple_orig))

    c = ConntrackCleaner(None)
    sock = ZoneSock([zoned(0), zoned(1), zoned(2)])
    c._sock = lambda family: sock  # noqa: SLF001
    assert c.flush([Flush("tap1", None, ("10.0.0.1",), zone=2)]) == 1
    assert [z for z, _ in sock.deleted] == [2], "the same tuple in zones 0 and 1 stays"
    sock.deleted.clear()
    assert c.flush([Flush("tap1", None, ("10.0.0.1",), zone=1), Flush.of_zone(2)]) == 2
    assert sorted(z for z, _ in sock.deleted) == [1, 2]
    assert socket.AF_INET in (m["nfgen_family"] for m in sock.entries)


# -- the driver: retire, flush, reuse; restart; clear -----------------------------------
@pytest.fixture
def drv():
    return FirewallDriver(None, nft=RecordingNft(), enable_br_netfilter=False, conntrack=RecordingConntrack())


def test_a_retired_zone_is_flushed_then_freed_by_the_next_transaction(drv):
    drv.apply([port(1, NA), port(2, NB)])
    drv.remove_port("tap1")
    assert Flush.of_zone(1) in drv.conntrack.calls[-1]
    assert drv.state.retired == {1} and drv.nft.rs.tables[INET].sets["zones_retired"] == {"1"}
    drv.update_port(port(3, NC))
    assert drv.state.zones == {BB: 2, BC: 1}, "flushed: the number is free again"
    assert drv.nft.rs.tables[INET].sets["zones_retired"] == set()
    assert kernel_equals_full_render(drv)


def test_a_zone_whose_flush_failed_is_not_reused_until_the_retry_succeeded(drv):
    drv.apply([port(1, NA), port(2, NB)])
    drv.conntrack.fail = errors.Transient("ENOBUFS", op="conntrack_flush", code=errno.ENOBUFS)
    with pytest.raises(errors.Transient):
        drv.remove_port("tap1")
    drv.update_port(port(3, NC))  # the pending flush of zone 1 runs after this one
    assert drv.state.zones[BC] == 3 and Flush.of_zone(1) in drv.conntrack.calls[-1]
    drv.update_port(port(4, "dddddddd-0000"))
    assert drv.state.zones[bridge_name("dddddddd-0000")] == 1
    assert kernel_equals_full_render(drv)


def test_a_restarted_driver_keeps_the_zones_and_flushes_what_was_retired(drv):
    drv.apply([port(1, NA), port(2, NB), port(3, NC)])
    drv.conntrack.fail = errors.PermissionDenied("EPERM", op="conntrack_flush", code=errno.EPERM)
    with pytest.raises(errors.PermissionDenied):
        drv.remove_port("tap1")  # zone 1 retired, its flush lost
    # A new agent process: same kernel, fresh driver; network B left meanwhile.
    again = FirewallDriver(None, nft=drv.nft, enable_br_netfilter=False, conntrack=RecordingConntrack())
    again.apply([port(3, NC), port(4, "dddddddd-0000")])
    assert again.state.zones == {BC: 3, bridge_name("dddddddd-0000"): 4}
    (call,) = again.conntrack.calls
    assert {f.zone for f in call if f.whole_zone} == {1, 2}
    assert kernel_equals_full_render(again)


def test_a_first_start_without_a_table_reads_nothing_and_flushes_nothing(drv):
    drv.apply([port(1, NA)])
    assert drv.state.zones == {BA: 1} and drv.conntrack.calls == []


def test_clear_flushes_every_zone_it_used(drv):
    drv.apply([port(1, NA), port(2, NB)])
    drv.remove_port("tap1")
    drv.conntrack.calls.clear()
    drv.clear()
    assert [(f.zone, f.whole_zone) for f in drv.conntrack.calls[-1]] == [(1, True), (2, True)]


def test_fake_firewall_records_zone_flushes_and_frees_the_number():
    fake = FakeFirewall()
    fake.apply([port(1, NA), port(2, NB)])
    fake.remove_port("tap1")
    assert Flush.of_zone(1) in fake.flushes
    fake.update_port(port(3, NC))
    assert fake.compiled.zones == {BB: 2, BC: 1}
