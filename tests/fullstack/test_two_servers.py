"""Two `lbtap server` processes sharing one PostgreSQL database and one RabbitMQ vhost.

Both answer the API; both consume the agents' RPC queues (RabbitMQ spreads the calls);
whichever handles a status report sends the l2population casts. Ports created through
either API end ACTIVE with exactly one `update_device_up` each, and the deployment keeps
working when one server stops.
"""

from __future__ import annotations

import time

from tests.fullstack import harness as h
from tests.fullstack import multihost as mh
from tests.support import fresh_db_url

CONFIG = ('[server]\ntenant_network_types = ["vxlan"]\n'
          '[agent]\nreport_interval = 1.0\n')
UP = "lbtap_device_status_reports_total"
DUP = "lbtap_duplicate_up_reports_total"
RPC = "lbtap_rpc_messages_total"


def _rpc_calls(d: h.Deployment) -> float:
    return sum(v for (name, labels), v in d.metrics().items()
               if name == RPC and dict(labels).get("method") != "report_state")


def test_two_servers_share_database_and_broker(deployment, netns_names, tmp_path):
    db_url = fresh_db_url("postgresql")
    a = deployment(CONFIG, db_url=db_url)
    a.start_server()
    (tmp_path / "second").mkdir()
    b = h.Deployment(tmp_path / "second", a.transport_url, config=CONFIG, db_url=db_url)
    try:
        b.start_server()
        underlay, hosts = mh.make_hosts(netns_names, 2)
        by_name = {x.name: x for x in hosts}
        mh.start_agents(a, hosts)

        net = a.create("networks", name="shared")
        b.create("subnets", network_id=net["id"], cidr="10.80.0.0/24", ip_version=4)
        # Ports through both APIs, bound to both hosts.
        ports_by_host: dict[str, list[dict]] = {x.name: [] for x in hosts}
        for i in range(12):
            server = (a, b)[i % 2]
            host = hosts[(i // 2) % 2].name
            ports_by_host[host].append(server.create("ports", network_id=net["id"], **{"binding:host_id": host}))
        mh.plug_taps(hosts, ports_by_host)

        params = {"network_id": net["id"], "status": "ACTIVE", "fields": "id"}
        for server in (a, b):  # both see the one database
            h.wait_for(lambda s=server: len(s.api.get("/v2.0/ports", params=params).json()["ports"]) == 12, 30,
                       interval=0.2, what="12 ports ACTIVE")
        h.wait_for(lambda: all(a.agent_conf(x.name).get("pending", 1) == 0 for x in hosts), 30, interval=0.2,
                   what="agents with nothing pending")
        time.sleep(1.0)  # a late duplicate would land now
        ups = a.metric(UP, kind="up") + b.metric(UP, kind="up")
        assert ups == 12, "each port got exactly one update_device_up, whichever server took it"
        assert a.metric(DUP) + b.metric(DUP) == 0
        assert _rpc_calls(a) > 0 and _rpc_calls(b) > 0, "both servers consume the agents' calls"

        vni = net["provider:segmentation_id"]
        for x in hosts:
            want = mh.expected_fdb(ports_by_host, by_name, x.name)
            h.wait_for(lambda x=x, want=want: mh.fdb(x, vni) == want, interval=0.2, what=f"{x.name} FDB")

        # One server goes: the other carries on alone (API, RPC, l2population).
        a.server.stop()
        late = b.create("ports", network_id=net["id"], **{"binding:host_id": hosts[1].name})
        ports_by_host[hosts[1].name].append(late)
        mh.plug_taps([hosts[1]], {hosts[1].name: [late]})
        b.wait_status(late["id"], "ACTIVE", timeout=30)
        want = mh.expected_fdb(ports_by_host, by_name, hosts[0].name)
        h.wait_for(lambda: mh.fdb(hosts[0], vni) == want, interval=0.2, what="host1 FDB has the late port")
        assert b.metric(DUP) == 0
    finally:
        b.stop()
