"""``lbtap up``: server, L2 agent, SQLite and the in-process bus in one process.

The agent manages ``--netns`` (created if missing) so a demo never touches the
machine's own interfaces; the API listens in the process's own namespace.

A clean stop (SIGINT/SIGTERM) leaves no DHCP or router state behind: the DHCP and L3
agents stop the dnsmasq processes they started (by PID) and delete the ``qdhcp-``/
``qrouter-`` namespaces they created. ``lbtap up --keep-on-exit`` leaves them for the
next ``lbtap up`` to adopt (no DHCP outage across a restart), as the standalone
``lbtap dhcp-agent``/``l3-agent`` always do. After a crash, ``lbtap cleanup`` removes
them.
"""

from __future__ import annotations

import asyncio
import logging

from lbtap.agent.metrics import register_agent_metrics
from lbtap.agent.runtime import L2Agent
from lbtap.bus.base import make_bus
from lbtap.config import Settings
from lbtap.server.process import build_server, drain_notifications, make_uvicorn, serve_rpc

log = logging.getLogger("lbtap.up")

async def run_all_in_one(settings: Settings, *, keep_on_exit: bool | None = None) -> None:
    """Run until SIGINT/SIGTERM (uvicorn's handlers end ``serve()``).

    ``keep_on_exit`` (default: ``agent.keep_on_exit``): leave dnsmasq and the DHCP/router
    namespaces in place when stopping; otherwise they are removed.
    """
    if keep_on_exit is None:
        keep_on_exit = settings.agent.keep_on_exit
    if settings.agent.netns:
        from lbtap.drivers.host import netns

        netns.create(settings.agent.netns)
    bus = make_bus(settings.bus.transport_url)
    await bus.start()
    agent: L2Agent | None = None
    agent_task: asyncio.Task | None = None
    extra_agents: list = []  # DHCP and L3 agents: (agent, task)
    try:
        parts = build_server(settings, bus, asyncio.get_running_loop())
        await serve_rpc(parts)
        server = make_uvicorn(settings, parts.app)
        agent = L2Agent(settings, bus)
        register_agent_metrics(agent, parts.app.state.metrics.registry)  # the server's /metrics shows the agent
        agent_task = asyncio.create_task(agent.run(), name="lbtap-l2-agent")

        def _agent_done(task: asyncio.Task) -> None:
            # A dead agent must not leave a server pretending all is well.
            if not task.cancelled() and task.exception() is not None:
                log.error("L2 agent stopped: %r; shutting down", task.exception())
                server.should_exit = True

        agent_task.add_done_callback(_agent_done)
        # DHCP and L3 agents of the same host (issue 7): their own loops, same bus.
        from lbtap.agents.inprocess import start_network_agents

        extra_agents = start_network_agents(settings, bus, _agent_done, teardown_on_stop=not keep_on_exit)
        log.info("lbtap up: API http://%s:%d/, agent host %s", settings.server.bind, settings.server.port, settings.agent.host)
        await server.serve()
        # Before the agents stop: they are the receivers of what the last requests changed.
        if not server.force_exit:  # a second signal means now
            await drain_notifications(parts)
    finally:
        # The L2 agent first: it must not report the DHCP/router ports DOWN while their
        # taps go away below (a restart then finds them ACTIVE, as after --keep-on-exit).
        if agent is not None:
            agent.stop()
        if agent_task is not None:
            await asyncio.gather(agent_task, return_exceptions=True)
        for a, _task in extra_agents:
            a.stop()
        for _a, task in extra_agents:  # each tears down what it set up unless keep_on_exit
            await asyncio.gather(task, return_exceptions=True)
        if extra_agents:
            log.info("lbtap up stopped: DHCP and router state %s", "kept (--keep-on-exit)" if keep_on_exit else "removed")
        await bus.close()
