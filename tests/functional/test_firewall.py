"""Firewall driver with real packets: guests in namespaces joined by a bridge.

Each test builds a throwaway host namespace (bridge ``br0``, or one ``brq…`` bridge per
network for the conntrack-zone tests) and guest namespaces named ``lbtt-...``, each
guest's ``eth0`` being the peer of a host-side ``tap*``; only those namespaces are
deleted afterwards, also on failure. Frames are crafted with
AF_PACKET sockets opened inside the guest namespaces (no scapy needed).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time

import pytest

from lbtap.domain.naming import bridge_name
from lbtap.drivers.firewall import EGRESS, INGRESS, FirewallDriver, PortFilter, RemoteGroups, Rule
from lbtap.drivers.firewall.nft import nft_available
from lbtap.drivers.firewall.render import render_full
from lbtap.drivers.host import netns
from tests.support import require_root, unique_netns

ETH_P_ALL = 0x0003
# What must get through is waited for this long: a loaded CI machine is slow, and the
# wait ends as soon as it arrives. What must NOT get through is given the short windows
# of the refusal helpers below: a slow machine can only make those checks pass.
PATIENCE = 20.0


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], check=True, capture_output=True)


class Guest:
    def __init__(self, ns: str, tap: str, mac: str, addr: str):
        self.ns, self.tap, self.mac, self.ip = ns, tap, mac, addr


class Topology:
    """A host namespace with bridge br0 and guests plugged into it by veth pairs."""

    def __init__(self, tag: str):
        self.tag = tag
        self.created: list[str] = []
        self.host = self._ns("h")
        # IPv6 off: its autoconfiguration chatter would blur the drop counters.
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            sysctl(self.host, key, "1")
        ip("link", "add", "br0", "type", "bridge", ns=self.host)
        ip("link", "set", "br0", "up", ns=self.host)
        self.guests: dict[str, Guest] = {}

    def _ns(self, role: str) -> str:
        name = unique_netns(f"{self.tag}{role}")
        netns.create(name)
        self.created.append(name)
        return name

    def add_bridge(self, name: str) -> None:
        ip("link", "add", name, "type", "bridge", ns=self.host)
        ip("link", "set", name, "up", ns=self.host)

    def add_guest(self, tap: str, mac: str, addr: str, prefix: int = 24, bridge: str = "br0") -> Guest:
        g = self._ns("g")
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            sysctl(g, key, "1")
        ip("link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", g, ns=self.host)
        ip("link", "set", tap, "master", bridge, "up", ns=self.host)
        ip("link", "set", "eth0", "address", mac, "up", ns=g)
        ip("link", "set", "lo", "up", ns=g)
        ip("addr", "add", f"{addr}/{prefix}", "dev", "eth0", ns=g)
        guest = Guest(g, tap, mac, addr)
        self.guests[tap] = guest
        return guest

    def close(self) -> None:
        for name in self.created:
            netns.delete(name)


# -- frames --------------------------------------------------------------------------
def _mac(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 40001, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + hdr + udp


def udp6_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    src, dst = socket.inet_pton(socket.AF_INET6, src_ip), socket.inet_pton(socket.AF_INET6, dst_ip)
    udp = struct.pack("!HHHH", 40000, 40001, 8 + len(payload), 0) + payload
    # IPv6 forbids a zero UDP checksum (conntrack would call the packet invalid).
    pseudo = src + dst + struct.pack("!I3xB", len(udp), 17)
    udp = udp[:6] + struct.pack("!H", _csum(pseudo + udp) or 0xFFFF) + udp[8:]
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, src, dst)
    return _mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + hdr + udp


def arp_reply(sha: str, spa: str, tha: str, tpa: str, src_mac: str | None = None) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, _mac(sha), socket.inet_aton(spa),
                       _mac(tha), socket.inet_aton(tpa))
    return _mac(tha) + _mac(src_mac or sha) + b"\x08\x06" + body


def send_frame(g: Guest, frame: bytes) -> None:
    with netns.in_namespace(g.ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with s:
        s.bind(("eth0", 0))
        s.send(frame)


class Sniffer:
    """Receives every frame on a guest's eth0 from the moment it is created."""

    def __init__(self, g: Guest):
        with netns.in_namespace(g.ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("eth0", 0))

    def seen(self, marker: bytes, timeout: float = PATIENCE) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                return False
            if marker in data:
                return True
        return False

    def not_seen(self, marker: bytes, window: float = 0.7) -> bool:
        """True if no frame with ``marker`` arrives within ``window``."""
        return not self.seen(marker, window)

    def close(self) -> None:
        self.sock.close()


def tcp_connects(client: Guest, server: Guest, port: int, timeout: float = PATIENCE, sport: int | None = None) -> bool:
    with netns.in_namespace(client.ns):
        c = socket.socket()
    c.settimeout(timeout)
    try:
        if sport is not None:
            c.bind((client.ip, sport))
        c.connect((server.ip, port))
        c.sendall(b"ping")
        return c.recv(4) == b"pong"
    except OSError:
        return False
    finally:
        c.close()


