"""The DHCP agent's host side: namespace, veth and dnsmasq of each served network.

Thin I/O over the tested drivers: ``LinuxSystem`` (namespaces, netlink per namespace)
and ``DnsmasqProcess``. Every method is idempotent and blocking; the agent runs them
on its one worker thread. Names: namespace ``qdhcp-<net>[-<host>]``, inside device
``ns-<port[:11]>``, host end ``tap<port[:11]>`` in the namespace the L2 agent manages
(which enslaves it and reports the port ACTIVE, as for any tap). Each namespace is
recorded in the state dir (``lbtap.agents.state``) before it is created.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from lbtap.agents.state import NamespaceRecord, NamespaceRecords
from lbtap.drivers.dhcp import DhcpNetwork, DnsmasqProcess
from lbtap.drivers.dhcp.naming import DHCP_NS_PREFIX, dhcp_device, dhcp_namespace, host_device, owned_ids
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.router.namespace import destroy_namespace
from lbtap.drivers.router.system import LinuxSystem

log = logging.getLogger("lbtap.dhcp")


def world_traversable(path: Path) -> bool:
    """Whether an unprivileged dnsmasq can reach files under ``path`` (every parent o+x)."""
    p = path.resolve()
    for d in (p, *p.parents):
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except FileNotFoundError:
            continue
    return True


class DhcpHost:
    """Serves networks on one host. ``host_netns``: where the tap ends go (None: ours);
    ``host_suffix``: the host name to put in namespace names (None: plain names);
    ``host``: the agent's host name, kept in the namespace records."""

    def __init__(self, state_dir: str | Path, *, host_netns: str | None, host_suffix: str | None,
                 host: str | None = None):
        self.state_dir = Path(state_dir) / "dhcp"
        self.host_netns = host_netns
        self.host_suffix = host_suffix
        self.host = host or host_suffix or ""
        self.records = NamespaceRecords(state_dir)
        self.system = LinuxSystem()
        self.procs: dict[str, DnsmasqProcess] = {}
        self.ports: dict[str, str] = {}  # network id -> DHCP port id in use
        self._user: str | None = None

    def namespace(self, network_id: str) -> str:
        return dhcp_namespace(network_id, self.host_suffix)

    def _dnsmasq_user(self) -> str | None:
        # dnsmasq drops to "nobody" and re-reads its files on SIGHUP; when the state
        # directory is private (e.g. under a 0700 tmp dir) it must keep root instead.
        if self._user is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._user = "" if world_traversable(self.state_dir) else "root"
        return self._user or None

    # ------------------------------------------------------------------ serve
    def serve(self, network: DhcpNetwork, port: dict, cidrs: set[str], ips: tuple[str, ...]) -> str:
        """Plumb and (re)configure dnsmasq; returns "started", "reloaded", "restarted" or
        "unchanged"."""
        ns = self.namespace(network.id)
        old_port = self.ports.get(network.id)
        if old_port is not None and old_port != port["id"]:
            self.teardown(network.id)  # another port now: start from a clean namespace
        self._plumb(network.id, port, cidrs, network.mtu)
        self.ports[network.id] = port["id"]
        proc = self.procs.get(network.id)
        if proc is None:
            proc = DnsmasqProcess(network, namespace=ns, interface=dhcp_device(port["id"]),
                                  state_dir=self.state_dir / network.id, dhcp_ips=ips, user=self._dnsmasq_user())
            self.procs[network.id] = proc
            was_alive = proc.is_alive()  # adopted from a previous run of the agent
            proc.update(network, ips) if was_alive else proc.start()
            return "adopted" if was_alive else "started"
        return proc.update(network, ips)

    def _record(self, network_id: str) -> NamespaceRecord:
        return NamespaceRecord(self.namespace(network_id), "dhcp", network_id, self.host, self.host_suffix)

    def _plumb(self, network_id: str, port: dict, cidrs: set[str], mtu: int) -> None:
        sysm = self.system
        ns = self.namespace(network_id)
        self.records.add(self._record(network_id))  # before the namespace: a crash leaves no unrecorded one
        sysm.create_namespace(ns)
        inner, tap = dhcp_device(port["id"]), host_device(port["id"])
        ndrv, hdrv = sysm.driver(ns), sysm.driver(self.host_netns)
        mac = port["mac_address"].lower()
        link, host_link = ndrv.get_link(inner), hdrv.get_link(tap)
        if link is None or host_link is None:
            if link is not None:
                ndrv.delete_link(inner)
            if host_link is not None:
                hdrv.delete_link(tap)
            hdrv.create_veth(tap, inner, peer_netns=ns, peer_mac=mac, mtu=mtu)
            link = ndrv.get_link(inner)
        ndrv.set_link("lo", up=True)
        if link is None or link.mac != mac or link.mtu != mtu or not link.up:
            ndrv.set_link(inner, mac=mac, mtu=mtu, up=True)
        hdrv.set_link(tap, mtu=mtu, up=True)
        have = {a.cidr for a in ndrv.list_addresses(inner) if a.scope == "global"}
        for cidr in sorted(have - cidrs):
            ndrv.delete_address(inner, cidr)
        for cidr in sorted(cidrs - have):
            ndrv.add_address(inner, cidr)

    # ------------------------------------------------------------------ health
    def check(self) -> list[str]:
        """Restart every dnsmasq that died; returns their network ids."""
        restarted = []
        for net_id, proc in list(self.procs.items()):
            try:
                if proc.ensure_running():
                    log.warning("dnsmasq for network %s had died; restarted (pid %s)", net_id, proc.pid)
                    restarted.append(net_id)
            except Exception as e:  # retried on the next check
                log.error("restarting dnsmasq for network %s failed: %s", net_id, e)
        return restarted

    # ------------------------------------------------------------------ teardown
    def teardown(self, network_id: str) -> None:
        """Stop dnsmasq, delete the veth and the namespace; idempotent."""
        proc = self.procs.pop(network_id, None)
        ns = self.namespace(network_id)
        if proc is None:
            # Not started by this run (e.g. after a restart): adopt to stop it cleanly.
            proc = DnsmasqProcess(DhcpNetwork(id=network_id), namespace=ns, interface="",
                                  state_dir=self.state_dir / network_id)
        proc.stop(clean=True)  # by the PID it started or verified, reaped if ours
        port_id = self.ports.pop(network_id, None)
        if not destroy_namespace(self.system, ns) and port_id is not None:  # veths take their tap ends along
            self.system.driver(self.host_netns).delete_link(host_device(port_id))
        self.records.remove(ns)

    def stale(self) -> list[str]:
        """Network ids of our namespaces present on the machine (found after a restart)."""
        return owned_ids(netns_mod.list_namespaces(), DHCP_NS_PREFIX, self.host_suffix)

    def owned(self) -> list[str]:
        """Networks whose DHCP this host set up: served by this run, recorded in the
        state dir for this host, or (names carrying the host) found on the machine."""
        ids = set(self.procs) | set(self.ports)
        ids |= {r.resource_id for r in self.records.read()
                if r.kind == "dhcp" and r.host == self.host and r.suffix == self.host_suffix and r.valid()}
        if self.host_suffix:
            ids |= set(self.stale())
        return sorted(ids)

    def teardown_all(self) -> list[str]:
        """Tear down every network of ``owned`` (``lbtap up`` stopping); returns those
        done. A failure is logged and the others are still torn down."""
        done = []
        for net in self.owned():
            try:
                self.teardown(net)
                done.append(net)
            except Exception as e:  # noqa: BLE001 - stopping: do the rest, say what stays
                log.error("tearing down DHCP for network %s failed: %s", net, e)
        return done

    def close(self) -> None:
        """Forget sockets; dnsmasq keeps serving (a restarted agent adopts it)."""
        self.system.close()
