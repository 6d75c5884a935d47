"""Notifications handed from the API's worker threads to the server's event loop.

Every server → agent notification is a coroutine run on the loop; the data layer calls
the notifiers after its transaction commits, from whatever thread served the request,
and must never wait for the bus. ``Outbox`` is that hand-off for every notifier. It
also counts what it was handed and has not finished sending, so a stopping server can
send what its last requests committed before it closes the bus (``drain``) rather than
leave the agents to find out at their next periodic re-read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)


class InFlight:
    """A thread-safe count of work handed over and not yet finished, to wait on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._n += n

    def done(self, n: int = 1) -> None:
        with self._lock:
            self._n -= n

    def idle(self) -> bool:
        with self._lock:
            return self._n == 0

    async def wait_idle(self, timeout: float) -> bool:
        """Wait (on a loop) until the count is zero, including work added meanwhile by
        what is finishing; False if ``timeout`` ran out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.idle():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True


class Outbox:
    """Runs coroutine functions on ``loop`` from any thread, and knows when all are done.

    ``loop=None`` (a data layer used without a server, e.g. in tools) drops everything.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None, what: str = "notification"):
        self.loop = loop
        self.what = what
        self.in_flight = InFlight()
        # The loop keeps only weak references to tasks: hold them until they finish.
        self._tasks: set[asyncio.Task] = set()

    def submit(self, fn: Callable[[], Awaitable[Any]], delay: float = 0.0) -> None:
        """Run ``await fn()`` on the loop, after ``delay`` seconds if given.

        Never blocks and never raises into the caller: what ``fn`` raises is logged (a
        lost cast is repaired by the agents' periodic re-reads)."""
        if self.loop is None:
            return
        self.in_flight.add()

        async def run() -> None:
            try:
                await fn()
            except Exception as e:
                log.warning("%s failed: %s", self.what, e)

        def finished(task: asyncio.Task) -> None:
            # Here rather than in run(): a task cancelled before its first step (the loop
            # shutting down) never enters run's body, and must still count as done.
            self._tasks.discard(task)
            self.in_flight.done()

        def start() -> None:
            task = self.loop.create_task(run())
            self._tasks.add(task)
            task.add_done_callback(finished)

        def schedule() -> None:
            if delay > 0:
                self.loop.call_later(delay, start)
            else:
                start()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is self.loop:
                schedule()
            else:
                self.loop.call_soon_threadsafe(schedule)
        except RuntimeError as e:  # the loop is closed: the server is gone
            self.in_flight.done()
            log.warning("%s dropped: %s", self.what, e)

    def idle(self) -> bool:
        """True when everything submitted so far has finished."""
        return self.in_flight.idle()

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far has finished; False on timeout."""
        return await self.in_flight.wait_idle(timeout)
