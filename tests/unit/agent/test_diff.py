"""Table-driven tests of the pure device-set diff."""

from __future__ import annotations

import pytest

from lbtap.agent.core.diff import scan_diff

CASES = [
    # id, previous, current, updated, (added, removed, updated)
    ("empty", {}, {}, set(), (set(), set(), set())),
    ("first scan", {}, {"tapa": 1, "tapb": 2}, set(), ({"tapa", "tapb"}, set(), set())),
    ("unchanged", {"tapa": 1}, {"tapa": 1}, set(), (set(), set(), set())),
    ("removed", {"tapa": 1, "tapb": 2}, {"tapa": 1}, set(), (set(), {"tapb"}, set())),
    ("ifindex change is updated", {"tapa": 1}, {"tapa": 7}, set(), (set(), set(), {"tapa"})),
    ("port_update of present device", {"tapa": 1}, {"tapa": 1}, {"tapa"}, (set(), set(), {"tapa"})),
    ("port_update of absent device ignored", {"tapa": 1}, {"tapa": 1}, {"tapz"}, (set(), set(), set())),
    ("port_update of new device is only added", {}, {"tapa": 1}, {"tapa"}, ({"tapa"}, set(), set())),
    ("port_update of removed device is only removed", {"tapa": 1}, {}, {"tapa"}, (set(), {"tapa"}, set())),
    ("mixed", {"tapa": 1, "tapb": 2, "tapc": 3}, {"tapb": 2, "tapc": 9, "tapd": 4}, {"tapb"},
     ({"tapd"}, {"tapa"}, {"tapb", "tapc"})),
]


@pytest.mark.parametrize("previous,current,updated,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_scan_diff(previous, current, updated, expected):
    sets = scan_diff(previous, current, updated)
    assert (set(sets.added), set(sets.removed), set(sets.updated)) == expected
    assert dict(sets.current) == current
    # The sets never overlap: a device is new, gone or present in both.
    assert not (sets.added & sets.updated) and not (sets.removed & sets.updated)


def test_no_sync_flag_can_widen_the_diff():
    """The seed's defect: after an error every device became "added". The diff has no
    such input -- identical scans give empty sets whatever happened in between."""
    scan = {f"tap{i:011d}": i for i in range(1000)}
    sets = scan_diff(scan, dict(scan), set())
    assert not sets.changed


def test_scan_diff_at_scale():
    prev = {f"tap{i:011d}": i for i in range(20000)}
    cur = {f"tap{i:011d}": i + (i % 2) for i in range(10000, 30000)}
    sets = scan_diff(prev, cur, set())
    assert len(sets.added) == 10000 and len(sets.removed) == 10000 and len(sets.updated) == 5000
