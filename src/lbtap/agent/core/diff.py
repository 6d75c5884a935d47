"""The device-set diff of one scan: which taps appeared, went away or changed.

The seed's loop computed the same four sets, but a ``sync`` flag turned *every* tap into
"added" after any error. Here the diff is a pure function of two observations and a set
of names somebody asked us to look at again; nothing can widen it.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeviceSets:
    """Result of ``scan_diff``; every set holds tap names.

    ``updated`` never overlaps ``added`` or ``removed``: a device is either new, gone,
    or present in both scans and in need of another look.
    """

    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    updated: frozenset[str] = frozenset()
    current: Mapping[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.updated)


def scan_diff(previous: Mapping[str, int], current: Mapping[str, int], updated: Set[str] = frozenset()) -> DeviceSets:
    """Diff two scans keyed by tap name -> ifindex.

    * added = in ``current`` only;
    * removed = in ``previous`` only;
    * updated = present in both and either named in ``updated`` (port_update messages)
      or with a different ifindex (the device was deleted and re-created between scans,
      so its wiring is gone even though the name is the same).

    Names in ``updated`` that are not in both scans are ignored: a new device is already
    "added", a vanished one "removed". Runs in O(len(previous) + len(current)).
    """
    added = frozenset(name for name in current if name not in previous)
    removed = frozenset(name for name in previous if name not in current)
    changed = {name for name, index in current.items() if name in previous and previous[name] != index}
    changed.update(name for name in updated if name in current and name in previous)
    return DeviceSets(added=added, removed=removed, updated=frozenset(changed), current=dict(current))
