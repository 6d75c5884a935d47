"""Planning at scale: 1000 devices give one op each when unwired and none when wired.

Timings are measured by bench/agent_core.py, not asserted here."""

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


def best_of(fn, repeat=5) -> float:
    """Fastest of ``repeat`` runs (used by bench/agent_core.py)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def host_view(wired: bool) -> tuple[HostView, Desired]:
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


def test_plan_1000_unwired_devices_one_op_each():
    view, desired = host_view(wired=False)
    ops = plan(desired, view)
    assert len(ops) == N  # one WirePort (mtu, enslave, up) per tap


def test_plan_1000_wired_devices_is_empty():
    view, desired = host_view(wired=True)
    assert plan(desired, view) == []


def test_full_scan_of_1000_wired_devices_yields_zero_ops_and_no_reports():
    h = Harness()
    for i in range(N):
        h.server.add_port(port_id(i), network_id=NETS[i % len(NETS)], segment=Segment("vxlan", None, i % len(NETS) + 1, 1450))
        h.tap(port_id(i))
    h.settle()
    assert sum(h.server.up_msgs.values()) == N and h.server.batches == 1
    links = h.host.list_links()
    ops_before = h.ops_applied

    def scan():
        h.core.observe_links(links, full=True, now=h.now)
        return h.core.plan(h.now)

    assert scan() == []
    h.full_scan_due = True
    h.settle()
    assert h.ops_applied == ops_before and sum(h.server.up_msgs.values()) == N
