"""AgentCore scenarios on a FakeHost, stepped like the runtime, with simulated time."""

from __future__ import annotations

from dataclasses import replace

from lbtap.domain import constants as c
from lbtap.domain.models import Segment
from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.host.base import Route

from .harness import NET_A, NET_B, Harness, port_id, settings

BR_A, BR_B = bridge_name(NET_A), bridge_name(NET_B)


def test_tap_appears_wired_and_reported_once():
    h = Harness()
    h.step()
    assert h.host.get_link(BR_A) is None  # no bridge before a port of the network is here
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    assert h.master(t) == BR_A and h.host.get_link(t).up and h.host.get_link(BR_A).up
    assert h.server.up_msgs[t] == 1 and h.server.ports[t].status == c.PORT_STATUS_ACTIVE
    assert h.core.device_state(t) == "wired"
    h.run_until(30)
    assert h.server.up_msgs[t] == 1


def test_unknown_device_not_wired_and_reasked_with_backoff():
    h = Harness()
    t = h.tap(port_id(7))
    h.settle()
    assert h.master(t) is None and h.host.get_link(BR_A) is None
    asked = h.server.details_calls
    h.run_until(4)  # re-asks at 0.5, 1.5, 3.5 (0.5, 1, 2 s waits)
    assert h.server.details_calls - asked == 3
    assert not h.server.up_msgs
    h.server.add_port(port_id(7))  # the server learns the port
    h.run_until(20)
    assert h.master(t) == BR_A and h.server.up_msgs[t] == 1


def test_compute_port_in_the_wrong_bridge_is_repaired():
    h = Harness()
    t = h.server.add_port(port_id(1), device_owner="compute:nova")
    h.host.create_bridge("brqwrongwrong1")
    h.tap(port_id(1))
    h.host.enslave(t, "brqwrongwrong1")  # what a confused hypervisor did
    h.settle()
    assert h.master(t) == BR_A and h.server.up_msgs[t] == 1
    assert h.host.get_link("brqwrongwrong1") is None  # our empty brq bridge went away
    h.host.enslave(t, BR_B if h.host.get_link(BR_B) else BR_A)  # no-op
    h.host.release(t)  # someone pulls it out: event -> repaired, no new report
    h.settle()
    assert h.master(t) == BR_A and h.server.up_msgs[t] == 1


def test_admin_state_applied_and_reported():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    h.server.ports[t] = replace(h.server.ports[t], admin_state_up=False)
    h.core.port_updated(port_id(1), h.now)
    h.settle()
    assert not h.host.get_link(t).up and h.server.down_msgs[t] == 1
    h.server.ports[t] = replace(h.server.ports[t], admin_state_up=True)
    h.core.port_updated(port_id(1), h.now)
    h.settle()
    assert h.host.get_link(t).up and h.server.up_msgs[t] == 2  # a second DOWN->ACTIVE


def test_admin_down_port_is_wired_down_and_never_reported_up():
    h = Harness()
    t = h.server.add_port(port_id(1), admin_state_up=False)
    h.tap(port_id(1))
    h.settle()
    assert h.master(t) == BR_A and not h.host.get_link(t).up
    assert not h.server.up_msgs and not h.server.down_msgs  # the server already holds DOWN


def test_bridge_removed_with_its_last_port_only():
    h = Harness()
    t1 = h.server.add_port(port_id(1))
    t2 = h.server.add_port(port_id(2))
    h.tap(port_id(1))
    h.tap(port_id(2))
    h.host.create_bridge("br-ex")  # not ours: never touched
    h.settle()
    h.host.delete_link(t1)
    h.settle()
    assert h.host.get_link(BR_A) is not None and h.server.down_msgs[t1] == 1
    h.host.delete_link(t2)
    h.settle()
    assert h.host.get_link(BR_A) is None and h.server.down_msgs[t2] == 1
    assert h.host.get_link("br-ex") is not None


