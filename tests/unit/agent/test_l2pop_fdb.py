"""l2population's pure part: pushed entries -> table -> kernel entries -> diff."""

from __future__ import annotations

import pytest

from lbtap.agent.l2pop_fdb import ZERO_MAC, FdbTable, KernelFdb, diff, kernel_entries

FLOOD = [ZERO_MAC, "0.0.0.0"]
M1, M2, M3 = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02", "fa:16:3e:00:00:03"


def entries(net="n1", vni=7, **ports):
    return {net: {"segment_id": vni, "network_type": "vxlan",
                  "ports": {ip.replace("_", "."): v for ip, v in ports.items()}}}


def K(mac, dst, vni=7):
    return KernelFdb(f"vxlan-{vni}", mac, dst)


@pytest.mark.parametrize("steps, local, own, want", [
    # a remote host joins: flooding entry + its port's MAC
    ([("add", entries(**{"10_0_0_2": [FLOOD, [M1, "10.1.0.5"]]}))], {"n1": 7}, "10.0.0.1",
     {K(ZERO_MAC, "10.0.0.2"), K(M1, "10.0.0.2")}),
    # two remote VTEPs: one flooding entry each (append semantics), MACs per VTEP
    ([("add", entries(**{"10_0_0_2": [FLOOD, [M1, "10.1.0.5"]], "10_0_0_3": [FLOOD, [M2, "10.1.0.6"]]}))],
     {"n1": 7}, "10.0.0.1",
     {K(ZERO_MAC, "10.0.0.2"), K(ZERO_MAC, "10.0.0.3"), K(M1, "10.0.0.2"), K(M2, "10.0.0.3")}),
    # our own VTEP is never a destination (fanouts reach the sender's host too)
    ([("add", entries(**{"10_0_0_1": [FLOOD, [M3, "10.1.0.9"]], "10_0_0_2": [FLOOD]}))], {"n1": 7}, "10.0.0.1",
     {K(ZERO_MAC, "10.0.0.2")}),
    # a network that is not on this host programs nothing
    ([("add", entries(**{"10_0_0_2": [FLOOD, [M1, "10.1.0.5"]]}))], {"n2": 9}, "10.0.0.1", set()),
    # one port of two leaves: its MAC goes, the flooding entry stays
    ([("add", entries(**{"10_0_0_2": [FLOOD, [M1, "a"], [M2, "b"]]})), ("remove", entries(**{"10_0_0_2": [[M2, "b"]]}))],
     {"n1": 7}, "10.0.0.1", {K(ZERO_MAC, "10.0.0.2"), K(M1, "10.0.0.2")}),
    # the host's last port leaves: everything of that VTEP goes
    ([("add", entries(**{"10_0_0_2": [FLOOD, [M1, "a"]]})), ("remove", entries(**{"10_0_0_2": [FLOOD, [M1, "a"]]}))],
     {"n1": 7}, "10.0.0.1", set()),
    # a MAC with two IPs stays until both pairs are removed
    ([("add", entries(**{"10_0_0_2": [[M1, "a"], [M1, "b"]]})), ("remove", entries(**{"10_0_0_2": [[M1, "a"]]}))],
     {"n1": 7}, "10.0.0.1", {K(M1, "10.0.0.2")}),
    # a MAC claimed by two VTEPs: one entry, deterministically the highest address
    ([("add", entries(**{"10_0_0_2": [[M1, "a"]], "10_0_0_3": [[M1, "a"]]}))], {"n1": 7}, "10.0.0.1",
     {K(M1, "10.0.0.3")}),
    # removing what was never added, and malformed pieces, change nothing
    ([("add", entries(**{"10_0_0_2": [FLOOD]})), ("remove", entries(net="nx", **{"10_0_0_9": [[M1, "a"]]})),
      ("add", {"n1": "garbage"}), ("add", {"n1": {"ports": {"10.0.0.4": [[]]}}})],
     {"n1": 7}, "10.0.0.1", {K(ZERO_MAC, "10.0.0.2")}),
    # the local VNI names the device (the pushed segment_id is informative)
    ([("add", entries(vni=99, **{"10_0_0_2": [FLOOD]}))], {"n1": 7}, "10.0.0.1", {K(ZERO_MAC, "10.0.0.2")}),
])
def test_table_to_kernel_entries(steps, local, own, want):
    table = FdbTable()
    for op, e in steps:
        getattr(table, op)(e)
    assert kernel_entries(table, local, own) == want


@pytest.mark.parametrize("desired, actual, add, delete", [
    (set(), set(), [], []),
    ({K(ZERO_MAC, "10.0.0.2")}, set(), [K(ZERO_MAC, "10.0.0.2")], []),
    (set(), {K(M1, "10.0.0.2")}, [], [K(M1, "10.0.0.2")]),
    # a flooding list grows by one VTEP: only that entry is added
    ({K(ZERO_MAC, "10.0.0.2"), K(ZERO_MAC, "10.0.0.3")}, {K(ZERO_MAC, "10.0.0.2")}, [K(ZERO_MAC, "10.0.0.3")], []),
    # a unicast MAC moved VTEP: old entry deleted, new one added
    ({K(M1, "10.0.0.3")}, {K(M1, "10.0.0.2")}, [K(M1, "10.0.0.3")], [K(M1, "10.0.0.2")]),
    # same MAC on two devices (two networks) are distinct entries
    ({K(M1, "10.0.0.2", 7), K(M1, "10.0.0.2", 8)}, {K(M1, "10.0.0.2", 7)}, [K(M1, "10.0.0.2", 8)], []),
])
def test_diff(desired, actual, add, delete):
    assert diff(desired, actual) == (add, delete)


def test_resync_snapshot_then_replayed_casts():
    snapshot = entries(**{"10_0_0_2": [FLOOD, [M1, "a"]]})
    table = FdbTable.from_entries(snapshot)
    table.add(entries(**{"10_0_0_3": [FLOOD, [M2, "b"]]}))
    table.remove(entries(**{"10_0_0_2": [[M1, "a"]]}))
    assert kernel_entries(table, {"n1": 7}, "10.0.0.1") == {
        K(ZERO_MAC, "10.0.0.2"), K(ZERO_MAC, "10.0.0.3"), K(M2, "10.0.0.3")}
    assert table.count() == 3
