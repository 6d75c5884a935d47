"""Server extension for security groups and QoS: agent RPC and fanout notifications.

RPC methods (agent -> server calls on ``q-plugin``):

``security_group_info_for_devices(devices)`` -> Neutron's shape::

    {"devices": {tap: {"port_id": ..., "security_groups": [...]}},
     "security_groups": {sg_id: [{"direction", "ethertype", "protocol", "port_range_min",
                                  "port_range_max", "remote_ip_prefix", "remote_group_id"}]},
     "sg_member_ips": {sg_id: {"IPv4": [...], "IPv6": [...]}}}

  Member IPs are given for every group some returned rule names as remote group:
  fixed IPs plus allowed-address-pair IPs/CIDRs of the group's ports.

``qos_rules_for_devices(devices)`` -> ``{tap: {"qos_policy_id": id | None, "rules": [...]}}``
  with the policy that applies (the port's, else its network's) and its bandwidth-limit
  rules. QoS rules travel in their own call rather than in the device details so a rule
  change needs no details round trip and touches only tc on the agent.

Fanout casts to every L2 agent (on ``q-agent-notifier``), one message per change:
``security_groups_rule_updated(security_groups=[ids])`` after a rule change,
``security_groups_member_updated(security_groups=[ids])`` when a group's member
addresses change (port created, deleted, groups or addresses updated; coalesced over
20 ms), and
``qos_policy_updated(policy_id=...)`` after a bandwidth-limit rule change. Each agent
keeps only what concerns its own ports. ``port_update`` to the port's host is sent by
the core notifier already.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from sqlalchemy import Text, select, type_coerce
from sqlalchemy.orm import Session

from lbtap.rpc import topics
from lbtap.server.db.engine import Database
from lbtap.server.db.models import IPAllocation, Port
from lbtap.server.db.security_models import SecurityGroupRule
from lbtap.server.rpc_handlers import RpcHandlers
from lbtap.server.services.base import chunks
from lbtap.server.services.qos import effective_policies, rules_of

log = logging.getLogger(__name__)

SG_INFO = "security_group_info_for_devices"
QOS_RULES = "qos_rules_for_devices"
SG_RULE_UPDATED = "security_groups_rule_updated"
SG_MEMBER_UPDATED = "security_groups_member_updated"
QOS_POLICY_UPDATED = "qos_policy_updated"
RULE_FIELDS = ("direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix",
               "remote_group_id")


def _json(text: str | None) -> list:
    return json.loads(text) if text and text != "[]" else []


class SecurityRpc:
    """The two agent-facing calls, over the server's engine."""

    def __init__(self, engine: Any):
        self.db = Database(engine)

    def security_group_info_for_devices(self, devices: list[str], **_ignored: Any) -> dict:
        def run(session: Session) -> dict:
            found = RpcHandlers._resolve(session, list(devices),
                                         (type_coerce(Port.security_groups, Text).label("sgs_json"),))
            out_devices = {d: {"port_id": r.id, "security_groups": _json(r.sgs_json)} for d, r in found.items()}
            sg_ids = sorted({g for d in out_devices.values() for g in d["security_groups"]})
            rules: dict[str, list[dict]] = {g: [] for g in sg_ids}
            for part in chunks(sg_ids):
                for r in session.scalars(select(SecurityGroupRule).where(SecurityGroupRule.security_group_id.in_(part))):
                    rules[r.security_group_id].append({k: getattr(r, k) for k in RULE_FIELDS})
            remote = {r["remote_group_id"] for rs in rules.values() for r in rs if r["remote_group_id"]}
            return {"devices": out_devices, "security_groups": rules, "sg_member_ips": member_ips(session, remote)}

        return self.db.read(run)

    def qos_rules_for_devices(self, devices: list[str], **_ignored: Any) -> dict:
        def run(session: Session) -> dict:
            found = RpcHandlers._resolve(session, list(devices))
            policy = effective_policies(session, sorted({r.id for r in found.values()}))
            rules = rules_of(session, {p for p in policy.values() if p})
            return {d: {"qos_policy_id": policy.get(r.id), "rules": rules.get(policy.get(r.id) or "", [])}
                    for d, r in found.items()}

        return self.db.read(run)