def test_port_deleted_drops_state_and_bridge_goes_with_the_tap():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    del h.server.ports[t]
    h.core.port_deleted(port_id(1), h.now)
    h.settle()
    assert h.core.device_state(t) == "orphan"
    assert h.host.get_link(BR_A) is not None  # the tap is still in it
    h.run_until(60)
    assert h.server.details_calls == 1  # an orphan is not re-asked about
    h.host.delete_link(t)
    h.settle()
    assert h.host.get_link(BR_A) is None
    assert not h.server.down_msgs  # nothing to tell about a deleted port


def test_network_deleted_forgets_all_its_ports():
    h = Harness()
    ta = h.server.add_port(port_id(1))
    tb = h.server.add_port(port_id(2), network_id=NET_B)
    h.tap(port_id(1))
    h.tap(port_id(2))
    h.settle()
    h.core.network_deleted(NET_A, h.now)
    h.host.delete_link(ta)
    h.settle()
    assert h.host.get_link(BR_A) is None and h.master(tb) == BR_B
    assert h.core.device_state(tb) == "wired"


def test_network_mtu_update_reapplied_without_report():
    h = Harness()
    t = h.server.add_port(port_id(1), segment=Segment("vxlan", None, 42, 1450))
    h.tap(port_id(1))
    h.settle()
    h.server.ports[t] = replace(h.server.ports[t], segment=Segment("vxlan", None, 42, 1400))
    h.core.network_updated(NET_A, h.now)
    h.settle()
    assert h.host.get_link(t).mtu == 1400 and h.host.get_link(BR_A).mtu == 1400
    assert h.host.get_link("vxlan-42").mtu == 1400
    assert h.server.up_msgs[t] == 1


def test_missing_mapping_fails_its_devices_only_and_retries_slowly():
    h = Harness(settings(retry_max=20.0))
    bad = h.server.add_port(port_id(1), segment=Segment("flat", "physnet9"))
    good = h.server.add_port(port_id(2), network_id=NET_B)
    h.tap(port_id(1))
    h.tap(port_id(2))
    h.settle()
    assert h.master(good) == BR_B and h.server.up_msgs[good] == 1
    assert h.core.device_state(bad) == "failed" and not h.server.up_msgs[bad]
    retry = h.core.snapshot()["retrying"][bad]
    assert retry["next_at"] == h.now + 20.0 and "physnet9" in retry["error"]
    h.run_until(61)
    assert h.core.snapshot()["retrying"][bad]["attempts"] == 4  # at 0, 20, 40, 60


def test_vlan_not_supported_fails_only_that_network():
    from lbtap.drivers.host.fake import FakeHost

    host = FakeHost(supports_vlan=False)
    host.create_physical("eth1")
    h = Harness(host=host)
    bad = h.server.add_port(port_id(1), segment=Segment("vlan", "physnet1", 100))
    good = h.server.add_port(port_id(2), network_id=NET_B, segment=Segment("vxlan", None, 5, 1450))
    h.tap(port_id(1))
    h.tap(port_id(2))
    h.settle()
    assert h.master(good) == BR_B and h.server.up_msgs[good] == 1
    assert "NotSupported" in h.core.snapshot()["retrying"][bad]["error"]


def test_flat_network_moves_host_ip_and_restores_it():
    h = Harness()
    h.host.create_physical("eth1")
    h.host.add_address("eth1", "198.51.100.5/24")
    h.host.add_route(Route(dst="default", ifname="eth1", gateway="198.51.100.1"))
    t = h.server.add_port(port_id(1), segment=Segment("flat", "physnet1"))
    h.tap(port_id(1))
    h.settle()
    assert h.master("eth1") == BR_A and h.master(t) == BR_A
    assert h.addresses(BR_A) == {"198.51.100.5/24"} and h.addresses("eth1") == set()
    assert [r.ifname for r in h.host.list_routes() if r.dst == "default"] == [BR_A]
    h.host.delete_link(t)
    h.settle()
    assert h.host.get_link(BR_A) is None
    assert h.addresses("eth1") == {"198.51.100.5/24"}
    assert [r.ifname for r in h.host.list_routes() if r.dst == "default"] == ["eth1"]


