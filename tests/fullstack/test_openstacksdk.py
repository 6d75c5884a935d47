"""An unchanged openstacksdk drives a real `lbtap server` process on SQLite, PostgreSQL, MariaDB.

The server runs as a subprocess on a free 127.0.0.1 port with a throwaway state
directory and is stopped by PID at teardown. ``LbtapServer`` is also used by the API
fuzz test and mirrors what ``bench/api.py`` does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openstack
import pytest
from openstack import exceptions as os_exc
from openstack.network.v2 import network as _network
from openstack.network.v2 import subnet as _subnet

from tests.support import fresh_db_url

TOKENS = """
[tokens.t-admin]
roles = ["admin"]

[tokens.t-alice]
project_id = "alice"
roles = ["member"]

[tokens.t-bob]
project_id = "bob"
roles = ["member"]

[tokens.t-reader]
project_id = "alice"
roles = ["reader"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lbtap_command() -> list[str]:
    """The installed `lbtap` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "lbtap"
    if script.exists():
        return [str(script)]
    found = shutil.which("lbtap")
    if found:
        return [found]
    return [sys.executable, "-m", "lbtap.cli.main"]


class LbtapServer:
    """`lbtap server` as a child process; ``url`` once it answers ``GET /``."""

    def __init__(self, state_dir: Path, db_url: str | None = None, extra: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        self.log_path = state_dir / "server.log"
        argv = [*lbtap_command(), "server", "--state-dir", str(state_dir), "--bind", "127.0.0.1",
                "--port", str(self.port), "--log-level", "WARNING", *(extra or [])]
        if db_url:
            argv += ["--db-url", db_url]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lbtap server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"lbtap server did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def sdk_noauth(url: str):
    return openstack.connect(auth_type="none", network_endpoint_override=url + "/",
                             load_yaml_config=False, load_envvars=False)


def sdk_token(url: str, token: str):
    return openstack.connect(auth_type="admin_token", auth={"token": token, "endpoint": url + "/"},
                             network_endpoint_override=url + "/", load_yaml_config=False, load_envvars=False)


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mysql"])
def server(request, tmp_path_factory):
    state = tmp_path_factory.mktemp(f"srv-{request.param}")
    db_url = None if request.param == "sqlite" else fresh_db_url(request.param)
    (state / "tokens.toml").write_text(TOKENS)
    srv = LbtapServer(state, db_url)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    state = tmp_path_factory.mktemp("srv-token")
    (state / "tokens.toml").write_text(TOKENS)
    srv = LbtapServer(state, None, ["--auth-strategy", "token", "--token-file", str(state / "tokens.toml")])
    yield srv
    srv.stop()


def test_networks_subnets_ports_lifecycle(server):
    conn = sdk_noauth(server.url)
    net = conn.network.create_network(name="sdk-net", project_id="p1")
    assert net.status == "ACTIVE" and net.project_id == "p1"
    sub = conn.network.create_subnet(network_id=net.id, cidr="10.30.0.0/24", ip_version=4, name="sdk-sub",
                                     project_id="p1")
    assert sub.gateway_ip == "10.30.0.1"
    port = conn.network.create_port(network_id=net.id, name="sdk-port", device_owner="compute:nova",
                                    project_id="p1")
    assert port.status == "DOWN" and port.binding_vif_type == "unbound"
    assert port.fixed_ips[0]["subnet_id"] == sub.id

    assert conn.network.get_network(net.id).subnet_ids == [sub.id]
    assert [p.id for p in conn.network.ports(network_id=net.id)] == [port.id]
    assert [p.id for p in conn.network.ports(device_owner="compute:nova", network_id=net.id)] == [port.id]
    assert conn.network.find_network("sdk-net").id == net.id

    port = conn.network.update_port(port, name="renamed", admin_state_up=False)
    assert port.name == "renamed" and port.is_admin_state_up is False
    net = conn.network.update_network(net, name="sdk-net2")
    sub = conn.network.update_subnet(sub, dns_nameservers=["10.30.0.1"])
    assert sub.dns_nameservers == ["10.30.0.1"]

    conn.network.delete_port(port)
    assert conn.network.find_port(port.id) is None
    with pytest.raises(os_exc.ResourceNotFound):
        conn.network.get_port(port.id)
    conn.network.delete_subnet(sub)
    conn.network.delete_network(net)
    with pytest.raises(os_exc.NotFoundException):
        conn.network.delete_network(net, ignore_missing=False)


def test_bulk_create_and_paginate(server):
    conn = sdk_noauth(server.url)
    nets = list(_network.Network.bulk_create(conn.network, [{"name": f"bulk-{i:02d}", "project_id": "p1"}
                                                                for i in range(7)]))
    assert len(nets) == 7
    subs = list(_subnet.Subnet.bulk_create(conn.network, [
        {"network_id": nets[0].id, "cidr": "10.31.0.0/24", "ip_version": 4, "project_id": "p1"},
        {"network_id": nets[1].id, "cidr": "10.32.0.0/24", "ip_version": 4, "project_id": "p1"}]))
    assert {s.network_id for s in subs} == {nets[0].id, nets[1].id}
    assert {s.id for s in conn.network.subnets(limit=1)} >= {s.id for s in subs}
    assert [s.network_id for s in conn.network.subnets(cidr="10.32.0.0/24")] == [nets[1].id]
    ports = list(conn.network.create_ports([{"network_id": nets[0].id, "name": f"bp{i}", "project_id": "p1"}
                                                for i in range(25)]))
    assert len({p.mac_address for p in ports}) == 25
    assert len({p.fixed_ips[0]["ip_address"] for p in ports}) == 25

    # The SDK follows networks_links/ports_links "next" hrefs page by page.
    paged = [n.name for n in conn.network.networks(limit=3, sort_key="name", sort_dir="asc")
             if n.name.startswith("bulk-")]
    assert paged == [f"bulk-{i:02d}" for i in range(7)]
    paged_ports = list(conn.network.ports(network_id=nets[0].id, limit=4))
    assert sorted(p.id for p in paged_ports) == sorted(p.id for p in ports)
    for p in ports:
        conn.network.delete_port(p)
    for n in nets:
        conn.network.delete_network(n)


def test_bad_input_surfaces_as_sdk_errors(server):
    conn = sdk_noauth(server.url)
    net = conn.network.create_network(name="bad-input", project_id="p1")
    with pytest.raises(os_exc.BadRequestException):
        conn.network.create_subnet(network_id=net.id, cidr="10.33.0.0/33", ip_version=4, project_id="p1")
    with pytest.raises(os_exc.BadRequestException):
        conn.network.create_port(network_id=net.id, mac_address="not-a-mac", project_id="p1")
    assert list(conn.network.ports(network_id=net.id)) == []
    conn.network.delete_network(net)


def test_token_auth_isolation_and_roles(token_server):
    url = token_server.url
    admin, alice, bob, reader = (sdk_token(url, t) for t in ("t-admin", "t-alice", "t-bob", "t-reader"))
    net = alice.network.create_network(name="alice-net")
    assert net.project_id == "alice"
    assert bob.network.find_network(net.id) is None
    with pytest.raises(os_exc.ResourceNotFound):
        bob.network.get_network(net.id)
    assert reader.network.get_network(net.id).name == "alice-net"
    with pytest.raises(os_exc.ForbiddenException):
        reader.network.create_network(name="nope")
    with pytest.raises(os_exc.ForbiddenException):
        alice.network.create_network(name="prov", provider_network_type="vxlan")
    port = alice.network.create_port(network_id=net.id)
    with pytest.raises(os_exc.ForbiddenException):
        alice.network.update_port(port, binding_host_id="h1")
    assert admin.network.update_port(port, binding_host_id="h1").binding_host_id == "h1"
    assert {n.id for n in admin.network.networks()} >= {net.id}
    bad = sdk_token(url, "wrong")
    with pytest.raises(os_exc.HttpException) as info:
        list(bad.network.networks())
    assert info.value.status_code == 401
