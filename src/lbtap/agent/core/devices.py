"""What the core records per tap device, and how it recognises one."""

from __future__ import annotations

from dataclasses import dataclass

from lbtap.agent.core.plan import PortWiring
from lbtap.domain import constants as c
from lbtap.domain.models import DeviceDetails
from lbtap.domain.naming import is_tap
from lbtap.drivers.host.base import Link

# Server port status -> "the server holds this port up"; other values say nothing.
_SERVER_UP = {c.PORT_STATUS_ACTIVE: True, c.PORT_STATUS_DOWN: False, c.PORT_STATUS_BUILD: False, c.PORT_STATUS_ERROR: False}


def server_says_up(status: str | None) -> bool | None:
    """True/False for a port status the server reported, None when it says nothing."""
    return _SERVER_UP.get(status or "")


PORT_KINDS = frozenset({"tun", "veth"})


def is_port_link(link: Link) -> bool:
    """A link the agent manages as a port: named ``tap…`` and a TAP or veth device."""
    return is_tap(link.name) and link.kind in PORT_KINDS


@dataclass
class DeviceRecord:
    """One tap on the host, as the core tracks it (mutable, owned by ``AgentCore``)."""

    name: str
    index: int
    details: DeviceDetails | None = None  # known to the server (None: not yet / unknown)
    asking: bool = False  # a details request is out
    asked_at: float = 0.0
    ask_again: bool = False  # port_update arrived while asking
    orphan: bool = False  # its port was deleted: leave it alone until re-created
    wired: bool = False  # wiring verified by the last plan/apply
    wiring: PortWiring | None = None  # derived from details, cached: plans are hot
    planned: DeviceDetails | None = None  # details the in-flight ops were planned from
    inflight: bool = False
    error: str = ""

    def state(self) -> str:
        """One word for metrics: orphan, unknown, asking, applying, failed, wired, pending."""
        if self.orphan:
            return "orphan"
        if self.details is None:
            return "unknown" if not self.asking else "asking"
        if self.inflight:
            return "applying"
        if self.error:
            return "failed"
        return "wired" if self.wired else "pending"
