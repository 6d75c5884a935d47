"""The only code that calls a ``HostDriver``: apply ops in order, scope failures.

Failure scoping (the cure for the seed's storm): an op that fails fails exactly the
devices that depend on it; later ops are skipped only when every device they serve has
already failed. Device-less ops (tearing down a bridge) are scoped by
``Op.failure_key``. Nothing here retries: the core decides when to try again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lbtap.agent.core import ops as o
from lbtap.drivers.host.base import HostDriver
from lbtap.drivers.host.errors import HostError

log = logging.getLogger("lbtap.agent.executor")


@dataclass
class ApplyResult:
    """Outcome of ``apply``.

    ``succeeded``: devices all of whose ops were applied. ``failed``: device -> the
    first error that hit it. ``other_failures``: ``Op.failure_key`` -> error for ops
    serving no device. ``applied``: ops that took effect, in order (the core folds them
    into its host model). ``skipped``: ops not attempted because their devices had
    already failed.
    """

    succeeded: set[str] = field(default_factory=set)
    failed: dict[str, HostError] = field(default_factory=dict)
    other_failures: dict[str, HostError] = field(default_factory=dict)
    applied: list[o.Op] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0

    @property
    def touched_addresses(self) -> bool:
        """True when an applied op changed addresses or routes (re-read them)."""
        return any(op.touches_addresses for op in self.applied)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.other_failures


def _move_route(driver: HostDriver, op: o.MoveRoute) -> None:
    new = replace(op.route, ifname=op.to)
    driver.delete_route(op.route)
    try:
        driver.add_route(new)
    except HostError:
        # Never leave the host without the route: put the old one back, then report.
        try:
            driver.add_route(op.route)
        except HostError as e:
            log.error("could not restore route %s on %s after a failed move: %s", op.route.dst, op.subject, e)
        raise


def _wire_port(driver: HostDriver, op: o.WirePort) -> None:
    # MTU before enslaving, admin state after: the tap never forwards with a wrong MTU.
    if op.mtu is not None:
        driver.set_link(op.subject, mtu=op.mtu)
    if op.bridge is not None:
        driver.enslave(op.subject, op.bridge)
    if op.up is not None:
        driver.set_link(op.subject, up=op.up)


def _reject(driver: HostDriver, op: o.Reject) -> None:
    raise o.WiringRejected(op.reason, op="wire", device=op.subject)


_DISPATCH: dict[type, Callable[[HostDriver, Any], None]] = {
    o.CreateBridge: lambda d, op: d.create_bridge(op.subject, mtu=op.mtu),
    o.DeleteBridge: lambda d, op: d.delete_link(op.subject),
    o.DeleteLink: lambda d, op: d.delete_link(op.subject),
    o.EnsureVxlan: lambda d, op: d.create_vxlan(op.subject, op.info, mtu=op.mtu),
    o.EnsureVlan: lambda d, op: d.create_vlan(op.subject, op.parent, op.vlan_id, mtu=op.mtu),
    o.SetLinkState: lambda d, op: d.set_link(op.subject, up=op.up, mtu=op.mtu),
    o.Enslave: lambda d, op: d.enslave(op.subject, op.bridge),
    o.SetPromoteSecondaries: lambda d, op: d.set_promote_secondaries(op.subject, True),
    o.AddAddress: lambda d, op: d.add_address(op.subject, op.cidr),
    o.DeleteAddress: lambda d, op: d.delete_address(op.subject, op.cidr),
    o.MoveRoute: _move_route,
    o.WirePort: _wire_port,
    o.Reject: _reject,
}


def apply(driver: HostDriver, ops: Sequence[o.Op]) -> ApplyResult:
    """Apply ``ops`` in order through ``driver``; never raises for a host failure.

    A driver bug (an exception that is not a ``HostError``) is contained the same way,
    as a ``HostError`` on the op's devices, so one device can never stop the others.
    """
    started = time.perf_counter()
    result = ApplyResult()
    touched: set[str] = set()
    for op in ops:
        if op.devices:
            if all(d in result.failed for d in op.devices):
                result.skipped += 1
                continue
        elif op.failure_key in result.other_failures:
            result.skipped += 1
            continue
        touched.update(op.devices)
        try:
            _DISPATCH[type(op)](driver, op)
        except HostError as e:
            _record(result, op, e)
        except Exception as e:  # noqa: BLE001 - contain driver bugs per device
            log.exception("unexpected error applying %s", op.describe())
            err = HostError(f"unexpected {type(e).__name__}: {e}", op=type(op).__name__, device=op.subject)
            _record(result, op, err)
        else:
            result.applied.append(op)
    result.succeeded = touched - result.failed.keys()
    result.seconds = time.perf_counter() - started
    return result


def _record(result: ApplyResult, op: o.Op, err: HostError) -> None:
    if not isinstance(op, o.Reject):
        log.warning("%s failed for %s: %s", op.describe(), ", ".join(op.devices[:5]) or op.failure_key, err)
    if op.devices:
        for d in op.devices:
            result.failed.setdefault(d, err)
    else:
        result.other_failures[op.failure_key] = err
