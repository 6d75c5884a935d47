"""``lbtap dhcp-agent`` / ``lbtap l3-agent`` as their own processes over RabbitMQ, two
simulated hosts serving one network side by side (issue 7, item 3)."""

from __future__ import annotations

import os
import signal

import pytest

from lbtap.domain.naming import tap_name
from lbtap.drivers.dhcp.naming import dhcp_namespace
from tests.fullstack import guests as gu
from tests.fullstack import harness as h

pytestmark = pytest.mark.timeout(180)

CONFIG = '[server]\ntenant_network_types = ["local"]\n[agent]\nreport_interval = 1.0\n'


def start_net_agent(d, kind, host, netns):
    argv = [kind, "--host", host, "--netns", netns, "--transport-url", d.transport_url,
            "--state-dir", str(d.workdir / f"agent-{host}"), "--config", str(d.config_path)]
    proc = h.LbtapProc(d.workdir, f"{kind}-{host}", argv).start()
    d.agents[f"{kind}-{host}"] = proc  # stopped by the fixture with the others
    agent_type = {"dhcp-agent": "DHCP agent", "l3-agent": "L3 agent"}[kind]

    def alive():
        if not proc.alive():
            raise AssertionError(f"{kind} exited:\n{proc.log_tail()}")
        r = d.api.get("/v2.0/agents", params={"host": host, "agent_type": agent_type})
        return any(a["alive"] for a in r.json()["agents"])

    h.wait_for(alive, what=f"{kind} on {host}")
    return proc


def test_two_hosts_each_serve_dhcp_for_the_network_from_their_own_namespace(deployment, netns_names):
    d = deployment(CONFIG)
    d.start_server()
    hosts = [netns_names("h") for _ in range(2)]  # host name = its namespace name (lbtt-…)
    try:
        for host in hosts:
            h.sh("ip", "netns", "add", host)
            d.start_agent(host, host)
            start_net_agent(d, "dhcp-agent", host, host)
        start_net_agent(d, "l3-agent", hosts[0], hosts[0])
        net = d.create("networks", name="shared")
        d.create("subnets", network_id=net["id"], cidr="10.45.0.0/24", ip_version=4)

        def dhcp_ports():
            ports = d.api.get("/v2.0/ports", params={"network_id": net["id"],
                                                     "device_owner": "network:dhcp"}).json()["ports"]
            return ports if len(ports) == 2 and all(p["status"] == "ACTIVE" for p in ports) else None

        ports = h.wait_for(dhcp_ports, what="a DHCP port ACTIVE per host")
        assert {p["binding:host_id"] for p in ports} == set(hosts)
        for p in ports:
            host = p["binding:host_id"]
            assert dhcp_namespace(net["id"], host) in gu.namespaces("qdhcp-", host)
            assert tap_name(p["id"]) in h.link_names(host), "the tap end lives in its own host namespace"
        assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 2

        # The L3 agent process claims a new router and builds its namespace.
        router = d.create("routers", name="r")
        sub = d.api.get("/v2.0/subnets", params={"network_id": net["id"]}).json()["subnets"][0]
        r = d.api.put(f"/v2.0/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]})
        assert r.status_code == 200, r.text
        d.wait_status(r.json()["port_id"], "ACTIVE")
        assert gu.namespaces("qrouter-", hosts[0]) and not gu.namespaces("qrouter-", hosts[1])
        r = d.api.put(f"/v2.0/routers/{router['id']}/remove_router_interface", json={"subnet_id": sub["id"]})
        assert r.status_code == 200, r.text
        assert d.api.delete(f"/v2.0/routers/{router['id']}").status_code == 204
        assert d.api.delete(f"/v2.0/networks/{net['id']}").status_code == 204
        for host in hosts:
            h.wait_for(lambda: not gu.namespaces("qdhcp-", host) and not gu.namespaces("qrouter-", host),
                       what=f"{host} cleaned up")
            assert not gu.dnsmasq_pids(d.workdir / f"agent-{host}")
    finally:
        d.stop()
        for host in hosts:
            for pid in gu.dnsmasq_pids(d.workdir / f"agent-{host}"):
                os.kill(pid, signal.SIGKILL)
            for ns in gu.namespaces("qdhcp-", host) + gu.namespaces("qrouter-", host):
                h.sh("ip", "netns", "del", ns, check=False)
