"""Choosing and reserving a network's L2 segment (type, physnet, segmentation id).

Tenant networks take the first configured tenant type that still has a free segment;
admins may ask for provider attributes, which are validated against the settings.
The reservation is a row in ``segment_allocations`` whose primary key makes two
concurrent requests for the same segment collide in the database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lbtap.config import ServerSettings
from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.db.models import SegmentAllocation
from lbtap.server.services.allocation import SegmentChoice, first_free

PROVIDER_KEYS = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")


class SegmentAllocator:
    """Per-transaction allocator; remembers what it took so bulk creates do not reload."""

    def __init__(self, session: Session, settings: ServerSettings):
        self.session = session
        self.settings = settings
        self._taken: dict[tuple[str, str], set[int]] = {}

    def taken(self, network_type: str, physnet: str | None) -> set[int]:
        key = (network_type, physnet or "")
        if key not in self._taken:
            rows = self.session.scalars(
                select(SegmentAllocation.segmentation_id).where(
                    SegmentAllocation.network_type == key[0],
                    SegmentAllocation.physical_network == key[1],
                )
            )
            self._taken[key] = set(rows)
        return self._taken[key]

    def choose(self, given: dict[str, Any]) -> SegmentChoice:
        """The segment for a new network from its (validated) body."""
        if any(k in given for k in PROVIDER_KEYS):
            return self._provider(
                given.get("provider:network_type"),
                given.get("provider:physical_network"),
                given.get("provider:segmentation_id"),
            )
        return self._tenant()

    def reserve(self, network_id: str, seg: SegmentChoice) -> None:
        """Record the segment as taken (no row for local networks)."""
        if seg.network_type == c.TYPE_LOCAL:
            return
        sid = 0 if seg.network_type == c.TYPE_FLAT else seg.segmentation_id
        self.taken(seg.network_type, seg.physical_network).add(sid)  # type: ignore[arg-type]
        self.session.add(SegmentAllocation(
            network_type=seg.network_type, physical_network=seg.physical_network or "",
            segmentation_id=sid, network_id=network_id,
        ))

    # -- tenant networks ---------------------------------------------------------
    def _tenant(self) -> SegmentChoice:
        for ntype in self.settings.tenant_network_types:
            seg = self._tenant_of_type(ntype)
            if seg is not None:
                return seg
        raise errors.NoNetworkAvailable(
            "Unable to create the network. No tenant network is available for allocation.")

    def _tenant_of_type(self, ntype: str) -> SegmentChoice | None:
        if ntype == c.TYPE_LOCAL:
            return SegmentChoice(c.TYPE_LOCAL, None, None)
        if ntype == c.TYPE_VXLAN:
            vni = first_free(self.settings.vni_ranges, self.taken(ntype, None))
            return None if vni is None else SegmentChoice(ntype, None, vni)
        if ntype == c.TYPE_VLAN:
            for physnet, ranges in self.settings.network_vlan_ranges.items():
                vid = first_free(ranges, self.taken(ntype, physnet))
                if vid is not None:
                    return SegmentChoice(ntype, physnet, vid)
            return None
        if ntype == c.TYPE_FLAT:
            for physnet in self.settings.flat_networks:
                if physnet != "*" and 0 not in self.taken(ntype, physnet):
                    return SegmentChoice(ntype, physnet, None)
        return None

    # -- provider networks -------------------------------------------------------
    def _provider(self, ntype: str | None, physnet: str | None, sid: int | None) -> SegmentChoice:
        if ntype is None:
            raise errors.InvalidInput("provider:network_type is required with provider attributes")
        if ntype == c.TYPE_LOCAL:
            if physnet is not None or sid is not None:
                raise errors.InvalidInput("local networks take no physical_network or segmentation_id")
            return SegmentChoice(ntype, None, None)
        if ntype == c.TYPE_FLAT:
            return self._flat(physnet, sid)
        if ntype == c.TYPE_VLAN:
            return self._vlan(physnet, sid)
        return self._vxlan(physnet, sid)

    def _flat(self, physnet: str | None, sid: int | None) -> SegmentChoice:
        if sid is not None:
            raise errors.InvalidInput("segmentation_id is not allowed for flat networks")
        if not physnet:
            raise errors.InvalidInput("physical_network is required for flat provider networks")
        flat = self.settings.flat_networks
        if "*" not in flat and physnet not in flat:
            raise errors.InvalidInput(f"physical_network '{physnet}' unknown for flat provider network")
        if 0 in self.taken(c.TYPE_FLAT, physnet):
            raise errors.FlatNetworkInUse(
                f"Unable to create the flat network. Physical network {physnet} is in use.")
        return SegmentChoice(c.TYPE_FLAT, physnet, None)

    def _vlan(self, physnet: str | None, sid: int | None) -> SegmentChoice:
        ranges = self.settings.network_vlan_ranges
        if physnet is None:
            if sid is not None:
                raise errors.InvalidInput("physical_network is required with a VLAN segmentation_id")
            seg = self._tenant_of_type(c.TYPE_VLAN)
            if seg is None:
                raise errors.NoNetworkAvailable("No VLAN is available for allocation.")
            return seg
        if physnet not in ranges:
            raise errors.InvalidInput(f"physical_network '{physnet}' unknown for VLAN provider network")
        if sid is None:
            vid = first_free(ranges[physnet], self.taken(c.TYPE_VLAN, physnet))
            if vid is None:
                raise errors.NoNetworkAvailable(f"No VLAN is available on {physnet}.")
            return SegmentChoice(c.TYPE_VLAN, physnet, vid)
        if not 1 <= sid <= c.MAX_VLAN_ID:
            raise errors.InvalidInput(f"VLAN segmentation_id {sid} is outside 1..{c.MAX_VLAN_ID}")
        if sid in self.taken(c.TYPE_VLAN, physnet):
            raise errors.VlanIdInUse(
                f"Unable to create the network. The VLAN {sid} on physical network {physnet} is in use.")
        return SegmentChoice(c.TYPE_VLAN, physnet, sid)

    def _vxlan(self, physnet: str | None, sid: int | None) -> SegmentChoice:
        if physnet is not None:
            raise errors.InvalidInput("physical_network is not allowed for vxlan networks")
        if sid is None:
            vni = first_free(self.settings.vni_ranges, self.taken(c.TYPE_VXLAN, None))
            if vni is None:
                raise errors.NoNetworkAvailable("No VXLAN VNI is available for allocation.")
            return SegmentChoice(c.TYPE_VXLAN, None, vni)
        if not 1 <= sid <= c.MAX_VXLAN_VNI:
            raise errors.InvalidInput(f"VXLAN segmentation_id {sid} is outside 1..{c.MAX_VXLAN_VNI}")
        if sid in self.taken(c.TYPE_VXLAN, None):
            raise errors.TunnelIdInUse(
                f"Unable to create the network. The tunnel ID {sid} is in use.")
        return SegmentChoice(c.TYPE_VXLAN, None, sid)
