"""How the data layer tells the rest of the server that resources changed.

Services call a Notifier AFTER their transaction committed, with the resources as
the API returns them (admin view). The default does nothing; the server process
plugs in a bus-backed one (``lbtap.server.bus_notifier.BusNotifier``) that casts
``port_update`` / ``port_delete`` / ``network_update`` / ``network_delete`` to agents.
Notifiers must not raise: a failed notification never undoes a committed change.
"""

from __future__ import annotations

from typing import Protocol


class Notifier(Protocol):
    def port_created(self, port: dict) -> None: ...
    def port_updated(self, port: dict, original: dict) -> None: ...
    def port_deleted(self, port: dict) -> None: ...
    def network_created(self, network: dict) -> None: ...
    def network_updated(self, network: dict) -> None: ...
    def network_deleted(self, network: dict) -> None: ...
    def subnet_created(self, subnet: dict) -> None: ...
    def subnet_updated(self, subnet: dict) -> None: ...
    def subnet_deleted(self, subnet: dict) -> None: ...


class NullNotifier:
    """The no-op Notifier."""

    def port_created(self, port: dict) -> None:
        pass

    def port_updated(self, port: dict, original: dict) -> None:
        pass

    def port_deleted(self, port: dict) -> None:
        pass

    def network_created(self, network: dict) -> None:
        pass

    def network_updated(self, network: dict) -> None:
        pass

    def network_deleted(self, network: dict) -> None:
        pass

    def subnet_created(self, subnet: dict) -> None:
        pass

    def subnet_updated(self, subnet: dict) -> None:
        pass

    def subnet_deleted(self, subnet: dict) -> None:
        pass


class RecordingNotifier:
    """Keeps every call as (method name, args) — for tests and diagnostics."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def port_created(self, port: dict) -> None:
        self.calls.append(("port_created", (port,)))

    def port_updated(self, port: dict, original: dict) -> None:
        self.calls.append(("port_updated", (port, original)))

    def port_deleted(self, port: dict) -> None:
        self.calls.append(("port_deleted", (port,)))

    def network_created(self, network: dict) -> None:
        self.calls.append(("network_created", (network,)))

    def network_updated(self, network: dict) -> None:
        self.calls.append(("network_updated", (network,)))

    def network_deleted(self, network: dict) -> None:
        self.calls.append(("network_deleted", (network,)))

    def subnet_created(self, subnet: dict) -> None:
        self.calls.append(("subnet_created", (subnet,)))

    def subnet_updated(self, subnet: dict) -> None:
        self.calls.append(("subnet_updated", (subnet,)))

    def subnet_deleted(self, subnet: dict) -> None:
        self.calls.append(("subnet_deleted", (subnet,)))