def test_seed_fault_converges_after_restart():
    """Flat network, NIC and bridge both hold the NIC's address, agent restarted: every
    port ends ACTIVE, the address sits on the bridge only, nothing storms."""
    h = Harness()
    host = h.host
    host.create_physical("eth1")
    host.create_bridge(BR_A, mtu=1500)
    host.set_link(BR_A, up=True)
    host.enslave("eth1", BR_A)
    host.add_address("eth1", "198.51.100.160/24")
    host.add_address(BR_A, "198.51.100.160/24")  # the add succeeded, the delete did not
    taps = []
    for i in range(5):
        t = h.server.add_port(port_id(i), segment=Segment("flat", "physnet1"), status=c.PORT_STATUS_ACTIVE if i < 3 else c.PORT_STATUS_DOWN)
        h.tap(port_id(i))
        if i < 3:
            host.enslave(t, BR_A)
            host.set_link(t, up=True)
        taps.append(t)
    h.run_until(60)
    assert h.addresses(BR_A) == {"198.51.100.160/24"} and h.addresses("eth1") == set()
    assert all(h.master(t) == BR_A for t in taps)
    assert all(p.status == c.PORT_STATUS_ACTIVE for p in h.server.ports.values())
    assert sum(h.server.up_msgs.values()) == 2  # only the two that were DOWN
    assert not h.core.snapshot()["retrying"]


def test_restart_with_wired_active_ports_sends_nothing_and_changes_nothing():
    h = Harness()
    taps = [h.server.add_port(port_id(i)) for i in range(20)]
    for i in range(20):
        h.tap(port_id(i))
    h.settle()
    assert sum(h.server.up_msgs.values()) == 20
    h.stop_watch()
    calls_before = len(h.host.calls)
    h2 = Harness(host=h.host, server=h.server)  # a new agent process on the same host
    h2.run_until(10)
    assert sum(h.server.up_msgs.values()) == 20 and not h.server.down_msgs
    mutating = [op for op, _ in h.host.calls[calls_before:] if not op.startswith(("list_", "get_", "watch"))]
    assert mutating == []
    assert all(h2.core.device_state(t) == "wired" for t in taps)


def test_full_scan_after_overflow_repairs_but_does_not_report():
    h = Harness()
    taps = [h.server.add_port(port_id(i)) for i in range(10)]
    for i in range(10):
        h.tap(port_id(i))
    h.settle()
    h.stop_watch()  # events lost...
    h.host.release(taps[3])
    h.host.delete_link(taps[4])
    h.host.create_tap(taps[4])  # ...re-created with a new ifindex
    h.stop_watch = h.host.watch_links(h.events.append)
    h.host.emit_overflow()
    h.settle()
    assert all(h.master(t) == BR_A for t in taps)
    assert sum(h.server.up_msgs.values()) == 10 and not h.server.down_msgs


def test_details_rpc_failure_retried():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h._drain()
    h.core.observe_links(h.host.list_links(), full=True, now=0)
    h.full_scan_due = False
    asked = h.core.devices_needing_details(0)
    h.core.details_failed(asked, 0)
    assert h.core.devices_needing_details(0.1) == []
    assert h.core.next_wakeup(0.1) == 0.5
    h.run_until(1)
    assert h.master(t) == BR_A and h.server.up_msgs[t] == 1


