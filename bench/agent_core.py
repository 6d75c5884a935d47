"""Agent-core planning cost (pure code, no kernel): prints how long ``plan`` takes for
1000 unwired and 1000 wired devices, and a full scan + plan of 1000 wired devices.

Usage: .venv/bin/python bench/agent_core.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbtap.agent.core.plan import plan  # noqa: E402
from tests.unit.agent.harness import Harness, port_id  # noqa: E402
from tests.unit.agent.test_scale import NETS, N, best_of, host_view  # noqa: E402
from lbtap.domain.models import Segment  # noqa: E402


def main() -> None:
    for wired in (False, True):
        view, desired = host_view(wired=wired)
        seconds = best_of(lambda: plan(desired, view))
        print(f"plan of {N} {'wired' if wired else 'unwired'} devices: {seconds * 1000:.2f} ms")
    h = Harness()
    for i in range(N):
        h.server.add_port(port_id(i), network_id=NETS[i % len(NETS)],
                          segment=Segment("vxlan", None, i % len(NETS) + 1, 1450))
        h.tap(port_id(i))
    t = time.perf_counter()
    h.settle()
    print(f"converging {N} devices on FakeHost (core + fake kernel): {time.perf_counter() - t:.2f} s")
    links = h.host.list_links()

    def scan():
        h.core.observe_links(links, full=True, now=h.now)
        return h.core.plan(h.now)

    print(f"full scan + plan of {N} wired devices: {best_of(scan) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
