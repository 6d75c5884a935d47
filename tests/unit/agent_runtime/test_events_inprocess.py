"""Storm alarm, timeline and agent metrics end to end in one process (no root): the real
server with the events extension on SQLite, the in-process bus, the real agent runtime
with its test hooks, and FakeHost."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lbtap.agent.metrics import register_agent_metrics
from lbtap.agent.testhooks import DEBUG_REREPORT
from lbtap.domain.naming import tap_name
from lbtap.drivers.host.errors import Busy
from lbtap.rpc import topics
from tests.unit.agent_runtime.test_inprocess import in_process_system, make_ports, status, wait_until


@pytest.fixture
async def system(tmp_path):
    async with in_process_system(tmp_path, **{"agent.test_hooks": True}) as s:
        yield s


async def plug(s, ports):
    for p in ports:
        await s.on_host(s.host.create_tap, tap_name(p["id"]))
        await s.on_host(s.host.set_link, tap_name(p["id"]), up=True)
    await wait_until(lambda: all(status(s, p["id"]) == "ACTIVE" for p in ports))


async def test_rereport_hook_raises_a_storm_alarm_naming_agent_and_devices(system):
    s = system
    _, ports = make_ports(s, 5)
    await plug(s, ports)
    # Quiet: every report acknowledged by the server, none pending.
    reporter = s.agent.core.reporter
    await wait_until(lambda: all(reporter.acked(tap_name(p["id"])) is True for p in ports)
                     and reporter.pending_count == 0)
    assert s.events.detector.alarms() == []
    await s.bus.cast(topics.agent_host_topic("h1"), DEBUG_REREPORT)
    await wait_until(lambda: s.events.detector.alarms(active_only=True))
    (alarm,) = s.events.detector.alarms()
    assert alarm["host"] == "h1" and alarm["reason"] == "duplicate_up"
    assert alarm["devices"] == sorted(tap_name(p["id"]) for p in ports)
    # The timeline records each port ACTIVE once, not once per duplicate report.
    for p in ports:
        kinds = [e["kind"] for e in s.events.store.query(port_id=p["id"])]
        assert kinds == ["created", "bound", "device_seen", "active"], kinds


async def test_agent_metrics_and_heartbeat_name_the_failing_device(system):
    s = system
    _, ports = make_ports(s, 3)
    bad = tap_name(ports[0]["id"])
    s.host.fail("enslave", bad, Busy("injected busy", op="enslave", device=bad))
    await plug(s, ports[1:])
    await s.on_host(s.host.create_tap, bad)
    await wait_until(lambda: bad in s.agent.core.snapshot()["retrying"])

    reg = CollectorRegistry()
    register_agent_metrics(s.agent, reg)
    # Scrapes come from another thread (the HTTP server's), as in production.
    text = (await asyncio.to_thread(generate_latest, reg)).decode()
    assert 'lbtap_agent_up{host="h1"} 1.0' in text
    assert 'lbtap_agent_devices{host="h1",state="wired"} 2.0' in text
    assert 'lbtap_agent_devices_retrying{host="h1"} 1.0' in text
    assert f'lbtap_agent_device_retry_attempts{{device="{bad}",host="h1"}}' in text
    assert 'lbtap_agent_reports_sent_total{host="h1",kind="up"} 2.0' in text
    assert "lbtap_agent_process_rss_bytes" in text and "lbtap_agent_loop_iterations_total" in text
    assert f'device="{tap_name(ports[1]["id"])}"' not in text  # healthy devices carry no label

    conf = s.agent.agent_state().configurations
    assert "injected busy" in conf["retrying_devices"][bad]["error"]
    await s.agent.plugin.report_state(s.agent.agent_state(), "now")
    explanation = await asyncio.to_thread(s.events.explain, ports[0]["id"])
    assert explanation["verdict"] == "device_failing" and "injected busy" in explanation["reason"]
