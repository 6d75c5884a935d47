"""Server-side l2population when its reads lag the reports they follow.

``L2Population`` reads the rows on its own thread, after the report was committed and
possibly after later reports of the same host were committed too. What it sends must
not depend on how far behind it is: the tests commit reports, then let l2population
read them at chosen points (``threaded=False``: a read happens when the test says)."""

from __future__ import annotations

import random

import pytest

from lbtap.agent.l2pop_fdb import ZERO_MAC, FdbTable
from lbtap.config import Settings
from lbtap.domain.naming import tap_name
from lbtap.rpc import topics
from lbtap.server.context import Context
from lbtap.server.db.engine import Database
from lbtap.server.l2pop import FLOODING_ENTRY, L2Population
from lbtap.server.rpc_handlers import RpcHandlers
from lbtap.server.services import Services
from tests.support import fresh_db_url, migrated_engine

ADMIN = Context.admin()
VTEPS = {"h1": "10.0.0.1", "h2": "10.0.0.2"}


class World:
    def __init__(self, tmp_path):
        self.engine = migrated_engine(fresh_db_url("sqlite", tmp_path))
        settings = Settings(server={"tenant_network_types": ["vxlan"]})
        self.svc, self.rpc = Services(self.engine, settings), RpcHandlers(self.engine, settings)
        for host, ip in VTEPS.items():
            self.rpc.report_state({"agent_state": {
                "agent_type": "Linux bridge agent", "host": host, "binary": "lbtap-agent",
                "topic": "q-agent-notifier", "configurations": {"tunneling_ip": ip}}})
        self.net = self.svc.create(ADMIN, "networks", {"name": "n"})
        self.svc.create(ADMIN, "subnets", {"network_id": self.net["id"], "ip_version": 4, "cidr": "10.9.0.0/24"})
        self.sent: list[tuple[str, dict, str | None]] = []
        self.l2pop = L2Population(Database(self.engine), lambda m, e, h: self.sent.append((m, e, h)), threaded=False)
        self.lagging: list[tuple[str, list[str], list[str]]] = []  # committed, not read yet

    def port(self, host="h2"):
        return self.svc.create(ADMIN, "ports", {"network_id": self.net["id"], "binding:host_id": host})

    def report(self, host, up=(), down=()):
        """The agent's report: committed now, read by l2population later (``catch_up``)."""
        self.rpc.update_device_list([tap_name(p["id"]) for p in up], [tap_name(p["id"]) for p in down], "a", host)
        self.lagging.append((host, [tap_name(p["id"]) for p in up], [tap_name(p["id"]) for p in down]))

    def catch_up(self, n=None):
        n = len(self.lagging) if n is None else n
        for host, up, down in self.lagging[:n]:
            self.l2pop.status_changed(host, up, down)
        del self.lagging[:n]

    def peer_table(self) -> FdbTable:
        """What another agent holds after every message, in order (it hears fanouts only)."""
        table = FdbTable()
        for method, entries, host in self.sent:
            assert host is None, "no cast to one host"
            (table.add if method == topics.FDB_ADD else table.remove)(entries)
        return table

    def status(self, p):
        return self.svc.get(ADMIN, "ports", p["id"])["status"]


def _vtep_pairs(table: FdbTable, net_id: str, vtep: str) -> set[tuple[str, str]]:
    net = table.nets.get(net_id)
    return set(net.ports.get(vtep, ())) if net else set()


def test_two_reports_read_late_still_send_the_flooding_entry(tmp_path):
    """The audit's case: h2's first and second port go up in two reports, both
    committed before l2population reads the first: both reads see two ACTIVE ports."""
    w = World(tmp_path)
    p1, p2 = w.port(), w.port()
    w.report("h2", up=[p1])
    w.report("h2", up=[p2])
    w.catch_up()
    adds = [e for m, e, h in w.sent if m == topics.FDB_ADD]
    assert len(adds) == 2 and len(w.sent) == 2  # one fanout per transition, nothing else
    for entries in adds:
        assert FLOODING_ENTRY in entries[w.net["id"]]["ports"]["10.0.0.2"]
    assert _vtep_pairs(w.peer_table(), w.net["id"], "10.0.0.2") >= {(ZERO_MAC, "0.0.0.0")}


