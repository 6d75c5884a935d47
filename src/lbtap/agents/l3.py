"""The L3 agent: ``routers_updated`` casts in, ``sync_routers`` out, ``RouterNamespace`` applies.

Seed flow (section 3, router port): the server allocates the router's port and casts
``routers_updated``; the loop asks ``sync_routers(host)`` for every router this host
serves and applies each changed one with ``RouterNamespace.sync`` (namespace
``qrouter-<id>[-<host>]``, ``qr-``/``qg-`` veths whose ``tap`` ends go into the
namespace the L2 agent manages, addresses, routes, SNAT and floating-IP NAT in one
nft transaction). Routers the server no longer gives us are destroyed (namespace,
veths and NAT table go together). A failure is retried for that router only.

Each router namespace is recorded in the state dir before it is created
(``lbtap.agents.state``). Stopping leaves the routers in place (a restarted agent
re-syncs them without an outage), unless ``teardown_on_stop`` (``lbtap up`` without
``--keep-on-exit``). While running the agent holds the state dir's agents lock.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from lbtap.agents.l3_core import L3Intents, plan_routers
from lbtap.agents.loop import NetworkAgentLoop, run_standalone
from lbtap.agents.state import NamespaceRecord, NamespaceRecords
from lbtap.bus.base import Bus, BusError
from lbtap.config import Settings
from lbtap.domain import constants as c
from lbtap.domain.models import AgentState
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.router import LinuxSystem, Router, RouterNamespace
from lbtap.drivers.router.naming import ROUTER_NS_PREFIX, owned_ids, router_namespace
from lbtap.rpc import topics
from lbtap.server import l3_ext as rpcn

log = logging.getLogger("lbtap.l3")

RESYNC_INTERVAL = 60.0
RETRY_DELAY = 1.0
RPC_TIMEOUT = 30.0


class L3Agent(NetworkAgentLoop):
    """One host's L3 agent. ``run()`` until ``stop()``; with ``teardown_on_stop`` it
    destroys every router namespace it set up before ``run()`` returns."""

    topic = rpcn.L3_TOPIC
    kind = "l3"
    log = log

    def __init__(self, settings: Settings, bus: Bus, *, clock: Callable[[], float] = time.monotonic,
                 teardown_on_stop: bool = False):
        super().__init__(settings, bus, clock=clock, teardown_on_stop=teardown_on_stop)
        self.host_netns = settings.agent.netns
        self.suffix = self.host if settings.agent.netns else None
        self.records = NamespaceRecords(settings.state_dir)
        self.intents = L3Intents()
        self.applied: dict[str, dict] = {}
        self.system = LinuxSystem()
        self.stats = {"syncs": 0, "applied": 0, "destroyed": 0, "errors": 0}

    async def _handle_cast(self, method: str, kwargs: dict[str, Any]) -> None:
        if self.intents.on_cast(method, kwargs):
            self._wake.set()

    def _started(self) -> str:
        return f"L3 agent {self.host}: router taps go into {self.host_netns or 'this namespace'}"

    def _close_host(self) -> None:
        self.system.close()

    def _present(self) -> set[str]:
        return set(owned_ids(netns_mod.list_namespaces(), ROUTER_NS_PREFIX, self.suffix))

    def _owned(self) -> set[str]:
        """Routers this host set up: applied by this run, recorded in the state dir for
        this host, or (names carrying the host) found on the machine."""
        ids = set(self.applied)
        ids |= {r.resource_id for r in self.records.read()
                if r.kind == "router" and r.host == self.host and r.suffix == self.suffix and r.valid()}
        if self.suffix:
            ids |= self._present()
        return ids

    async def _teardown_all(self) -> None:
        """Destroy every router namespace this host set up (``lbtap up`` stopping)."""
        try:
            owned = await self._host(self._owned)
        except Exception as e:  # noqa: BLE001 - stopping anyway
            log.error("listing routers to remove on stop failed: %s", e)
            return
        done = 0
        for rid in sorted(owned):
            try:
                await self._host(self._destroy, rid)
                self.applied.pop(rid, None)
                done += 1
            except Exception as e:  # noqa: BLE001 - do the others, say what stays
                log.error("removing router %s on stop failed: %s", rid, e)
        if done:
            log.info("routers removed on stop: %d", done)

    async def iterate(self) -> None:
        force = self.clock() >= self._next_resync
        sync, _deleted = self.intents.take()
        if not (sync or force):
            return
        try:
            routers = await self.bus.call(topics.PLUGIN, rpcn.SYNC_ROUTERS, timeout=RPC_TIMEOUT, host=self.host)
        except BusError as e:
            log.warning("sync_routers failed, retrying: %s", e)
            self._next_resync = self.clock() + RETRY_DELAY
            return
        desired = {r["id"]: r for r in routers}
        present = await self._host(self._present)
        to_sync, to_destroy = plan_routers(desired, self.applied, present, force=force)
        failed = False
        for rid in to_destroy:
            try:
                await self._host(self._destroy, rid)
                self.applied.pop(rid, None)
                self.stats["destroyed"] += 1
                log.info("router %s removed", rid)
            except Exception as e:
                failed = True
                log.error("removing router %s failed, will retry: %s", rid, e)
        for rid in to_sync:
            try:
                result = await self._host(self._sync, desired[rid])
            except Exception as e:  # this router only; the others are applied
                failed = True
                self.stats["errors"] += 1
                self.applied.pop(rid, None)
                log.error("applying router %s failed, will retry: %s", rid, e)
                continue
            self.applied[rid] = desired[rid]
            self.stats["applied"] += 1
            if result.changed or result.problems:
                log.info("router %s applied: +%s -%s %s", rid, result.created, result.deleted,
                         "; ".join(result.problems))
        self.stats["syncs"] += 1
        self._next_resync = self.clock() + (RETRY_DELAY if failed else RESYNC_INTERVAL)

    def _sync(self, d: dict) -> Any:
        ns = RouterNamespace(d["id"], host=self.suffix, host_netns=self.host_netns, system=self.system)
        self.records.add(NamespaceRecord(ns.name, "router", d["id"], self.host, self.suffix))
        return ns.sync(Router.from_dict(d))

    def _destroy(self, rid: str) -> None:
        RouterNamespace(rid, host=self.suffix, host_netns=self.host_netns, system=self.system).destroy()
        self.records.remove(router_namespace(rid, self.suffix))

    def agent_state(self, start: bool = False) -> AgentState:
        return AgentState(binary="lbtap-l3-agent", host=self.host, agent_type=c.AGENT_TYPE_L3, topic=rpcn.L3_TOPIC,
                          start_flag=start, configurations={"routers": len(self.applied),
                                                            "netns": self.host_netns, **self.stats})


async def run_l3_agent(settings: Settings) -> None:
    """``lbtap l3-agent``: the L3 agent alone, talking to a server over the bus."""
    await run_standalone(settings, L3Agent)
