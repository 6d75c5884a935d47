"""Multi-host fullstack helpers: host namespaces on a shared underlay, a cuttable
relay in front of RabbitMQ, guests, FDB reads.

Topology (every namespace ``lbtt-``-prefixed, made through the ``netns_names`` fixture
so teardown deletes it)::

    underlay ns:  br0 ── ul<i> ═veth═ uplink0 (203.0.113.1<i>/24) :host ns i ── lbtap agent
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

from lbtap.domain.naming import vxlan_name
from tests.fullstack import harness as h

UNDERLAY_NET = "203.0.113"
UNDERLAY_MTU = 1500
ZERO_MAC = "00:00:00:00:00:00"


@dataclass
class Host:
    name: str
    netns: str
    ip: str


@dataclass
class Underlay:
    """A bridge in its own namespace that every host's ``uplink0`` is wired to."""

    netns: str
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        h.sh("ip", "netns", "add", self.netns)
        h.ns(self.netns, "ip", "link", "add", "br0", "type", "bridge")
        h.ns(self.netns, "ip", "link", "set", "br0", "up")

    def add_host(self, name: str, netns: str) -> Host:
        i = len(self.hosts) + 1
        ip = f"{UNDERLAY_NET}.{10 + i}"
        h.sh("ip", "netns", "add", netns)
        h.sh("ip", "-n", netns, "link", "add", "uplink0", "mtu", str(UNDERLAY_MTU), "type", "veth",
             "peer", "name", f"ul{i}", "netns", self.netns)
        h.sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "uplink0")
        h.sh("ip", "-n", netns, "link", "set", "uplink0", "up")
        h.sh("ip", "-n", netns, "link", "set", "lo", "up")
        h.sh("ip", "-n", self.netns, "link", "set", f"ul{i}", "master", "br0", "up")
        host = Host(name, netns, ip)
        self.hosts[name] = host
        return host


def make_hosts(netns_names: Callable[[str], str], n: int) -> tuple[Underlay, list[Host]]:
    underlay = Underlay(netns_names("ul"))
    return underlay, [underlay.add_host(f"host{i + 1}", netns_names("h")) for i in range(n)]


def start_agents(d: h.Deployment, hosts: list[Host], *extra: str) -> None:
    for host in hosts:
        d.start_agent(host.name, host.netns, "--local-ip", host.ip, *extra)


def plug_guest(d: h.Deployment, port: dict, host: Host, guest_netns: str) -> None:
    d.vif("plug", port["id"], host.name, host.netns, "--guest-netns", guest_netns)


def guest_ip(port: dict) -> str:
    return port["fixed_ips"][0]["ip_address"]


def fdb(host: Host, vni: int) -> set[tuple[str, str]]:
    """(mac, dst) of the VXLAN device's own entries, as ``bridge -j fdb show`` lists them."""
    r = h.ns(host.netns, "bridge", "-j", "fdb", "show", "dev", vxlan_name(vni), check=False)
    if r.returncode != 0:
        return set()
    return {(e["mac"], e["dst"]) for e in json.loads(r.stdout or "[]") if e.get("dst") and not e.get("master")}


def expected_fdb(ports_by_host: dict[str, list[dict]], hosts: dict[str, Host], local: str) -> set[tuple[str, str]]:
    """l2population's entries on ``local``: each remote VTEP with a port, flooding + MACs."""
    out = set()
    for name, ports in ports_by_host.items():
        if name == local or not ports:
            continue
        ip = hosts[name].ip
        out.add((ZERO_MAC, ip))
        out.update((p["mac_address"], ip) for p in ports)
    return out


def taps(host: Host) -> set[str]:
    return {n for n in h.link_names(host.netns) if n.startswith("tap")}


class BrokerRelay:
    """A TCP relay in front of RabbitMQ, run on its own thread: ``cut()`` is a broker
    outage for the processes connected through it (and for nobody else)."""

    def __init__(self, amqp_url: str) -> None:
        u = urlparse(amqp_url)
        self._u = u
        self.target = (u.hostname or "127.0.0.1", u.port or 5672)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="broker-relay", daemon=True)
        self._thread.start()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.listen()

    @property
    def url(self) -> str:
        creds = self._u.netloc.rpartition("@")[0]
        return self._u._replace(netloc=f"{creds}@127.0.0.1:{self.port}").geturl()

    def _run(self, coro) -> object:  # noqa: ANN001
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def listen(self) -> None:
        """Accept connections (again, on the same port after a cut)."""
        async def start() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

        self._run(start())

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        async def cut() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        self._run(cut())

    def close(self) -> None:
        """Cut, end the relay tasks, stop the thread."""
        self.cut()

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(drain())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def plug_taps(hosts, ports_by_host, each: Callable[[int], None] | None = None) -> None:
    """Create and bring up the ports' taps in their host namespaces, round-robin across
    hosts; ``each(i)`` runs after the i-th tap (to disturb the system mid-burst)."""
    from lbtap.domain.naming import tap_name
    from lbtap.drivers.host.netlink import NetlinkHost

    drivers = {x.name: NetlinkHost(x.netns) for x in hosts}
    try:
        order = [(n, v[i]) for i in range(max(len(v) for v in ports_by_host.values()))
                 for n, v in ports_by_host.items() if i < len(v)]
        for i, (name, p) in enumerate(order):
            drivers[name].create_tap(tap_name(p["id"]))
            drivers[name].set_link(tap_name(p["id"]), up=True)
            if each is not None:
                each(i)
    finally:
        for drv in drivers.values():
            drv.close()
