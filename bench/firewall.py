"""Firewall benchmark (issue 6 targets): program 1000 ports x 10 rules from scratch
(target <= 200 ms) and apply one rule change with 1000 ports present (<= 20 ms).

Runs in a throwaway namespace ``lbtt-bench-*`` (no taps needed: nft matches interface
names as strings). Two rule mixes: "distinct" gives every port its own security group
with its own 10 rules (worst case: 1000 profile chains, 10 000 rules); "shared" puts all
ports in the same groups (the common case). The one-rule change adds a rule to one
port's group: in "shared" that group is every port's, so all 1000 ports change (one
``update_ports`` call, one transaction).

Usage: sudo .venv/bin/python bench/firewall.py [--ports 1000] [--rules 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from lbtap.drivers.firewall import EGRESS, INGRESS, FirewallDriver, PortFilter, RemoteGroups, Rule  # noqa: E402
from lbtap.drivers.firewall.render import compile_state, render_full  # noqa: E402
from lbtap.drivers.host import netns  # noqa: E402


def make_ports(n: int, rules: int, distinct: bool) -> list[PortFilter]:
    ports = []
    for i in range(n):
        base = i if distinct else 0
        rs = [Rule(EGRESS)]
        rs += [Rule(INGRESS, protocol="tcp", port_range_min=1000 + base * 16 + k, port_range_max=1000 + base * 16 + k,
                    remote_ip_prefix=f"10.{k}.0.0/16") for k in range(rules - 2)]
        rs.append(Rule(INGRESS, remote_group_id="sg-default"))
        ports.append(PortFilter(
            tap=f"tap{i:011x}", mac=f"fa:16:3e:00:{i >> 8 & 0xff:02x}:{i & 0xff:02x}",
            ips=(f"10.{100 + (i >> 16)}.{i >> 8 & 0xff}.{i & 0xff}",), rules=tuple(rs),
            security_groups=(f"sg-{i}",) if distinct else ("sg-web", "sg-default")))
    return ports


def bench(ns: str, n: int, rules: int, distinct: bool, repeat: int) -> tuple[float, float, float, int]:
    ports = make_ports(n, rules, distinct)
    groups = RemoteGroups.of({"sg-default": [p.ips[0] for p in ports]})
    t = time.perf_counter()
    script = render_full(compile_state(ports, groups))
    t_render = time.perf_counter() - t
    full, one = [], []
    for _ in range(repeat):
        drv = FirewallDriver(ns)
        drv.clear()
        t = time.perf_counter()
        drv.apply(ports, groups)
        full.append(time.perf_counter() - t)
        for k in range(repeat):
            extra = Rule(INGRESS, protocol="udp", port_range_min=5000 + k, port_range_max=5000 + k)
            affected = [ports[(k * 37) % n]] if distinct else ports
            changed = [dataclasses.replace(p, rules=p.rules + (extra,)) for p in affected]
            t = time.perf_counter()
            drv.update_ports(changed)
            one.append(time.perf_counter() - t)
            drv.update_ports(affected)
        drv.nft.close()
    return t_render, statistics.median(full), statistics.median(one), script.count("\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=1000)
    ap.add_argument("--rules", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    # The machine is shared: the load explains run-to-run spread, so print it.
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    ns = f"lbtt-bench-{uuid.uuid4().hex[:6]}"
    netns.create(ns)
    try:
        ok = True
        for distinct in (True, False):
            r, full, one, lines = bench(ns, a.ports, a.rules, distinct, a.repeat)
            mix = "distinct" if distinct else "shared"
            print(f"{mix:8} {a.ports} ports x {a.rules} rules: from scratch {full * 1000:.1f} ms (target 200), "
                  f"one rule change {one * 1000:.2f} ms (target 20) [medians; first, cold-cache "
                  f"compile+render alone {r * 1000:.1f} ms, script {lines} lines]")
            ok &= full <= 0.2 and one <= 0.02
        return 0 if ok else 1
    finally:
        netns.delete(ns)


if __name__ == "__main__":
    sys.exit(main())
