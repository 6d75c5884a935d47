"""Status reporting state: what the server should hear, and what it has acknowledged.

Reports are computed from state, not queued as messages: for each device we keep the
status we want the server to hold (``want``) and the one it acknowledged (``acked``).
A device is pending while they differ. Consequences:

* exactly one ``up`` per DOWN->ACTIVE transition: once acked, re-wiring, full scans or
  agent restarts (the server's status seeds ``acked``) change nothing;
* a batch lost to a server outage is not re-sent as recorded; the next batch is built
  from the current state, so a device that went away meanwhile sends ``down``, not a
  stale ``up``, and nothing is sent twice;
* a batch whose answer was lost may still have been applied: its devices become
  *unsure* and are not re-sent until the server's status has been read again (with
  the device details), so an outage never turns into a second ``up``;
* devices the server lists as failed are retried on their own with backoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from lbtap.agent.core.retry import Backoff

_SERVER = "<server>"


class Reporter:
    """Batched, duplicate-free ``update_device_list`` bookkeeping for one agent."""

    def __init__(self, retry_initial: float, retry_max: float) -> None:
        self._want: dict[str, bool] = {}
        self._acked: dict[str, bool] = {}
        self._gone: set[str] = set()  # forget these once their down is acked
        self._pending: set[str] = set()
        self._inflight: set[str] = set()
        self._unsure: set[str] = set()  # outcome of their last report unknown
        self._device_retry = Backoff(retry_initial, retry_max)
        self._server_retry = Backoff(retry_initial, retry_max)
        self.counters = {"batches": 0, "sent_up": 0, "sent_down": 0, "acked_up": 0, "acked_down": 0,
                         "failed_devices": 0, "server_unreachable": 0}
        # hold(device) -> True keeps an "up" report back (e.g. its firewall is not in
        # place yet); the runtime sets it from its extensions.
        self.hold: Callable[[str], bool] | None = None

    # ---- what the server should hold ---------------------------------------------------
    def server_status(self, device: str, up: bool | None) -> None:
        """The server's view as read with the device details. Seeds ``acked`` only for a
        device we have not reported yet: a restarted agent does not re-report ACTIVE ports.
        """
        if device in self._unsure and device not in self._inflight:
            # The truth after a report whose answer was lost (None: server knows nothing).
            self._unsure.discard(device)
            if up is not None:
                self._acked[device] = up
            self._sync(device)
            return
        if up is not None and device not in self._acked and device not in self._inflight:
            self._acked[device] = up
            self._sync(device)

    def want(self, device: str, up: bool) -> None:
        """The device is wired (``up`` = admin state up) and should be reported so."""
        self._gone.discard(device)
        self._want[device] = up
        self._sync(device)

    def device_gone(self, device: str) -> None:
        """The device left the host: the server should hear ``down`` unless it already holds it."""
        if device not in self._want and device not in self._acked and device not in self._unsure:
            return
        # Nobody will read its status again: a possibly duplicate down is harmless.
        self._unsure.discard(device)
        self._want[device] = False
        self._gone.add(device)
        self._sync(device)

    def forget(self, device: str) -> None:
        """Drop all state (the port no longer exists on the server: nothing to report)."""
        self._want.pop(device, None)
        self._acked.pop(device, None)
        self._gone.discard(device)
        self._pending.discard(device)
        self._unsure.discard(device)
        self._device_retry.forget(device)

    def forget_acks(self) -> int:
        """Testing only: forget what the server acknowledged, so every wanted status is
        sent again (the duplicate reports of a storm, on purpose). Returns how many."""
        devices = [d for d in self._acked if d in self._want and d not in self._inflight]
        for device in devices:
            del self._acked[device]
            self._sync(device)
        return len(devices)

    def _sync(self, device: str) -> None:
        if device in self._unsure:
            self._pending.discard(device)
            return
        want = self._want.get(device)
        if want is not None and want != self._acked.get(device):
            self._pending.add(device)
            return
        self._pending.discard(device)
        if device in self._gone and device not in self._inflight:
            self.forget(device)

    def _held(self, device: str) -> bool:
        # Only "up" waits: a device going down is reported at once.
        return self.hold is not None and self._want.get(device, False) and self.hold(device)

    # ---- sending -------------------------------------------------------------------------
    def take(self, now: float) -> tuple[list[str], list[str]]:
        """The next batch (devices_up, devices_down), marked in flight.

        Every non-empty batch taken must be handed back to ``sent`` (result None if it
        could not be delivered). Empty while the server is in backoff.
        """
        if not self._pending or not self._server_retry.due(_SERVER, now):
            return [], []
        up: list[str] = []
        down: list[str] = []
        for device in self._pending:
            if device in self._inflight or not self._device_retry.due(device, now) or self._held(device):
                continue
            (up if self._want[device] else down).append(device)
        self._inflight.update(up)
        self._inflight.update(down)
        up.sort()
        down.sort()
        if up or down:
            self.counters["batches"] += 1
            self.counters["sent_up"] += len(up)
            self.counters["sent_down"] += len(down)
        return up, down

    def sent(self, up: list[str], down: list[str], result: Mapping[str, Any] | None, now: float) -> None:
        """Outcome of sending a batch. ``result`` None: the server was unreachable."""
        self._inflight.difference_update(up)
        self._inflight.difference_update(down)
        if result is None:
            self.counters["server_unreachable"] += 1
            self._server_retry.failed(_SERVER, now)
            ups = set(up)
            for device in (*up, *down):
                # The call may have been processed with only the answer lost: an up's
                # outcome is unknown until read again (``server_status``) — never send it
                # twice. A down is simply sent again: a duplicate down is harmless, and a
                # gone device's status is never read again.
                self._acked.pop(device, None)
                if device in ups and self._want.get(device) and device not in self._gone:
                    self._unsure.add(device)
                self._sync(device)
            return
        self._server_retry.succeeded(_SERVER)
        failed = set(result.get("failed_devices_up") or ()) | set(result.get("failed_devices_down") or ())
        for sent_up, devices in ((True, up), (False, down)):
            for device in devices:
                if device in failed:
                    self.counters["failed_devices"] += 1
                    self._device_retry.failed(device, now)
                else:
                    self._device_retry.succeeded(device)
                    if device in self._want:  # not forgotten meanwhile
                        self._acked[device] = sent_up
                        self.counters["acked_up" if sent_up else "acked_down"] += 1
                self._sync(device)

    # ---- queries ---------------------------------------------------------------------------
    def knows(self, device: str) -> bool:
        """Whether the device has any report history (wanted, acked, gone, in flight)."""
        return (device in self._want or device in self._acked or device in self._gone
                or device in self._unsure or device in self._inflight)

    def unsure(self) -> list[str]:
        """Devices whose server status must be read again before reporting them."""
        return sorted(self._unsure)

    def next_due(self, now: float) -> float | None:
        """When ``take`` will next return something: ``now`` if it would already."""
        server = self._server_retry.get(_SERVER)
        if server is not None and server.next_at > now:
            return server.next_at if self._pending else None
        if any(d not in self._inflight and self._device_retry.due(d, now) and not self._held(d)
               for d in self._pending):
            return now
        return self._device_retry.next_due(now)

    def acked(self, device: str) -> bool | None:
        return self._acked.get(device)

    def is_pending(self, device: str) -> bool:
        return device in self._pending

    def retrying(self) -> dict[str, int]:
        return {k: v.attempts for k, v in self._device_retry.waiting().items()}

    @property
    def pending_count(self) -> int:
        return len(self._pending)
