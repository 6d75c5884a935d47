"""The monitoring subcommands through ``lbtap``'s real parser, on a FakeHost and a canned
Neutron API (a tiny HTTP server in a thread)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lbtap.cli.main import main
from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.host.base import Route
from lbtap.drivers.host.fake import FakeHost
from lbtap.monitoring import cli as mcli

NET = "5f1c2e3a-8b9d-4c0e-a1b2-c3d4e5f60718"
BR = bridge_name(NET)
PORT = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
MISSING = "11112222-3333-4444-5555-666677778888"


def run(*argv: str) -> int:
    return main(list(argv), _exit=lambda c: c)


@pytest.fixture
def fake(monkeypatch):
    h = FakeHost()
    h.create_physical("eth1")
    h.create_bridge(BR)
    h.enslave("eth1", BR)
    h.set_link(BR, up=True)
    h.add_address("eth1", "198.51.100.10/24")
    h.add_route(Route("default", "eth1", gateway="198.51.100.1"))
    h.add_address(BR, "198.51.100.10/24")
    h.create_tap(tap_name(PORT))
    h.enslave(tap_name(PORT), BR)
    h.close = lambda: None  # the CLI closes its driver; keep the fake inspectable
    monkeypatch.setattr(mcli, "_driver", lambda args: h)
    return h


API = {
    "/v2.0/agents": {"agents": [{"host": "node1", "agent_type": "Linux bridge agent", "alive": True,
                                 "heartbeat_timestamp": "2026-11-29 00:00:00",
                                 "configurations": {"devices": 1, "netns": None,
                                                    "process": {"cpu_percent": 1.5, "rss_bytes": 1048576}}},
                                {"host": "node2", "agent_type": "Linux bridge agent", "alive": False,
                                 "heartbeat_timestamp": "2026-11-28 00:00:00", "configurations": {}}]},
    "/v2.0/ports": {"ports": [
        {"id": PORT, "network_id": NET, "status": "ACTIVE", "binding:host_id": "node1", "tenant_id": "t1",
         "name": "vm1", "mac_address": "fa:16:3e:00:00:01", "admin_state_up": True, "device_id": "d1",
         "device_owner": "compute:nova", "dns_name": ""},
        {"id": MISSING, "network_id": NET, "status": "ACTIVE", "binding:host_id": "node1", "tenant_id": "t1",
         "name": "vm2", "device_owner": "compute:nova"}]},
    "/v2.0/networks": {"networks": [{"id": NET}]},
    "/metrics": "process_resident_memory_bytes 2e+07\n",
}


@pytest.fixture
def api_url():
    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = API.get(self.path.split("?")[0])
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


DEAD_URL = "http://127.0.0.1:9"  # discard port: nothing listens


def test_doctor_without_server_runs_host_checks_and_says_db_skipped(fake, capsys):
    assert run("doctor", "--url", DEAD_URL, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["db_checks"].startswith("skipped")
    assert "duplicate-address" in [f["check"] for f in out["findings"]]


def test_doctor_fix_repairs_seed_fault(fake, capsys):
    code = run("doctor", "--no-db", "--fix")
    text = capsys.readouterr().out
    assert "duplicate-address" in text and "[fixed]" in text
    assert fake.list_addresses("eth1") == [] and [a.cidr for a in fake.list_addresses(BR)] == ["198.51.100.10/24"]
    assert [r.ifname for r in fake.list_routes()] == [BR]
    assert code in (0, 1)  # br-netfilter of the test machine's namespace may add a finding


def test_doctor_db_checks_against_api(fake, api_url, capsys):
    assert run("doctor", "--url", api_url, "--host", "node1", "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["db_checks"] == "ran for host node1"
    missing = [f for f in out["findings"] if f["check"] == "db-active-tap-missing"]
    assert [f["devices"] for f in missing] == [[tap_name(MISSING)]]


def test_status(api_url, capsys):
    assert run("status", "--url", api_url) == 1  # node2 is dead
    text = capsys.readouterr().out
    assert "node1" in text and "1.0M" in text and "reachable" in text
    assert run("status", "--url", api_url, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["server"]["process"]["process_resident_memory_bytes"] == 2e7
    assert [a["alive"] for a in out["agents"]] == [True, False]


def test_status_unreachable_is_one_stderr_line(capsys):
    assert run("status", "--url", DEAD_URL) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lbtap: cannot reach the API")


def test_ports_table_has_seed_columns(api_url, capsys):
    assert run("ports", "--url", api_url) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["TENANT_ID", "ID", "NAME", "NETWORK_ID", "MAC_ADDRESS", "ADMIN_STATE_UP", "STATUS",
                      "DEVICE_ID", "DEVICE_OWNER", "DNS_NAME"]
    assert run("ports", "--url", api_url, "--json", "--host", "node1", "--status", "ACTIVE") == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_bridges_and_fdb(fake, capsys):
    assert run("bridges", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["bridge"] == BR and [i["name"] for i in row["interfaces"]] == ["eth1", tap_name(PORT)]
    assert run("fdb", BR, "--json") == 0
    assert {r["port"] for r in json.loads(capsys.readouterr().out)} == {"eth1", tap_name(PORT)}
    assert run("fdb", "nosuchbr") == 2
    assert capsys.readouterr().err.strip() == "lbtap: no bridge nosuchbr"


def test_stats_watch_bounded_by_count(fake, capsys):
    fake.bump_stats(tap_name(PORT), rx_packets=10)
    assert run("stats", "--watch", "0.01", "--count", "3", "--port", PORT, "--json") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    rounds = [json.loads(x) for x in lines]
    assert [d["device"] for d in rounds[-1]["devices"]] == [tap_name(PORT)]
    assert rounds[-1]["devices"][0]["rx_packets"] == 10


def test_stats_unknown_port_is_error(fake, capsys):
    assert run("stats", "--port", "nope") == 2
    assert "no device for port nope" in capsys.readouterr().err


def test_logs_diagnose_file(tmp_path, capsys):
    log = tmp_path / "agent.log"
    log.write_text("2026-11-29T00:00:00.000Z ERROR lbtap.agent failed device=tap1 op=add_address "
                   "error=add_address brq1: (17, 'File exists')\n")
    assert run("logs", "--diagnose", str(log)) == 1
    assert "address-exists" in capsys.readouterr().out
    assert run("logs", "--diagnose", str(tmp_path / "none.log")) == 2
    assert run("logs") == 2