def test_report_outage_then_exactly_one_up_each():
    h = Harness()
    h.server.reachable = False
    taps = [h.server.add_port(port_id(i)) for i in range(30)]
    for i in range(30):
        h.tap(port_id(i))
    h.run_until(10)
    assert all(h.master(t) == BR_A for t in taps) and not h.server.up_msgs
    h.host.delete_link(taps[0])  # gone before its up was ever delivered
    h.server.reachable = True
    h.run_until(60)
    # Never an up for it; a down only if the server's status was not read as DOWN
    # meanwhile (after the failed batch the agent re-reads it instead of guessing).
    assert h.server.up_msgs[taps[0]] == 0 and h.server.down_msgs[taps[0]] <= 1
    assert h.server.ports[taps[0]].status == c.PORT_STATUS_DOWN
    assert all(h.server.up_msgs[t] == 1 for t in taps[1:])
    assert h.server.batches <= 3


def test_lost_answers_do_not_turn_into_second_ups():
    h = Harness()
    taps = [h.server.add_port(port_id(i)) for i in range(10)]
    h.server.lose_answers = True  # the server applies every report; answers get lost
    for i in range(10):
        h.tap(port_id(i))
    h.run_until(5)
    h.server.lose_answers = False
    h.run_until(60)
    assert all(h.server.up_msgs[t] == 1 for t in taps)
    assert h.core.snapshot().get("reports_pending", 0) == 0


def test_server_failed_devices_retried_alone():
    h = Harness()
    taps = [h.server.add_port(port_id(i)) for i in range(3)]
    h.server.fail_up.add(taps[1])
    for i in range(3):
        h.tap(port_id(i))
    h.run_until(2)
    assert h.server.up_msgs[taps[0]] == 1 and h.server.up_msgs[taps[1]] >= 2
    h.server.fail_up.clear()
    h.run_until(60)
    n = h.server.up_msgs[taps[1]]
    h.run_until(120)
    assert h.server.up_msgs[taps[1]] == n and h.server.up_msgs[taps[0]] == 1


def test_snapshot_shape():
    h = Harness()
    h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    snap = h.core.snapshot()
    assert snap["devices"] == 1 and snap["states"] == {"wired": 1}
    assert snap["counters"]["report_acked_up"] == 1 and snap["reports_pending"] == 0
    assert h.core.next_wakeup(h.now) is None  # idle: nothing to wake up for


def test_failing_host_ip_move_never_fails_the_ports():
    """The seed's mechanism live: deleting the NIC's address keeps failing. The ports
    still go ACTIVE once each; the move is retried alone, per bridge, with backoff, and
    converges (address on the bridge only) once the fault clears."""
    from lbtap.drivers.host import errors

    h = Harness()
    h.host.create_physical("eth1")
    h.host.add_address("eth1", "198.51.100.160/24")
    h.host.fail("delete_address", "eth1", errors.Transient)
    taps = [h.server.add_port(port_id(i), segment=Segment("flat", "physnet1")) for i in range(5)]
    for i in range(5):
        h.tap(port_id(i))
    h.run_until(20, reconcile=5)
    assert all(h.master(t) == BR_A and h.server.up_msgs[t] == 1 for t in taps)
    assert h.addresses(BR_A) == {"198.51.100.160/24"} == h.addresses("eth1")  # the fault state
    snap = h.core.snapshot()
    assert not snap["retrying"] and snap["bridges_retrying"][BR_A]["attempts"] >= 3
    assert h.core.next_wakeup(h.now) == snap["bridges_retrying"][BR_A]["next_at"]
    h.host.clear_faults()
    h.run_until(60, reconcile=5)
    assert h.addresses(BR_A) == {"198.51.100.160/24"} and h.addresses("eth1") == set()
    assert not h.core.snapshot()["bridges_retrying"]
    assert all(h.server.up_msgs[t] == 1 for t in taps) and not h.server.down_msgs


def test_deleted_vxlan_uplink_recreated_without_reports():
    h = Harness()
    t = h.server.add_port(port_id(1), segment=Segment("vxlan", None, 42, 1450))
    h.tap(port_id(1))
    h.settle()
    h.host.delete_link("vxlan-42")
    h.settle()
    assert h.master("vxlan-42") == BR_A and h.host.get_link("vxlan-42").up
    h.host.set_link(BR_A, up=False)
    h.settle()
    assert h.host.get_link(BR_A).up
    assert h.server.up_msgs[t] == 1 and not h.server.down_msgs


