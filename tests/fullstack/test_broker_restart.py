"""Issue 4 with the real broker: RabbitMQ itself restarts (``rabbitmqctl stop_app`` /
``start_app``) and then the server restarts, both in the middle of a burst of 100 port
plugs over three hosts; server and agents talk to 127.0.0.1:5672 directly (a fresh
vhost of their own), not through a relay.

A broker restart is harsher than the relay outage of ``test_multihost``: besides every
connection, the broker drops the exclusive reply and fanout queues and every transient
message (calls in flight, fanouts); only durable queues and persistent casts survive.

It restarts the machine's broker for everybody: restarts are serialised by a file lock
and ``start_app`` always runs (see ``tests.functional.test_amqp_bus.broker_restart``),
and the test waits until the broker accepts connections again before going on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from lbtap.domain.naming import tap_name
from tests.fullstack import harness as h
from tests.fullstack import multihost as mh
from tests.functional.test_amqp_bus import broker_restart, rabbitmqctl_or_skip
from tests.support import fresh_db_url

CONFIG = ('[server]\ntenant_network_types = ["vxlan"]\nagent_down_time = 4.0\n'
          '[agent]\nreport_interval = 1.0\n')
UP = "lbtap_device_status_reports_total"
DUP = "lbtap_duplicate_up_reports_total"
SERVER_QUEUES = ("q-plugin", "q-reports-plugin")
DOWN_FOR = 3.0  # seconds each outage lasts at least


def _vhost(d: h.Deployment) -> str:
    return d.transport_url.rstrip("/").rsplit("/", 1)[1]


def _queue_backlog(vhost: str) -> dict[str, int]:
    """Ready + unacked messages of the server's queues in ``vhost``."""
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost, "--no-table-headers",
                          "name", "messages_ready", "messages_unacknowledged"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    backlog = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in SERVER_QUEUES:
            backlog[parts[0]] = int(parts[1]) + int(parts[2])
    assert set(backlog) == set(SERVER_QUEUES), f"server queues not found in {vhost}: {out!r}"
    return backlog


@contextlib.contextmanager
def _agents_frozen(d: h.Deployment):
    """SIGSTOP every agent process we started (by PID) for the block; SIGCONT after."""
    pids = [a.proc.pid for a in d.agents.values() if a.alive()]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _final_server_counts(d: h.Deployment) -> tuple[float, float]:
    """(ups, duplicate ups) this server process will ever count.

    Called with the agents frozen: once the server's queues are drained and its counters
    stop moving, nothing else can reach it before it is stopped.
    """
    vhost = _vhost(d)
    last = None

    def quiet():
        nonlocal last
        counts = (d.metric(UP, kind="up"), d.metric(DUP))
        drained = not any(_queue_backlog(vhost).values())
        stable, last = counts == last, counts
        return drained and stable and counts

    return h.wait_for(quiet, 30, interval=0.3, what="server queues drained and counters still")


def _diagnosis(d: h.Deployment, hosts, net) -> str:
    """What a failed wait needs: ports not ACTIVE, agents' state, explanations."""
    ports = d.api.get("/v2.0/ports", params={"network_id": net["id"]}).json()["ports"]
    stuck = [p for p in ports if p["status"] != "ACTIVE"]
    lines = [f"{len(stuck)} ports not ACTIVE: " + ", ".join(f"{p['id'][:8]}@{p['binding:host_id']}={p['status']}"
                                                         for p in stuck)]
    for x in hosts:
        conf = d.agent_conf(x.name)
        lines.append(f"{x.name}: alive={d.agents[x.name].alive()} devices={conf.get('devices')} "
                     f"pending={conf.get('pending')} retrying={conf.get('retrying_devices')} "
                     f"taps={len(mh.taps(x))}")
    for p in stuck[:3]:
        r = d.api.get(f"/v2.0/lbtap/ports/{p['id']}/explain")
        lines.append(f"explain {p['id']}: {r.text[:3000]}")
    return "\n".join(lines)


