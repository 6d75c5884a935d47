"""Kernel operations the planner emits and the executor applies.

Every op is a frozen value naming the link it acts on (``subject``) and the devices
(tap names) whose wiring depends on it (``devices``). The executor uses ``devices`` to
scope a failure: a failed bridge creation fails exactly the taps of that network, a
failed tap op fails that tap only. Ops with no devices -- tearing down an empty bridge,
re-checking a network's bridge and uplink, moving the host's IP (the host's
connectivity, never a port's) -- are scoped by ``scope`` (the bridge): after one fails,
the rest of that unit is skipped and the core retries it with backoff.

Ops describe *what*, never *how*: only ``executor`` turns them into driver calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lbtap.drivers.host.base import Route, VxlanInfo
from lbtap.drivers.host.errors import HostError


class WiringRejected(HostError):
    """The agent cannot wire a device with its configuration (no mapping for the
    physical network, no local_ip for VXLAN, unknown segment type, missing uplink NIC).

    Raised by the executor for a ``Reject`` op, so that configuration problems flow
    through the same per-device failure path as kernel errors.
    """

    retriable = False


@dataclass(frozen=True)
class Op:
    """Base of all ops. ``devices`` are the taps whose wiring needs this op."""

    subject: str
    devices: tuple[str, ...] = field(default=(), kw_only=True)
    #: For ops without devices: the unit of work they belong to (a bridge); after one
    #: fails, the executor skips the rest of that unit.
    scope: str = field(default="", kw_only=True)

    #: True when the op changes addresses or routes (the runtime then re-reads them).
    touches_addresses = False

    @property
    def failure_key(self) -> str:
        """Where a failure of a device-less op is recorded (``ApplyResult.other_failures``)."""
        return self.scope or self.subject

    def describe(self) -> str:
        """Short human form for logs: ``Enslave(tap1 bridge=brq1)``."""
        fields = {k: v for k, v in self.__dict__.items() if k not in ("subject", "devices", "scope") and v is not None}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{type(self).__name__}({self.subject}{' ' + extra if extra else ''})"


@dataclass(frozen=True)
class CreateBridge(Op):
    mtu: int | None = None


@dataclass(frozen=True)
class DeleteBridge(Op):
    """Delete a ``brq`` bridge (its remaining slaves are released by the kernel)."""


@dataclass(frozen=True)
class EnsureVxlan(Op):
    info: VxlanInfo = VxlanInfo(vni=0)
    mtu: int | None = None


@dataclass(frozen=True)
class EnsureVlan(Op):
    parent: str = ""
    vlan_id: int = 0
    mtu: int | None = None


@dataclass(frozen=True)
class DeleteLink(Op):
    """Delete a link the agent created (a VXLAN or VLAN uplink of a removed bridge)."""


@dataclass(frozen=True)
class SetLinkState(Op):
    """Set administrative state and/or MTU; None leaves an attribute alone."""

    up: bool | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class Enslave(Op):
    bridge: str = ""


@dataclass(frozen=True)
class WirePort(Op):
    """Bring one port's tap to its wanted state, missing steps only: MTU (if set), then
    enslave to ``bridge`` (if set), then admin state ``up`` (if set).

    One op per port rather than three: ports are the many (a burst is 1000 taps), and
    all three steps concern the same single device anyway.
    """

    bridge: str | None = None
    mtu: int | None = None
    up: bool | None = None


@dataclass(frozen=True)
class SetPromoteSecondaries(Op):
    """Before deleting a primary address, so that its secondaries survive."""

    touches_addresses = True


@dataclass(frozen=True)
class AddAddress(Op):
    cidr: str = ""
    touches_addresses = True


@dataclass(frozen=True)
class DeleteAddress(Op):
    cidr: str = ""
    touches_addresses = True


@dataclass(frozen=True)
class MoveRoute(Op):
    """Move one route from ``subject`` to ``to`` (same destination and gateway).

    One op, not two: IPv4 rejects a second default route of the same metric, so the old
    one must go first, and if the new one then cannot be added the executor puts the old
    one back rather than leave the host without a gateway.
    """

    route: Route = Route(dst="default", ifname="")
    to: str = ""
    touches_addresses = True


@dataclass(frozen=True)
class Reject(Op):
    """No kernel change: fail ``devices`` with ``reason`` (configuration problem)."""

    reason: str = ""


def devices_of(ops: list[Op]) -> set[str]:
    """Every device some op in ``ops`` depends on."""
    out: set[str] = set()
    for op in ops:
        out.update(op.devices)
    return out
