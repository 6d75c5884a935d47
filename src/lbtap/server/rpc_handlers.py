"""Server side of the agent RPC: device details, device status, heartbeats.

Synchronous, over the same engine as the API; the server process dispatches bus
messages to these methods. Every call resolves its whole batch of tap names with one
query (ports whose id starts with the name's 11-character prefix), so a call about
1000 devices is a handful of statements.

Binding rules (see ``services.binding``): an agent asking for a port with no
``binding:host_id`` claims it for its host (a tap appearing on a host means the port
lives there); a port bound to another host answers ``no_active_binding``; status
changes only come from the host the port is bound to. Status changes bump
revision_number/updated_at but are not notified to agents (they caused them).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import Text, func, select, type_coerce, update
from sqlalchemy.orm import Session

from lbtap.config import Settings
from lbtap.domain import constants as c
from lbtap.domain.models import DeviceDetails, FixedIP, Segment
from lbtap.domain.naming import port_id_prefix
from lbtap.server.db.engine import Database
from lbtap.server.db.models import Agent, IPAllocation, Network, Port
from lbtap.server.notifier import Notifier, NullNotifier
from lbtap.server.services.base import chunks
from lbtap.server.services.binding import binding_for, is_alive

log = logging.getLogger(__name__)

# JSON lists come back as raw text and are decoded only when not empty: decoding
# thousands of "[]" dominated the cost of a 1000-device batch.
DETAIL_COLUMNS = (Port.mac_address, Port.admin_state_up, Port.port_security_enabled,
                  type_coerce(Port.allowed_address_pairs, Text).label("pairs_json"),
                  type_coerce(Port.security_groups, Text).label("sgs_json"), Port.qos_policy_id,
                  Port.revision_number)
NET_COLUMNS = (Network.id, Network.admin_state_up, Network.network_type, Network.physical_network,
               Network.segmentation_id, Network.mtu, Network.qos_policy_id, Network.revision_number)

# Ports whose status the agents never change (Neutron keeps floating-IP ports N/A).
STATUS_FIXED_OWNERS = (c.DEVICE_OWNER_FLOATINGIP,)


def _json_list(text: str | list | None) -> list:
    # psycopg decodes json columns itself even through type_coerce(Text): a list here.
    if isinstance(text, list):
        return text
    return json.loads(text) if text and text != "[]" else []


class RpcHandlers:
    """The methods agents call on the ``q-plugin`` and ``q-reports-plugin`` topics."""

    def __init__(self, engine, settings: Settings, *, notifier: Notifier | None = None,  # noqa: ANN001
                 clock: Callable[[], float] = time.time):
        self.db = Database(engine)
        self.settings = settings
        self.notifier = notifier or NullNotifier()
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc).replace(tzinfo=None, microsecond=0)

    # -- resolution -------------------------------------------------------------------
    @staticmethod
    def _resolve(session: Session, devices: list[str], columns: tuple = ()) -> dict[str, Any]:
        """device name -> row (id, network_id, binding_host_id, binding_vif_type, status,
        device_owner, *columns) for the devices that name a known port: one query per
        distinct prefix length (normally exactly one). Core rows, not ORM objects: a
        batch of 1000 must cost milliseconds."""
        by_len: dict[int, dict[str, list[str]]] = {}
        for d in devices:
            prefix = port_id_prefix(d)
            if prefix:
                by_len.setdefault(len(prefix), {}).setdefault(prefix, []).append(d)
        cols = (Port.id, Port.network_id, Port.binding_host_id, Port.binding_vif_type, Port.status,
                Port.device_owner, *columns)
        out: dict[str, Any] = {}
        for length, prefixes in by_len.items():
            for part in chunks(list(prefixes), 900):
                key = func.substr(Port.id, 1, length)
                for row in session.connection().execute(select(*cols).where(key.in_(part)).order_by(Port.id)):
                    for d in prefixes.get(row.id[:length], ()):
                        out.setdefault(d, row)  # first by id when prefixes collide
        return out

    # -- get_devices_details_list -------------------------------------------------------
    def get_devices_details_list(self, devices: list[str], agent_id: str, host: str,
                                 **_ignored: Any) -> list[dict]:
        """Details of each device for the agent on ``host``, in request order.

        Extra keyword arguments (newer agents send some, e.g. Neutron's
        ``refresh_tunnels``) are accepted and ignored, here and below."""
        now = self.now()

        def run(session: Session, may_write: bool) -> list[dict] | None:
            found = self._resolve(session, devices, DETAIL_COLUMNS)
            # The asking agent is alive by definition: it claims unbound ports, and
            # repairs its own ports whose binding failed while it was away.
            claim = sorted({r.id for r in found.values() if r.binding_host_id == "" or (
                r.binding_host_id == host and r.binding_vif_type != c.VIF_TYPE_BRIDGE)})
            if claim and not may_write:
                return None
            if claim:
                by_net: dict[str, list[str]] = {}
                for r in {r.id: r for r in found.values() if r.id in set(claim)}.values():
                    by_net.setdefault(r.network_id, []).append(r.id)
                for net_id, ids in by_net.items():
                    vif_type, details = binding_for(host, True, net_id)
                    for part in chunks(ids):
                        session.execute(
                            update(Port).where(Port.id.in_(part)).values(
                                binding_host_id=host, binding_vif_type=vif_type, binding_vif_details=details,
                                revision_number=Port.revision_number + 1, updated_at=now)
                            .execution_options(synchronize_session=False))
            return self._details_rows(session, devices, found, host, set(claim))

        if not devices:
            return []
        # Most calls (agent restarts, resyncs) change nothing: answer them from a
        # read transaction and take the write lock only when a port must be bound.
        result = self.db.read(lambda s: run(s, False))
        if result is None:
            result = self.db.write(lambda s: run(s, True))
        return result

    def pushable_details(self, port_ids: list[str], host: str) -> list[dict]:
        """Details of ports bound to ``host`` as ``get_devices_details_list`` would give
        that host's agent, read-only: ports that answer would bind or repair, and ports
        bound elsewhere by now, are left out (the agent asks for those itself)."""
        from lbtap.domain.naming import tap_name

        if not port_ids:
            return []
        wanted = set(port_ids)
        found = self.get_devices_details_list_readonly([tap_name(p) for p in port_ids], host)
        return [d for d in found if d.get("port_id") in wanted]

    def get_devices_details_list_readonly(self, devices: list[str], host: str) -> list[dict]:
        def run(session: Session) -> list[dict]:
            found = self._resolve(session, devices, DETAIL_COLUMNS)
            ok = {d: r for d, r in found.items()
                  if r.binding_host_id == host and r.binding_vif_type == c.VIF_TYPE_BRIDGE}
            return self._details_rows(session, devices, ok, host, set())

        return self.db.read(run)

    def _details_rows(self, session: Session, devices: list[str], found: dict[str, Any], host: str,
                      claimed: set[str]) -> list[dict]:
        ids = list({r.id for r in found.values()})
        # network id -> (admin_state_up, Segment, QoS policy): one Segment shared by its ports
        nets = {n.id: (n.admin_state_up, Segment(n.network_type, n.physical_network, n.segmentation_id, n.mtu),
                       n.qos_policy_id, n.revision_number)
                for part in chunks(list({r.network_id for r in found.values()}))
                for n in session.connection().execute(select(*NET_COLUMNS).where(Network.id.in_(part)))}
        ips: dict[str, list[FixedIP]] = {i: [] for i in ids}
        for part in chunks(ids):
            for pid, sid, ip in session.connection().execute(select(
                    IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address)
                    .where(IPAllocation.port_id.in_(part))):
                ips[pid].append(FixedIP(sid, ip))
        return [self._details(d, found.get(d), nets, ips, host, claimed).to_wire() for d in devices]

    @staticmethod
    def _details(device: str, port: Any, nets: dict[str, Any],
                 ips: dict[str, list[FixedIP]], host: str, claimed: set[str]) -> DeviceDetails:
        if port is None:
            return DeviceDetails(device=device)
        if port.binding_host_id != host and port.id not in claimed:
            return DeviceDetails(device=device, bound_elsewhere=True)
        net_up, segment, net_policy, net_rev = nets[port.network_id]
        # The policy in effect, so the agent needs no QoS round trip for unlimited ports:
        # the port's own, else its network's (never for network:* ports, as in Neutron).
        policy = port.qos_policy_id or (None if port.device_owner.startswith(c.DEVICE_OWNER_NETWORK_PREFIX)
                                        else net_policy)
        return DeviceDetails(
            device=device, port_id=port.id, network_id=port.network_id, mac_address=port.mac_address,
            admin_state_up=port.admin_state_up and net_up, segment=segment,
            fixed_ips=tuple(sorted(ips.get(port.id, ()), key=lambda f: f.ip_address)),
            device_owner=port.device_owner, port_security_enabled=port.port_security_enabled,
            allowed_address_pairs=tuple((p["ip_address"], p.get("mac_address"))
                                        for p in _json_list(port.pairs_json)),
            security_groups=tuple(_json_list(port.sgs_json)), qos_policy_id=policy,
            status=port.status, revision=(port.revision_number, net_rev),
        )

    # -- status -----------------------------------------------------------------------
    def update_device_list(self, devices_up: list[str], devices_down: list[str],
                           agent_id: str, host: str, **_ignored: Any) -> dict:
        """Mark devices ACTIVE / DOWN in one transaction; a device whose port is unknown
        or bound elsewhere counts as done (nothing to retry)."""
        try:
            self.db.write(lambda s: self._set_status(s, devices_up, devices_down, host))
        except Exception:
            log.exception("update_device_list from %s failed", host)
            return {"devices_up": [], "devices_down": [],
                    "failed_devices_up": list(devices_up), "failed_devices_down": list(devices_down)}
        return {"devices_up": list(devices_up), "devices_down": list(devices_down),
                "failed_devices_up": [], "failed_devices_down": []}

    def update_device_up(self, device: str, agent_id: str, host: str, **_ignored: Any) -> None:
        """Mark one device's port ACTIVE (only from the host it is bound to)."""
        self.db.write(lambda s: self._set_status(s, [device], [], host))

    def update_device_down(self, device: str, agent_id: str, host: str, **_ignored: Any) -> dict:
        """Mark one device's port DOWN; ``exists`` tells whether the port is known."""
        exists = self.db.write(lambda s: self._set_status(s, [], [device], host))
        return {"device": device, "exists": device in exists}

    def _set_status(self, session: Session, up: list[str], down: list[str], host: str) -> set[str]:
        """Apply status changes; returns the devices that name a known port."""
        if not up and not down:
            return set()
        ports = self._resolve(session, list(up) + list(down))
        now = self.now()
        targets: dict[str, list[str]] = {c.PORT_STATUS_ACTIVE: [], c.PORT_STATUS_DOWN: []}
        for devices, status in ((up, c.PORT_STATUS_ACTIVE), (down, c.PORT_STATUS_DOWN)):
            for d in devices:
                port = ports.get(d)
                if port is None or port.device_owner in STATUS_FIXED_OWNERS:
                    continue
                # A port moving between hosts: only its current host speaks for it
                # (an unbound port may be reported down by anyone).
                if port.binding_host_id != host and not (status == c.PORT_STATUS_DOWN and not port.binding_host_id):
                    continue
                if port.status != status:
                    targets[status].append(port.id)
        for status, ids in targets.items():
            for part in chunks(sorted(set(ids))):
                session.execute(
                    update(Port).where(Port.id.in_(part), Port.status != status)
                    .values(status=status, revision_number=Port.revision_number + 1, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        return set(ports)

    # -- heartbeats -----------------------------------------------------------------------
    def report_state(self, agent_state: dict, time: str | None = None, **_ignored: Any) -> str:  # noqa: A002
        """Create or refresh the agent (agent_type, host).

        Returns "revived" when the agent was known but considered dead (its previous
        heartbeat older than ``agent_down_time``), as Neutron does: casts may have been
        lost meanwhile (or the server dropped them), so the agent resyncs. Otherwise
        (alive, or a new agent) "alive"."""
        state = agent_state.get("agent_state", agent_state)
        agent_type, host = state["agent_type"], state["host"]
        now = self.now()

        def run(session: Session) -> str:
            agent = session.scalars(select(Agent).where(
                Agent.agent_type == agent_type, Agent.host == host)).first()
            if agent is None:
                session.add(Agent(
                    id=str(uuid.uuid4()), agent_type=agent_type, binary=state.get("binary", ""),
                    host=host, topic=state.get("topic", ""),
                    configurations=state.get("configurations") or {},
                    resource_versions=state.get("resource_versions"), admin_state_up=True,
                    description="", created_at=now, started_at=now, heartbeat_timestamp=now))
                return "alive"
            alive = is_alive(agent.heartbeat_timestamp, now, self.settings.server.agent_down_time)
            agent.binary = state.get("binary", agent.binary)
            agent.topic = state.get("topic", agent.topic)
            agent.configurations = state.get("configurations") or {}
            if state.get("resource_versions") is not None:
                agent.resource_versions = state["resource_versions"]
            if state.get("start_flag") or not alive:
                agent.started_at = now
            agent.heartbeat_timestamp = now
            return "alive" if alive else "revived"

        return self.db.write(run)

    def agent_alive(self, host: str, agent_type: str = c.AGENT_TYPE_LINUXBRIDGE) -> bool:
        """True if ``host``'s agent of ``agent_type`` reported within agent_down_time."""
        def run(session: Session) -> Any:
            return session.scalar(select(Agent.heartbeat_timestamp).where(
                Agent.agent_type == agent_type, Agent.host == host))

        hb = self.db.read(run)
        return hb is not None and is_alive(hb, self.now(), self.settings.server.agent_down_time)
