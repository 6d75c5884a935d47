"""QoS driver with real traffic: iperf3 between two guests across a bridge.

Namespaces are ``lbtt-...`` ones built by the firewall tests' ``Topology`` and deleted
afterwards. Throughput is measured with iperf3 (TCP, first second omitted so the
token bucket's initial burst does not count) and must be within ±20% of the limit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from lbtap.drivers.host import errors
from lbtap.drivers.qos import BandwidthLimit, TcQosDriver, ifb_name
from lbtap.drivers.qos.driver import probe_police
from tests.functional.test_firewall import Topology
from tests.support import require_root

TOLERANCE = 0.20


@pytest.fixture
def topo():
    require_root()
    t = Topology("qos")
    try:
        for g in (t.add_guest("tapqa", "fa:16:3e:00:01:0a", "10.40.0.10"),
                  t.add_guest("tapqb", "fa:16:3e:00:01:0b", "10.40.0.11")):
            # One segment per skb, as a NIC without TSO sends: 64 KB GSO bursts into a
            # token bucket make TCP stall for whole RTOs and the measurement useless.
            subprocess.run(["ip", "-n", g.ns, "link", "set", "eth0", "gso_max_segs", "1"], check=True)
        yield t
    finally:
        t.close()


@pytest.fixture
def qos(topo):
    d = TcQosDriver(topo.host)
    yield d
    d.close()


def throughput_kbps(client, server, port: int = 5201, seconds: int = 5) -> float:
    """Receiver-side TCP goodput from ``client`` to ``server`` in kbit/s."""
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")
    srv = subprocess.Popen(["ip", "netns", "exec", server.ns, "iperf3", "-s", "-1", "-B", server.ip, "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30  # for the server to listen, on a loaded machine too
        while True:
            r = subprocess.run(["ip", "netns", "exec", client.ns, "iperf3", "-c", server.ip, "-p", str(port),
                                "-t", str(seconds), "-O", "1", "-J"], capture_output=True, text=True)
            if r.returncode == 0 and "sum_received" in json.loads(r.stdout).get("end", {}):
                return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1000
            if time.monotonic() > deadline:
                raise AssertionError(f"iperf3 failed: {r.stdout[-500:]} {r.stderr[-500:]}")
            time.sleep(0.1)  # server not listening yet
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)


def assert_near(measured: float, limit_kbps: int) -> None:
    assert abs(measured - limit_kbps) <= TOLERANCE * limit_kbps, f"{measured:.0f} kbit/s vs limit {limit_kbps}"


def test_limit_toward_guest_is_shaped_on_the_tap_and_follows_updates(topo, qos):
    a, b = topo.guests["tapqa"], topo.guests["tapqb"]
    qos.set_limits(b.tap, BandwidthLimit(8000), None)
    assert qos.limits(b.tap).ingress == BandwidthLimit(8000)
    assert_near(throughput_kbps(a, b), 8000)
    qos.set_limits(b.tap, BandwidthLimit(3000), None)
    assert_near(throughput_kbps(a, b), 3000)
    qos.clear(b.tap)
    assert qos.limits(b.tap).ingress is None
    assert throughput_kbps(a, b, seconds=2) > 3 * 8000


def test_limit_from_guest_goes_through_ifb_and_follows_updates(topo, qos):
    a, b = topo.guests["tapqa"], topo.guests["tapqb"]
    try:
        qos.set_limits(a.tap, None, BandwidthLimit(6000))
    except errors.NotSupported as e:
        pytest.skip(f"kernel cannot create ifb devices: {e}")
    assert qos.limits(a.tap).egress == BandwidthLimit(6000)
    assert_near(throughput_kbps(a, b), 6000)
    qos.set_limits(a.tap, None, BandwidthLimit(2500))
    assert_near(throughput_kbps(a, b), 2500)
    qos.set_limits(a.tap, None, None)
    links = subprocess.run(["ip", "-n", topo.host, "-o", "link"], capture_output=True, text=True).stdout
    assert ifb_name(a.tap) not in links


def test_set_limits_is_idempotent_and_clear_is_safe(topo, qos):
    a = topo.guests["tapqa"]
    for _ in range(3):
        qos.set_limits(a.tap, BandwidthLimit(5000, 400), BandwidthLimit(7000))
    lim = qos.limits(a.tap)
    assert (lim.ingress.max_kbps, lim.egress.max_kbps) == (5000, 7000)
    filters = subprocess.run(["ip", "netns", "exec", topo.host, "tc", "filter", "show", "dev", a.tap,
                              "parent", "ffff:"], capture_output=True, text=True).stdout
    assert filters.count("mirred") == 1
    qos.clear(a.tap)
    qos.clear(a.tap)
    assert qos.limits(a.tap).empty
    with pytest.raises(errors.NotFound):
        qos.set_limits("tapnothere", BandwidthLimit(1000), None)


def test_policing_where_the_kernel_has_it(topo, qos):
    """Egress policing (Neutron's way) is only used when the kernel has tc ``police``."""
    reason = probe_police(topo.host, topo.guests["tapqa"].tap)
    if reason:
        pytest.skip(reason)
    a, b = topo.guests["tapqa"], topo.guests["tapqb"]
    police = TcQosDriver(topo.host, egress_mode="police")
    try:
        police.set_limits(a.tap, None, BandwidthLimit(6000, 600))
        assert_near(throughput_kbps(a, b), 6000)
    finally:
        police.close()


def test_clear_after_the_tap_is_gone_removes_the_ifb(topo, qos):
    a = topo.guests["tapqa"]
    qos.set_limits(a.tap, None, BandwidthLimit(1000))
    subprocess.run(["ip", "-n", topo.host, "link", "del", a.tap], check=True)
    qos.clear(a.tap)
    links = subprocess.run(["ip", "-n", topo.host, "-o", "link"], capture_output=True, text=True).stdout
    assert ifb_name(a.tap) not in links


class _RestartedAgent:
    """Just enough agent for the qos extension: no server rules needed (no policies);
    host work on a thread without a running loop, as the agent's host worker (pyroute2's
    sync API needs that)."""

    def __init__(self, netns_name: str):
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(retry_initial=0.5, retry_max=4.0, netns=netns_name)
        self.disconnects = 0
        self.bus = self

    async def call(self, topic, method, timeout=None, **kw):  # noqa: ANN001
        return {d: {"qos_policy_id": None, "rules": []} for d in kw["devices"]}

    async def on_host(self, fn, *args):  # noqa: ANN001
        import asyncio

        return await asyncio.to_thread(fn, *args)


def test_restarted_agent_clears_stale_limits_and_orphan_ifbs():
    """Limits and ifb devices left by an earlier run: a port whose policy went away
    while the agent was down is cleared, the ifb of a port deleted meanwhile removed,
    and ifb devices that are not lbtap's are left alone."""
    import asyncio
    import dataclasses

    from lbtap.agent.qos import QosExtension
    from tests.unit.agent_runtime.test_security_qos_ext import details

    require_root()
    t = Topology("qosr")
    try:
        kept = t.add_guest("tapaaaaaaaa-aa", "fa:16:3e:00:02:0a", "10.41.0.10")
        gone = t.add_guest("tapdddddddd-dd", "fa:16:3e:00:02:0b", "10.41.0.11")
        subprocess.run(["ip", "-n", t.host, "link", "add", "ifb0", "type", "ifb"], check=True)  # not lbtap's
        before = TcQosDriver(t.host)  # the earlier run
        try:
            before.set_limits(kept.tap, BandwidthLimit(1000), BandwidthLimit(2000))
            before.set_limits(gone.tap, None, BandwidthLimit(3000))
        except errors.NotSupported as e:
            pytest.skip(f"kernel cannot create ifb devices: {e}")
        finally:
            before.close()
        subprocess.run(["ip", "-n", t.host, "link", "del", gone.tap], check=True)  # port deleted meanwhile

        ext = QosExtension(qos_factory=lambda a: TcQosDriver(t.host))
        ext.bind(_RestartedAgent(t.host))
        ext.port_details(dataclasses.replace(details(1, policy=None), device=kept.tap))  # policy removed
        async def one_pass():
            await ext.process(0.0)
            await ext.stop()

        asyncio.run(one_pass())
        assert ext.stats["errors"] == 0

        check = TcQosDriver(t.host)
        try:
            assert check.limits(kept.tap).empty, "stale limits kept after the restart"
        finally:
            check.close()
        links = subprocess.run(["ip", "-n", t.host, "-o", "link"], capture_output=True, text=True).stdout
        assert ifb_name(kept.tap) not in links
        assert ifb_name(gone.tap) not in links, "orphan ifb of a deleted port kept"
        assert "ifb0" in links, "an ifb that is not lbtap's was removed"
    finally:
        t.close()
