"""L2 agent extensions: per-port features layered on the wiring (security groups,
QoS, l2population), in the spirit of Neutron's agent extensions.

The runtime calls an extension at fixed points of its one loop, always on the loop's
thread; an extension keeps a local copy of what it applied and, like the seed's
port-update flow, applies only the difference:

* ``port_details(details)`` — fresh details for a device on this host (new device,
  ``port_update``, restart). Record intent only.
* ``device_gone(device)`` — the device left the host or its port was deleted.
* ``cast_handlers()`` — extra bus casts the extension consumes (e.g. ``fdb_add``);
  handlers record intent only and return at once.
* ``process(now)`` — do the recorded work (kernel calls through ``agent.on_host``,
  RPC through ``agent.plugin`` / ``agent.bus``). Called once per loop pass, after
  wiring and before status reports, so a port's filter is in place before it is
  reported up. Failures are the extension's to retry (per device, with backoff);
  they never widen into a resync.
* ``next_wakeup(now)`` — when ``process`` should run again without new input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Protocol

from lbtap.domain.models import DeviceDetails

if TYPE_CHECKING:
    from lbtap.agent.runtime import L2Agent

CastHandler = Callable[[dict[str, Any]], None]


class AgentExtension(Protocol):
    name: str

    def bind(self, agent: "L2Agent") -> None: ...
    async def start(self) -> None: ...
    def cast_handlers(self) -> Mapping[str, CastHandler]: ...
    def port_details(self, details: DeviceDetails) -> None: ...
    def device_gone(self, device: str) -> None: ...
    async def process(self, now: float) -> None: ...
    def next_wakeup(self, now: float) -> float | None: ...
    def snapshot(self) -> dict[str, Any]: ...
    async def stop(self) -> None: ...


class BaseExtension:
    """No-op defaults, so an extension implements only what it needs."""

    name = "base"

    def bind(self, agent: "L2Agent") -> None:
        self.agent = agent

    async def start(self) -> None:
        return None

    def cast_handlers(self) -> Mapping[str, CastHandler]:
        return {}

    def port_details(self, details: DeviceDetails) -> None:
        return None

    def device_gone(self, device: str) -> None:
        return None

    async def process(self, now: float) -> None:
        return None

    def next_wakeup(self, now: float) -> float | None:
        return None

    def snapshot(self) -> dict[str, Any]:
        return {}

    async def stop(self) -> None:
        return None


# Extensions enabled by name in ``agent.extensions``; each entry is "module:Class".
# Features register themselves here as they land.
KNOWN_EXTENSIONS: dict[str, str] = {
    "l2pop": "lbtap.agent.l2pop:L2PopExtension",
    "security": "lbtap.agent.security:SecurityExtension",
    "qos": "lbtap.agent.qos:QosExtension",
}


def load_extensions(names: tuple[str, ...] | None) -> list[AgentExtension]:
    """Instantiate the named extensions (None: all known; unknown names are an error)."""
    import importlib

    if names is None:
        names = tuple(KNOWN_EXTENSIONS)
    out = []
    for name in names:
        target = KNOWN_EXTENSIONS.get(name)
        if target is None:
            raise ValueError(f"unknown agent extension {name!r}; known: {', '.join(sorted(KNOWN_EXTENSIONS)) or 'none'}")
        module, _, cls = target.partition(":")
        out.append(getattr(importlib.import_module(module), cls)())
    return out
