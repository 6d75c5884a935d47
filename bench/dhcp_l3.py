"""DHCP and L3 agents benchmark (issue 7), all-in-one ``lbtap up`` in a throwaway namespace.

Figures:
* network+subnet creation → DHCP serving: until the ``network:dhcp`` port is ACTIVE
  (tap in the bridge) and its dnsmasq runs (p50 / max over several networks); then
  the time a real DHCP client (dhclient) in a guest needs to get its lease;
* leases applied per second while 500 ports are created one API call at a time (and
  again as one bulk request): from the first create until dnsmasq's hosts file holds
  every lease; with the number of dnsmasq reloads (SIGHUPs, from the agent's
  heartbeat) and restarts (must stay 0: the dnsmasq PID never changes);
* add_router_interface → router interface port ACTIVE (router namespace built).

Usage (root): .venv/bin/python bench/dhcp_l3.py [--ports 500] [--networks 5]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fullstack import guests as gu  # noqa: E402
from tests.fullstack import harness as h  # noqa: E402
from tests.support import unique_netns  # noqa: E402

CONFIG = '[server]\ntenant_network_types = ["local"]\n[agent]\nreport_interval = 1.0\n'
POLL = 0.005


def dhcp_serving(up: h.LbtapUp, net_id: str, state: Path, timeout: float = 30.0) -> float:
    """Seconds until the network's DHCP port is ACTIVE and its dnsmasq runs."""
    deadline = time.perf_counter() + timeout
    pid_file = state / "dhcp" / net_id / "pid"
    while time.perf_counter() < deadline:
        ports = up.api.get("/v2.0/ports", params={"network_id": net_id, "device_owner": "network:dhcp",
                                                   "fields": "status"}).json()["ports"]
        if ports and ports[0]["status"] == "ACTIVE" and pid_file.exists() and pid_file.read_text().strip():
            return time.perf_counter()
        time.sleep(POLL)
    raise RuntimeError(f"DHCP for {net_id} not serving in {timeout}s")


def time_to_serving(up: h.LbtapUp, state: Path, i: int) -> float:
    t0 = time.perf_counter()
    net = up.create("networks", name=f"bench-{i}")
    up.create("subnets", network_id=net["id"], cidr=f"10.{60 + i}.0.0/24", ip_version=4)
    return dhcp_serving(up, net["id"], state) - t0


def lease_count(hosts: Path) -> int:
    try:
        return sum(1 for line in hosts.read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def dhcp_agent_conf(up: h.LbtapUp) -> dict:
    agents = up.api.get("/v2.0/agents", params={"agent_type": "DHCP agent"}).json()["agents"]
    return agents[0]["configurations"] if agents else {}


def leases_per_second(up: h.LbtapUp, state: Path, n: int, *, bulk: bool, cidr: str) -> dict:
    net = up.create("networks", name=f"leases-{'bulk' if bulk else 'single'}")
    up.create("subnets", network_id=net["id"], cidr=cidr, ip_version=4)
    dhcp_serving(up, net["id"], state)
    hosts = state / "dhcp" / net["id"] / "host"
    base = lease_count(hosts)  # the DHCP port's own lease
    [pid] = [p for p in gu.dnsmasq_pids(state) if str(net["id"]) in " ".join(_cmdline(p))]
    time.sleep(1.5)  # a fresh heartbeat carries the reload counter before the burst
    reloads0 = dhcp_agent_conf(up).get("reloads", 0)
    t0 = time.perf_counter()
    if bulk:
        r = up.api.post("/v2.0/ports", json={"ports": [{"network_id": net["id"]} for _ in range(n)]})
        assert r.status_code == 201, r.text
    else:
        # A few API clients at once, as several compute hosts would create ports.
        def make(k: int) -> None:
            up.create("ports", network_id=net["id"], name=f"p{k}")

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(make, range(n)))
    created = time.perf_counter()
    while lease_count(hosts) < base + n:
        if time.perf_counter() - t0 > 120:
            raise RuntimeError(f"only {lease_count(hosts) - base} of {n} leases after 120 s")
        time.sleep(POLL)
    done = time.perf_counter()
    time.sleep(2.5)  # let the heartbeat report the reloads
    reloads = dhcp_agent_conf(up).get("reloads", 0) - reloads0
    pids = [p for p in gu.dnsmasq_pids(state) if str(net["id"]) in " ".join(_cmdline(p))]
    return {"ports": n, "create_s": created - t0, "all_leases_s": done - t0,
            "leases_per_s": n / (done - t0), "lag_after_last_create_s": done - created,
            "reloads": reloads, "dnsmasq_restarted": pids != [pid]}


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def client_lease_time(up: h.LbtapUp, work: Path, guest: str) -> float:
    net = up.create("networks", name="client")
    up.create("subnets", network_id=net["id"], cidr="10.59.0.0/24", ip_version=4)
    dhcp_serving(up, net["id"], work / "state")
    port = up.create("ports", network_id=net["id"])
    up.vif("plug", port["id"], "--guest-netns", guest, "--dhcp")
    t0 = time.perf_counter()
    env = gu.dhclient(guest, work)
    if env.get("new_ip_address") != port["fixed_ips"][0]["ip_address"]:
        raise RuntimeError(f"wrong or no lease: {env.get('new_ip_address')}")
    return time.perf_counter() - t0


