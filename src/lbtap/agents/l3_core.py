"""Pure decisions of the L3 agent: which routers to (re)apply and which to destroy.

The server's ``sync_routers(host)`` answer is the desired state; the agent remembers
the last router dict it applied successfully. A router is re-applied when its dict
changed (or on a periodic forced resync: someone may have changed the namespace
behind our back), destroyed when the server no longer gives it to this host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class L3Intents:
    """What casts asked for since the last pass (handlers only record it)."""

    sync: bool = True  # the first pass learns everything
    deleted: set[str] = field(default_factory=set)

    def on_cast(self, method: str, kwargs: dict[str, Any]) -> bool:
        if method == "router_deleted" and kwargs.get("router_id"):
            self.deleted.add(kwargs["router_id"])
            self.sync = True
            return True
        if method == "routers_updated":
            self.sync = True
            return True
        return False

    def take(self) -> tuple[bool, set[str]]:
        out = (self.sync, set(self.deleted))
        self.sync = False
        self.deleted.clear()
        return out


def plan_routers(desired: dict[str, dict], applied: dict[str, dict], present: set[str],
                 *, force: bool = False) -> tuple[list[str], list[str]]:
    """(ids to sync, ids to destroy).

    ``applied``: router id → the dict last applied; ``present``: ids whose namespace
    exists on the host (after a restart the agent knows only those).
    """
    to_sync = sorted(rid for rid, d in desired.items() if force or applied.get(rid) != d)
    to_destroy = sorted((set(applied) | set(present)) - set(desired))
    return to_sync, to_destroy
