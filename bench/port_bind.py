"""Port-bind benchmark of the L2 agent (issue 3 targets).

Runs a real ``lbtap up`` managing a throwaway namespace and prints:
* latency from a tap appearing to its port ACTIVE as seen through the API
  (p50/p90/p99), plugging 100 and then 1000 ports one at a time;
* time until a burst of 200 simultaneous taps is all ACTIVE;
* the ``lbtap up`` process's CPU% and RSS while idle with 1000+ taps (server included,
  so the agent alone is below these figures);
* time and bus messages to reconverge after a restart with 1000+ ports.
Targets: p99 <= 50 ms; burst <= 1 s; idle CPU <= 1 %; RSS <= 100 MB; restart <= 3 s
with <= 20 messages. Saves bench/out/port_bind.png.

Usage: sudo .venv/bin/python bench/port_bind.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fullstack import harness as h  # noqa: E402
from tests.support import unique_netns  # noqa: E402

from lbtap.domain.naming import tap_name  # noqa: E402
from lbtap.drivers.host.netlink import NetlinkHost  # noqa: E402

CONFIG = """
[server]
tenant_network_types = ["local"]
[agent]
report_interval = 0.2
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def wait_active(up: h.LbtapUp, port_id: str, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        r = up.api.get(f"/v2.0/ports/{port_id}", params={"fields": "status"})
        if r.json()["port"]["status"] == "ACTIVE":
            return time.perf_counter()
        time.sleep(0.001)
    raise RuntimeError(f"port {port_id} not ACTIVE in {timeout}s")


def bulk_ports(up: h.LbtapUp, net_id: str, n: int) -> list[dict]:
    r = up.api.post("/v2.0/ports", json={"ports": [{"network_id": net_id, "binding:host_id": up.host} for _ in range(n)]})
    assert r.status_code == 201, r.text
    return r.json()["ports"]


def count_active(up: h.LbtapUp, net_id: str) -> int:
    r = up.api.get("/v2.0/ports", params={"network_id": net_id, "status": "ACTIVE", "fields": "id"})
    return len(r.json()["ports"])


def agent_conf(up: h.LbtapUp) -> dict:
    agents = up.api.get("/v2.0/agents", params={"host": up.host}).json()["agents"]
    return agents[0]["configurations"] if agents else {}


def sequential(up, host: NetlinkHost, net_id: str, n: int) -> list[float]:
    lat = []
    for port in bulk_ports(up, net_id, n):
        t0 = time.perf_counter()
        host.create_tap(tap_name(port["id"]))
        host.set_link(tap_name(port["id"]), up=True)
        lat.append((wait_active(up, port["id"]) - t0) * 1000)
    return lat


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10/100 ports instead of 100/1000")
    args = ap.parse_args()
    sizes = (10, 100) if args.quick else (100, 1000)
    netns = unique_netns("bench")
    work = Path(tempfile.mkdtemp(prefix="lbtap-bench-"))
    up = h.LbtapUp(work, netns=netns, host="bench-host", config=CONFIG)
    results: dict[str, object] = {}
    try:
        up.start()
        host = NetlinkHost(netns=netns)
        net = up.create("networks", name="bench")
        up.create("subnets", network_id=net["id"], cidr="10.0.0.0/16", ip_version=4)
        lat_by_n = {}
        for n in sizes:
            lat = sequential(up, host, net["id"], n - sum(len(v) for v in lat_by_n.values()))
            lat_by_n[n] = lat
            print(f"plug one at a time up to {n:5d} ports: p50 {pct(lat, 50):6.1f} ms  p90 {pct(lat, 90):6.1f} ms  "
                  f"p99 {pct(lat, 99):6.1f} ms  max {max(lat):6.1f} ms  (target p99 <= 50 ms)")

        burst_net = up.create("networks", name="burst")
        up.create("subnets", network_id=burst_net["id"], cidr="10.1.0.0/24", ip_version=4)
        burst = bulk_ports(up, burst_net["id"], 200)
        t0 = time.perf_counter()
        for p in burst:
            host.create_tap(tap_name(p["id"]))
            host.set_link(tap_name(p["id"]), up=True)
        created = time.perf_counter() - t0
        while count_active(up, burst_net["id"]) < len(burst):
            time.sleep(0.005)
        burst_s = time.perf_counter() - t0
        print(f"burst of 200 taps: all ACTIVE after {burst_s * 1000:.0f} ms (taps created in {created * 1000:.0f} ms; target <= 1 s)")

        proc = psutil.Process(up.proc.pid)
        time.sleep(2)
        proc.cpu_percent(None)
        time.sleep(10)
        cpu = proc.cpu_percent(None)
        rss = proc.memory_info().rss / 2**20
        total = sizes[-1] + 200
        print(f"idle with {total} taps: lbtap up (server + agent) CPU {cpu:.2f} % of a core, RSS {rss:.0f} MiB "
              f"(targets: CPU <= 1 %, RSS <= 100 MB for the agent)")

        up.stop()
        t0 = time.perf_counter()
        up.start()
        while True:
            conf = agent_conf(up)
            if conf.get("devices") == total and conf.get("pending", 1) == 0:
                break
            time.sleep(0.01)
        restart_s = time.perf_counter() - t0
        m = up.metrics()
        msgs = sum(v for (name, labels), v in m.items()
                   if name == "lbtap_rpc_messages_total" and dict(labels).get("method") != "report_state")
        ups = up.metric("lbtap_device_status_reports_total", kind="up")
        print(f"restart with {total} ports: converged in {restart_s:.2f} s (process start included), "
              f"{msgs:.0f} bus messages besides heartbeats, {ups:.0f} update_device_up (targets: <= 3 s, <= 20 messages)")
        results.update(lat=lat_by_n, burst=burst_s, cpu=cpu, rss=rss, restart=restart_s, msgs=msgs)
        host.close()
    finally:
        up.stop()
        h.netns_delete(netns)
    plot(results)
    return 0


def plot(results: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for n, lat in results.get("lat", {}).items():
        s = sorted(lat)
        ax.plot(s, [i / len(s) for i in range(len(s))], label=f"up to {n} ports")
    ax.axvline(50, color="red", linestyle="--", label="p99 target 50 ms")
    ax.set_xlabel("tap appears -> port ACTIVE via API (ms)")
    ax.set_ylabel("fraction of ports")
    ax.set_title("lbtap port-bind latency (CDF)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "port_bind.png", dpi=100)
    print(f"plot saved to {out / 'port_bind.png'}")


if __name__ == "__main__":
    sys.exit(main())
