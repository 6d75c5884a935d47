"""Planning cost: linear, a few milliseconds for 1000 devices; zero ops when wired."""

from __future__ import annotations

import time

from lbtap.agent.core.hostview import HostView
from lbtap.agent.core.plan import Desired, PortWiring, network_wiring, plan
from lbtap.domain.models import Segment
from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.host.base import Link

from .harness import Harness, port_id, settings

N = 1000
NETS = [f"{i:08x}-net0-0000-0000-000000000000" for i in range(10)]


def _best(fn, repeat=5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _host(wired: bool) -> tuple[HostView, Desired]:
    cfg = settings()
    links = [Link(name=bridge_name(n), index=i + 1, kind="bridge", up=True, mtu=1450) for i, n in enumerate(NETS)]
    links += [Link(name=f"vxlan-{i + 1}", index=100 + i, kind="vxlan", up=True, mtu=1450,
                   master=bridge_name(n)) for i, n in enumerate(NETS)]
    ports = {}
    for i in range(N):
        net = NETS[i % len(NETS)]
        name = tap_name(port_id(i))
        links.append(Link(name=name, index=1000 + i, kind="tun", up=wired, mtu=1450 if wired else 1500,
                          master=bridge_name(net) if wired else None))
        ports[name] = PortWiring(name, net)
    view = HostView()
    view.set_links(links)
    nets = {n: network_wiring(n, Segment("vxlan", None, i + 1, 1450), cfg) for i, n in enumerate(NETS)}
    return view, Desired(nets, ports)


def test_plan_1000_unwired_devices_in_a_few_ms():
    view, desired = _host(wired=False)
    ops = plan(desired, view)
    assert len(ops) == N  # one WirePort (mtu, enslave, up) per tap
    seconds = _best(lambda: plan(desired, view))
    assert seconds < 0.02, f"plan of {N} devices took {seconds * 1000:.1f} ms"


def test_plan_1000_wired_devices_is_empty_and_fast():
    view, desired = _host(wired=True)
    assert plan(desired, view) == []
    seconds = _best(lambda: plan(desired, view))
    assert seconds < 0.01, f"plan of {N} wired devices took {seconds * 1000:.1f} ms"


def test_full_scan_of_1000_wired_devices_yields_zero_ops_and_no_reports():
    h = Harness()
    for i in range(N):
        h.server.add_port(port_id(i), network_id=NETS[i % len(NETS)], segment=Segment("vxlan", None, i % len(NETS) + 1, 1450))
        h.tap(port_id(i))
    t = time.perf_counter()
    h.settle()
    converge = time.perf_counter() - t
    assert sum(h.server.up_msgs.values()) == N and h.server.batches == 1
    links = h.host.list_links()
    ops_before = h.ops_applied

    def scan():
        h.core.observe_links(links, full=True, now=h.now)
        return h.core.plan(h.now)

    assert scan() == []
    seconds = _best(scan)
    h.full_scan_due = True
    h.settle()
    assert h.ops_applied == ops_before and sum(h.server.up_msgs.values()) == N
    assert seconds < 0.05, f"full scan + plan of {N} wired devices took {seconds * 1000:.1f} ms"
    assert converge < 2.0, f"converging {N} devices on FakeHost took {converge:.2f} s"
