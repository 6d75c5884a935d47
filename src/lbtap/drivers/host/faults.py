"""Fault injection for tests and drills: a HostDriver wrapper that makes chosen
operations on chosen devices fail, persistently, like a broken device would.

Enabled only by the ``agent.inject_faults`` setting (e.g. ``["enslave:tapdeadbeef00"]``,
``["*:tapdeadbeef00"]`` for every operation on that device). Production configs leave
it empty; the agent logs loudly when it is set.
"""

from __future__ import annotations

import errno
from typing import Any, Iterable

from lbtap.drivers.host.errors import from_errno

# Read-only operations are never failed: a broken device is still listed by the kernel.
_READ_ONLY = frozenset({"list_links", "get_link", "list_addresses", "list_routes", "list_fdb", "link_stats", "watch_links", "close"})


def parse_rules(rules: Iterable[str]) -> frozenset[tuple[str, str]]:
    """``"op:device"`` strings into (op, device) pairs; ``*`` matches any op."""
    out = set()
    for rule in rules:
        op, sep, device = rule.partition(":")
        if not sep or not op or not device:
            raise ValueError(f"bad fault rule {rule!r}: expected op:device")
        out.add((op, device))
    return frozenset(out)


def _device_of(args: tuple[Any, ...]) -> str | None:
    if not args:
        return None
    first = args[0]
    if isinstance(first, str):
        return first
    return getattr(first, "ifname", None)


class FaultInjectingHost:
    """Delegates to ``inner``; raises an EIO-like HostError for matching (op, device)."""

    def __init__(self, inner: Any, rules: Iterable[str]):
        self._inner = inner
        self._rules = parse_rules(rules)
        self.injected = 0  # how many operations were failed on purpose

    def __getattr__(self, op: str) -> Any:
        target = getattr(self._inner, op)
        if op in _READ_ONLY or not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            device = _device_of(args)
            if device is not None and ((op, device) in self._rules or ("*", device) in self._rules):
                self.injected += 1
                raise from_errno(errno.EIO, f"injected fault: {op} {device}", op=op, device=device)
            return target(*args, **kwargs)

        return call
