"""The DHCP and L3 agents as tasks of ``lbtap up`` (same process, bus and host)."""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any, Callable

from lbtap.bus.base import Bus
from lbtap.config import Settings

log = logging.getLogger("lbtap.up")

# (module, class) of each network agent ``lbtap up`` runs beside the L2 agent.
AGENTS = (("lbtap.agents.dhcp", "DhcpAgent"), ("lbtap.agents.l3", "L3Agent"))


def start_network_agents(settings: Settings, bus: Bus, on_done: Callable[[asyncio.Task], None], *,
                         teardown_on_stop: bool = False) -> list[tuple[Any, asyncio.Task]]:
    """Start every agent of ``AGENTS`` that exists in this build; ``on_done`` sees a crash.

    ``teardown_on_stop``: a stopped agent removes what it set up (dnsmasq, namespaces)
    before its task ends, instead of leaving it for a restarted agent to adopt.
    """
    out = []
    for module, cls in AGENTS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        agent = getattr(mod, cls)(settings, bus, teardown_on_stop=teardown_on_stop)
        task = asyncio.create_task(agent.run(), name=f"lbtap-{cls}")

        def done(t: asyncio.Task, name: str = cls) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.error("%s stopped: %r", name, t.exception())
            on_done(t)  # a dead agent must not leave a server pretending all is well

        task.add_done_callback(done)
        out.append((agent, task))
    return out
