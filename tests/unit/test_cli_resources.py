"""`lbtap network|subnet|port ...` against a real HTTP server (uvicorn in a thread)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from lbtap.cli.main import main
from lbtap.config import Settings
from lbtap.server.app import create_app
from lbtap.server.db.engine import create_db_engine, upgrade
from lbtap.server.services import Services

PORT_COLUMNS = ["tenant_id", "id", "name", "network_id", "mac_address", "admin_state_up", "status",
                "device_id", "device_owner", "dns_name"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    state = tmp_path_factory.mktemp("cli")
    settings = Settings(state_dir=str(state))
    engine = create_db_engine(settings.db_url)
    upgrade(engine)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, Services(engine, settings)), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)
    engine.dispose()


def run(capsys, *argv):
    code = main(list(argv), _exit=lambda c: c)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, url, *argv):
    code, out, err = run(capsys, *argv, "--url", url, "--project", "cli", "--json")
    assert code == 0, err
    return json.loads(out)


def test_network_subnet_port_lifecycle(capsys, url):
    net = run_json(capsys, url, "network", "create", "--name", "cli-net")
    sub = run_json(capsys, url, "subnet", "create", "--network", net["id"], "--cidr", "10.20.0.0/24",
                   "--name", "cli-sub", "--dns-nameserver", "10.20.0.1")
    assert sub["dns_nameservers"] == ["10.20.0.1"]
    port = run_json(capsys, url, "port", "create", "--network", net["id"], "--name", "p1",
                    "--fixed-ip", f"subnet={sub['id']},ip-address=10.20.0.50", "--device-owner", "compute:nova")
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.20.0.50"}]
    updated = run_json(capsys, url, "port", "update", port["id"], "--name", "p1b", "--set", "admin_state_up=false")
    assert updated["name"] == "p1b" and updated["admin_state_up"] is False
    shown = run_json(capsys, url, "port", "show", port["id"])
    assert shown["name"] == "p1b"
    assert run_json(capsys, url, "network", "show", "cli-net")["id"] == net["id"]  # by name
    listed = run_json(capsys, url, "port", "list", "--filter", f"network_id={net['id']}")
    assert [p["id"] for p in listed] == [port["id"]]
    code, out, err = run(capsys, "port", "delete", port["id"], "--url", url)
    assert code == 0 and out == ""
    assert run_json(capsys, url, "port", "list", "--filter", f"network_id={net['id']}") == []


def test_port_list_table_has_the_seed_columns(capsys, url):
    net = run_json(capsys, url, "network", "create", "--name", "tbl")
    run_json(capsys, url, "port", "create", "--network", net["id"], "--name", "tbl-port")
    code, out, err = run(capsys, "port", "list", "--url", url, "--filter", f"network_id={net['id']}")
    assert code == 0, err
    lines = out.splitlines()
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    assert header == PORT_COLUMNS
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[2] == "tbl-port" and row[3] == net["id"] and row[6] == "DOWN"


def test_list_follows_pagination(capsys, url):
    for i in range(5):
        run_json(capsys, url, "network", "create", "--name", f"page-{i}")
    names = [n["name"] for n in run_json(capsys, url, "network", "list", "--filter", "name=page-0",
                                         "--filter", "name=page-3", "--sort-key", "name")]
    assert names == ["page-0", "page-3"]
    one_page = run_json(capsys, url, "network", "list", "--limit", "2", "--sort-key", "name")
    assert len(one_page) == 2


def test_errors_are_one_line_and_nonzero(capsys, url, monkeypatch):
    code, out, err = run(capsys, "port", "show", "00000000-0000-0000-0000-000000000000", "--url", url)
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and "404 PortNotFound" in err
    code, _, err = run(capsys, "network", "create", "--set", "mtu=huge", "--url", url)
    assert code == 1 and err.startswith("lbtap: 400")
    code, _, err = run(capsys, "network", "update", "x", "--url", url)
    assert code == 2 and "nothing to update" in err
    code, _, err = run(capsys, "network", "create", "--set", "novalue", "--url", url)
    assert code == 2
    code, _, err = run(capsys, "network", "list", "--url", "http://127.0.0.1:1")
    assert code == 1 and "cannot reach" in err and err.count("\n") == 1
    for _ in range(2):
        run_json(capsys, url, "network", "create", "--name", "dup")
    code, _, err = run(capsys, "network", "show", "dup", "--url", url)
    assert code == 1 and "2 networks are named 'dup'" in err
    code, _, err = run(capsys, "network", "delete", "no-such-name", "--url", url)
    assert code == 1 and "no network has the id or name" in err
    monkeypatch.setenv("LBTAP_URL", url)
    code, out, _ = run(capsys, "network", "list", "--json")
    assert code == 0 and isinstance(json.loads(out), list)
