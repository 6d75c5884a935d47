"""l2population agent extension, alone with stubs: the pull when a VXLAN network
becomes local (the server no longer pushes a joining host its peers' entries), the
casts that cross it, and repeated entries costing no kernel call."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from lbtap.agent.l2pop import L2PopExtension
from lbtap.agent.l2pop_fdb import ZERO_MAC, KernelFdb
from lbtap.domain.models import DeviceDetails, Segment
from lbtap.drivers.host.base import FdbEntry
from lbtap.rpc import topics

FLOOD = [ZERO_MAC, "0.0.0.0"]
M2, M3, M4 = "fa:16:3e:00:00:02", "fa:16:3e:00:00:03", "fa:16:3e:00:00:04"


def entries(net="n1", vni=7, **ports):
    return {net: {"segment_id": vni, "network_type": "vxlan",
                  "ports": {ip.replace("_", "."): v for ip, v in ports.items()}}}


class Driver:
    """Just the FDB, counting the calls that change it."""

    def __init__(self):
        self.fdb: set[tuple[str, str, str]] = set()
        self.ops: list[tuple[str, str, str, str]] = []

    def list_fdb(self):
        return [FdbEntry(mac, ifname, dst=dst) for ifname, mac, dst in sorted(self.fdb)]

    def add_fdb(self, e):
        self.ops.append(("add", e.ifname, e.mac, e.dst))
        self.fdb.add((e.ifname, e.mac, e.dst))

    def delete_fdb(self, e):
        self.ops.append(("del", e.ifname, e.mac, e.dst))
        self.fdb.discard((e.ifname, e.mac, e.dst))


class Bus:
    """``call`` answers from a queue the test fills (a future per question)."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []
        self.answers: dict[int, asyncio.Future] = {}

    async def call(self, topic, method, timeout=None, **kw):
        self.calls.append((topic, method, kw))
        fut = self.answers.setdefault(len(self.calls) - 1, asyncio.get_running_loop().create_future())
        return await fut

    def answer(self, i, value=None, exc=None):
        fut = self.answers.setdefault(i, asyncio.get_running_loop().create_future())
        fut.set_exception(exc) if exc is not None else fut.set_result(value)


class Agent:
    def __init__(self, resync_answer=None):
        self.cfg = SimpleNamespace(local_ip="10.0.0.1", vxlan_group=None, l2_population=True,
                                   reconcile_interval=3600.0, host="h1")
        self.bus = Bus()
        self.driver = Driver()
        self.resyncs = 0
        self._resync_answer = resync_answer or {}
        self.plugin = SimpleNamespace(get_fdb_entries=self._get_fdb_entries)
        self.wakes = 0

    async def _get_fdb_entries(self, host, network_ids=None, timeout=None):
        if network_ids is not None:  # a join pull: answered by the test through the bus
            return dict(await self.bus.call(topics.PLUGIN, topics.GET_FDB_ENTRIES, timeout=timeout,
                                            host=host, network_ids=network_ids) or {})
        self.resyncs += 1
        return self._resync_answer

    async def on_host(self, fn, *args):
        return fn(*args)

    def wake(self):
        self.wakes += 1


def details(dev, net="n1", vni=7):
    return DeviceDetails(device=dev, port_id=dev, network_id=net, segment=Segment("vxlan", None, vni))


async def run(ext, now):
    """One pass, then let the tasks it started send their question."""
    await ext.process(now)
    for _ in range(5):
        await asyncio.sleep(0)


async def settle(ext, now, task_attr):
    """Let the extension's task finish and take its answer (one more pass)."""
    task = getattr(ext, task_attr)
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
    await run(ext, now)


async def started(resync_answer=None):
    agent = Agent(resync_answer)
    ext = L2PopExtension()
    ext.bind(agent)
    await run(ext, 0.0)  # the start's full resync, no network local yet
    await settle(ext, 0.0, "_resync_task")
    assert agent.resyncs == 1 and ext.stats["resyncs"] == 1
    return agent, ext


def fdb_add(ext, fdb_entries):
    ext.cast_handlers()[topics.FDB_ADD]({"fdb_entries": fdb_entries})


def fdb_remove(ext, fdb_entries):
    ext.cast_handlers()[topics.FDB_REMOVE]({"fdb_entries": fdb_entries})


