"""Hooks routers and floating IPs into ``Services`` with one line.

Both services create their ports through the shared port service, so every port
check (security groups, QoS) and notification applies to router and floating-IP ports.
"""

from __future__ import annotations

from lbtap.server.services.base import ResourceService
from lbtap.server.services.floatingips import FloatingIPService
from lbtap.server.services.routers import RouterService


def l3_services(args: tuple, existing: dict[str, ResourceService]) -> dict[str, ResourceService]:
    ports = existing["ports"]
    return {"routers": RouterService(*args, ports=ports), "floatingips": FloatingIPService(*args, ports=ports)}
