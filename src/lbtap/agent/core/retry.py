"""Per-key capped exponential backoff, deterministic given ``now``.

The n-th consecutive failure of a key schedules its next attempt at
``now + min(initial * 2**(n-1), maximum)``; a success forgets the key. A non-retriable
failure (configuration, missing kernel feature) waits ``maximum`` straight away: it is
still retried, slowly, in case an operator fixes it. No jitter: each key already fails
at its own time, and tests need exact schedules.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass
class RetryState:
    """One key's failure streak."""

    attempts: int
    next_at: float
    last_error: str = ""


class Backoff:
    """Failure streaks and due times for many keys, with an O(log n) earliest-due query."""

    def __init__(self, initial: float, maximum: float) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._states: dict[str, RetryState] = {}
        self._heap: list[tuple[float, str]] = []  # may hold stale entries; checked on read

    def delay(self, attempts: int) -> float:
        """Wait after the ``attempts``-th consecutive failure."""
        if attempts <= 0:
            return 0.0
        # Cap the exponent so huge streaks do not overflow a float.
        return min(self.initial * 2 ** min(attempts - 1, 64), self.maximum)

    def failed(self, key: str, now: float, *, retriable: bool = True, error: str = "") -> float:
        """Record a failure of ``key``; returns when it may be tried again."""
        state = self._states.get(key)
        attempts = (state.attempts if state else 0) + 1
        wait = self.delay(attempts) if retriable else self.maximum
        next_at = now + wait
        self._states[key] = RetryState(attempts, next_at, error)
        heapq.heappush(self._heap, (next_at, key))
        return next_at

    def succeeded(self, key: str) -> None:
        self._states.pop(key, None)

    forget = succeeded

    def due(self, key: str, now: float) -> bool:
        """True if ``key`` has no pending wait (never failed, or its wait is over)."""
        state = self._states.get(key)
        return state is None or state.next_at <= now

    def get(self, key: str) -> RetryState | None:
        return self._states.get(key)

    def attempts(self, key: str) -> int:
        state = self._states.get(key)
        return state.attempts if state else 0

    def next_due(self, now: float) -> float | None:
        """Earliest future due time of any key (past ones are already due: skipped)."""
        heap = self._heap
        while heap:
            at, key = heap[0]
            state = self._states.get(key)
            if state is None or state.next_at != at or at <= now:
                heapq.heappop(heap)  # stale, or due already: the caller acts on it now
                continue
            return at
        return None

    def waiting(self) -> dict[str, RetryState]:
        return dict(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states
