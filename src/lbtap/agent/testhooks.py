"""Test-only hooks of the L2 agent, enabled by ``agent.test_hooks = true``.

``rereport``: the agent forgets which statuses the server acknowledged, so its next pass
sends ``update_device_up`` again for every wired device -- the seed's storm, on
purpose, to prove that the server's storm alarm fires and names the devices. Triggered
by the ``debug_rereport`` cast (on the agent's host topic or the fanout) or by SIGUSR1
to the agent's process (``lbtap up`` runs the server in-process on the memory bus, where
no outside process can cast).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger("lbtap.agent.testhooks")

DEBUG_REREPORT = "debug_rereport"


def rereport(agent: Any, now: float) -> int:
    """Make ``agent``'s core send every acknowledged status again; returns how many."""
    n = agent.core.reporter.forget_acks()
    log.warning("TEST HOOK: re-reporting %d device(s) already acknowledged by the server", n)
    return n


def install(agent: Any) -> None:
    """Register the cast handler and the SIGUSR1 handler (call from the agent's loop)."""
    import asyncio

    def queue(_kwargs: dict[str, Any] | None = None) -> None:
        # Handlers only record intent; the agent's one loop does the work.
        agent._intents.append(lambda now: rereport(agent, now))
        agent.wake()

    agent._ext_casts[DEBUG_REREPORT] = queue
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, queue)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread (in-process tests)
        log.debug("SIGUSR1 test hook unavailable in this thread")
    log.warning("TEST HOOKS ENABLED (testing only): %s cast and SIGUSR1 re-report every device", DEBUG_REREPORT)
