"""Port-bind benchmark of the L2 agent (issue 3 targets).

Phase A, all-in-one (`lbtap up`: SQLite, in-process bus) managing a throwaway namespace:
* latency from a tap appearing to its port ACTIVE as seen through the API
  (p50/p90/p99), plugging ports one at a time up to 100 and then up to 1000;
* time until a burst of 200 simultaneous taps is all ACTIVE.
Phase B, the agent as its own process (`lbtap server` + `lbtap agent` over RabbitMQ,
same database and namespace), so its own figures can be read:
* the agent's CPU% and RSS while idle with all taps (1200);
* time and bus messages for the agent to reconverge after a restart.
Targets: p99 <= 50 ms; burst <= 1 s; idle CPU <= 1 %; RSS <= 100 MB; restart <= 3 s
with <= 20 messages. Saves bench/out/port_bind.png.

Usage (root): .venv/bin/python bench/port_bind.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fullstack import harness as h  # noqa: E402
from tests.support import SERVICE_DEFAULTS, _reachable, unique_netns  # noqa: E402

from lbtap.domain.naming import tap_name  # noqa: E402
from lbtap.drivers.host.netlink import NetlinkHost  # noqa: E402

CONFIG = '[server]\ntenant_network_types = ["local"]\n[agent]\nreport_interval = 1.0\n'
POLL = 0.005  # API polling period while waiting for ACTIVE (a tighter loop would load the server it measures)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def wait_active(api, port_id: str, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if api.get(f"/v2.0/ports/{port_id}", params={"fields": "status"}).json()["port"]["status"] == "ACTIVE":
            return time.perf_counter()
        time.sleep(POLL)
    raise RuntimeError(f"port {port_id} not ACTIVE in {timeout}s")


def bulk_ports(up, net_id: str, n: int, host: str) -> list[dict]:
    r = up.api.post("/v2.0/ports", json={"ports": [{"network_id": net_id, "binding:host_id": host} for _ in range(n)]})
    assert r.status_code == 201, r.text
    return r.json()["ports"]


def plug(host: NetlinkHost, port_id: str) -> None:
    host.create_tap(tap_name(port_id))
    host.set_link(tap_name(port_id), up=True)


def phase_a(up: h.LbtapUp, host: NetlinkHost, sizes: tuple[int, int]) -> dict:
    out: dict = {"lat": {}}
    net = up.create("networks", name="bench")
    # No DHCP: this measures the L2 agent alone (bench/dhcp_l3.py measures DHCP).
    up.create("subnets", network_id=net["id"], cidr="10.0.0.0/16", ip_version=4, enable_dhcp=False)
    done = 0
    for n in sizes:
        lat = []
        for port in bulk_ports(up, net["id"], n - done, up.host):
            t0 = time.perf_counter()
            plug(host, port["id"])
            lat.append((wait_active(up.api, port["id"]) - t0) * 1000)
        done = n
        out["lat"][n] = lat
        print(f"[A] plug one at a time up to {n:5d} ports: p50 {pct(lat, 50):6.1f} ms  p90 {pct(lat, 90):6.1f} ms  "
              f"p99 {pct(lat, 99):6.1f} ms  max {max(lat):6.1f} ms   (target p99 <= 50 ms)")

    burst_net = up.create("networks", name="burst")
    up.create("subnets", network_id=burst_net["id"], cidr="10.1.0.0/24", ip_version=4, enable_dhcp=False)
    burst = bulk_ports(up, burst_net["id"], 200, up.host)
    t0 = time.perf_counter()
    for p in burst:
        plug(host, p["id"])
    created = time.perf_counter() - t0
    params = {"network_id": burst_net["id"], "status": "ACTIVE", "fields": "id"}
    while len(up.api.get("/v2.0/ports", params=params).json()["ports"]) < len(burst):
        time.sleep(0.005)
    out["burst"] = time.perf_counter() - t0
    print(f"[A] burst of 200 taps: all ACTIVE {out['burst'] * 1000:.0f} ms after the first tap "
          f"(creating the 200 taps took {created * 1000:.0f} ms)   (target <= 1 s)")
    out["total"] = sizes[-1] + 200
    return out


def phase_b(work: Path, netns: str, total: int, amqp: str) -> dict:
    vhost = unique_netns("vh")
    url = h.rabbit_vhost_url(amqp, vhost)
    d = h.Deployment(work, url, config=CONFIG.replace("report_interval = 1.0", "report_interval = 30.0"))
    out: dict = {}
    try:
        d.start_server()
        agent = d.start_agent("bench-host", netns)
        h.wait_for(lambda: d.agent_conf("bench-host").get("pid") == agent.proc.pid, 60, what="agent heartbeat")
        proc = psutil.Process(agent.proc.pid)
        time.sleep(5)  # let the start-up full reconcile finish before measuring idle
        proc.cpu_percent(None)
        time.sleep(15)
        out["cpu"] = proc.cpu_percent(None)
        out["rss"] = proc.memory_info().rss / 1e6
        print(f"[B] agent process idle with {total} taps: CPU {out['cpu']:.2f} % of a core, RSS {out['rss']:.0f} MB "
              f"(targets: <= 1 %, <= 100 MB)")

        before = rpc_counts(d)
        agent.stop()
        d.config_path.write_text(CONFIG.replace("report_interval = 1.0", "report_interval = 0.2"))
        t0 = time.perf_counter()
        agent = d.start_agent("bench-host", netns)

        def conf():
            c = d.agent_conf("bench-host")
            return c if c.get("pid") == agent.proc.pid and c.get("converged_after") is not None else None

        c = h.wait_for(conf, 60, interval=0.01, what="agent convergence")
        seen = time.perf_counter() - t0
        after = rpc_counts(d)
        msgs = {m: after.get(m, 0) - before.get(m, 0) for m in after if m != "report_state"}
        out.update(restart=c["converged_after"], restart_seen=seen, msgs=sum(msgs.values()))
        ups = msgs.get("update_device_list", 0)
        print(f"[B] agent restart with {total} ports: converged {c['converged_after']:.2f} s after process start "
              f"(seen through heartbeats after {seen:.2f} s); {out['msgs']:.0f} bus messages besides heartbeats "
              f"({', '.join(f'{k}={v:.0f}' for k, v in msgs.items() if v)}); update_device_list calls: {ups:.0f}   "
              f"(targets: <= 3 s, <= 20 messages)")
    finally:
        d.stop()
        h.rabbit_vhost_delete(vhost)
    return out


def rpc_counts(d) -> dict[str, float]:
    return {dict(labels)["method"]: v for (name, labels), v in d.metrics().items() if name == "lbtap_rpc_messages_total"}


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10/100 ports instead of 100/1000")
    ap.add_argument("--no-extensions", action="store_true",
                    help="disable agent extensions (security groups, QoS, l2pop): the bare L2 agent")
    args = ap.parse_args()
    global CONFIG
    if args.no_extensions:
        CONFIG += "extensions = []\n"
    sizes = (10, 100) if args.quick else (100, 1000)
    netns = unique_netns("bench")
    work = Path(tempfile.mkdtemp(prefix="lbtap-bench-"))
    up = h.LbtapUp(work, netns=netns, host="bench-host", config=CONFIG)
    results: dict = {}
    host = None
    try:
        up.start()
        host = NetlinkHost(netns=netns)
        results.update(phase_a(up, host, sizes))
        up.stop()
        amqp = os.environ.get("LBTAP_TEST_AMQP_URL", SERVICE_DEFAULTS["LBTAP_TEST_AMQP_URL"])
        if _reachable(amqp):
            results.update(phase_b(work, netns, results["total"], amqp))
        else:
            print(f"[B] skipped: RabbitMQ unreachable at {amqp}")
    finally:
        if host is not None:
            host.close()
        up.stop()
        h.cleanup_network_agents(up)
        h.netns_delete(netns)
    plot(results)
    return 0


def plot(results: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot")
        return
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for n, lat in results.get("lat", {}).items():
        s = sorted(lat)
        ax.plot(s, [i / len(s) for i in range(len(s))], label=f"plugging up to {n} ports")
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
