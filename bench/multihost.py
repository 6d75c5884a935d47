"""Multi-host benchmark (issue 4 targets): 3 hosts x 300 ports over RabbitMQ.

`lbtap server` (PostgreSQL when reachable, else SQLite) and one `lbtap agent` process
per host namespace, the hosts joined by an underlay bridge, one VXLAN network with
l2population. Figures:
* port-bind latency, tap appears -> port ACTIVE through the API, plugging one tap at a
  time round-robin over the hosts (p50/p90/p99; target p99 <= 100 ms);
* bus messages per port transition, from the server's counters: agent -> server RPC
  (``lbtap_rpc_messages_total`` without heartbeats) and l2population casts
  (``lbtap_l2pop_messages_total``), for the one-at-a-time phase and for a burst of 3 x
  100 more taps plugged at once (target <= 2 per transition);
* the FDB of every host checked against the ports at the end.

Usage (root): .venv/bin/python bench/multihost.py [--ports 300] [--burst 100] [--extensions l2pop]
(``LBTAP_BENCH_CONFIG_PREFIX='log_level = "DEBUG"'`` prepends TOML, e.g. to read the
agents' per-pass stage timings in their logs.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fullstack import harness as h  # noqa: E402
from tests.fullstack import multihost as mh  # noqa: E402
from tests.support import SERVICE_DEFAULTS, _reachable, fresh_db_url, unique_netns  # noqa: E402

from lbtap.domain.naming import tap_name  # noqa: E402
from lbtap.drivers.host.netlink import NetlinkHost  # noqa: E402

CONFIG = os.environ.get("LBTAP_BENCH_CONFIG_PREFIX", "") + '[server]\ntenant_network_types = ["vxlan"]\n[agent]\nreport_interval = 30.0\n'
POLL = 0.005  # as bench/port_bind.py: tighter polling loads the server it measures
HOSTS = 3


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def counters(d: h.Deployment) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), v in d.metrics().items():
        lab = dict(labels)
        if name == "lbtap_rpc_messages_total" and lab.get("method") != "report_state":
            out["rpc"] = out.get("rpc", 0) + v
            out["rpc:" + lab.get("method", "?")] = v
        elif name == "lbtap_l2pop_messages_total":
            out["l2pop"] = out.get("l2pop", 0) + v
            key = f"l2pop:{lab.get('method', '?')}/{lab.get('target', '?')}"
            out[key] = out.get(key, 0) + v
        elif name == "lbtap_agent_notifications_total":
            out["notify"] = out.get("notify", 0) + v
            out["notify:" + lab.get("method", "?")] = v
    return out


def delta(a: dict, b: dict) -> dict:
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}


def bulk_ports(d: h.Deployment, net_id: str, host: str, n: int) -> list[dict]:
    r = d.api.post("/v2.0/ports", json={"ports": [{"network_id": net_id, "binding:host_id": host} for _ in range(n)]})
    assert r.status_code == 201, r.text
    return r.json()["ports"]


def wait_active(d: h.Deployment, port_id: str, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if d.api.get(f"/v2.0/ports/{port_id}", params={"fields": "status"}).json()["port"]["status"] == "ACTIVE":
            return time.perf_counter()
        time.sleep(POLL)
    raise RuntimeError(f"port {port_id} not ACTIVE in {timeout}s")


def run(work: Path, names: list[str], amqp: str, db_url: str | None, n_ports: int, burst: int) -> None:
    underlay = mh.Underlay(names[0])
    hosts = [underlay.add_host(f"host{i + 1}", names[1 + i]) for i in range(HOSTS)]
    vhost = unique_netns("vh")
    d = h.Deployment(work, h.rabbit_vhost_url(amqp, vhost), config=CONFIG, db_url=db_url)
    drivers = {x.name: NetlinkHost(x.netns) for x in hosts}
    try:
        d.start_server()
        mh.start_agents(d, hosts)
        net = d.create("networks", name="bench")
        d.create("subnets", network_id=net["id"], cidr="10.0.0.0/16", ip_version=4)
        created = counters(d)
        ports = {x.name: bulk_ports(d, net["id"], x.name, n_ports) for x in hosts}
        time.sleep(0.5)  # let the creation casts land in the counters
        before = counters(d)
        made = delta(created, before)
        print(f"[create] {HOSTS} x {n_ports} ports created in bulk (one request per host): "
              f"{made.get('notify', 0):.0f} server->agent messages ("
              + ", ".join(f"{k[7:]}={v:.0f}" for k, v in sorted(made.items()) if k.startswith("notify:") and v)
              + ")")
        lat = []
        for i in range(n_ports):
            for x in hosts:
                p = ports[x.name][i]
                t0 = time.perf_counter()
                drivers[x.name].create_tap(tap_name(p["id"]))
                drivers[x.name].set_link(tap_name(p["id"]), up=True)
                lat.append((wait_active(d, p["id"]) - t0) * 1000)
        seq = delta(before, counters(d))
        n = len(lat)
        print(f"[bind] {HOSTS} hosts x {n_ports} ports, one tap at a time: p50 {pct(lat, 50):.1f} ms  "
              f"p90 {pct(lat, 90):.1f} ms  p99 {pct(lat, 99):.1f} ms  max {max(lat):.1f} ms   (target p99 <= 100 ms)")
        print(f"[msgs] one at a time: {seq.get('rpc', 0) / n:.2f} agent->server RPC messages per transition, "
              f"{seq.get('l2pop', 0) / n:.2f} l2pop casts per transition, "
              f"{(seq.get('rpc', 0) + seq.get('l2pop', 0)) / n:.2f} in all   (target <= 2)")
        print("       by method: " + ", ".join(f"{k[4:]}={v:.0f}" for k, v in sorted(seq.items()) if k.startswith("rpc:") and v))
        print("       l2pop by method/target: " + ", ".join(
            f"{k[6:]}={v:.0f}" for k, v in sorted(seq.items()) if k.startswith("l2pop:") and v))
        print(f"       other server->agent messages meanwhile: {seq.get('notify', 0):.0f}")
        # What every transition costs, apart from what only a host's first port on a
        # network / in a security group costs once (its FDB set, its group's rules).
        steady = seq.get("rpc:update_device_list", 0) + seq.get("l2pop:fdb_add/fanout", 0)
        once = seq.get("rpc", 0) + seq.get("l2pop", 0) - steady
        print(f"       = {steady / n:.2f} per transition (status report + fdb_add fanout) "
              f"+ {once:.0f} one-time messages for the whole run")

        more = {x.name: bulk_ports(d, net["id"], x.name, burst) for x in hosts}
        time.sleep(0.5)
        before = counters(d)
        t0 = time.perf_counter()
        for i in range(burst):
            for x in hosts:
                drivers[x.name].create_tap(tap_name(more[x.name][i]["id"]))
                drivers[x.name].set_link(tap_name(more[x.name][i]["id"]), up=True)
        params = {"network_id": net["id"], "status": "ACTIVE", "fields": "id"}
        total = HOSTS * (n_ports + burst)
        while len(d.api.get("/v2.0/ports", params=params).json()["ports"]) < total:
            time.sleep(0.01)
        took = time.perf_counter() - t0
        time.sleep(0.5)  # let the last casts land in the counters
        b = delta(before, counters(d))
        m = HOSTS * burst
        print(f"[burst] {m} taps at once on {HOSTS} hosts: all ACTIVE in {took * 1000:.0f} ms; "
              f"{b.get('rpc', 0) / m:.2f} RPC + {b.get('l2pop', 0) / m:.2f} l2pop = "
              f"{(b.get('rpc', 0) + b.get('l2pop', 0)) / m:.2f} messages per transition   (target <= 2)")

        every = {x.name: ports[x.name] + more[x.name] for x in hosts}
        by_name = {x.name: x for x in hosts}
        vni = net["provider:segmentation_id"]
        for x in hosts:
            want = mh.expected_fdb(every, by_name, x.name)
            h.wait_for(lambda x=x, want=want: mh.fdb(x, vni) == want, 30, interval=0.2, what=f"{x.name} FDB")
        print(f"[fdb] every host holds {len(want)} l2population entries for its peers' "
              f"{(HOSTS - 1) * (n_ports + burst)} ports (+ flooding): correct")
    finally:
        for drv in drivers.values():
            drv.close()
        d.stop()
        h.rabbit_vhost_delete(vhost)


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=300, help="ports per host plugged one at a time")
    ap.add_argument("--burst", type=int, default=100, help="ports per host plugged at once afterwards")
    ap.add_argument("--extensions", help="agent extensions to enable, comma-separated (default: all known)")
    args = ap.parse_args()
    global CONFIG
    if args.extensions is not None:
        exts = [e for e in args.extensions.split(",") if e]
        CONFIG += "extensions = [" + ", ".join(f'"{e}"' for e in exts) + "]\n"
        print(f"agent extensions: {', '.join(exts) or 'none'}")
    amqp = os.environ.get("LBTAP_TEST_AMQP_URL", SERVICE_DEFAULTS["LBTAP_TEST_AMQP_URL"])
    if not _reachable(amqp):
        print(f"skipped: RabbitMQ unreachable at {amqp}")
        return 0
    pg = os.environ.get("LBTAP_TEST_PG_URL", SERVICE_DEFAULTS["LBTAP_TEST_PG_URL"])
    db_url = fresh_db_url("postgresql") if _reachable(pg) else None
    print(f"database: {'PostgreSQL' if db_url else 'SQLite'}; bus: RabbitMQ")
    names = [unique_netns("bench-ul")] + [unique_netns("bench-h") for _ in range(HOSTS)]
    work = Path(tempfile.mkdtemp(prefix="lbtap-bench-mh-"))
    try:
        run(work, names, amqp, db_url, args.ports, args.burst)
    finally:
        for name in names:
            h.netns_delete(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
