"""L3 agent decisions: which routers to apply and which to destroy."""

from __future__ import annotations

from lbtap.agents.l3_core import L3Intents, plan_routers

R1 = {"id": "r1", "routes": []}
R2 = {"id": "r2", "routes": []}


def test_unchanged_routers_are_not_reapplied_unless_forced():
    assert plan_routers({"r1": R1}, {"r1": R1}, {"r1"}) == ([], [])
    assert plan_routers({"r1": R1}, {"r1": R1}, {"r1"}, force=True) == (["r1"], [])


def test_changed_and_new_routers_are_applied():
    changed = {**R1, "routes": [{"destination": "10.9.0.0/24", "nexthop": "10.0.0.9"}]}
    assert plan_routers({"r1": changed, "r2": R2}, {"r1": R1}, {"r1"}) == (["r1", "r2"], [])


def test_routers_gone_from_the_server_are_destroyed_including_leftovers_after_restart():
    # r2 was applied by this run; r3's namespace survived a restart of the agent.
    assert plan_routers({"r1": R1}, {"r1": R1, "r2": R2}, {"r1", "r2", "r3"}) == ([], ["r2", "r3"])


def test_intents():
    i = L3Intents()
    assert i.take() == (True, set())
    assert i.take() == (False, set())
    assert not i.on_cast("port_update", {})
    assert i.on_cast("routers_updated", {"router_ids": ["r1"]})
    assert i.on_cast("router_deleted", {"router_id": "r2"})
    assert i.take() == (True, {"r2"})
