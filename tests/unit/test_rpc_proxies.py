"""Typed proxies and the Dispatcher, end to end over a MemoryBus."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid

import pytest

from lbtap.bus.base import CallTimeout, RemoteError
from lbtap.bus.memory import MemoryBus, reset_brokers
from lbtap.domain.models import AgentState, DeviceDetails, FixedIP, Segment
from lbtap.rpc import topics
from lbtap.rpc.proxies import AgentNotifier, Dispatcher, PluginClient

PORT_ID = "0123456789ab-cdef-0123-4567-89abcdef0123"
KNOWN = DeviceDetails.for_port(
    PORT_ID,
    network_id="net-1",
    mac_address="fa:16:3e:00:00:01",
    segment=Segment("vxlan", None, 1001, 1450),
    fixed_ips=(FixedIP("sub-1", "10.0.0.5"),),
    device_owner="compute:nova",
    allowed_address_pairs=(("10.0.0.99", None),),
    security_groups=("sg-1",),
    status="DOWN",
)
ELSEWHERE = DeviceDetails(device="tapelsewhere0", bound_elsewhere=True)
UNKNOWN = DeviceDetails(device="tapunknown000")


@pytest.fixture
async def bus_pair():
    url = f"memory://rpc-{uuid.uuid4().hex}"
    server, agent = MemoryBus(url), MemoryBus(url)
    yield server, agent
    await server.close()
    await agent.close()
    reset_brokers(url)


class FakeServer:
    """Plain (sync) handlers, as the server's DB-backed ones will be."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.threads: set[int] = set()
        self.table = {d.device: d for d in (KNOWN, ELSEWHERE, UNKNOWN)}

    def get_devices_details_list(self, devices, agent_id, host):
        self.threads.add(threading.get_ident())
        self.calls.append(("details", {"devices": devices, "agent_id": agent_id, "host": host}))
        return [self.table.get(d, DeviceDetails(device=d)).to_wire() for d in devices]

    def update_device_list(self, devices_up, devices_down, agent_id, host):
        self.calls.append(("list", {"up": devices_up, "down": devices_down, "host": host}))
        return {
            "devices_up": [d for d in devices_up if d != "tapbad"],
            "failed_devices_up": [d for d in devices_up if d == "tapbad"],
            "devices_down": devices_down,
            "failed_devices_down": [],
        }

    def report_state(self, agent_state, time):
        self.calls.append(("report", {"agent_state": agent_state, "time": time}))
        return "alive"


async def serve_fake(bus, counts=None):
    fake = FakeServer()
    dispatcher = Dispatcher(
        {
            topics.GET_DEVICES_DETAILS_LIST: fake.get_devices_details_list,
            topics.UPDATE_DEVICE_LIST: fake.update_device_list,
            topics.REPORT_STATE: fake.report_state,
        },
        on_message=(lambda m: counts.append(m)) if counts is not None else None,
    )
    await bus.serve(topics.PLUGIN, dispatcher)
    await bus.serve(topics.REPORTS, dispatcher)
    return fake


async def test_device_details_round_trip_as_typed_values(bus_pair):
    server, agent = bus_pair
    fake = await serve_fake(server)
    client = PluginClient(agent, timeout=2)
    got = await client.get_devices_details_list(
        (KNOWN.device, ELSEWHERE.device, "tapnew0000000"), agent_id="a1", host="h1"
    )
    assert got == [KNOWN, ELSEWHERE, DeviceDetails(device="tapnew0000000")]
    assert got[0].known and not got[1].known and got[1].bound_elsewhere
    assert fake.calls[0] == (
        "details",
        {"devices": [KNOWN.device, ELSEWHERE.device, "tapnew0000000"], "agent_id": "a1", "host": "h1"},
    )
    # Sync handlers ran off the event loop's thread.
    assert threading.get_ident() not in fake.threads


async def test_update_device_list_returns_server_verdict(bus_pair):
    server, agent = bus_pair
    await serve_fake(server)
    result = await PluginClient(agent).update_device_list(["tap1", "tapbad"], {"tap2"}, "a1", "h1")
    assert result == {
        "devices_up": ["tap1"],
        "failed_devices_up": ["tapbad"],
        "devices_down": ["tap2"],
        "failed_devices_down": [],
    }


async def test_report_state_sends_agent_state_on_reports_topic(bus_pair):
    server, agent = bus_pair
    fake = FakeServer()
    # Only REPORTS is served: a heartbeat sent to PLUGIN would be Unreachable.
    await server.serve(topics.REPORTS, Dispatcher({topics.REPORT_STATE: fake.report_state}))
    state = AgentState(
        binary="lbtap-linuxbridge-agent", host="h1", agent_type="Linux bridge agent",
        topic="N/A", configurations={"devices": 3, "interface_mappings": {"physnet1": "eth1"}},
        start_flag=True,
    )
    assert await PluginClient(agent).report_state(state, 1234.5) == "alive"
    assert fake.calls == [("report", {"agent_state": dataclasses.asdict(state), "time": 1234.5})]


