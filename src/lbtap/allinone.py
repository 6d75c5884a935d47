"""``lbtap up``: server, L2 agent, SQLite and the in-process bus in one process.

The agent manages ``--netns`` (created if missing) so a demo never touches the
machine's own interfaces; the API listens in the process's own namespace.
"""

from __future__ import annotations

import asyncio
import logging

from lbtap.agent.metrics import register_agent_metrics
from lbtap.agent.runtime import L2Agent
from lbtap.bus.base import make_bus
from lbtap.config import Settings
from lbtap.server.process import build_server, make_uvicorn, serve_rpc

log = logging.getLogger("lbtap.up")


async def run_all_in_one(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM (uvicorn's handlers end ``serve()``)."""
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

        extra_agents = start_network_agents(settings, bus, _agent_done)
        log.info("lbtap up: API http://%s:%d/, agent host %s", settings.server.bind, settings.server.port, settings.agent.host)
        await server.serve()
    finally:
        if agent is not None:
            agent.stop()
        for a, task in extra_agents:
            a.stop()
            await asyncio.gather(task, return_exceptions=True)
        if agent_task is not None:
            await asyncio.gather(agent_task, return_exceptions=True)
        await bus.close()
