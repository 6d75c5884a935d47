"""A real router namespace joining two networks and an external one.

Topology (all in throwaway namespaces; the machine's own namespace is never touched):

    host namespace H:  brA ── tap(pA) ═ qr-pA ┐
                       brB ── tap(pB) ═ qr-pB ├ qrouter-<id>-lbtt<rand>
                       brX ── tap(pG) ═ qg-pG ┘
    guests g1 (10.10.1.5) on brA, g2 (10.10.2.5) on brB, external host (203.0.113.1) on brX

The test plays the L2 agent's part by enslaving the tap ends to the bridges.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from lbtap.drivers.host import netns
from lbtap.drivers.router import FloatingIP, Gateway, Router, RouterNamespace, RouterPort
from lbtap.drivers.router.naming import host_device
from tests.support import require_root, unique_netns

pytestmark = pytest.mark.timeout(120)

EXT_IP = "203.0.113.1"
GW_IP = "203.0.113.2"
FIP = "203.0.113.10"
G1_IP, G2_IP = "10.10.1.5", "10.10.2.5"
PORT = 7411
# What must work is given this long (a loaded CI machine is slow; the wait ends as soon as
# it works); what must not gets the short windows of ``ping_blocked``/``seen_source``.
PATIENCE = 20


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


def ns_run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def pings(ns: str, dst: str, wait: int = PATIENCE) -> bool:
    """One echo request, answered within ``wait`` seconds."""
    return ns_run(ns, "ping", "-c", "1", "-W", str(wait), dst, check=False).returncode == 0


def ping_blocked(ns: str, dst: str) -> bool:
    """True if one echo request gets no answer within 1 s."""
    return not pings(ns, dst, wait=1)


def seen_source(client_ns: str, dst: str, timeout: int = PATIENCE) -> str:
    """The source address the server at ``dst`` saw for a TCP connection from client_ns
    ("" if no connection was made within ``timeout`` seconds)."""
    out = ns_run(client_ns, "socat", "-T", str(timeout), "-", f"TCP:{dst}:{PORT},connect-timeout={timeout}",
                 check=False)
    return out.stdout.strip()


def listening(ns: str, port: int) -> bool:
    return bool(ns_run(ns, "ss", "-Hltn", f"sport = :{port}", check=False).stdout.strip())


class Env:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.host = f"lbtt{tag}"
        self.h = unique_netns("rh")
        self.g1, self.g2, self.ext = unique_netns("g1"), unique_netns("g2"), unique_netns("ex")
        self.namespaces = [self.h, self.g1, self.g2, self.ext]
        self.procs: list[subprocess.Popen] = []
        self.router_ns: RouterNamespace | None = None

    def setup(self) -> None:
        for ns in self.namespaces:
            netns.create(ns)
        for br in ("brA", "brB", "brX"):
            sh("ip", "-n", self.h, "link", "add", br, "type", "bridge")
            sh("ip", "-n", self.h, "link", "set", br, "up")
        for guest, br, cidr, gw in ((self.g1, "brA", f"{G1_IP}/24", "10.10.1.1"),
                                    (self.g2, "brB", f"{G2_IP}/24", "10.10.2.1"),
                                    (self.ext, "brX", f"{EXT_IP}/24", None)):
            dev = "v" + guest[-8:]
            sh("ip", "-n", self.h, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", guest)
            sh("ip", "-n", self.h, "link", "set", dev, "master", br, "up")
            sh("ip", "-n", guest, "addr", "add", cidr, "dev", "eth0")
            sh("ip", "-n", guest, "link", "set", "eth0", "up")
            sh("ip", "-n", guest, "link", "set", "lo", "up")
            if gw:
                sh("ip", "-n", guest, "route", "add", "default", "via", gw)

    def serve_whoami(self, ns: str) -> None:
        """A TCP server in ``ns`` that answers each connection with the peer's address."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, "socat", f"TCP-LISTEN:{PORT},fork,reuseaddr",
                              "SYSTEM:echo $SOCAT_PEERADDR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        deadline = time.monotonic() + PATIENCE
        while not listening(ns, PORT):
            assert p.poll() is None and time.monotonic() < deadline, f"no TCP server listening in {ns}"
            time.sleep(0.05)

    def plug(self, port_id: str, bridge: str) -> None:
        sh("ip", "-n", self.h, "link", "set", host_device(port_id), "master", bridge, "up")

    def teardown(self) -> None:
        for p in self.procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.router_ns is not None:
            try:
                self.router_ns.destroy()
            finally:
                netns.delete(self.router_ns.name)
        for ns in self.namespaces:
            netns.delete(ns)


@pytest.fixture
def env():
    require_root()
    e = Env()
    try:
        e.setup()
        yield e
    finally:
        e.teardown()


def _router(rid: str, fips: tuple[FloatingIP, ...] = (), with_b: bool = True, snat: bool = True) -> Router:
    pa = RouterPort("pa" + rid[:9], "fa:16:3e:00:0a:01", ("10.10.1.1/24",))
    pb = RouterPort("pb" + rid[:9], "fa:16:3e:00:0b:01", ("10.10.2.1/24",))
    pg = RouterPort("pg" + rid[:9], "fa:16:3e:00:0c:01", (f"{GW_IP}/24",))
    return Router(rid, interfaces=(pa, pb) if with_b else (pa,), gateway=Gateway(pg, (EXT_IP,), snat),
                  floating_ips=fips)