def test_port_moved_to_another_network_rewired_and_old_bridge_removed():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    h.server.ports[t] = replace(h.server.ports[t], network_id=NET_B)
    h.core.port_updated(port_id(1), h.now)
    h.settle()
    assert h.master(t) == BR_B and h.host.get_link(BR_A) is None
    assert h.server.up_msgs[t] == 1


def test_port_update_while_details_in_flight_asks_again():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h._drain()
    asked = h.core.devices_needing_details(0)
    assert asked == [t]
    h.core.port_updated(port_id(1), 0)  # arrives before the answer
    h.core.observe_details([d.to_wire() for d in h.server.details(asked)], 0)  # wire dicts work too
    assert h.core.devices_needing_details(0) == [t]


def test_quick_recreate_within_one_iteration_reports_nothing():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    h.host.delete_link(t)
    h.host.create_tap(t)
    h.settle()
    assert h.master(t) == BR_A and h.server.up_msgs[t] == 1 and not h.server.down_msgs


def test_hotplugged_uplink_nic_retried_at_once():
    h = Harness(settings(retry_max=30.0))
    t = h.server.add_port(port_id(1), segment=Segment("flat", "physnet1"))
    h.tap(port_id(1))
    h.settle()
    assert h.core.device_state(t) == "failed"  # no eth1 yet: slow retry (30 s)
    h.now = 1.0
    h.host.create_physical("eth1")
    h.settle()
    assert h.master("eth1") == BR_A and h.master(t) == BR_A and h.server.up_msgs[t] == 1


def test_device_left_out_of_a_details_answer_is_asked_again():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h._drain()
    assert h.core.devices_needing_details(0) == [t]
    h.core.observe_details([], 0)  # the server's answer forgot it
    assert h.core.devices_needing_details(1) == []
    assert h.core.next_wakeup(1) == 30.0
    assert h.core.devices_needing_details(30) == [t]


def test_pushed_details_wire_a_new_tap_without_asking():
    h = Harness()
    h.step()
    t = h.server.add_port(port_id(1))
    h.core.offer_details([h.server.ports[t]], h.now)  # the server pushed it at bind time
    asked = h.server.details_calls
    h.tap(port_id(1))
    h.settle()
    assert h.master(t) == BR_A and h.server.up_msgs[t] == 1
    assert h.server.details_calls == asked, "no details round trip for a pushed port"
    assert [d.device for d in h.core.take_fresh_details()] == [t]


def test_pushed_change_of_a_wired_port_is_applied_without_asking():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    asked = h.server.details_calls
    h.core.offer_details([replace(h.server.ports[t], admin_state_up=False)], h.now)
    h.settle()
    assert not h.host.get_link(t).up and h.server.down_msgs[t] == 1
    assert h.server.details_calls == asked


def test_push_never_answers_an_unsure_report():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.server.lose_answers = True  # the up lands, its answer is lost: status unsure
    h.settle()
    h.server.lose_answers = False
    stale = replace(h.server.ports[t], status=c.PORT_STATUS_DOWN)  # sent before the report landed
    h.core.offer_details([stale], h.now)
    h.run_until(h.now + 10)
    assert h.server.up_msgs[t] == 1, "a stale push must not cause a second update_device_up"


def test_pushes_are_dropped_on_network_update_and_port_delete():
    h = Harness()
    a = h.server.add_port(port_id(1))
    b = h.server.add_port(port_id(2), network_id=NET_B)
    h.core.offer_details([h.server.ports[a], h.server.ports[b]], h.now)
    h.core.network_updated(NET_A, h.now)
    h.core.port_deleted(port_id(2), h.now)
    asked = h.server.details_calls
    h.tap(port_id(1))
    h.settle()
    assert h.server.details_calls == asked + 1, "the dropped push is replaced by a details request"