async def test_client_timeout_surfaces_as_call_timeout(bus_pair):
    server, agent = bus_pair

    async def never(**_):
        await asyncio.sleep(30)

    await server.serve(topics.PLUGIN, Dispatcher({topics.UPDATE_DEVICE_LIST: never}))
    # The client's own timeout is the one the call gave up after (not the bus default).
    with pytest.raises(CallTimeout, match=r"within 0\.1s"):
        await PluginClient(agent, timeout=0.1).update_device_list([], [], "a1", "h1")


async def test_dispatcher_counts_every_message_and_rejects_unknown(bus_pair):
    server, agent = bus_pair
    counts: list[str] = []
    await serve_fake(server, counts)
    client = PluginClient(agent)
    await client.update_device_list(["tap1"], [], "a1", "h1")
    with pytest.raises(RemoteError) as info:
        await client.update_device_up("tap1", "a1", "h1")  # not registered
    assert info.value.exc_type == "UnknownMethod"
    assert counts == [topics.UPDATE_DEVICE_LIST, topics.UPDATE_DEVICE_UP]


async def test_threaded_sync_handler_does_not_block_the_loop(bus_pair):
    server, agent = bus_pair
    started, release = threading.Event(), threading.Event()

    def slow_db_work(**_):
        started.set()
        release.wait(30)  # busy until the quick call has been answered
        return "slow"

    async def quick(**_):
        return "quick"

    await server.serve("t", Dispatcher({"slow": slow_db_work, "quick": quick}))
    slow = asyncio.create_task(agent.call("t", "slow", timeout=60))
    for _ in range(3000):  # until the slow handler runs (generous for a loaded machine)
        if started.is_set():
            break
        await asyncio.sleep(0.01)
    assert started.is_set(), "the slow handler never ran"
    try:
        assert await agent.call("t", "quick", timeout=30) == "quick"
        assert not slow.done(), "the quick call was answered while the slow handler still ran"
    finally:
        release.set()
    assert await slow == "slow"


async def test_unthreaded_sync_handler_runs_on_the_loop_thread(bus_pair):
    server, agent = bus_pair
    seen = []
    loop_thread = threading.get_ident()
    await server.serve(
        "t", Dispatcher({"queue_intent": lambda **kw: seen.append(threading.get_ident())}, threaded=False)
    )
    await agent.call("t", "queue_intent")
    assert seen == [loop_thread]


class FakeAgent:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict]] = []
        self.dispatcher = Dispatcher(
            {
                m: (lambda m=m, **kw: self.got.append((m, kw)))
                for m in (
                    topics.PORT_UPDATE, topics.PORT_DELETE, topics.NETWORK_UPDATE,
                    topics.NETWORK_DELETE, topics.FDB_ADD, topics.FDB_REMOVE,
                )
            },
            threaded=False,
        )

    async def attach(self, bus, host):
        await bus.serve(topics.AGENT_FANOUT, self.dispatcher, fanout=True)
        await bus.serve(topics.agent_host_topic(host), self.dispatcher)


async def test_notifier_fanouts_reach_every_agent():
    url = f"memory://notify-{uuid.uuid4().hex}"
    buses = [MemoryBus(url) for _ in range(3)]
    agents = [FakeAgent(), FakeAgent()]
    await agents[0].attach(buses[1], "h1")
    await agents[1].attach(buses[2], "h2")
    n = AgentNotifier(buses[0])
    entries = {"net-1": {"segment_id": 1001, "network_type": "vxlan", "ports": {"192.0.2.10": [["fa:16:3e:00:00:01", "10.0.0.5"]]}}}
    await n.port_update({"id": "p1", "admin_state_up": True})
    await n.port_delete("p1")
    await n.network_update({"id": "net-1"})
    await n.network_delete("net-1")
    await n.fdb_add(entries)
    await n.fdb_remove(entries)
    await asyncio.sleep(0.01)
    expected = [
        (topics.PORT_UPDATE, {"port": {"id": "p1", "admin_state_up": True}}),
        (topics.PORT_DELETE, {"port_id": "p1"}),
        (topics.NETWORK_UPDATE, {"network": {"id": "net-1"}}),
        (topics.NETWORK_DELETE, {"network_id": "net-1"}),
        (topics.FDB_ADD, {"fdb_entries": entries}),
        (topics.FDB_REMOVE, {"fdb_entries": entries}),
    ]
    for a in agents:
        assert sorted(a.got, key=str) == sorted(expected, key=str)
    for b in buses:
        await b.close()
    reset_brokers(url)


async def test_host_casts_reach_only_that_agent():
    url = f"memory://notify-{uuid.uuid4().hex}"
    buses = [MemoryBus(url) for _ in range(3)]
    h1, h2 = FakeAgent(), FakeAgent()
    await h1.attach(buses[1], "h1")
    await h2.attach(buses[2], "h2")
    await AgentNotifier(buses[0]).port_update({"id": "p1"}, host="h2")
    await AgentNotifier(buses[0]).port_delete("p0", host="h1")
    await asyncio.sleep(0.01)
    assert h1.got == [(topics.PORT_DELETE, {"port_id": "p0"})]
    assert h2.got == [(topics.PORT_UPDATE, {"port": {"id": "p1"}})]
    for b in buses:
        await b.close()
    reset_brokers(url)
