"""Test tiers by folder: tests/unit, tests/functional, tests/fullstack.

Each test is marked with its tier automatically (``-m unit`` etc. select them). Helpers
for services, root and namespaces live in ``tests/support.py``.
"""

from __future__ import annotations

import pytest

_TIERS = ("unit", "functional", "fullstack")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = item.path.parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                break
