"""The qos extension after an agent restart and with a failing tap: the kernel's state
is reconciled on first sight, and one tap's tc error does not hold the others."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lbtap.agent.qos import QosExtension
from lbtap.drivers.host.errors import HostError
from lbtap.drivers.qos import BandwidthLimit, FakeQos, PortLimits
from tests.unit.agent_runtime.test_security_qos_ext import StubAgent, details, rule, run


def started(tc):
    """A freshly started agent's qos extension over a kernel (``tc``) that may hold an
    earlier run's limits."""
    agent = StubAgent()
    ext = QosExtension(qos_factory=lambda a: tc)
    ext.bind(agent)
    return SimpleNamespace(agent=agent, ext=ext, tc=tc)


def test_a_limit_left_by_an_earlier_run_is_cleared_when_the_policy_went_away():
    tc = FakeQos()
    tc.set_limits("tap00000000001", None, BandwidthLimit(1000))  # before the restart
    q = started(tc)
    q.ext.port_details(details(1, policy=None))  # detached while the agent was down
    q.ext.port_details(details(2, policy=None))  # never limited
    run(q.ext.process(0.0))
    assert tc.limits("tap00000000001").empty
    assert tc.calls == 2, "one clear, and nothing for the port the kernel shows unlimited"
    assert q.agent.calls == [], "no RPC for ports without a policy"
    q.ext.port_details(details(1, policy=None))
    run(q.ext.process(1.0))
    assert tc.calls == 2, "reconciled once: afterwards only differences reach tc"


class CountingQos(FakeQos):
    """Counts the kernel reads: a per-tap read is a full link and qdisc dump for real."""

    def __init__(self):
        super().__init__()
        self.reads = 0
        self.listings = 0

    def limits(self, tap):
        self.reads += 1
        return super().limits(tap)

    def limited_taps(self):
        self.listings += 1
        return super().limited_taps()


def test_the_start_up_reconcile_reads_the_kernel_once_not_per_tap():
    tc = CountingQos()
    tc.set_limits("tap00000000001", None, BandwidthLimit(1000))
    q = started(tc)
    for i in range(1, 50):
        q.ext.port_details(details(i, policy=None))
    run(q.ext.process(0.0))
    assert (tc.listings, tc.reads) == (1, 0)
    assert tc.limits("tap00000000001").empty, "the tap the listing named was cleared"
    q.ext.port_details(details(60, policy=None))  # a tap created after the start
    run(q.ext.process(1.0))
    assert (tc.listings, tc.reads) == (1, 1), "only the tc.limits() call of the assertion above"


def test_a_limit_left_by_an_earlier_run_is_replaced_by_the_current_rules():
    tc = FakeQos()
    tc.set_limits("tap00000000001", None, BandwidthLimit(5000, 9000))
    q = started(tc)
    q.agent.qos["tap00000000001"] = {"qos_policy_id": "pol", "rules": [rule(1000)]}
    q.ext.port_details(details(1, policy="pol"))
    run(q.ext.process(0.0))
    assert tc.limits("tap00000000001") == PortLimits(egress=BandwidthLimit(1000))


class RefusingQos(FakeQos):
    """tc that refuses one tap (like a burst pyroute2 cannot encode) until told not to."""

    def __init__(self, bad):
        super().__init__()
        self.bad = bad
        self.tried: list[str] = []

    def set_limits(self, tap, ingress, egress):
        self.tried.append(tap)
        if tap == self.bad:
            raise HostError(f"qos_root {tap}: 'I' format requires 0 <= number <= 4294967295", op="qos_root")
        super().set_limits(tap, ingress, egress)


def test_one_failing_tap_backs_off_alone_and_the_others_get_their_limits():
    tc = RefusingQos("tap00000000002")
    q = started(tc)
    for n in (1, 2, 3):
        q.agent.qos[f"tap{n:011d}"] = {"qos_policy_id": f"pol{n}", "rules": [rule(1000 * n)]}
        q.ext.port_details(details(n, policy=f"pol{n}"))
    run(q.ext.process(0.0))
    assert tc.limits("tap00000000001").egress == BandwidthLimit(1000)
    assert tc.limits("tap00000000003").egress == BandwidthLimit(3000), "the tap after the bad one is limited"
    assert q.ext.next_wakeup(0.0) == pytest.approx(0.5), "the bad tap is retried on its backoff"
    assert q.ext.stats["errors"] == 1
    # Meanwhile another port's change goes through at once, without the bad tap.
    q.agent.qos["tap00000000004"] = {"qos_policy_id": "pol4", "rules": [rule(4000)]}
    q.ext.port_details(details(4, policy="pol4"))
    tc.tried.clear()
    run(q.ext.process(0.1))
    assert tc.tried == ["tap00000000004"]
    run(q.ext.process(0.6))  # due: retried, fails again, waits longer
    assert tc.tried == ["tap00000000004", "tap00000000002"]
    assert q.ext.next_wakeup(0.6) == pytest.approx(1.6)
    tc.bad = None
    run(q.ext.process(1.6))
    assert tc.limits("tap00000000002").egress == BandwidthLimit(2000)
    assert q.ext.snapshot()["pending"] == 0
    assert q.ext.next_wakeup(1.6) == pytest.approx(60.0), "only the periodic re-read is left"
