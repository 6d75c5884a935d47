"""`lbtap agent` as its own process, talking to `lbtap server` over RabbitMQ."""

from __future__ import annotations

from lbtap.domain.naming import bridge_name, tap_name
from tests.fullstack import harness as h

CONFIG = '[server]\ntenant_network_types = ["local"]\n[agent]\nreport_interval = 1.0\n'


def test_separate_agent_wires_ports_and_survives_its_own_restart(deployment, netns_names):
    d = deployment(CONFIG)
    d.start_server()
    host_ns = netns_names("h")
    h.sh("ip", "netns", "add", host_ns)
    d.start_agent("hostA", host_ns)

    net = d.create("networks", name="n")
    d.create("subnets", network_id=net["id"], cidr="10.60.0.0/24", ip_version=4)
    ports, guests = [], []
    for _ in range(2):
        p = d.create("ports", network_id=net["id"])
        g = netns_names("g")
        d.vif("plug", p["id"], "hostA", host_ns, "--guest-netns", g)
        ports.append(p)
        guests.append(g)
    for p in ports:
        d.wait_status(p["id"], "ACTIVE")
    assert h.link_master(host_ns, tap_name(ports[0]["id"])) == bridge_name(net["id"])
    assert h.reaches(guests[0], ports[1]["fixed_ips"][0]["ip_address"])
    assert d.metric("lbtap_device_status_reports_total", kind="up") == 2

    # kill -9 the agent, restart it: no re-report, still connected, ports stay ACTIVE.
    import signal

    d.agents["hostA"].stop(signal.SIGKILL)
    agent = d.start_agent("hostA", host_ns)

    def converged() -> bool:
        conf = d.agent_conf("hostA")  # a heartbeat of the new process, not a stale one
        return conf.get("pid") == agent.proc.pid and conf.get("pending", 1) == 0 and conf.get("devices") == 2

    h.wait_for(converged, what="restarted agent to converge")
    assert all(d.port_status(p["id"]) == "ACTIVE" for p in ports)
    assert d.metric("lbtap_device_status_reports_total", kind="up") == 2
    assert d.metric("lbtap_duplicate_up_reports_total") == 0
    assert h.reaches(guests[1], ports[0]["fixed_ips"][0]["ip_address"])

    h.sh("ip", "netns", "del", guests[0])  # the guest goes away with its veth
    d.wait_status(ports[0]["id"], "DOWN")
