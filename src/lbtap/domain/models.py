"""Value types exchanged between the server, the bus and the agents.

They are frozen so that the agent core can compare "desired" and "actual" by value,
and they convert to and from the JSON dicts that travel on the bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lbtap.domain import constants as c
from lbtap.domain.naming import tap_name


@dataclass(frozen=True)
class Segment:
    """The L2 segment of a network as the agent wires it."""

    network_type: str
    physical_network: str | None = None
    segmentation_id: int | None = None
    mtu: int = c.DEFAULT_MTU


@dataclass(frozen=True)
class FixedIP:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True)
class DeviceDetails:
    """What the server tells an agent about one device (``get_devices_details_list``).

    ``port_id`` is None when the server knows no port for the device; ``bound_elsewhere``
    is True when the port is bound to another host (Neutron's ``no_active_binding``).
    """

    device: str
    port_id: str | None = None
    network_id: str | None = None
    mac_address: str | None = None
    admin_state_up: bool = True
    segment: Segment | None = None
    fixed_ips: tuple[FixedIP, ...] = ()
    device_owner: str = ""
    port_security_enabled: bool = True
    allowed_address_pairs: tuple[tuple[str, str | None], ...] = ()
    security_groups: tuple[str, ...] = ()
    qos_policy_id: str | None = None
    bound_elsewhere: bool = False
    # The port's status in the database when the details were read: lets a restarted
    # agent skip re-reporting ports that are already ACTIVE and correctly wired.
    status: str | None = None
    # (port revision_number, network revision_number) when read: details pushed by the
    # server are only taken when newer than what the agent holds (casts on different
    # queues, or from two servers, are not ordered).
    revision: tuple[int, int] | None = None

    @property
    def known(self) -> bool:
        return self.port_id is not None and not self.bound_elsewhere

    @property
    def hypervisor_plugged(self) -> bool:
        """compute: ports are enslaved by the hypervisor side; the agent verifies/repairs."""
        return self.device_owner.startswith(c.DEVICE_OWNER_COMPUTE_PREFIX)

    def to_wire(self) -> dict[str, Any]:
        """The Neutron-compatible RPC dict (flat segment attributes)."""
        if not self.known:
            out: dict[str, Any] = {"device": self.device}
            if self.bound_elsewhere:
                out["no_active_binding"] = True
            return out
        seg = self.segment or Segment(c.TYPE_LOCAL)
        return {
            "device": self.device,
            "port_id": self.port_id,
            "network_id": self.network_id,
            "mac_address": self.mac_address,
            "admin_state_up": self.admin_state_up,
            "network_type": seg.network_type,
            "physical_network": seg.physical_network,
            "segmentation_id": seg.segmentation_id,
            "mtu": seg.mtu,
            # Built by hand: dataclasses.asdict deep-copies and was a third of the cost
            # of answering get_devices_details_list for 1000 devices.
            "fixed_ips": [{"subnet_id": f.subnet_id, "ip_address": f.ip_address} for f in self.fixed_ips],
            "device_owner": self.device_owner,
            "port_security_enabled": self.port_security_enabled,
            "allowed_address_pairs": [
                {"ip_address": ip, "mac_address": mac} for ip, mac in self.allowed_address_pairs
            ],
            "security_groups": list(self.security_groups),
            "qos_policy_id": self.qos_policy_id,
            "status": self.status,
            "revision_number": self.revision[0] if self.revision else None,
            "network_revision_number": self.revision[1] if self.revision else None,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "DeviceDetails":
        if "port_id" not in d or d.get("no_active_binding"):
            return cls(device=d["device"], bound_elsewhere=bool(d.get("no_active_binding")))
        return cls(
            device=d["device"],
            port_id=d["port_id"],
            network_id=d["network_id"],
            mac_address=d.get("mac_address"),
            admin_state_up=bool(d.get("admin_state_up", True)),
            segment=Segment(
                network_type=d.get("network_type") or c.TYPE_LOCAL,
                physical_network=d.get("physical_network"),
                segmentation_id=d.get("segmentation_id"),
                mtu=int(d.get("mtu") or c.DEFAULT_MTU),
            ),
            fixed_ips=tuple(FixedIP(f["subnet_id"], f["ip_address"]) for f in d.get("fixed_ips", [])),
            device_owner=d.get("device_owner") or "",
            port_security_enabled=bool(d.get("port_security_enabled", True)),
            allowed_address_pairs=tuple(
                (p["ip_address"], p.get("mac_address")) for p in d.get("allowed_address_pairs", [])
            ),
            security_groups=tuple(d.get("security_groups", [])),
            qos_policy_id=d.get("qos_policy_id"),
            status=d.get("status"),
            revision=(int(d["revision_number"]), int(d["network_revision_number"]))
            if d.get("revision_number") is not None and d.get("network_revision_number") is not None else None,
        )

    @classmethod
    def for_port(cls, port_id: str, **kw: Any) -> "DeviceDetails":
        return cls(device=tap_name(port_id), port_id=port_id, **kw)


@dataclass(frozen=True)
class AgentState:
    """Heartbeat payload of ``report_state``."""

    binary: str
    host: str
    agent_type: str
    topic: str
    configurations: dict[str, Any] = field(default_factory=dict)
    start_flag: bool = False
