"""Firewall benchmark (issue 6 targets): program 1000 ports x 10 rules from scratch
(target <= 200 ms), apply one rule change with 1000 ports present (<= 20 ms) and add
one remote-group member with 1000 ports present (<= 20 ms, and it must be one set
element, not a rebuild).

Runs in a throwaway namespace ``lbtt-bench-*`` (no taps needed: nft matches interface
names as strings). Two rule mixes: "distinct" gives every port its own security group
with its own 10 rules (worst case: 1000 profiles, 10 000 rules); "shared" puts all
ports in the same groups (the common case). The one-rule change adds a rule to one
port's group: in "shared" that group is every port's, so all 1000 ports change (one
``update_ports`` call, one transaction). Every port's rules name the remote group
"sg-default", whose 1000 members are the ports' addresses; the member case adds a
1001st. The reverse steps (rule deleted, member removed) are timed too: they include
planning and running the conntrack cleanup (an empty conntrack table here).

Each figure is a median over --repeat runs with warm caches; the first compile+render
(cold caches: every rule parsed once) is printed separately.

Usage: .venv/bin/python bench/firewall.py [--ports 1000] [--rules 10] [--repeat 5] (as root)
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

TARGETS = {"full": 0.2, "rule_add": 0.02, "member_add": 0.02}


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


def _timed(fn, *args) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def bench(ns: str, n: int, rules: int, distinct: bool, repeat: int) -> dict[str, float]:
    ports = make_ports(n, rules, distinct)
    members = [p.ips[0] for p in ports]
    groups = RemoteGroups.of({"sg-default": members})
    t = time.perf_counter()
    script = render_full(compile_state(ports, groups))
    out: dict[str, list[float]] = {k: [] for k in ("full", "rule_add", "rule_del", "member_add", "member_del")}
    cold, lines = time.perf_counter() - t, script.count("\n")
    for _ in range(repeat):
        drv = FirewallDriver(ns)
        drv.clear()
        out["full"].append(_timed(drv.apply, ports, groups))
        for k in range(repeat):
            extra = Rule(INGRESS, protocol="udp", port_range_min=5000 + k, port_range_max=5000 + k)
            affected = [ports[(k * 37) % n]] if distinct else ports
            changed = [dataclasses.replace(p, rules=p.rules + (extra,)) for p in affected]
            out["rule_add"].append(_timed(drv.update_ports, changed))
            out["rule_del"].append(_timed(drv.update_ports, affected))
            grown = RemoteGroups.of({"sg-default": [*members, f"10.200.0.{k + 1}"]})
            out["member_add"].append(_timed(drv.update_groups, grown))
            if drv.last_script.strip() != f"add element inet lbtap g4-sg-default {{ 10.200.0.{k + 1} }}":
                raise SystemExit(f"adding a member was not one set element:\n{drv.last_script[:500]}")
            out["member_del"].append(_timed(drv.update_groups, groups))
        drv.close()
    return {"cold": cold, "lines": lines, **{k: statistics.median(v) for k, v in out.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
            r = bench(ns, a.ports, a.rules, distinct, a.repeat)
            ms = {k: v * 1000 for k, v in r.items() if k != "lines"}
            mix = "distinct" if distinct else "shared"
            print(f"{mix:8} {a.ports} ports x {a.rules} rules: from scratch {ms['full']:.1f} ms (target 200), "
                  f"one rule change {ms['rule_add']:.2f} ms (target 20), "
                  f"one remote-group member added {ms['member_add']:.2f} ms (target 20, one set element)")
            print(f"{'':8} reverse steps incl. conntrack cleanup: rule deleted {ms['rule_del']:.2f} ms, "
                  f"member removed {ms['member_del']:.2f} ms [medians; first, cold-cache compile+render alone "
                  f"{ms['cold']:.1f} ms, script {r['lines']} lines]")
            ok &= all(r[k] <= limit for k, limit in TARGETS.items())
        return 0 if ok else 1
    finally:
        netns.delete(ns)


if __name__ == "__main__":
    sys.exit(main())