def _links(ns: str) -> set[str]:
    out = sh("ip", "-n", ns, "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_router_namespace_end_to_end(env: Env) -> None:
    rid = uuid.uuid4().hex[:12]
    rns = RouterNamespace(rid, host=env.host, host_netns=env.h)
    env.router_ns = rns
    assert rns.name == f"qrouter-{rid}-{env.host}"
    fip = FloatingIP(FIP, G1_IP, "fip1")
    router = _router(rid, (fip,))

    first = rns.sync(router)
    assert first.created and not first.problems
    for p in router.interfaces + (router.gateway.port,):
        assert host_device(p.id) in _links(env.h)
    env.plug(router.interfaces[0].id, "brA")
    env.plug(router.interfaces[1].id, "brB")
    env.plug(router.gateway.port.id, "brX")

    # Idempotent: a second sync of the same router changes nothing.
    again = rns.sync(router)
    assert not again.changed, again

    # East-west across subnets, addresses preserved (no SNAT between internal subnets).
    assert pings(env.g1, G2_IP)
    env.serve_whoami(env.g2)
    assert seen_source(env.g1, G2_IP) == G1_IP

    # North-south: the external host sees g2 as the gateway address (SNAT) and g1 as
    # its floating IP; it reaches g1 through the floating IP and sees its own address.
    env.serve_whoami(env.ext)
    assert seen_source(env.g2, EXT_IP) == GW_IP
    assert seen_source(env.g1, EXT_IP) == FIP
    env.serve_whoami(env.g1)
    assert pings(env.ext, FIP)
    assert seen_source(env.ext, FIP) == EXT_IP

    # Floating IP removed: unreachable at once (conntrack flushed), SNAT still works.
    res = rns.sync(_router(rid))
    assert res.floating_ips_removed == [FIP]
    assert ping_blocked(env.ext, FIP)
    assert seen_source(env.ext, FIP, timeout=3) == ""
    assert seen_source(env.g1, EXT_IP) == GW_IP
    assert f"{FIP}/32" not in ns_run(rns.name, "ip", "-o", "addr", "show").stdout

    # Removing the interface of subnet B cuts the route, and its host end goes too.
    pb_tap = host_device(router.interfaces[1].id)
    rns.sync(_router(rid, with_b=False))
    assert pb_tap not in _links(env.h)
    assert ping_blocked(env.g1, G2_IP)

    # Without SNAT, traffic leaves with its own source address (and the external host,
    # having no route back, does not answer).
    rns.sync(_router(rid, with_b=False, snat=False))
    assert "snat to" not in ns_run(rns.name, "nft", "list", "ruleset").stdout

    # Destroy leaves nothing: no namespace, no host ends, and it is idempotent.
    taps = {host_device(p.id) for p in router.interfaces + (router.gateway.port,)}
    rns.destroy()
    assert not netns.exists(rns.name)
    assert not taps & _links(env.h)
    rns.destroy()


def test_sync_repairs_drift(env: Env) -> None:
    """Things changed behind the driver's back are put back by the next sync."""
    rid = uuid.uuid4().hex[:12]
    rns = RouterNamespace(rid, host=env.host, host_netns=env.h)
    env.router_ns = rns
    router = _router(rid, (FloatingIP(FIP, G1_IP),))
    rns.sync(router)
    qr = "qr-" + router.interfaces[0].id[:11]
    ns_run(rns.name, "ip", "addr", "add", "10.99.0.1/24", "dev", qr)
    ns_run(rns.name, "ip", "route", "add", "10.98.0.0/16", "via", "10.10.1.254")
    ns_run(rns.name, "ip", "route", "del", "default")
    ns_run(rns.name, "nft", "flush", "ruleset")
    ns_run(rns.name, "ip", "link", "add", "qr-stale", "type", "veth", "peer", "name", "x-stale")
    sh("ip", "-n", env.h, "link", "del", host_device(router.interfaces[1].id))  # both ends go

    res = rns.sync(router)
    assert "qr-stale" in res.deleted
    assert "qr-" + router.interfaces[1].id[:11] in res.created
    assert res.addresses_removed == [f"{qr} 10.99.0.1/24"]
    assert any(r.startswith("10.98.0.0/16") for r in res.routes_removed)
    assert res.routes_added == [f"default via {EXT_IP}"]
    ruleset = ns_run(rns.name, "nft", "list", "ruleset").stdout
    assert f"{FIP} : {G1_IP}" in ruleset
    assert not rns.sync(router).changed

    # The namespace deleted behind our back: the next sync builds a new one (not the
    # orphaned old namespace that a cached socket would still point at).
    sh("ip", "netns", "del", rns.name)
    res = rns.sync(router)
    assert len(res.created) == 3
    assert "qg-" + router.gateway.port.id[:11] in _links(rns.name)
    env.plug(router.interfaces[0].id, "brA")
    assert pings(env.g1, "10.10.1.1")
