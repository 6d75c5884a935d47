"""Server-side l2population decisions (pure): which entries each transition sends."""

from __future__ import annotations

import pytest

from lbtap.server.l2pop import FLOODING_ENTRY, NetSeg, PortFdb, full_entries, merge_entries, transition_entries

NETS = {"n1": NetSeg(7), "n2": NetSeg(8)}
VTEPS = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}
P1 = PortFdb("p1", "n1", "h1", "fa:16:3e:00:00:01", ("10.9.0.5",))
P2 = PortFdb("p2", "n1", "h2", "fa:16:3e:00:00:02", ("10.9.0.6", "10.9.0.7"))
P3 = PortFdb("p3", "n1", "h3", "fa:16:3e:00:00:03", ())
P4 = PortFdb("p4", "n2", "h2", "fa:16:3e:00:00:04", ("10.8.0.4",))
PX = PortFdb("px", "nflat", "h2", "fa:16:3e:00:00:09", ("10.7.0.1",))  # not VXLAN


def block(vni, **ports):
    return {"segment_id": vni, "network_type": "vxlan", "ports": {k.replace("_", "."): v for k, v in ports.items()}}


@pytest.mark.parametrize("changed, still_active, want", [
    # first port of h2 on n1: flooding entry travels with it; one pair per fixed IP
    ([P2], {}, {"n1": block(7, **{"10_0_0_2": [FLOODING_ENTRY, [P2.mac, "10.9.0.6"], [P2.mac, "10.9.0.7"]]})}),
    # h2 already had an ACTIVE port there: just the MAC
    ([P2], {"n1": 1}, {"n1": block(7, **{"10_0_0_2": [[P2.mac, "10.9.0.6"], [P2.mac, "10.9.0.7"]]})}),
    # ports on two networks in one report, only one of them new to the host
    ([P2, P4], {"n2": 2}, {"n1": block(7, **{"10_0_0_2": [FLOODING_ENTRY, [P2.mac, "10.9.0.6"], [P2.mac, "10.9.0.7"]]}),
                            "n2": block(8, **{"10_0_0_2": [[P4.mac, "10.8.0.4"]]})}),
    # a port without fixed IPs still forwards its MAC
    ([P3], {"n1": 3}, {"n1": block(7, **{"10_0_0_2": [[P3.mac, "0.0.0.0"]]})}),
    # non-VXLAN networks are not l2population's business
    ([PX], {}, {}),
])
def test_transition_entries(changed, still_active, want):
    assert transition_entries(changed, still_active, NETS, "10.0.0.2") == want


def test_full_entries_group_by_vtep_and_skip_own_and_unknown_hosts():
    got = full_entries([P1, P2, P3, P4, PortFdb("py", "n1", "h9", "fa:16:3e:00:00:0a")], NETS, VTEPS,
                       exclude_vtep="10.0.0.3")
    assert got == {
        "n1": block(7, **{"10_0_0_1": [FLOODING_ENTRY, [P1.mac, "10.9.0.5"]],
                          "10_0_0_2": [FLOODING_ENTRY, [P2.mac, "10.9.0.6"], [P2.mac, "10.9.0.7"]]}),
        "n2": block(8, **{"10_0_0_2": [FLOODING_ENTRY, [P4.mac, "10.8.0.4"]]}),
    }


def test_merge_entries_folds_two_messages_without_duplicates():
    a = {"n1": block(7, **{"10_0_0_2": [FLOODING_ENTRY, [P2.mac, "x"]]})}
    b = {"n1": block(7, **{"10_0_0_2": [[P2.mac, "x"], ["m", "y"]], "10_0_0_3": [FLOODING_ENTRY]}),
         "n2": block(8, **{"10_0_0_2": [["m4", "z"]]})}
    assert merge_entries(a, b) == {
        "n1": block(7, **{"10_0_0_2": [FLOODING_ENTRY, [P2.mac, "x"], ["m", "y"]], "10_0_0_3": [FLOODING_ENTRY]}),
        "n2": block(8, **{"10_0_0_2": [["m4", "z"]]}),
    }


def test_port_deleted_right_after_going_down_still_withdraws_its_entries(tmp_path):
    """The down report is processed (in order, on l2population's thread) only after the
    API deleted the row: nothing is found then, so the deletion must withdraw."""
    from lbtap.config import Settings
    from lbtap.domain.naming import tap_name
    from lbtap.rpc import topics
    from lbtap.server.context import Context
    from lbtap.server.db.engine import Database
    from lbtap.server.l2pop import L2Population
    from lbtap.server.rpc_handlers import RpcHandlers
    from lbtap.server.services import Services
    from tests.support import fresh_db_url, migrated_engine

    engine = migrated_engine(fresh_db_url("sqlite", tmp_path))
    settings = Settings(server={"tenant_network_types": ["vxlan"]})
    svc, rpc, admin = Services(engine, settings), RpcHandlers(engine, settings), Context.admin()
    for host, ip in (("h1", "10.0.0.1"), ("h2", "10.0.0.2")):
        rpc.report_state({"agent_state": {"agent_type": "Linux bridge agent", "host": host, "binary": "lbtap-agent",
                                          "topic": "q-agent-notifier", "configurations": {"tunneling_ip": ip}}})
    net = svc.create(admin, "networks", {"name": "n"})
    svc.create(admin, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.9.0.0/24"})
    port = svc.create(admin, "ports", {"network_id": net["id"], "binding:host_id": "h2"})
    sent = []
    l2pop = L2Population(Database(engine), lambda method, entries, host: sent.append((method, entries, host)),
                         threaded=False)
    tap = tap_name(port["id"])
    rpc.update_device_list([tap], [], "a", "h2")
    l2pop.status_changed("h2", [tap], [])
    assert sent and sent[0][0] == topics.FDB_ADD
    rpc.update_device_list([], [tap], "a", "h2")
    down = svc.get(admin, "ports", port["id"])
    svc.delete(admin, "ports", port["id"])
    sent.clear()
    l2pop.status_changed("h2", [], [tap])  # too late: the row is gone
    l2pop.port_deleted(down)
    (method, entries, host), = sent
    assert method == topics.FDB_REMOVE and host is None
    assert [port["mac_address"], port["fixed_ips"][0]["ip_address"]] in entries[net["id"]]["ports"]["10.0.0.2"]
