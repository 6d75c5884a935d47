"""dnsmasq in a throwaway DHCP namespace serving a real DHCP client (dhclient).

Topology: a host namespace with one bridge; the DHCP namespace
``qdhcp-<net>-lbtt<rand>`` joined to it by a veth (``ns-…`` inside, ``tap…`` on the
bridge); guest namespaces with the ports' MACs on the same bridge. dhclient runs with
its own config, lease file and a script that records what it was given, so nothing of
this machine's DHCP setup is used or changed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from lbtap.drivers.dhcp import DhcpNetwork, DnsmasqProcess, FixedIP, HostRoute, Port, Subnet
from lbtap.drivers.dhcp.naming import dhcp_device, dhcp_namespace, host_device
from lbtap.drivers.host import netns
from tests.fullstack.guests import dhclient
from tests.support import require_root, unique_netns

pytestmark = pytest.mark.timeout(120)

DHCP_IP = "10.20.0.2"
GW = "10.20.0.1"
DNS = "198.51.100.53"
MTU = 1450


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


class Env:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.net_id = uuid.uuid4().hex[:12]
        self.dhcp_port = "dh" + uuid.uuid4().hex[:10]
        self.h = unique_netns("dh")
        self.qdhcp = dhcp_namespace(self.net_id, f"lbtt{self.tag}")
        self.guests: list[str] = []
        # dnsmasq re-reads its files as an unprivileged user: not under pytest's 0700 tmp.
        self.root = Path(tempfile.mkdtemp(prefix="lbtt-dnsmasq-"))
        os.chmod(self.root, 0o755)
        self.dnsmasq: list[DnsmasqProcess] = []

    def setup(self) -> None:
        for ns in (self.h, self.qdhcp):
            netns.create(ns)
        sh("ip", "-n", self.h, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.h, "link", "set", "br0", "up")
        tap, inner = host_device(self.dhcp_port), dhcp_device(self.dhcp_port)
        sh("ip", "-n", self.h, "link", "add", tap, "type", "veth", "peer", "name", inner, "netns", self.qdhcp)
        sh("ip", "-n", self.h, "link", "set", tap, "master", "br0", "up")
        sh("ip", "-n", self.qdhcp, "addr", "add", f"{DHCP_IP}/24", "dev", inner)
        sh("ip", "-n", self.qdhcp, "link", "set", inner, "up")

    def add_guest(self, mac: str) -> str:
        g = unique_netns("dg")
        netns.create(g)
        self.guests.append(g)
        dev = "v" + g[-8:]
        sh("ip", "-n", self.h, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", g)
        sh("ip", "-n", self.h, "link", "set", dev, "master", "br0", "up")
        sh("ip", "-n", g, "link", "set", "eth0", "address", mac, "up")
        return g

    def dhclient(self, guest: str, timeout: float = 70.0) -> dict[str, str]:
        """Run dhclient in ``guest`` until it is BOUND; return the script's environment."""
        return dhclient(guest, self.root, timeout)

    def teardown(self) -> None:
        for d in self.dnsmasq:
            d.stop()
        for ns in [*self.guests, self.qdhcp, self.h]:
            netns.delete(ns)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def env():
    require_root()
    if shutil.which("dnsmasq") is None or shutil.which("dhclient") is None:
        pytest.skip("needs dnsmasq and dhclient (isc-dhcp-client)")
    e = Env()
    try:
        e.setup()
        yield e
    finally:
        e.teardown()


def _network(net_id: str, ports: list[Port]) -> DhcpNetwork:
    subnet = Subnet("s1", "10.20.0.0/24", 4, GW, (DNS,), (HostRoute("10.30.0.0/16", "10.20.0.254"),))
    return DhcpNetwork(net_id, (subnet,), tuple(ports), MTU)


def _port(n: int, dns_name: str = "") -> Port:
    return Port(f"port{n}-{uuid.uuid4().hex[:6]}", f"fa:16:3e:20:00:{n:02x}",
                (FixedIP("s1", f"10.20.0.{10 + n}"),), dns_name=dns_name)


def test_dnsmasq_serves_reloads_and_restarts(env: Env) -> None:
    p1 = _port(1)
    proc = DnsmasqProcess(_network(env.net_id, [p1]), namespace=env.qdhcp, interface=dhcp_device(env.dhcp_port),
                          state_dir=env.root / "state", dhcp_ips=[DHCP_IP])
    env.dnsmasq.append(proc)
    pid = proc.start()
    assert proc.is_alive() and proc.pid == pid

    got = env.dhclient(env.add_guest(p1.mac_address))
    assert got.get("new_ip_address") == "10.20.0.11"
    assert got.get("new_routers") == GW
    assert got.get("new_interface_mtu") == str(MTU)
    assert got.get("new_domain_name_servers") == DNS
    assert got.get("new_host_name") == "host-10-20-0-11"
    # Option 121 carries the host route and, after it, the default route.
    assert got.get("new_rfc3442_classless_static_routes") == "16 10 30 10 20 0 254 0 10 20 0 1"

    # A new port: files rewritten, SIGHUP, same process, and the new guest is served.
    p2 = _port(2, dns_name="web")
    delta = proc.reload([p1, p2])
    assert [x.ip for x in delta.added] == ["10.20.0.12"] and not delta.removed
    assert proc.pid == pid and proc.reloads == 1
    got2 = env.dhclient(env.add_guest(p2.mac_address))
    assert got2.get("new_ip_address") == "10.20.0.12"
    assert got2.get("new_host_name") == "web"
    assert proc.pid == pid
    # Unchanged ports: nothing rewritten, no signal.
    assert proc.reload([p1, p2]).empty and proc.reloads == 1

    # The served names resolve through dnsmasq's own DNS (addn-hosts), nothing else.
    assert "10.20.0.12" in (env.root / "state" / "addn_hosts").read_text()

    # A crash is noticed and repaired; the restarted server still serves.
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not proc.is_alive()
    assert proc.ensure_running() is True
    new_pid = proc.pid
    assert new_pid and new_pid != pid and proc.restarts == 1
    assert proc.ensure_running() is False
    p3 = _port(3)
    proc.reload([p1, p2, p3])
    assert env.dhclient(env.add_guest(p3.mac_address)).get("new_ip_address") == "10.20.0.13"

    # A restarted agent adopts the running server from the pid file and can stop it.
    adopter = DnsmasqProcess(proc.network, namespace=env.qdhcp, interface=dhcp_device(env.dhcp_port),
                             state_dir=env.root / "state", dhcp_ips=[DHCP_IP])
    assert adopter.is_alive() and adopter.pid == new_pid
    adopter.stop()
    deadline = time.monotonic() + 30
    while proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not proc.is_alive()
    assert not (env.root / "state").exists()