def member_ips(session: Session, groups: set[str]) -> dict[str, dict[str, list[str]]]:
    """group id -> {"IPv4": [...], "IPv6": [...]} of its ports' addresses and pairs."""
    out = {g: {"IPv4": set(), "IPv6": set()} for g in groups}
    if not groups:
        return {}
    members: dict[str, list[str]] = {}
    pairs: dict[str, list[dict]] = {}
    stmt = select(Port.id, type_coerce(Port.security_groups, Text), type_coerce(Port.allowed_address_pairs, Text))
    for pid, sgs, prs in session.execute(stmt):
        mine = [g for g in _json(sgs) if g in out]
        if mine:
            members[pid] = mine
            pairs[pid] = _json(prs)
    for part in chunks(sorted(members)):
        for pid, ip in session.execute(select(IPAllocation.port_id, IPAllocation.ip_address)
                                       .where(IPAllocation.port_id.in_(part))):
            for g in members[pid]:
                out[g]["IPv6" if ":" in ip else "IPv4"].add(ip)
    for pid, prs in pairs.items():
        for p in prs:
            ip = p.get("ip_address") or ""
            for g in members[pid]:
                out[g]["IPv6" if ":" in ip else "IPv4"].add(ip)
    return {g: {k: sorted(v) for k, v in fams.items()} for g, fams in out.items()}


def _addresses(port: dict | None) -> tuple:
    if not port:
        return ()
    return (tuple(sorted(f["ip_address"] for f in port.get("fixed_ips", []))),
            tuple(sorted(p.get("ip_address", "") for p in port.get("allowed_address_pairs", []))))


def changed_groups(port: dict | None, original: dict | None) -> list[str]:
    """Groups whose member addresses differ between ``original`` and ``port``."""
    old = set((original or {}).get("security_groups") or ())
    new = set((port or {}).get("security_groups") or ())
    if _addresses(port) != _addresses(original):
        return sorted(old | new)
    return sorted(old ^ new)


class SecurityNotifier:
    """Receives the data layer's notifications and casts the security/QoS fanouts."""

    # Member changes are coalesced for this long: a bulk create of 1000 ports in one
    # group is one fanout, not 1000.
    COALESCE_SECONDS = 0.02

    def __init__(self, bus: Any, loop: asyncio.AbstractEventLoop | None):
        self.bus = bus
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._flush_scheduled = False

    def _fanout(self, method: str, **kwargs: Any) -> None:
        async def run() -> None:
            try:
                await self.bus.fanout(topics.AGENT_FANOUT, method, **kwargs)
            except Exception as e:  # a lost cast is repaired by the agents' reconcile
                log.warning("notification %s failed: %s", method, e)

        if self.loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.loop.create_task(run())
        else:
            self.loop.call_soon_threadsafe(lambda: self.loop.create_task(run()))

    def port_created(self, port: dict) -> None:
        self._members(changed_groups(port, None))

    def port_updated(self, port: dict, original: dict | None = None) -> None:
        self._members(changed_groups(port, original))

    def port_deleted(self, port: dict) -> None:
        self._members(changed_groups(None, port))

    def _members(self, groups: list[str]) -> None:
        if not groups or self.loop is None:
            return
        with self._lock:
            self._pending.update(groups)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self.loop.call_soon_threadsafe(self.loop.call_later, self.COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        with self._lock:
            groups, self._pending, self._flush_scheduled = sorted(self._pending), set(), False
        if groups:
            self._fanout(SG_MEMBER_UPDATED, security_groups=groups)

    def security_group_rule_updated(self, groups: list[str]) -> None:
        if groups:
            self._fanout(SG_RULE_UPDATED, security_groups=list(groups))

    def qos_policy_updated(self, policy_id: str) -> None:
        self._fanout(QOS_POLICY_UPDATED, policy_id=policy_id)


def install(parts: Any) -> None:
    """Server extension entry point (see ``lbtap.server.process.EXTENSION_MODULES``)."""
    rpc = SecurityRpc(parts.engine)
    parts.rpc_handlers[SG_INFO] = rpc.security_group_info_for_devices
    parts.rpc_handlers[QOS_RULES] = rpc.qos_rules_for_devices
    parts.notifiers.append(SecurityNotifier(parts.bus, parts.loop))
