"""Functional fixtures: throwaway network namespaces (``lbtt-`` prefix) per test.

Every namespace made here is deleted after the test, also when it fails; nothing is
ever created in the root namespace.
"""

from __future__ import annotations

import pytest

from lbtap.drivers.host import netns
from tests.support import NETNS_PREFIX, require_root, unique_netns


@pytest.fixture
def make_netns():
    """Factory: ``make_netns(tag)`` creates a fresh ``lbtt-`` namespace and returns its
    name; all of them are deleted at teardown."""
    require_root()
    made: list[str] = []

    def make(tag: str = "") -> str:
        name = unique_netns(tag)
        assert name.startswith(NETNS_PREFIX)
        netns.create(name)
        made.append(name)
        return name

    yield make
    for name in made:
        assert name.startswith(NETNS_PREFIX)  # never delete anything else
        netns.delete(name)


@pytest.fixture
def test_netns(make_netns) -> str:
    """One fresh namespace for the test."""
    return make_netns()
