"""The seed's defect, designed out: one persistently failing device is retried on its
own with growing backoff while 200 others go up with exactly one report each."""

from __future__ import annotations

from collections import Counter

from lbtap.domain.naming import bridge_name
from lbtap.drivers.host import errors

from .harness import NET_A, NET_B, Harness, port_id, settings


def test_one_failing_device_never_storms_the_others():
    h = Harness(settings(retry_initial=0.5, retry_max=30.0))
    healthy = [h.server.add_port(port_id(i), network_id=NET_A if i % 2 else NET_B) for i in range(200)]
    bad = h.server.add_port(port_id(999), network_id=NET_A)
    h.host.fail("enslave", bad, errors.Transient)  # forever
    for i in (*range(200), 999):
        h.tap(port_id(i))

    h.run_until(60.0, reconcile=10.0)  # periodic full scans included

    # Every healthy device: enslaved once, reported up exactly once.
    assert all(h.master(t) in (bridge_name(NET_A), bridge_name(NET_B)) for t in healthy)
    assert all(h.server.up_msgs[t] == 1 for t in healthy)
    assert not h.server.down_msgs
    enslaves = Counter(dev for op, dev in h.host.calls if op == "enslave")
    assert all(enslaves[t] == 1 for t in healthy)
    # The failing device: never reported, retried alone at 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5.
    assert h.server.up_msgs[bad] == 0 and h.master(bad) is None
    times = [t for t, d in h.failures if d == bad]
    assert {d for _, d in h.failures} == {bad}
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == sorted(gaps) and max(gaps) <= 30.0
    snap = h.core.snapshot()
    assert set(snap["retrying"]) == {bad} and snap["retrying"][bad]["attempts"] == 7
    assert snap["states"] == {"wired": 200, "failed": 1}
    # Status reports were batched, not one call per device.
    assert h.server.batches <= 5
    # Only the agent's own links were touched.
    mutated = {dev for op, dev in h.host.calls if not op.startswith(("list_", "get_", "watch", "create_tap"))}
    assert all(d.startswith(("tap", "brq")) for d in mutated), mutated

    # Fix the fault: the device is picked up at its next retry and reported once.
    h.host.clear_faults()
    h.run_until(100.0, reconcile=10.0)
    assert h.master(bad) == bridge_name(NET_A) and h.server.up_msgs[bad] == 1
    assert all(h.server.up_msgs[t] == 1 for t in healthy)


def test_failing_shared_op_fails_one_network_only():
    h = Harness()
    good = [h.server.add_port(port_id(i), network_id=NET_B) for i in range(20)]
    bad = [h.server.add_port(port_id(100 + i), network_id=NET_A) for i in range(5)]
    h.host.fail("create_bridge", bridge_name(NET_A), errors.Busy)
    for i in (*range(20), *range(100, 105)):
        h.tap(port_id(i))
    h.run_until(20.0)
    assert all(h.server.up_msgs[t] == 1 for t in good)
    assert not any(h.server.up_msgs[t] for t in bad)
    assert set(h.core.snapshot()["retrying"]) == set(bad)
    h.host.clear_faults()
    h.run_until(60.0)
    assert all(h.server.up_msgs[t] == 1 for t in bad + good)
