"""RPC handlers: device details, binding on request, status reports, heartbeats."""

from __future__ import annotations


import pytest
from sqlalchemy import event

from lbtap.config import Settings
from lbtap.domain.models import DeviceDetails
from lbtap.domain.naming import tap_name
from lbtap.server.context import Context
from lbtap.server.rpc_handlers import RpcHandlers
from lbtap.server.services import ListQuery, Services
from tests.support import FakeClock, fresh_db_url, migrated_engine

ADMIN = Context.admin()
LB = "Linux bridge agent"


class World:
    def __init__(self, tmp_path):
        self.engine = migrated_engine(fresh_db_url("sqlite", tmp_path))
        self.settings = Settings(server={"tenant_network_types": ["vxlan"]})
        self.clock = FakeClock()
        self.svc = Services(self.engine, self.settings, clock=self.clock)
        self.rpc = RpcHandlers(self.engine, self.settings, clock=self.clock)
        self.net = self.svc.create(ADMIN, "networks", {"name": "n", "mtu": 1400})
        self.subnet = self.svc.create(ADMIN, "subnets", {"network_id": self.net["id"], "ip_version": 4,
                                                         "cidr": "10.0.0.0/24"})
        for host in ("h1", "h2"):
            self.rpc.report_state({"agent_state": {"agent_type": LB, "host": host, "binary": "lbtap-agent",
                                                   "topic": "q-agent-notifier", "start_flag": True}})

    def port(self, **kw):
        return self.svc.create(ADMIN, "ports", {"network_id": self.net["id"], **kw})

    def get(self, port):
        return self.svc.get(ADMIN, "ports", port["id"])


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def test_details_of_unknown_and_non_tap_devices(w):
    assert w.rpc.get_devices_details_list(["tapdeadbeef-00", "eth0"], "a", "h1") == [
        {"device": "tapdeadbeef-00"}, {"device": "eth0"}]


def test_details_claim_unbound_port_for_asking_host(w):
    p = w.port(device_owner="compute:nova")
    [d] = w.rpc.get_devices_details_list([tap_name(p["id"])], "a", "h1")
    details = DeviceDetails.from_wire(d)
    assert details.port_id == p["id"] and details.network_id == w.net["id"]
    assert details.mac_address == p["mac_address"] and details.status == "DOWN"
    assert (d["network_type"], d["segmentation_id"], d["mtu"]) == ("vxlan", w.net["provider:segmentation_id"], 1400)
    assert d["fixed_ips"] == p["fixed_ips"] and d["device_owner"] == "compute:nova"
    bound = w.get(p)
    assert (bound["binding:host_id"], bound["binding:vif_type"]) == ("h1", "bridge")
    assert bound["revision_number"] == 1
    # Another host now gets no_active_binding.
    assert w.rpc.get_devices_details_list([tap_name(p["id"])], "b", "h2") == [
        {"device": tap_name(p["id"]), "no_active_binding": True}]


def test_details_repair_failed_binding_of_own_host(w):
    p = w.port(**{"binding:host_id": "h3"})
    assert p["binding:vif_type"] == "binding_failed"
    w.rpc.report_state({"agent_type": LB, "host": "h3", "binary": "x", "topic": "t"})
    [d] = w.rpc.get_devices_details_list([tap_name(p["id"])], "c", "h3")
    assert d["port_id"] == p["id"] and w.get(p)["binding:vif_type"] == "bridge"


def test_status_up_down_idempotent_and_bumps_revision(w):
    p = w.port()
    dev = tap_name(p["id"])
    w.rpc.get_devices_details_list([dev], "a", "h1")
    res = w.rpc.update_device_list([dev], [], "a", "h1")
    assert res == {"devices_up": [dev], "devices_down": [], "failed_devices_up": [], "failed_devices_down": []}
    after = w.get(p)
    assert after["status"] == "ACTIVE" and after["revision_number"] == 2
    w.rpc.update_device_up(dev, "a", "h1")
    assert w.get(p)["revision_number"] == 2  # idempotent: no change, no bump
    assert w.rpc.update_device_down(dev, "a", "h1") == {"device": dev, "exists": True}
    assert w.get(p)["status"] == "DOWN" and w.get(p)["revision_number"] == 3
    assert w.rpc.update_device_down("tap00000000-00", "a", "h1") == {"device": "tap00000000-00", "exists": False}