def test_update_restarts_only_when_the_command_line_changes(env: Env) -> None:
    p1 = _port(1)
    net = _network(env.net_id, [p1])
    proc = DnsmasqProcess(net, namespace=env.qdhcp, interface=dhcp_device(env.dhcp_port),
                          state_dir=env.root / "state2", dhcp_ips=[DHCP_IP])
    env.dnsmasq.append(proc)
    pid = proc.start()
    assert proc.update(net) == "unchanged"
    assert proc.update(DhcpNetwork(net.id, net.subnets, net.ports, 1400)) == "reloaded"
    assert proc.pid == pid
    assert "option:mtu,1400" in (env.root / "state2" / "opts").read_text()
    more = net.subnets + (Subnet("s2", "10.21.0.0/24", 4, "10.21.0.1"),)
    assert proc.update(DhcpNetwork(net.id, more, net.ports, 1400)) == "restarted"
    new_pid = proc.pid
    assert new_pid not in (None, pid)

    # After an agent restart: the same settings adopt the server as it is; other
    # settings (here the lease time) restart it.
    def adopter(lease_seconds: int) -> DnsmasqProcess:
        return DnsmasqProcess(proc.network, namespace=env.qdhcp, interface=dhcp_device(env.dhcp_port),
                              state_dir=env.root / "state2", dhcp_ips=[DHCP_IP], lease_seconds=lease_seconds)
    same = adopter(proc.lease_seconds)
    assert same.update(proc.network) == "unchanged" and same.pid == new_pid
    other = adopter(600)
    env.dnsmasq.append(other)
    assert other.update(proc.network) == "restarted"
    assert other.pid not in (None, new_pid) and not proc.is_alive()
    other.stop()
    assert not other.is_alive()


def test_start_fails_cleanly_without_the_interface(env: Env) -> None:
    from lbtap.drivers.host.errors import HostError

    proc = DnsmasqProcess(_network(env.net_id, []), namespace=env.qdhcp, interface="ns-missing",
                          state_dir=env.root / "state3")
    env.dnsmasq.append(proc)
    with pytest.raises(HostError):
        proc.start()
    assert not proc.is_alive()


def test_deleted_ports_address_goes_to_a_new_port_at_once(env: Env) -> None:
    """The old lease is released on reload; otherwise dnsmasq would refuse the address
    to the new MAC until the old lease expired (a day)."""
    p1 = _port(1)
    proc = DnsmasqProcess(_network(env.net_id, [p1]), namespace=env.qdhcp, interface=dhcp_device(env.dhcp_port),
                          state_dir=env.root / "state4", dhcp_ips=[DHCP_IP])
    env.dnsmasq.append(proc)
    pid = proc.start()
    assert env.dhclient(env.add_guest(p1.mac_address)).get("new_ip_address") == "10.20.0.11"
    assert p1.mac_address in (env.root / "state4" / "leases").read_text()

    successor = Port("succ-" + uuid.uuid4().hex[:6], "fa:16:3e:20:00:99", (FixedIP("s1", "10.20.0.11"),))
    delta = proc.reload([successor])
    assert [x.mac for x in delta.removed] == [p1.mac_address]
    assert env.dhclient(env.add_guest(successor.mac_address)).get("new_ip_address") == "10.20.0.11"
    assert proc.pid == pid
    leases = (env.root / "state4" / "leases").read_text()
    assert successor.mac_address in leases and p1.mac_address not in leases


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return None


def test_a_dnsmasq_we_spawned_leaves_no_zombie_whoever_stops_it(env: Env) -> None:
    """Stopped through another DnsmasqProcess that adopted it from the pid file (as a
    DhcpHost teardown of a network it lost track of does), the real dnsmasq this
    process spawned is reaped: no ``<defunct>`` entry stays behind. Same when it is
    stopped by the object that started it."""
    net = _network(env.net_id, [_port(1)])
    kw = dict(namespace=env.qdhcp, interface=dhcp_device(env.dhcp_port), state_dir=env.root / "state5",
              dhcp_ips=[DHCP_IP])
    proc = DnsmasqProcess(net, **kw)
    env.dnsmasq.append(proc)
    pid = proc.start()
    adopter = DnsmasqProcess(net, **kw)
    assert adopter.is_alive() and adopter.pid == pid
    adopter.stop()
    assert _state(pid) is None, f"dnsmasq {pid} left in state {_state(pid)}"
    assert not proc.is_alive()  # its Popen copes with the child reaped by someone else

    pid2 = proc.start()
    assert pid2 != pid
    proc.stop()
    assert _state(pid2) is None