def router_interface_active(up: h.LbtapUp) -> float:
    net = up.create("networks", name="rnet")
    sub = up.create("subnets", network_id=net["id"], cidr="10.58.0.0/24", ip_version=4, enable_dhcp=False)
    router = up.create("routers", name="bench-r")
    t0 = time.perf_counter()
    r = up.api.put(f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]})
    assert r.status_code == 200, r.text
    port_id = r.json()["port_id"]
    while up.port_status(port_id) != "ACTIVE":
        if time.perf_counter() - t0 > 30:
            raise RuntimeError("router interface not ACTIVE in 30 s")
        time.sleep(POLL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", type=int, default=500)
    ap.add_argument("--networks", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lbtt-bench-dhcp-"))
    netns, guest = unique_netns("bench"), unique_netns("bg")
    host = unique_netns("bh")
    up = h.LbtapUp(work, netns=netns, host=host, config=CONFIG)
    state = work / "state"
    try:
        up.start()
        serving = [time_to_serving(up, state, i) for i in range(args.networks)]
        print(f"network+subnet -> DHCP serving (port ACTIVE, dnsmasq up): p50 {sorted(serving)[len(serving) // 2] * 1e3:.0f} ms, "
              f"max {max(serving) * 1e3:.0f} ms over {len(serving)} networks")
        print(f"dhclient in a guest -> lease bound: {client_lease_time(up, work, guest) * 1e3:.0f} ms")
        for bulk, cidr in ((False, "10.70.0.0/22"), (True, "10.74.0.0/22")):
            r = leases_per_second(up, state, args.ports, bulk=bulk, cidr=cidr)
            how = "one bulk request" if bulk else "single creates, 4 clients"
            print(f"{r['ports']} ports ({how}): creates took {r['create_s']:.2f} s, all leases in dnsmasq after "
                  f"{r['all_leases_s']:.2f} s -> {r['leases_per_s']:.0f} leases/s "
                  f"(last lease {r['lag_after_last_create_s'] * 1e3:.0f} ms after the last create); "
                  f"{r['reloads']} reloads (SIGHUP), dnsmasq restarted: {r['dnsmasq_restarted']}")
        print(f"add_router_interface -> interface port ACTIVE: {router_interface_active(up) * 1e3:.0f} ms")
    finally:
        up.stop()
        h.cleanup_network_agents(up)
        for n in (netns, guest):
            h.netns_delete(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
