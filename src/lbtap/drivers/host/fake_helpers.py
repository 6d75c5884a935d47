"""Test-only helpers of ``FakeHost`` (a mixin; nothing here is in ``HostDriver``):
fault injection, the operation log, simulated NICs, carrier and counters, and sibling
namespaces for veth peers."""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lbtap.drivers.host import errors
from lbtap.drivers.host.base import LinkEvent
from lbtap.drivers.host.kernel_rules import norm_mac, validate_name

if TYPE_CHECKING:
    from lbtap.drivers.host.fake import FakeHost


@dataclass
class _Fault:
    op: str
    device: str | None
    error: errors.HostError | type[errors.HostError]
    times: int | None


def random_mac() -> str:
    b = [random.randint(0, 255) for _ in range(6)]
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered, like the kernel's
    return ":".join(f"{x:02x}" for x in b)


class FakeTestHelpers:
    """Mixed into ``FakeHost``; uses its lock, link table and event queue."""

    def namespace(self, name: str) -> "FakeHost":
        """The sibling namespace ``name`` (created on first use), for veth peers."""
        with self._lock:
            if name not in self._world:
                type(self)(supports_vlan=self.supports_vlan, netns=name, _world=self._world)
            return self._world[name]

    def fail(self, op: str, device: str | None = None, error: errors.HostError | type[errors.HostError] | None = None, *, times: int | None = None) -> None:
        """Make ``op`` (a method name) on ``device`` (None: any) raise ``error``.

        ``error`` defaults to ``Transient``; ``times`` limits how often (None: forever).
        The failing call changes nothing, like a kernel refusal.
        """
        self._faults.append(_Fault(op, device, error or errors.Transient, times))

    def clear_faults(self) -> None:
        self._faults.clear()

    def create_physical(self, name: str, *, mac: str | None = None, mtu: int = 1500, up: bool = True) -> None:
        """Add a NIC-like link (kind "") as if the machine had it, e.g. ``eth1``."""
        with self._lock:
            validate_name(name, "create_physical")
            if name in self._links:
                raise errors.AlreadyExists(f"{name} exists", op="create_physical", device=name, code=errno.EEXIST)
            self._add(name, "", norm_mac(mac) if mac else random_mac(), mtu=mtu, up=up)
        self._flush_events()

    def set_carrier(self, name: str, on: bool = True) -> None:
        """Simulate a process opening (or closing) a TAP, or a cable on a NIC."""
        with self._lock:
            link = self._get(name, "set_carrier")
            link.reader = on
            link.phys_carrier = on
            self._changed(name)
            if link.master:
                self._changed(link.master)
        self._flush_events()

    def bump_stats(self, name: str, **deltas: int) -> None:
        """Add to a link's counters, e.g. ``bump_stats("tap1", rx_packets=3)``."""
        with self._lock:
            link = self._get(name, "bump_stats")
            link.stats = replace(link.stats, **{k: getattr(link.stats, k) + v for k, v in deltas.items()})

    def emit_overflow(self) -> None:
        """Tell watchers events were lost, as an overflowing netlink socket does."""
        self._emit([LinkEvent("overflow")])

    def _enter(self, op: str, device: str | None) -> None:
        self.calls.append((op, device))
        for f in list(self._faults):
            if f.op == op and (f.device is None or f.device == device):
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        self._faults.remove(f)
                err = f.error
                if isinstance(err, type):
                    err = err(f"injected failure of {op} on {device}", op=op, device=device)
                raise err
