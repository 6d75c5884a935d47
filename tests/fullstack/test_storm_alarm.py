"""Storm alarm, port timelines and `lbtap events` / `lbtap explain` against real processes.

The storm is made on purpose: with ``agent.test_hooks`` the agent re-reports every
device on SIGUSR1 (the seed's defect), and the server must raise an alarm naming the
agent's host and exactly those devices.
"""

from __future__ import annotations

import json
import signal
import subprocess

import httpx

from lbtap.domain.naming import tap_name
from tests.fullstack import harness as h
from tests.fullstack.test_l2_agent import wait_dhcp_port_active

CONFIG = """
[server]
tenant_network_types = ["local"]
[agent]
report_interval = 1.0
test_hooks = true
"""


def lbtap(*args: str, url: str | None = None) -> subprocess.CompletedProcess:
    cmd = [h.LBTAP, *args] + (["--url", url] if url else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def lbtap_json(*args: str, url: str) -> tuple[int, dict]:
    r = lbtap(*args, "--json", url=url)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def plugged_ports(up, n: int) -> list[dict]:
    net = up.create("networks", name="storm")
    up.create("subnets", network_id=net["id"], cidr="10.70.0.0/24", ip_version=4)
    ports = [up.create("ports", network_id=net["id"]) for _ in range(n)]
    for p in ports:
        up.vif("plug", p["id"])  # persistent TAP, as for QEMU
    for p in ports:
        up.wait_status(p["id"], "ACTIVE")
    return ports


def test_rereport_storm_raises_an_alarm_naming_the_agent_and_its_devices(lbtap_up):
    up = lbtap_up(CONFIG, host="storm-host")
    ports = plugged_ports(up, 4)
    # The DHCP agent's port is ACTIVE too before the storm: it must be re-reported with
    # the others, however late it came up on a slow machine.
    wait_dhcp_port_active(up, {"id": ports[0]["network_id"]})
    taps = sorted(tap_name(p["id"]) for p in ports)
    code, body = lbtap_json("events", url=up.url)
    assert code == 0 and body["alarms"] == [], "a healthy start must not raise an alarm"
    assert up.metric("lbtap_duplicate_up_reports_total") == 0

    up.proc.send_signal(signal.SIGUSR1)  # test hook: re-report every device

    def alarmed():
        code, body = lbtap_json("events", "--host", "storm-host", url=up.url)
        return body if code == 1 and body["alarms"] else None

    body = h.wait_for(alarmed, interval=0.1, what="storm alarm")
    (alarm,) = body["alarms"]
    assert alarm["active"] and alarm["host"] == "storm-host" and alarm["reason"] == "duplicate_up"
    # Exactly the devices the agent had reported: our ports plus any other port ACTIVE on
    # the host (the in-process DHCP agent's port, when a subnet has DHCP).
    on_host = sorted(tap_name(p["id"]) for p in up.api.get("/v2.0/ports").json()["ports"]
                     if p["binding:host_id"] == "storm-host" and p["status"] == "ACTIVE")
    assert set(taps) <= set(on_host) and alarm["devices"] == on_host
    stored = [e for e in body["events"] if e["kind"] == "storm_alarm"]
    assert stored and stored[0]["host"] == "storm-host"
    assert up.metric("lbtap_storm_alarms_total", host="storm-host", reason="duplicate_up") == 1
    assert up.metric("lbtap_storm_alarms_active", host="storm-host", reason="duplicate_up") == 1
    assert up.metric("lbtap_duplicate_up_reports_total") == len(on_host)

    text = lbtap("events", "--host", "storm-host", url=up.url)
    assert text.returncode == 1 and "ACTIVE" in text.stdout and "storm-host" in text.stdout
    assert all(t in text.stdout for t in taps)
    # The agent's own metrics come through the server's /metrics in `lbtap up`.
    assert up.metric("lbtap_agent_devices", host="storm-host", state="wired") == len(on_host)
    assert up.metric("lbtap_agent_reports_sent_total", host="storm-host", kind="up") == 2 * len(on_host)


def test_events_and_explain_against_lbtap_up(lbtap_up):
    up = lbtap_up(CONFIG, host="ex-host")
    (active,) = plugged_ports(up, 1)
    net_id = active["network_id"]

    # ACTIVE: the timeline shows the whole path with this host (the report is recorded
    # right after the status is written: waited for), and explain exits 0.
    def timeline() -> list[tuple[str, str | None]] | None:
        _code, events = lbtap_json("events", "--port", active["id"], url=up.url)
        kinds = [(e["kind"], e["host"]) for e in events["events"]]
        return kinds if kinds and kinds[-1][0] == "active" else None

    kinds = h.wait_for(timeline, interval=0.1, what="the active report on the timeline")
    assert kinds == [("created", None), ("bound", "ex-host"), ("device_seen", "ex-host"), ("active", "ex-host")]
    r = lbtap("explain", active["id"], url=up.url)
    assert r.returncode == 0 and "verdict: active" in r.stdout, r.stdout + r.stderr

    # A port bound to this host whose tap never appeared.
    ghost = up.create("ports", network_id=net_id, **{"binding:host_id": "ex-host"})
    code, e = lbtap_json("explain", ghost["id"], url=up.url)
    assert code == 1 and e["verdict"] == "device_never_seen" and tap_name(ghost["id"]) in e["reason"]
    # Unbound, never plugged anywhere.
    loose = up.create("ports", network_id=net_id)
    code, e = lbtap_json("explain", loose["id"], url=up.url)
    assert code == 1 and e["verdict"] == "unbound"

    # Admin down: the agent reports it DOWN and explain says why.
    r = up.api.put(f"/v2.0/ports/{active['id']}", json={"port": {"admin_state_up": False}})
    assert r.status_code == 200
    up.wait_status(active["id"], "DOWN")

    def explained_down():
        code, e = lbtap_json("explain", active["id"], url=up.url)
        return (code, e) if e.get("timeline") and e["timeline"][-1]["kind"] == "down" else None

    code, e = h.wait_for(explained_down, interval=0.1, what="the down report on the timeline")
    assert code == 1 and e["verdict"] == "admin_down" and "admin_state_up" in e["remedy"]
    assert [t["kind"] for t in e["timeline"]][-2:] == ["admin_down", "down"]


def test_commands_give_one_line_errors_on_bad_input(lbtap_up):
    up = lbtap_up(CONFIG, host="bad-host")
    cases = [
        (("explain", "not-a-uuid"), "not a port id"),
        (("explain", "11112222-3333-4444-5555-666677778888"), "404"),
        (("events", "--port", "xyz"), "not a port id"),
        (("events", "--limit", "0"), "--limit"),
        (("events", "--kind", "bogus"), "400"),
    ]
    for args, expect in cases:
        for extra in ((), ("--json",)):
            r = lbtap(*args, *extra, url=up.url)
            assert r.returncode == 2, (args, r.stdout, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("lbtap: ") and expect in lines[0], (args, r.stderr)
            assert "Traceback" not in r.stderr
    r = lbtap("events", url=f"http://127.0.0.1:{h.free_port()}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "cannot reach" in r.stderr
    # The API itself answers NeutronErrors.
    r = httpx.get(f"{up.url}/v2.0/lbtap/events", params={"limit": "-1"})
    assert r.status_code == 400 and "NeutronError" in r.json()


def test_separate_agent_serves_its_own_metrics(deployment, netns_names):
    d = deployment('[server]\ntenant_network_types = ["local"]\n[agent]\nreport_interval = 1.0\n')
    d.start_server()
    host_ns = netns_names("h")
    h.sh("ip", "netns", "add", host_ns)
    port = h.free_port()
    d.start_agent("mA", host_ns, "--metrics-port", str(port))
    net = d.create("networks", name="n")
    p = d.create("ports", network_id=net["id"])
    d.vif("plug", p["id"], "mA", host_ns)
    d.wait_status(p["id"], "ACTIVE")

    def scraped():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return text if 'lbtap_agent_devices{host="mA",state="wired"} 1.0' in text else None

    text = h.wait_for(scraped, interval=0.2, what="agent metrics")
    assert 'lbtap_agent_reports_sent_total{host="mA",kind="up"} 1.0' in text
    assert 'lbtap_agent_process_rss_bytes{host="mA"}' in text