async def test_a_network_that_becomes_local_is_pulled_and_crossing_casts_are_kept():
    agent, ext = await started()
    ext.port_details(details("tap-a"))
    await run(ext, 1.0)
    (topic, method, kw), = agent.bus.calls
    assert (topic, method) == (topics.PLUGIN, topics.GET_FDB_ENTRIES)
    assert kw == {"host": "h1", "network_ids": ["n1"]}

    # While the question is out: h3 joins (fanout add), h4 had joined and leaves.
    fdb_add(ext, entries(**{"10_0_0_3": [FLOOD, [M3, "10.9.0.3"]]}))
    fdb_remove(ext, entries(**{"10_0_0_4": [FLOOD, [M4, "10.9.0.4"]]}))
    await run(ext, 2.0)
    # The answer was read before those: h2 and h4, not h3; plus another network's
    # entries (an older server answers for every network): left alone.
    agent.bus.answer(0, {**entries(**{"10_0_0_2": [FLOOD, [M2, "10.9.0.2"]],
                                      "10_0_0_4": [FLOOD, [M4, "10.9.0.4"]]}),
                         **entries("n9", 9, **{"10_0_0_2": [FLOOD]})})
    await settle(ext, 3.0, "_join_task")
    assert ext.stats["joins"] == 1 and "n9" not in ext.table.nets
    assert agent.driver.fdb == {("vxlan-7", ZERO_MAC, "10.0.0.2"), ("vxlan-7", M2, "10.0.0.2"),
                                ("vxlan-7", ZERO_MAC, "10.0.0.3"), ("vxlan-7", M3, "10.0.0.3")}

    # A second port on the same network: no new question.
    ext.port_details(details("tap-b"))
    await run(ext, 4.0)
    assert len(agent.bus.calls) == 1


async def test_casts_taken_before_the_question_are_in_the_table_already():
    agent, ext = await started()
    fdb_add(ext, entries(**{"10_0_0_2": [FLOOD, [M2, "10.9.0.2"]]}))  # n1 not local yet
    ext.port_details(details("tap-a"))
    await run(ext, 1.0)  # takes the cast, then asks
    assert len(agent.bus.calls) == 1
    assert agent.driver.fdb == {("vxlan-7", ZERO_MAC, "10.0.0.2"), ("vxlan-7", M2, "10.0.0.2")}
    agent.bus.answer(0, entries(**{"10_0_0_2": [FLOOD, [M2, "10.9.0.2"]]}))  # read after it
    await settle(ext, 2.0, "_join_task")
    assert agent.driver.fdb == {("vxlan-7", ZERO_MAC, "10.0.0.2"), ("vxlan-7", M2, "10.0.0.2")}


async def test_networks_appearing_together_are_asked_for_in_one_call():
    agent, ext = await started()
    ext.port_details(details("tap-a", "n1", 7))
    ext.port_details(details("tap-b", "n2", 8))
    await run(ext, 1.0)
    (_t, _m, kw), = agent.bus.calls
    assert kw["network_ids"] == ["n1", "n2"]
    # n3 appears while that question is out: asked for once it is answered.
    ext.port_details(details("tap-c", "n3", 9))
    await run(ext, 2.0)
    assert len(agent.bus.calls) == 1
    agent.bus.answer(0, {})
    await settle(ext, 3.0, "_join_task")
    assert [c[2]["network_ids"] for c in agent.bus.calls] == [["n1", "n2"], ["n3"]]


async def test_a_failed_pull_is_retried_and_a_full_resync_makes_it_needless():
    agent, ext = await started()
    ext.port_details(details("tap-a"))
    await run(ext, 1.0)
    agent.bus.answer(0, exc=TimeoutError("no answer"))
    await settle(ext, 2.0, "_join_task")
    assert ext.next_wakeup(2.0) <= 2.5  # retry after a short backoff
    await run(ext, 2.5)
    assert [c[2]["network_ids"] for c in agent.bus.calls] == [["n1"], ["n1"]]
    agent.bus.answer(1, entries(**{"10_0_0_2": [FLOOD]}))
    await settle(ext, 3.0, "_join_task")
    assert agent.driver.fdb == {("vxlan-7", ZERO_MAC, "10.0.0.2")}

    # A network joining in the pass a full resync starts: the resync covers it.
    ext._resync_at = 4.0
    ext.port_details(details("tap-b", "n2", 8))
    await run(ext, 4.0)
    await settle(ext, 4.0, "_resync_task")
    assert len(agent.bus.calls) == 2 and agent.resyncs == 2

    # A network that is gone again before its pass: nothing to ask.
    ext.port_details(details("tap-c", "n3", 9))
    ext.device_gone("tap-c")
    await run(ext, 5.0)
    assert len(agent.bus.calls) == 2


async def test_an_entry_sent_again_costs_no_kernel_call():
    """The server sends the flooding entry with every add: a repeat is a no-op."""
    agent, ext = await started(entries(**{"10_0_0_2": [FLOOD, [M2, "10.9.0.2"]]}))
    ext.port_details(details("tap-a"))
    await run(ext, 1.0)
    agent.bus.answer(0, entries(**{"10_0_0_2": [FLOOD, [M2, "10.9.0.2"]]}))
    await settle(ext, 2.0, "_join_task")
    assert sorted(agent.driver.ops) == [("add", "vxlan-7", ZERO_MAC, "10.0.0.2"), ("add", "vxlan-7", M2, "10.0.0.2")]
    agent.driver.ops.clear()
    for _ in range(3):
        fdb_add(ext, entries(**{"10_0_0_2": [FLOOD, [M2, "10.9.0.2"]]}))
        fdb_add(ext, entries(**{"10_0_0_2": [FLOOD]}))
        await run(ext, 3.0)
    assert agent.driver.ops == []
    assert ext.applied == {KernelFdb("vxlan-7", ZERO_MAC, "10.0.0.2"), KernelFdb("vxlan-7", M2, "10.0.0.2")}
