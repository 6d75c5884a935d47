"""The DHCP agent: casts in, one loop fetches network state and drives ``DhcpHost``.

Seed flow (section 3): ``network_create_end`` / ``subnet_create_end`` arrive → the
loop asks the server for the network and for its ``network:dhcp`` port
(``create_dhcp_port``) → plugs the veth (host end ``tap<port[:11]>``) and starts
dnsmasq with static leases. Port casts only mark their network dirty; the loop waits
``BATCH_DELAY`` so a burst of port creations becomes one fetch and one SIGHUP, never
a restart. Every ``CHECK_INTERVAL`` it restarts a dnsmasq that died; every
``RESYNC_INTERVAL`` it resyncs everything (a lost cast heals).

Bus handlers only queue intent (``DhcpIntents``); host work runs on one worker thread.

Stopping leaves dnsmasq serving and the namespaces in place (a restarted agent adopts
them: no DHCP outage), unless ``teardown_on_stop`` (``lbtap up`` without
``--keep-on-exit``): then every network it set up is torn down first. While running it
holds the state dir's agents lock (``lbtap.agents.state``) against ``lbtap cleanup``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from lbtap.agents.dhcp_core import DhcpIntents, dhcp_ips, plan_network, port_cidrs, port_matches
from lbtap.agents.dhcp_host import DhcpHost
from lbtap.agents.loop import NetworkAgentLoop, run_standalone
from lbtap.bus.base import Bus, BusError, RemoteError
from lbtap.config import Settings
from lbtap.domain import constants as c
from lbtap.domain.models import AgentState
from lbtap.rpc import topics
from lbtap.server import dhcp_ext as rpcn

log = logging.getLogger("lbtap.dhcp")

CHECK_INTERVAL = 1.0  # how often dead dnsmasq processes are looked for
RESYNC_INTERVAL = 60.0
RPC_TIMEOUT = 30.0
RETRY_DELAY = 5.0  # a network the server could not give a DHCP port to


class DhcpAgent(NetworkAgentLoop):
    """One host's DHCP agent. ``run()`` until ``stop()``; with ``teardown_on_stop`` it
    stops every dnsmasq and deletes every namespace it set up before ``run()`` returns."""

    topic = rpcn.DHCP_TOPIC
    kind = "dhcp"
    log = log

    def __init__(self, settings: Settings, bus: Bus, *, clock: Callable[[], float] = time.monotonic,
                 teardown_on_stop: bool = False):
        super().__init__(settings, bus, clock=clock, teardown_on_stop=teardown_on_stop)
        self.intents = DhcpIntents()
        self.served: dict[str, dict] = {}  # network id -> our DHCP port
        self.dhcp = DhcpHost(settings.state_dir, host_netns=settings.agent.netns,
                             host_suffix=self.host if settings.agent.netns else None, host=self.host)
        self._next_check = 0.0
        self.stats = {"reloads": 0, "restarts": 0, "syncs": 0, "errors": 0}

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await self.bus.call(topics.PLUGIN, method, timeout=RPC_TIMEOUT, host=self.host, **kwargs)

    # ---- bus handler: intent only -----------------------------------------------
    async def _handle_cast(self, method: str, kwargs: dict[str, Any]) -> None:
        if self.intents.on_cast(method, kwargs, set(self.served)):
            self._wake.set()

    def next_deadline(self) -> float:
        return min(self._next_check, self._next_resync)

    def _started(self) -> str:
        return f"DHCP agent {self.host} serving taps into {self.settings.agent.netns or 'this namespace'}"

    def _close_host(self) -> None:
        self.dhcp.close()

    async def _teardown_all(self) -> None:
        """Stop every dnsmasq and delete every namespace this host set up. The DHCP
        ports stay allocated on the server: a restarted agent plugs them again."""
        try:
            done = await self._host(self.dhcp.teardown_all)
        except Exception as e:  # noqa: BLE001 - stopping anyway
            log.error("tearing down DHCP on stop failed: %s", e)
            return
        self.served.clear()
        if done:
            log.info("DHCP torn down on stop: %d network(s)", len(done))

    async def iterate(self) -> None:
        now = self.clock()
        if now >= self._next_resync:
            self.intents.full_sync = True
        full, dirty, deleted = self.intents.take()
        try:
            if full:
                await self._full_sync()
            for net in sorted(deleted):
                await self._teardown(net, release=False)
            for net in sorted(dirty):
                info = await self._call(rpcn.GET_NETWORK_INFO, network_id=net)
                await self._apply(net, info)
        except BusError as e:
            log.warning("server unreachable, DHCP work retried: %s", e)
            self.intents.full_sync = True
            self._next_resync = self.clock() + 1.0
        if self.clock() >= self._next_check:
            restarted = await self._host(self.dhcp.check)
            self.stats["restarts"] += len(restarted)
            self._next_check = self.clock() + CHECK_INTERVAL

    async def _full_sync(self) -> None:
        infos = await self._call(rpcn.GET_ACTIVE_NETWORKS_INFO)
        wanted = {i["id"]: i for i in infos}
        stale = set(await self._host(self.dhcp.stale)) | set(self.served)
        for net in sorted(stale - set(wanted)):
            await self._teardown(net, release=net in self.served)
        for net, info in sorted(wanted.items()):
            await self._apply(net, info)
        self.stats["syncs"] += 1
        self._next_resync = self.clock() + RESYNC_INTERVAL

    async def _apply(self, net: str, info: dict | None) -> None:
        plan = plan_network(info)
        if plan.action == "teardown":
            if net in self.served or net in await self._host(self.dhcp.stale):
                await self._teardown(net, release=info is not None)
            return
        network = plan.network
        assert network is not None and info is not None
        port = next((p for p in info["ports"] if p["id"] == (self.served.get(net) or {}).get("id")), None)
        if port is None:
            device_id = rpcn.dhcp_device_id(net, self.host)
            port = next((p for p in info["ports"] if p.get("device_id") == device_id), None)
        if not port_matches(port, network):
            try:
                port = await self._call(rpcn.CREATE_DHCP_PORT, network_id=net)
            except RemoteError as e:  # e.g. no free address: this network only, later
                log.error("no DHCP port for network %s (retried at the next resync): %s", net, e)
                self._next_resync = min(self._next_resync, self.clock() + RETRY_DELAY)
                return
            if port is None:
                return  # the network went away meanwhile; its delete cast follows
        try:
            result = await self._host(self.dhcp.serve, network, port, port_cidrs(port, network), dhcp_ips(port))
        except Exception as e:  # host errors: retried by the next resync / check
            self.stats["errors"] += 1
            log.error("serving DHCP for network %s failed: %s", net, e)
            self.intents.dirty.add(net)
            self._next_check = self.clock() + 1.0
            return
        self.served[net] = port
        if result in ("reloaded", "restarted"):
            self.stats["reloads"] += 1
        if result != "unchanged":
            log.info("DHCP for network %s: %s (%d ports)", net, result, len(network.ports))

    async def _teardown(self, net: str, *, release: bool) -> None:
        self.served.pop(net, None)
        await self._host(self.dhcp.teardown, net)
        log.info("DHCP for network %s torn down", net)
        if release:
            try:
                await self._call(rpcn.RELEASE_DHCP_PORT, network_id=net)
            except BusError as e:
                log.warning("releasing the DHCP port of %s failed: %s", net, e)

    # ---- heartbeat -----------------------------------------------------------------
    def agent_state(self, start: bool = False) -> AgentState:
        return AgentState(binary="lbtap-dhcp-agent", host=self.host, agent_type=c.AGENT_TYPE_DHCP,
                          topic=rpcn.DHCP_TOPIC, start_flag=start,
                          configurations={"networks": len(self.served), "netns": self.settings.agent.netns,
                                          **self.stats})


async def run_dhcp_agent(settings: Settings) -> None:
    """``lbtap dhcp-agent``: the DHCP agent alone, talking to a server over the bus."""
    await run_standalone(settings, DhcpAgent)