def test_burst_through_real_broker_restart_and_server_restart(deployment, netns_names):
    rabbitmqctl_or_skip()
    d = deployment(CONFIG, db_url=fresh_db_url("postgresql"))
    d.start_server()
    underlay, hosts = mh.make_hosts(netns_names, 3)
    by_name = {x.name: x for x in hosts}
    mh.start_agents(d, hosts)
    net = d.create("networks", name="burst")
    d.create("subnets", network_id=net["id"], cidr="10.76.0.0/24", ip_version=4)
    ports_by_host = {}
    for x in hosts:
        r = d.api.post("/v2.0/ports", json={"ports": [{"network_id": net["id"], "binding:host_id": x.name}
                                                      for _ in range(34 if x.name == "host1" else 33)]})
        assert r.status_code == 201, r.text
        ports_by_host[x.name] = r.json()["ports"]
    assert sum(len(v) for v in ports_by_host.values()) == 100

    counted = {"up": 0.0, "dup": 0.0}
    down_since: dict[str, float] = {}

    def back_up(what):
        # Keep each outage at least DOWN_FOR long, whatever the speed of the machine.
        time.sleep(max(0.0, down_since.pop(what) + DOWN_FOR - time.monotonic()))

    with contextlib.ExitStack() as broker_down:  # start_app on any way out

        def disturb(i):
            if i == 20:
                broker_down.enter_context(broker_restart(d.transport_url))  # stop_app
                down_since["broker"] = time.monotonic()
            elif i == 45:
                back_up("broker")
                broker_down.close()  # start_app; returns once the vhost accepts connections
            elif i == 65:
                # Server restart. Its counters die with it: freeze the agents, let it
                # drain what they already sent, read its final counts and stop it. The
                # agents go on without a server while the burst continues.
                with _agents_frozen(d):
                    ups, dups = _final_server_counts(d)
                    counted["up"] += ups
                    counted["dup"] += dups
                    assert d.server.stop() == 0, d.server.log_tail()
                down_since["server"] = time.monotonic()
            elif i == 85:
                back_up("server")
                d.start_server(timeout=60)
            if i % 5 == 0:
                time.sleep(0.1)  # a burst spread over seconds, so the faults land inside it

        mh.plug_taps(hosts, ports_by_host, disturb)

    params = {"network_id": net["id"], "status": "ACTIVE", "fields": "id"}
    try:
        h.wait_for(lambda: len(d.api.get("/v2.0/ports", params=params).json()["ports"]) == 100, 120,
                   interval=0.3, what="all 100 ports ACTIVE")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(d, hosts, net)}") from None

    def settled():
        return all(d.agent_conf(x.name).get("pending", 1) == 0 for x in hosts)

    h.wait_for(settled, 60, interval=0.3, what="agents with nothing pending")
    time.sleep(2)  # a late duplicate would land now
    ups = counted["up"] + d.metric(UP, kind="up")
    dups = counted["dup"] + d.metric(DUP)
    assert (ups, dups) == (100, 0), "each port must get exactly one update_device_up"

    # Every process survived both restarts, is alive for the server, and converged.
    assert d.server.alive(), d.server.log_tail()
    for x in hosts:
        agent = d.agents[x.name]
        assert agent.alive(), agent.log_tail()
        assert d.agent_alive(x.name)
        assert mh.taps(x) == {tap_name(p["id"]) for p in ports_by_host[x.name]}
        assert d.agent_conf(x.name).get("retrying", 1) == 0
        # Fanouts lost with the broker's transient queues were made good by the resync.
        want = mh.expected_fdb(ports_by_host, by_name, x.name)
        h.wait_for(lambda x=x, want=want: mh.fdb(x, net["provider:segmentation_id"]) == want, 30,
                   interval=0.2, what=f"{x.name} FDB after the restarts")

    # Still working afterwards: a port plugged now goes ACTIVE with exactly one more up.
    late = d.create("ports", network_id=net["id"], **{"binding:host_id": "host2"})
    mh.plug_taps([by_name["host2"]], {"host2": [late]})
    d.wait_status(late["id"], "ACTIVE", timeout=60)
    h.wait_for(settled, 60, interval=0.3, what="agents settled after the late port")
    assert (d.metric(UP, kind="up") + counted["up"], d.metric(DUP) + counted["dup"]) == (101, 0)
    want = mh.expected_fdb({**ports_by_host, "host2": [*ports_by_host["host2"], late]}, by_name, "host1")
    h.wait_for(lambda: mh.fdb(by_name["host1"], net["provider:segmentation_id"]) == want, 30,
               interval=0.2, what="host1 FDB learns the late port")