def eventually(pred, timeout: float = PATIENCE):
    """``pred()`` once truthy (polled until ``timeout``), else its last value."""
    deadline = time.monotonic() + timeout
    while not (v := pred()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return v


def tcp_refused(client: Guest, server: Guest, port: int, sport: int | None = None) -> bool:
    """True if no connection is made within 2 s."""
    return not tcp_connects(client, server, port, timeout=2.0, sport=sport)


class _TcpServer:
    """A TCP server in a guest; each accepted connection is served by ``_serve_conn``
    on its own thread until ``close``."""

    def __init__(self, g: Guest, port: int):
        with netns.in_namespace(g.ns):
            self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((g.ip, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve_conn(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop = True
        for t in self.threads:
            t.join(2)
        self.sock.close()


def pings(src: Guest, dst: Guest, wait: float = PATIENCE) -> bool:
    """One echo request, answered within ``wait``."""
    r = subprocess.run(["ip", "netns", "exec", src.ns, "ping", "-c1", f"-W{wait:g}", dst.ip], capture_output=True)
    return r.returncode == 0


def ping_blocked(src: Guest, dst: Guest) -> bool:
    """True if one echo request gets no answer within 1 s."""
    return not pings(src, dst, wait=1)


class Listener(_TcpServer):
    """Answers "pong" to every connection."""

    def _serve_conn(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(PATIENCE)
            try:
                conn.recv(4)
                conn.sendall(b"pong")
            except OSError:
                pass


class EchoServer(_TcpServer):
    """Echoes everything back until the client closes."""

    def _serve_conn(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self.stop:
                try:
                    data = conn.recv(64)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)


class Flow:
    """An established TCP connection from a guest; ``alive()`` is one echo round trip."""

    def __init__(self, client: Guest, server: Guest, port: int, sport: int | None = None):
        with netns.in_namespace(client.ns):
            self.sock = socket.socket()
        self.sock.settimeout(PATIENCE)
        if sport is not None:
            self.sock.bind((client.ip, sport))
        self.sock.connect((server.ip, port))
        self.n = 0

    def alive(self, timeout: float = PATIENCE) -> bool:
        self.n += 1
        msg = f"m{self.n:05d}".encode()
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = self.sock.recv(len(msg) - len(got))
                if not chunk:
                    return False
                got += chunk
        except OSError:
            return False
        return got == msg

    def dead(self) -> bool:
        """True if an echo round trip does not complete within 1.5 s."""
        return not self.alive(1.5)

    def close(self) -> None:
        self.sock.close()


def conntrack_entries(ns: str) -> list:
    """Original-direction tuples of the IPv4 conntrack entries of namespace ``ns``."""
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

    from lbtap.drivers.firewall.conntrack import parse_entry

    with netns.in_namespace(ns):
        ct = NFCTSocket(nfgen_family=socket.AF_INET)
        try:
            return [parse_entry(m, 4)[0] for m in ct.dump()]
        finally:
            ct.close()


# -- fixtures -------------------------------------------------------------------------
A_MAC, B_MAC, C_MAC = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c"
A_IP, B_IP, C_IP = "10.20.0.10", "10.20.0.11", "10.20.0.12"
ALLOW_EGRESS = (Rule(EGRESS), Rule(EGRESS, "IPv6"))


def stateful_host(name: str) -> Topology:
    """A fresh host namespace where bridged traffic can be filtered statefully (nft and
    br_netfilter), or a skip saying what is missing."""
    require_root()
    reason = nft_available()
    if reason:
        pytest.skip(reason)
    t = Topology(name)
    if not t.created or not _br_netfilter(t.host):
        t.close()
        pytest.skip("br_netfilter is not available (no /proc/sys/net/bridge): no stateful bridged filtering")
    return t


@pytest.fixture
def topo():
    t = stateful_host("fw")
    try:
        t.add_guest("tapa", A_MAC, A_IP)
        t.add_guest("tapb", B_MAC, B_IP)
        t.add_guest("tapc", C_MAC, C_IP)
        yield t
    finally:
        t.close()


def _br_netfilter(ns: str) -> bool:
    with netns.in_namespace(ns):
        try:
            open("/proc/sys/net/bridge/bridge-nf-call-iptables").close()
            return True
        except OSError:
            return False


@pytest.fixture
def fw(topo):
    d = FirewallDriver(topo.host)
    yield d
    d.close()


def port(g: Guest, rules=ALLOW_EGRESS, **kw) -> PortFilter:
    return PortFilter(tap=g.tap, mac=g.mac, ips=(g.ip,), rules=tuple(rules), **kw)


def open_ports(topo) -> list[PortFilter]:
    """All three guests filtered, ingress open to everything (isolates anti-spoofing)."""
    everything = (*ALLOW_EGRESS, Rule(INGRESS), Rule(INGRESS, "IPv6"))
    return [port(g, everything) for g in topo.guests.values()]


# -- anti-spoofing --------------------------------------------------------------------
def test_spoofed_source_mac_is_dropped_and_counted(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    fw.apply(open_ports(topo))
    sniff = Sniffer(b)
    try:
        send_frame(a, udp_frame(A_MAC, B_MAC, A_IP, B_IP, b"genuine-mac"))
        assert sniff.seen(b"genuine-mac"), "control frame with the port's own MAC must pass"
        before = fw.drop_counters()["spoof_mac"]
        send_frame(a, udp_frame("fa:16:3e:00:00:99", B_MAC, A_IP, B_IP, b"spoofed-mac"))
        assert eventually(lambda: fw.drop_counters()["spoof_mac"] > before)
        assert sniff.not_seen(b"spoofed-mac")
        assert fw.drop_counters()["spoof_mac"] == before + 1
    finally:
        sniff.close()


def test_spoofed_source_ip_is_dropped_and_counted(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    fw.apply(open_ports(topo))
    sniff = Sniffer(b)
    try:
        before = fw.drop_counters()["spoof_ip"]
        send_frame(a, udp_frame(A_MAC, B_MAC, C_IP, B_IP, b"spoofed-ip"))
        assert eventually(lambda: fw.drop_counters()["spoof_ip"] > before)
        assert sniff.not_seen(b"spoofed-ip")
        assert fw.drop_counters()["spoof_ip"] == before + 1
        send_frame(a, udp_frame(A_MAC, B_MAC, A_IP, B_IP, b"own-ip"))
        assert sniff.seen(b"own-ip")
    finally:
        sniff.close()


def test_arp_reply_claiming_another_guests_ip_is_dropped_and_counted(topo, fw):
    a, c = topo.guests["tapa"], topo.guests["tapc"]
    fw.apply(open_ports(topo))
    sniff = Sniffer(c)
    try:
        before = fw.drop_counters()["spoof_arp"]
        # A claims to be B (B's IP at A's MAC): classic ARP cache poisoning of C.
        send_frame(a, arp_reply(A_MAC, B_IP, C_MAC, C_IP))
        assert eventually(lambda: fw.drop_counters()["spoof_arp"] > before)
        assert sniff.not_seen(socket.inet_aton(B_IP) + _mac(C_MAC))
        assert fw.drop_counters()["spoof_arp"] == before + 1
        send_frame(a, arp_reply(A_MAC, A_IP, C_MAC, C_IP))
        assert sniff.seen(_mac(A_MAC) + socket.inet_aton(A_IP) + _mac(C_MAC)), "A's truthful ARP reply must pass"
    finally:
        sniff.close()


def test_allowed_address_pair_ip_and_cidr_pass(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    ports = open_ports(topo)
    ports[0] = port(a, ports[0].rules, allowed_address_pairs=(("10.20.0.50", None), ("10.30.0.0/24", None)))
    fw.apply(ports)
    sniff = Sniffer(b)
    try:
        send_frame(a, udp_frame(A_MAC, B_MAC, "10.20.0.50", B_IP, b"pair-ip"))
        assert sniff.seen(b"pair-ip")
        send_frame(a, udp_frame(A_MAC, B_MAC, "10.30.0.77", B_IP, b"pair-cidr"))
        assert sniff.seen(b"pair-cidr")
        send_frame(a, udp_frame(A_MAC, B_MAC, "10.20.0.51", B_IP, b"not-a-pair"))
        assert sniff.not_seen(b"not-a-pair")
        # Removing the pair (an incremental update) closes it again.
        fw.update_port(port(a, ports[0].rules))
        send_frame(a, udp_frame(A_MAC, B_MAC, "10.20.0.50", B_IP, b"pair-gone"))
        assert sniff.not_seen(b"pair-gone")
    finally:
        sniff.close()


def test_ipv6_sources_are_checked_too(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    ports = open_ports(topo)
    ports[0] = PortFilter(a.tap, a.mac, (A_IP, "2001:db8::a"), rules=ports[0].rules)
    fw.apply(ports)
    sniff = Sniffer(b)
    try:
        send_frame(a, udp6_frame(A_MAC, B_MAC, "2001:db8::a", "2001:db8::b", b"own-v6"))
        assert sniff.seen(b"own-v6")
        send_frame(a, udp6_frame(A_MAC, B_MAC, "fe80::1234", "fe80::b", b"link-local"))
        assert sniff.seen(b"link-local")
        before = fw.drop_counters()["spoof_ip"]
        send_frame(a, udp6_frame(A_MAC, B_MAC, "2001:db8::b", "2001:db8::b", b"spoofed-v6"))
        assert eventually(lambda: fw.drop_counters()["spoof_ip"] > before)
        assert sniff.not_seen(b"spoofed-v6")
        assert fw.drop_counters()["spoof_ip"] == before + 1
    finally:
        sniff.close()


@pytest.mark.parametrize("kw", [{"port_security_enabled": False}, {"device_owner": "network:dhcp"}])
def test_no_anti_spoofing_without_port_security_or_for_network_ports(topo, fw, kw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    ports = open_ports(topo)
    ports[0] = port(a, (), **kw)
    fw.apply(ports)
    sniff = Sniffer(b)
    try:
        send_frame(a, udp_frame("fa:16:3e:00:00:99", B_MAC, "10.99.0.1", B_IP, b"unfiltered"))
        assert sniff.seen(b"unfiltered")
    finally:
        sniff.close()


# -- security groups ------------------------------------------------------------------
def test_ingress_denied_by_default_opened_by_rules_and_closed_again(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    listener = Listener(b, 8080)
    try:
        fw.apply([port(a), port(b)])
        assert tcp_refused(a, b, 8080)
        assert ping_blocked(a, b)
        assert fw.drop_counters()["ingress_drop"] >= 2

        opened = (*ALLOW_EGRESS, Rule(INGRESS, protocol="tcp", port_range_min=8080, port_range_max=8080),
                  Rule(INGRESS, protocol="icmp", remote_ip_prefix="10.20.0.0/24"))
        fw.update_port(port(b, opened))
        assert tcp_connects(a, b, 8080)
        assert pings(a, b)

        fw.update_port(port(b))
        assert tcp_refused(a, b, 8080)
        assert ping_blocked(a, b)
    finally:
        listener.close()


def test_icmp_type_rules_match_the_type(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    fw.apply([port(a), port(b, (*ALLOW_EGRESS, Rule(INGRESS, protocol="icmp", port_range_min=13)))])
    assert ping_blocked(a, b), "a timestamp rule does not let an echo request in"
    fw.update_port(port(b, (*ALLOW_EGRESS, Rule(INGRESS, protocol="icmp", port_range_min=8, port_range_max=0))))
    assert pings(a, b)


def test_remote_group_rule_follows_membership(topo, fw):
    a, b, c = (topo.guests[t] for t in ("tapa", "tapb", "tapc"))
    listener = Listener(b, 8081)
    try:
        rules = (*ALLOW_EGRESS, Rule(INGRESS, protocol="tcp", port_range_min=8081, port_range_max=8081,
                                     remote_group_id="web"))
        fw.apply([port(a), port(b, rules), port(c)], RemoteGroups.of({"web": [A_IP]}))
        assert tcp_connects(a, b, 8081)
        assert tcp_refused(c, b, 8081)
        fw.update_groups(RemoteGroups.of({"web": [C_IP]}))
        assert tcp_connects(c, b, 8081)
        assert tcp_refused(a, b, 8081)
    finally:
        listener.close()


def test_replies_to_allowed_egress_come_back(topo, fw):
    """A has no ingress rule at all and B no egress rule: only conntrack lets the
    replies of A's connection to B through both."""
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    listener = Listener(b, 9090)
    try:
        only_in = (Rule(INGRESS, protocol="tcp", port_range_min=9090, port_range_max=9090),)
        fw.apply([port(a, (Rule(EGRESS, protocol="tcp"),)), port(b, only_in)])
        assert tcp_connects(a, b, 9090)
        # ...and nothing unsolicited goes the other way.
        listener2 = Listener(a, 9091)
        try:
            assert tcp_refused(b, a, 9091)
        finally:
            listener2.close()
    finally:
        listener.close()


# -- conntrack cleanup: what the new rules forbid stops, also mid-flow ------------------
def _tcp_in(port_no: int, **kw) -> Rule:
    return Rule(INGRESS, protocol="tcp", port_range_min=port_no, port_range_max=port_no, **kw)


class _NoCleanup:
    def flush(self, flushes) -> int:
        return 0


@pytest.mark.parametrize("cleanup", [True, False], ids=["with-cleanup", "control-without-cleanup"])
def test_deleting_the_rule_ends_an_established_flow(topo, cleanup):
    """The control case shows why the cleanup is needed: without it the flow accepted
    under the old rule goes on (conntrack's "established" is accepted first)."""
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    fw = FirewallDriver(topo.host, conntrack=None if cleanup else _NoCleanup())
    server = EchoServer(b, 8090)
    flow = None
    try:
        fw.apply([port(a), port(b, (*ALLOW_EGRESS, _tcp_in(8090)))])
        flow = Flow(a, b, 8090)
        assert flow.alive() and flow.alive()
        fw.update_ports([port(b)])  # the ingress rule is gone
        assert flow.dead() if cleanup else flow.alive()
        assert tcp_refused(a, b, 8090), "new connections are refused either way"
    finally:
        if flow:
            flow.close()
        server.close()
        fw.close()


def test_a_flow_still_allowed_survives_another_rules_deletion(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    server = EchoServer(b, 8090)
    kept = None
    try:
        fw.apply([port(a), port(b, (*ALLOW_EGRESS, _tcp_in(8090), _tcp_in(8091)))])
        kept = Flow(a, b, 8090)
        assert kept.alive()
        fw.update_ports([port(b, (*ALLOW_EGRESS, _tcp_in(8090)))])
        assert fw.last_flushes and fw.last_flushes[-1].tap == "tapb"
        assert kept.alive(), "the 8090 rule still allows this flow: its entry must stay"
        assert any(e.dst == B_IP and e.dport == 8090 for e in conntrack_entries(topo.host))
    finally:
        if kept:
            kept.close()
        server.close()


def test_removed_remote_group_member_loses_its_established_flow(topo, fw):
    a, b, c = (topo.guests[t] for t in ("tapa", "tapb", "tapc"))
    server = EchoServer(b, 8092)
    flows = []
    try:
        fw.apply([port(a), port(b, (*ALLOW_EGRESS, _tcp_in(8092, remote_group_id="web"))), port(c)],
                 RemoteGroups.of({"web": [A_IP, C_IP]}))
        flows = [Flow(a, b, 8092), Flow(c, b, 8092)]
        assert all(f.alive() for f in flows)
        fw.update_groups(RemoteGroups.of({"web": [C_IP]}))
        assert flows[0].dead(), "A left the group: its flow must stop"
        assert flows[1].alive(), "C is still a member"
        # A member joining is a set element only: nothing is flushed.
        fw.last_flushes = ()
        fw.update_groups(RemoteGroups.of({"web": [C_IP, A_IP]}))
        assert fw.last_flushes == () and fw.last_script.startswith("add element inet lbtap g4-web")
    finally:
        for f in flows:
            f.close()
        server.close()


def test_removing_a_port_deletes_its_conntrack_entries(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    server = EchoServer(b, 8093)
    flow = None
    try:
        fw.apply([port(a), port(b, (*ALLOW_EGRESS, _tcp_in(8093)))])
        flow = Flow(a, b, 8093)
        assert flow.alive()
        assert any(e.dst == B_IP for e in conntrack_entries(topo.host))
        fw.remove_port("tapb")
        assert not any(B_IP in (e.src, e.dst) for e in conntrack_entries(topo.host))
    finally:
        if flow:
            flow.close()
        server.close()


# -- conntrack zones: two networks on one host with the same addresses -----------------
NET_A, NET_B = "aaaaaaaa-1111-4000-8000-00000000000a", "bbbbbbbb-2222-4000-8000-00000000000b"
CLIENT_IP, SERVER_IP = "10.40.0.10", "10.40.0.11"


@pytest.fixture
def two_nets():
    """Networks A and B, each a bridge named as the agent names it, each with a client
    and a server guest; both networks use the very same addresses (and ports later)."""
    t = stateful_host("fz")
    try:
        guests = {}
        for net, x in ((NET_A, "a"), (NET_B, "b")):
            t.add_bridge(bridge_name(net))
            guests[x] = (t.add_guest(f"tap{x}c", f"fa:16:3e:00:0{x}:01", CLIENT_IP, bridge=bridge_name(net)),
                         t.add_guest(f"tap{x}s", f"fa:16:3e:00:0{x}:02", SERVER_IP, bridge=bridge_name(net)))
        yield t, guests
    finally:
        t.close()


def _zone_ports(guests, a_server_rules, b_server_rules, zoned: bool = True) -> list[PortFilter]:
    (ac, as_), (bc, bs) = guests["a"], guests["b"]
    # Each port its own group: a rule change of one server is not the other's.
    mk = lambda g, rules, net: PortFilter(g.tap, g.mac, (g.ip,), rules=tuple(rules),  # noqa: E731
                                          security_groups=(f"sg-{g.tap}",), network_id=net if zoned else None)
    return [mk(ac, ALLOW_EGRESS, NET_A), mk(as_, a_server_rules, NET_A),
            mk(bc, ALLOW_EGRESS, NET_B), mk(bs, b_server_rules, NET_B)]


def _syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    """Bytes of a TCP packet's IPv4 addresses and ports (contiguous without IP options)."""
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


@pytest.mark.parametrize("zoned", [True, False], ids=["zones", "control-without-zones"])
def test_an_established_flow_of_one_network_opens_nothing_in_the_other(two_nets, zoned):
    """A: client:40000 -> server:8080 allowed and established. B: same addresses, no
    ingress rule for 8080; B's client connects from the same port 40000 — the same
    5-tuple. Without zones (the control) B's SYN matches A's conntrack entry, counts as
    ``established`` and reaches B's server despite B's rules."""
    t, guests = two_nets
    (ac, as_), (bc, bs) = guests["a"], guests["b"]
    fw = FirewallDriver(t.host)
    servers = [EchoServer(as_, 8080), Listener(bs, 8080)]
    flow, sniff = None, None
    try:
        fw.apply(_zone_ports(guests, (*ALLOW_EGRESS, _tcp_in(8080)), ALLOW_EGRESS, zoned))
        flow = Flow(ac, as_, 8080, sport=40000)
        assert flow.alive()
        sniff = Sniffer(bs)
        got_in = not tcp_refused(bc, bs, 8080, sport=40000)
        syn = _syn(CLIENT_IP, SERVER_IP, 40000, 8080)
        if zoned:
            assert sniff.not_seen(syn) and not got_in, "B's rules must judge B's first packet"
            assert flow.alive(), "A's flow is untouched"
            assert fw.state.zones == {bridge_name(NET_A): 1, bridge_name(NET_B): 2}
            zones = {e.zone for e in conntrack_entries(t.host) if e.dport == 8080 and e.sport == 40000}
            assert 1 in zones and 0 not in zones
        else:
            assert sniff.seen(syn), "control: without zones A's entry lets B's SYN through"
    finally:
        if sniff:
            sniff.close()
        if flow:
            flow.close()
        for s in servers:
            s.close()
        fw.close()


def _close(*things) -> None:
    # Flows first, then their servers, then the driver: each releases what the next holds.
    for thing in things:
        thing.close()


def test_a_rule_deleted_in_one_network_flushes_only_its_zone(two_nets):
    """The same allowed 5-tuple established in A and in B (possible only with zones);
    deleting A's rule ends A's flow and deletes only A's entry: B's entry stays and
    B's flow goes on."""
    t, guests = two_nets
    (ac, as_), (bc, bs) = guests["a"], guests["b"]
    fw = FirewallDriver(t.host)
    allow = (*ALLOW_EGRESS, _tcp_in(8080))
    servers = [EchoServer(as_, 8080), EchoServer(bs, 8080)]
    flows = []
    try:
        fw.apply(_zone_ports(guests, allow, allow))
        flows = [Flow(ac, as_, 8080, sport=40001), Flow(bc, bs, 8080, sport=40001)]
        assert all(f.alive() for f in flows)
        tuple_zones = lambda: sorted(e.zone for e in conntrack_entries(t.host)  # noqa: E731
                                     if (e.src, e.dst, e.sport, e.dport) == (CLIENT_IP, SERVER_IP, 40001, 8080))
        assert tuple_zones() == [1, 2], "one entry per network for the very same tuple"
        fw.update_ports([_zone_ports(guests, ALLOW_EGRESS, allow)[1]])  # A's server loses 8080
        assert {f.zone for f in fw.last_flushes} == {1}
        assert tuple_zones() == [2], "only A's entry is deleted"
        assert flows[0].dead(), "A's flow is no longer allowed"
        assert flows[1].alive(), "B's flow, same tuple, is still allowed and untouched"
    finally:
        _close(*flows, *servers, fw)


def test_a_network_leaving_flushes_its_zone_and_a_restart_keeps_the_zones(two_nets):
    t, guests = two_nets
    (ac, as_), (bc, bs) = guests["a"], guests["b"]
    allow = (*ALLOW_EGRESS, _tcp_in(8080))
    fw = FirewallDriver(t.host)
    servers = [EchoServer(as_, 8080), EchoServer(bs, 8080)]
    flows = []
    try:
        ports = _zone_ports(guests, allow, allow)
        fw.apply(ports)
        flows = [Flow(ac, as_, 8080, sport=40002), Flow(bc, bs, 8080, sport=40002)]
        assert all(f.alive() for f in flows)
        fw.close()
        # A restarted agent: a new driver reads the zones back, flows go on.
        fw = FirewallDriver(t.host)
        fw.apply(ports)
        assert fw.state.zones == {bridge_name(NET_A): 1, bridge_name(NET_B): 2}
        assert fw.last_script.count("delete table") == 2 and all(f.alive() for f in flows)
        # Network A leaves the host: its zone is retired and flushed whole.
        for p in ports[:2]:
            fw.remove_port(p.tap)
        assert {e.zone for e in conntrack_entries(t.host)} <= {0, 2}
        assert flows[1].alive()
    finally:
        _close(*flows, *servers, fw)


def _icmp_echo_fragments(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, ip_id: int,
                         head: bytes, tail: bytes) -> tuple[bytes, bytes]:
    """An ICMP echo request with data ``head`` + ``tail`` split in two IPv4 fragments,
    as two Ethernet frames: the first (offset 0, MF set) carries the ICMP header and
    ``head``, the last (offset 3, i.e. 24 bytes; MF clear) ``tail``. The ICMP checksum
    covers the whole datagram, so the two fragments make a valid request together."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ip_id, 1) + head.ljust(16, b".")[:16] + tail.ljust(24, b".")[:24]
    icmp = icmp[:2] + struct.pack("!H", _csum(icmp)) + icmp[4:]
    head_len = 24  # a multiple of 8: the second fragment's offset is 24 / 8 = 3
    frames = []
    for flags_off, data in ((0x2000, icmp[:head_len]), (head_len // 8, icmp[head_len:])):
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(data), ip_id, flags_off, 64, 1, 0,
                          socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
        hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
        frames.append(_mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + hdr + data)
    return frames[0], frames[1]


def test_ip_fragments_are_reassembled_per_network_never_across_networks(two_nets):
    """Fragments are reassembled in the network's conntrack zone. Control: A's client
    sends both fragments of an echo request; A's server gets the datagram and answers.
    Then A's client sends only the FIRST fragment of another request and B's client
    (same address) only the LAST one: same IP id, same addresses. Reassembled in one
    shared zone (defrag before the zone is set), B's fragment completes A's datagram
    and the whole goes on as the first fragment's packet: to A's server, with B's data."""
    t, guests = two_nets
    (ac, as_), (bc, bs) = guests["a"], guests["b"]
    fw = FirewallDriver(t.host)
    icmp_in = (*ALLOW_EGRESS, Rule(INGRESS, protocol="icmp"))
    sniffs: list[Sniffer] = []
    try:
        fw.apply(_zone_ports(guests, icmp_in, icmp_in))
        a_client, a_server, b_server = Sniffer(ac), Sniffer(as_), Sniffer(bs)
        sniffs += [a_client, a_server, b_server]
        first, last = _icmp_echo_fragments(ac.mac, as_.mac, CLIENT_IP, SERVER_IP, 0x4101,
                                           b"head-of-A-whole", b"tail-of-A-whole")
        send_frame(ac, first)
        send_frame(ac, last)
        assert a_client.seen(b"tail-of-A-whole"), "control: both fragments from A are reassembled and answered"

        mixed = (CLIENT_IP, SERVER_IP, 0x4102, b"head-from-net-A", b"tail-from-net-B")
        first, _ = _icmp_echo_fragments(ac.mac, as_.mac, *mixed)
        _, last = _icmp_echo_fragments(bc.mac, bs.mac, *mixed)
        send_frame(ac, first)
        send_frame(bc, last)
        assert a_server.not_seen(b"tail-from-net-B"), "B's fragment must not complete A's datagram"
        assert b_server.not_seen(b"head-from-net-A"), "A's fragment must not reach B's server"
    finally:
        for s in sniffs:
            s.close()
        fw.close()


def test_apply_touches_only_lbtap_tables(topo, fw):
    from lbtap.drivers.firewall.nft import Nft

    other = Nft(topo.host)
    other.run("table inet keepme { chain c { type filter hook input priority 0; policy accept; }; }\n")
    fw.apply(open_ports(topo))
    fw.apply([])
    fw.clear()
    tables = {(i["table"]["family"], i["table"]["name"]) for i in other.json("list tables") if "table" in i}
    assert tables == {("inet", "keepme")}
    other.close()


def test_delta_recovers_when_ruleset_was_flushed_behind_our_back(topo, fw):
    a, b = topo.guests["tapa"], topo.guests["tapb"]
    fw.apply(open_ports(topo))
    fw.nft.run("flush ruleset\n")
    # A real change: its delta refers to tables that are gone, fails, and the driver
    # falls back to a full apply.
    fw.update_port(port(a, (*ALLOW_EGRESS, Rule(INGRESS), Rule(INGRESS, protocol="udp"))))
    assert "delete table bridge lbtap" in fw.last_script
    sniff = Sniffer(b)
    try:
        send_frame(a, udp_frame(A_MAC, B_MAC, C_IP, B_IP, b"after-flush"))
        assert sniff.not_seen(b"after-flush")
    finally:
        sniff.close()


# -- the kernel accepts every rule shape, and deltas end where a full apply does ------
def _normalised(nft) -> dict:
    """lbtap's tables as data: chain rules in order, set/map elements as sets."""
    import json

    out: dict = {}
    for item in nft.json("list ruleset"):
        kind, body = next(iter(item.items()))
        if kind in ("metainfo", "table") or body.get("table") != "lbtap":
            continue
        key = (kind, body["family"], body.get("chain") if kind == "rule" else body["name"])
        if kind == "rule":
            out.setdefault(key, []).append(json.dumps(body["expr"], sort_keys=True))
        elif kind in ("set", "map"):
            out[key] = sorted(json.dumps(e, sort_keys=True) for e in body.get("elem", []))
        elif kind == "chain":
            out[key] = {k: body.get(k) for k in ("hook", "prio", "policy")}
        else:
            out[key] = True  # counters: their values differ by design
    return out


SHAPES = (
    Rule(EGRESS), Rule(EGRESS, "IPv6"),
    Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22),
    Rule(INGRESS, protocol="udp", port_range_min=1000, port_range_max=2000, remote_ip_prefix="10.1.0.0/16"),
    Rule(INGRESS, protocol="icmp", port_range_min=8, port_range_max=0),
    Rule(INGRESS, "IPv6", protocol="icmp", port_range_min=128),
    Rule(INGRESS, "IPv6", protocol="tcp", remote_ip_prefix="2001:db8::/32"),
    Rule(INGRESS, protocol="vrrp"), Rule(INGRESS, protocol=47),
    Rule(INGRESS, remote_group_id="web"), Rule(EGRESS, "IPv6", remote_group_id="web", protocol="sctp",
                                               port_range_min=5000, port_range_max=5000),
    # A single-address prefix, and a rule partly overlapping SHAPES[3] (the kernel
    # refuses overlapping set elements: one of them stays a chain rule).
    Rule(INGRESS, protocol="udp", port_range_min=53, port_range_max=53, remote_ip_prefix="10.0.0.9/32"),
    Rule(INGRESS, protocol="udp", port_range_min=1500, port_range_max=2500),
    # Protocols by Neutron's other names load as their numbers.
    Rule(INGRESS, protocol="dccp"), Rule(INGRESS, "IPv6", protocol="ipv6-frag"), Rule(EGRESS, protocol="pgm"),
)


def test_every_rule_shape_loads_and_deltas_match_a_full_apply():
    require_root()
    if nft_available():
        pytest.skip(nft_available())
    ns_delta, ns_full = unique_netns("fwd"), unique_netns("fwf")
    for n in (ns_delta, ns_full):
        netns.create(n)
    try:
        by_delta = FirewallDriver(ns_delta)
        by_full = FirewallDriver(ns_full)
        mk = lambda i, rules, **kw: PortFilter(  # noqa: E731
            f"tap{i}", f"fa:16:3e:00:00:{i:02x}", (f"10.0.0.{i}", f"2001:db8::{i:x}"), rules=rules, **kw)
        groups = RemoteGroups.of({"web": ["10.0.0.1", "2001:db8::1", "10.7.0.0/24"]})
        ports = {i: mk(i, SHAPES, security_groups=("web",)) for i in range(1, 4)}
        ports[4] = mk(4, SHAPES[:3], allowed_address_pairs=(("10.9.0.0/24", "fa:16:3e:00:00:99"), ("2001:db8:9::/64", None)))
        by_delta.apply(ports.values(), groups)
        steps = [
            lambda: by_delta.update_ports([mk(i, SHAPES[:6], security_groups=("web",)) for i in range(1, 4)]),
            lambda: by_delta.update_port(mk(4, SHAPES[6:], allowed_address_pairs=(("10.0.0.77", None),))),
            lambda: by_delta.update_groups(RemoteGroups.of({"web": ["10.0.0.2"], "db": ["10.0.0.3"]})),
            lambda: by_delta.update_port(mk(5, (Rule(INGRESS, remote_group_id="db"),))),
            lambda: by_delta.remove_port("tap2"),
            lambda: by_delta.update_port(mk(1, (), security_groups=("web",))),
            lambda: by_delta.update_port(mk(4, SHAPES[:3])),  # deletes the /32 and overlapping elements
            lambda: by_delta.update_groups(RemoteGroups.of({"web": ["10.0.0.0/24", "10.0.0.2"]})),  # overlap
        ]
        for step in steps:
            step()
            assert "delete table" not in by_delta.last_script, "a delta must not fall back to a full apply"
            # The same state written as one full script (same port indexes).
            by_full.nft.run(render_full(by_delta.state))
            got = _normalised(by_delta.nft)
            assert got == _normalised(by_full.nft)
            assert got[("set", "bridge", "ip4_ok")] and any(
                v for (kind, fam, _), v in got.items() if kind in ("set", "map") and fam == "inet")
        by_delta.close()
        by_full.close()
    finally:
        for n in (ns_delta, ns_full):
            netns.delete(n)


def test_nft_process_fallback_runs_inside_the_namespace():
    """Without libnftables the driver forks ``nft -f -`` from a thread inside the
    namespace; the tables must land there, not in the caller's namespace."""
    require_root()
    if nft_available():
        pytest.skip(nft_available())
    from lbtap.drivers.firewall.nft import Nft

    ns = unique_netns("fwp")
    netns.create(ns)
    try:
        proc = Nft(ns, use_library=False)
        drv = FirewallDriver(ns, nft=proc)
        drv.apply([PortFilter("tapx", "fa:16:3e:00:00:01", ("10.0.0.1",), rules=ALLOW_EGRESS)])
        drv.update_port(PortFilter("tapx", "fa:16:3e:00:00:01", ("10.0.0.2",), rules=ALLOW_EGRESS))
        assert proc.table_exists("bridge", "lbtap") and drv.drop_counters()["spoof_ip"] == 0
        listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "set", "bridge", "lbtap", "ip4_ok"],
                                capture_output=True, text=True, check=True).stdout
        assert "10.0.0.2" in listed and "10.0.0.1 " not in listed
    finally:
        netns.delete(ns)