def test_status_from_other_host_is_ignored(w):
    p = w.port()
    dev = tap_name(p["id"])
    w.rpc.get_devices_details_list([dev], "a", "h1")
    res = w.rpc.update_device_list([dev], [], "b", "h2")
    assert res["failed_devices_up"] == []  # nothing to retry
    assert w.get(p)["status"] == "DOWN"
    w.rpc.update_device_list([dev], [], "a", "h1")
    w.rpc.update_device_list([], [dev], "b", "h2")
    assert w.get(p)["status"] == "ACTIVE"


def test_unbound_port_does_not_go_active(w):
    p = w.port()
    w.rpc.update_device_list([tap_name(p["id"])], [], "a", "h1")
    assert w.get(p)["status"] == "DOWN"


def test_floating_ip_port_keeps_na(w):
    p = w.port(device_owner="network:floatingip")
    dev = tap_name(p["id"])
    w.rpc.get_devices_details_list([dev], "a", "h1")
    w.rpc.update_device_list([dev], [], "a", "h1")
    assert w.get(p)["status"] == "N/A"


def test_report_state_upserts_and_alive_follows_clock(w):
    agents = w.svc.list(ADMIN, "agents", ListQuery()).items
    assert sorted(a["host"] for a in agents) == ["h1", "h2"]
    h1 = next(a for a in agents if a["host"] == "h1")
    assert h1["alive"] and h1["agent_type"] == LB and h1["binary"] == "lbtap-agent"
    w.clock.advance(w.settings.server.agent_down_time + 1)
    assert w.rpc.report_state({"agent_type": LB, "host": "h1", "binary": "lbtap-agent", "topic": "t",
                               "configurations": {"devices": 3}}) == "revived"
    agents = {a["host"]: a for a in w.svc.list(ADMIN, "agents", ListQuery()).items}
    assert agents["h1"]["alive"] and not agents["h2"]["alive"]
    assert agents["h1"]["configurations"] == {"devices": 3} and agents["h1"]["id"] == h1["id"]
    assert agents["h1"]["started_at"] != h1["started_at"]  # revived after being dead
    alive = w.svc.list(ADMIN, "agents", ListQuery(filters={"alive": ["true"]})).items
    assert [a["host"] for a in alive] == ["h1"]


def test_report_state_answers_revived_only_to_an_agent_considered_dead(w):
    beat = {"agent_type": LB, "host": "h1", "binary": "lbtap-agent", "topic": "t"}
    down = w.settings.server.agent_down_time
    w.clock.advance(down - 1)
    assert w.rpc.report_state(dict(beat)) == "alive"  # within agent_down_time
    w.clock.advance(down + 1)
    assert w.rpc.report_state(dict(beat)) == "revived"  # missed heartbeats: it may have missed casts
    assert w.rpc.report_state(dict(beat)) == "alive"  # once: that heartbeat made it alive again
    w.clock.advance(down + 1)
    assert w.rpc.report_state({**beat, "start_flag": True}) == "revived"  # a restart after death too (Neutron)
    # An agent the server never saw is new, not revived.
    assert w.rpc.report_state({**beat, "host": "h9"}) == "alive"
    assert w.rpc.report_state({"agent_state": {**beat, "host": "h9"}}) == "alive"


def test_thousand_devices_in_one_call(w):
    ports = w.svc.create_bulk(ADMIN, "ports", [{"network_id": w.net["id"]} for _ in range(250)])
    net2 = w.svc.create(ADMIN, "networks", {})
    w.svc.create(ADMIN, "subnets", {"network_id": net2["id"], "ip_version": 4, "cidr": "10.1.0.0/22"})
    ports += w.svc.create_bulk(ADMIN, "ports", [{"network_id": net2["id"]} for _ in range(750)])
    devs = [tap_name(p["id"]) for p in ports]
    w.rpc.get_devices_details_list(devs, "a", "h1")  # first call binds them all
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001
        statements.append(statement)

    # A batch costs a handful of statements, not one per device (speed: bench/port_bind.py).
    event.listen(w.engine, "before_cursor_execute", count)
    try:
        details = w.rpc.get_devices_details_list(devs, "a", "h1")
        n_details, statements[:] = len(statements), []
        res = w.rpc.update_device_list(devs, [], "a", "h1")
        n_up = len(statements)
    finally:
        event.remove(w.engine, "before_cursor_execute", count)
    assert [d["port_id"] for d in details] == [p["id"] for p in ports]
    assert len(res["devices_up"]) == 1000
    statuses = {p["status"] for p in w.svc.list(ADMIN, "ports", ListQuery()).items}
    assert statuses == {"ACTIVE"}
    assert n_details <= 20 and n_up <= 20, (n_details, n_up)