def test_held_up_report_waits_for_the_hold_to_lift():
    h = Harness()
    held = {tap_name(port_id(1))}
    h.core.reporter.hold = lambda d: d in held
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    assert h.master(t) == BR_A and h.server.up_msgs[t] == 0
    held.clear()
    h.settle()
    assert h.server.up_msgs[t] == 1


def _pushed(h, pid, **changes):
    """What the server would push now: the port's details with a newer revision."""
    d = h.server.ports[tap_name(pid)]
    rev = d.revision or (0, 0)
    return replace(d, revision=(rev[0] + 1, rev[1]), **changes)


def test_port_moved_back_to_its_orphaned_tap_is_wired_again():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    h.core.port_deleted(port_id(1), h.now)  # moved to another host: our tap is an orphan
    h.settle()
    h.core.offer_details([_pushed(h, port_id(1))], h.now)  # ... and back here again
    h.settle()
    assert h.master(t) == BR_A and h.core.device_state(t) == "wired"


def test_stale_push_for_a_replugged_tap_does_not_swallow_its_up():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    stale = _pushed(h, port_id(1))  # read while ACTIVE
    h.host.delete_link(t)
    h.settle()
    assert h.server.down_msgs[t] == 1
    h.core.offer_details([stale], h.now)  # arrives late, after the down landed
    h.tap(port_id(1))
    h.settle()
    assert h.server.up_msgs[t] == 2 and h.server.ports[t].status == c.PORT_STATUS_ACTIVE


def test_older_push_does_not_undo_newer_details():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.server.ports[t] = replace(h.server.ports[t], revision=(5, 1))
    old = replace(h.server.ports[t], revision=(4, 1), admin_state_up=False)
    h.tap(port_id(1))
    h.settle()
    h.core.offer_details([old], h.now)
    h.settle()
    assert h.host.get_link(t).up and h.server.down_msgs[t] == 0


def test_push_for_a_deleted_port_never_wires_its_tap():
    h = Harness()
    t = h.server.add_port(port_id(1))
    late = h.server.ports[t]
    h.core.port_deleted(port_id(1), h.now)  # the delete overtook the push
    h.core.offer_details([late], h.now)
    del h.server.ports[t]
    h.tap(port_id(1))
    h.settle()
    assert h.master(t) is None, "asked the server, which no longer knows the port"


def test_details_of_a_port_deleted_in_the_same_pass_are_not_handed_to_extensions():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.step()
    h.core.take_fresh_details()
    h.core.offer_details([_pushed(h, port_id(1))], h.now)
    h.core.port_deleted(port_id(1), h.now)
    assert h.core.take_fresh_details() == []


def test_a_down_whose_answer_was_lost_is_sent_again():
    h = Harness()
    t = h.server.add_port(port_id(1))
    h.tap(port_id(1))
    h.settle()
    h.server.lose_answers = True
    h.host.delete_link(t)
    h.settle()
    h.server.lose_answers = False
    h.run_until(h.now + 10)
    assert h.server.down_msgs[t] >= 2 and h.server.ports[t].status == c.PORT_STATUS_DOWN
    assert h.server.up_msgs[t] == 1


def test_details_refresh_heals_a_lost_port_update_and_reports_nothing_twice():
    h = Harness()
    taps = [h.server.add_port(port_id(i)) for i in range(1, 4)]
    for i in range(1, 4):
        h.tap(port_id(i))
    h.settle()
    # admin_state_up changed on the server, its port_update lost on the way
    h.server.ports[taps[0]] = replace(h.server.ports[taps[0]], admin_state_up=False)
    assert h.core.refresh_details(h.now) == 3
    h.settle()
    assert not h.host.get_link(taps[0]).up and h.server.down_msgs[taps[0]] == 1
    h.core.refresh_details(h.now)
    h.settle()
    assert [h.server.up_msgs[t] for t in taps] == [1, 1, 1], "a re-read re-reports nothing"
    assert h.server.down_msgs[taps[0]] == 1