def test_a_joining_host_gets_no_cast_of_its_own_and_pulls_its_peers(tmp_path):
    """The joining host asks (``get_fdb_entries`` with ``network_ids``) when the network
    becomes local to it; the server sends no full set on its own guess."""
    w = World(tmp_path)
    p1 = w.port("h1")
    w.report("h1", up=[p1])
    w.catch_up()
    p2 = w.port("h2")
    w.report("h2", up=[p2])
    w.catch_up()
    assert [(m, h) for m, _e, h in w.sent] == [(topics.FDB_ADD, None), (topics.FDB_ADD, None)]
    got = w.l2pop.get_fdb_entries("h2", network_ids=[w.net["id"]])
    ip1 = p1["fixed_ips"][0]["ip_address"]
    assert got[w.net["id"]]["ports"] == {"10.0.0.1": [FLOODING_ENTRY, [p1["mac_address"], ip1]]}
    assert w.l2pop.get_fdb_entries("h2", network_ids=[]) == {}
    assert w.l2pop.get_fdb_entries("h2", network_ids=["nope"]) == {}
    assert w.l2pop.get_fdb_entries("h2", network_ids=w.net["id"]) == got  # one id, not a list
    assert w.l2pop.get_fdb_entries("h2") == got


def test_a_late_read_of_a_down_report_keeps_the_flooding_entry_of_a_host_still_up(tmp_path):
    w = World(tmp_path)
    p1, p2 = w.port(), w.port()
    w.report("h2", up=[p1])
    w.catch_up()
    w.report("h2", down=[p1])  # h2's only port leaves...
    w.report("h2", up=[p2])    # ...and the next one comes before l2population reads
    w.catch_up(1)
    (method, entries, _h), = w.sent[1:]
    assert method == topics.FDB_REMOVE and FLOODING_ENTRY not in entries[w.net["id"]]["ports"]["10.0.0.2"]
    w.catch_up()
    ip2 = p2["fixed_ips"][0]["ip_address"]
    assert _vtep_pairs(w.peer_table(), w.net["id"], "10.0.0.2") == {(ZERO_MAC, "0.0.0.0"), (p2["mac_address"], ip2)}


@pytest.mark.parametrize("seed", range(12))
def test_what_peers_hold_does_not_depend_on_how_late_l2pop_reads(tmp_path, seed):
    """Random up/down reports of h2's ports, l2population catching up at random points:
    once it has caught up, a peer holds h2's flooding entry iff h2 has an ACTIVE port,
    and exactly the MACs of h2's ACTIVE ports."""
    rnd = random.Random(seed)
    w = World(tmp_path)
    ports = [w.port() for _ in range(3)]
    up: set[str] = set()
    for _ in range(20):
        p = rnd.choice(ports)
        if p["id"] in up:
            w.report("h2", down=[p])
            up.discard(p["id"])
        else:
            w.report("h2", up=[p])
            up.add(p["id"])
        if rnd.random() < 0.3:
            w.catch_up(rnd.randint(0, len(w.lagging)))
        if rnd.random() < 0.2:  # a quiet moment: everything read
            w.catch_up()
            check(w, ports, up)
    w.catch_up()
    check(w, ports, up)


def check(w, ports, up):
    assert {p["id"] for p in ports if w.status(p) == "ACTIVE"} == up
    want = {(p["mac_address"], p["fixed_ips"][0]["ip_address"]) for p in ports if p["id"] in up}
    if up:
        want.add((ZERO_MAC, "0.0.0.0"))
    assert _vtep_pairs(w.peer_table(), w.net["id"], "10.0.0.2") == want