def test_details_carry_pairs_groups_and_network_admin_state(w):
    sg = w.svc.create(ADMIN, "security_groups", {"name": "web"})["id"]
    p = w.port(allowed_address_pairs=[{"ip_address": "10.0.0.0/28", "mac_address": "fa:16:3e:aa:bb:cc"},
                                      {"ip_address": "10.0.0.99"}],
               security_groups=[sg])
    off = w.port(port_security_enabled=False)
    w.svc.update(ADMIN, "networks", w.net["id"], {"admin_state_up": False})
    [d] = w.rpc.get_devices_details_list([tap_name(p["id"])], "a", "h1")
    assert d["allowed_address_pairs"] == [{"ip_address": "10.0.0.0/28", "mac_address": "fa:16:3e:aa:bb:cc"},
                                          {"ip_address": "10.0.0.99", "mac_address": None}]
    assert d["security_groups"] == [sg] and d["port_security_enabled"] is True
    assert d["admin_state_up"] is False
    [d_off] = w.rpc.get_devices_details_list([tap_name(off["id"])], "a", "h1")
    assert d_off["security_groups"] == [] and d_off["port_security_enabled"] is False


async def test_pushes_carry_revisions_and_a_delete_follows_its_push_on_the_hosts_queue(w):
    """BusNotifier: creates/updates of bound ports become one ordered stream per host of
    ``devices_details`` (read when sent, with revisions) and ``port_delete``."""
    import asyncio

    from lbtap.rpc import topics
    from lbtap.server.bus_notifier import BusNotifier

    class Bus:
        def __init__(self):
            self.sent = []

        async def cast(self, topic, method, **kw):
            self.sent.append((topic, method, kw))

        async def fanout(self, topic, method, **kw):
            self.sent.append((topic, method, kw))

    async def sent_after(step):
        # Services run on the loop's thread here, so the coalescing timer cannot fire
        # between the calls of one step however slow the machine is.
        bus.sent.clear()
        step()
        assert await notifier.drain(timeout=30)
        return list(bus.sent)

    bus = Bus()
    notifier = BusNotifier(bus, asyncio.get_running_loop(), details_source=w.rpc)
    svc = Services(w.engine, w.settings, clock=w.clock, notifier=notifier)
    made = {}

    def create_two():
        for key in "ab":
            made[key] = svc.create(ADMIN, "ports", {"network_id": w.net["id"], "binding:host_id": "h1"})

    ((topic, method, kw),) = await sent_after(create_two)
    a, b = made["a"], made["b"]
    assert (topic, method) == (topics.agent_host_topic("h1"), topics.DEVICES_DETAILS), "one push for the burst"
    pushed = {d["port_id"]: DeviceDetails.from_wire(d) for d in kw["details"]}
    assert set(pushed) == {a["id"], b["id"]} and pushed[a["id"]].revision is not None

    def update_then_delete():
        svc.update(ADMIN, "ports", a["id"], {"admin_state_up": False})
        svc.delete(ADMIN, "ports", a["id"])

    sent = await sent_after(update_then_delete)
    # Updated then deleted within one window: the host hears only the delete, on its queue.
    assert [(t, m) for t, m, _ in sent] == [(topics.agent_host_topic("h1"), topics.PORT_DELETE)]
    sent = await sent_after(lambda: svc.update(ADMIN, "ports", b["id"], {"admin_state_up": False}))
    (d,) = [DeviceDetails.from_wire(x) for x in sent[0][2]["details"]]
    assert not d.admin_state_up and d.revision[0] > pushed[b["id"]].revision[0]
