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
``security_groups_member_updated(security_groups=[ids], members={id: {"added": [...],
"removed": [...]}})`` when a group's member addresses change (port created, deleted,
groups or addresses updated; coalesced over 20 ms): the delta lets an agent change
its remote-group sets without a round trip, and agents that predate ``members``
re-read the groups. A removed address that another member of the group still holds
(overlapping allowed-address-pairs) is re-checked against the database before it is
sent; and
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
from lbtap.server.metrics import count_notification
from lbtap.server.outbox import Outbox
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


def _json(text: str | list | None) -> list:
    # psycopg decodes json columns itself even through type_coerce(Text): a list here.
    if isinstance(text, list):
        return text
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


def member_addresses(port: dict | None) -> frozenset[str]:
    """What a port contributes to each of its groups' member sets."""
    fixed, pairs = _addresses(port) or ((), ())
    return frozenset(a for a in (*fixed, *pairs) if a)


def member_delta(port: dict | None, original: dict | None) -> dict[str, tuple[set[str], set[str]]]:
    """group id -> (addresses added, addresses removed) between ``original`` and ``port``."""
    old_groups = set((original or {}).get("security_groups") or ())
    new_groups = set((port or {}).get("security_groups") or ())
    old_addrs, new_addrs = member_addresses(original), member_addresses(port)
    out = {}
    for g in old_groups | new_groups:
        before = old_addrs if g in old_groups else frozenset()
        after = new_addrs if g in new_groups else frozenset()
        if before != after:
            out[g] = (set(after - before), set(before - after))
    return out


def changed_groups(port: dict | None, original: dict | None) -> list[str]:
    """Groups whose member addresses differ between ``original`` and ``port``."""
    return sorted(member_delta(port, original))


def still_members(session: Session, removed: dict[str, set[str]]) -> dict[str, set[str]]:
    """Of the addresses ``removed`` from each group, those some port of the group still
    holds (fixed IP or allowed pair): they must stay in the agents' sets."""
    wanted = {a for addrs in removed.values() for a in addrs}
    if not wanted:
        return {}
    held: dict[str, set[str]] = {}
    stmt = select(Port.id, type_coerce(Port.security_groups, Text), type_coerce(Port.allowed_address_pairs, Text))
    port_groups: dict[str, list[str]] = {}
    for pid, sgs, prs in session.execute(stmt):
        groups = [g for g in _json(sgs) if g in removed]
        if not groups:
            continue
        port_groups[pid] = groups
        for pair in _json(prs):
            if pair.get("ip_address") in wanted:
                for g in groups:
                    held.setdefault(g, set()).add(pair["ip_address"])
    for part in chunks(sorted(wanted)):
        for pid, ip in session.execute(select(IPAllocation.port_id, IPAllocation.ip_address)
                                       .where(IPAllocation.ip_address.in_(part))):
            for g in port_groups.get(pid, ()):
                held.setdefault(g, set()).add(ip)
    return {g: held.get(g, set()) & addrs for g, addrs in removed.items() if held.get(g, set()) & addrs}


class SecurityNotifier:
    """Receives the data layer's notifications and casts the security/QoS fanouts."""

    # Member changes are coalesced for this long: a bulk create of 1000 ports in one
    # group is one fanout, not 1000.
    COALESCE_SECONDS = 0.02

    def __init__(self, bus: Any, loop: asyncio.AbstractEventLoop | None, engine: Any = None):
        self.bus = bus
        self.loop = loop
        self.db = Database(engine) if engine is not None else None
        self._outbox = Outbox(loop, "security notification")
        self._lock = threading.Lock()
        # group -> address -> True (added) / False (removed): the last change wins
        self._pending: dict[str, dict[str, bool]] = {}
        self._flush_scheduled = False
        self._order: asyncio.Lock | None = None

    def _fanout(self, method: str, **kwargs: Any) -> None:
        async def send() -> None:
            await self.bus.fanout(topics.AGENT_FANOUT, method, **kwargs)
            count_notification(method)

        self._run(send)

    def _run(self, send: Any) -> None:
        self._outbox.submit(send)

    def idle(self) -> bool:
        """True when everything handed over so far has been sent."""
        return self._outbox.idle()

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every fanout handed over so far has been sent; False on timeout."""
        return await self._outbox.drain(timeout)

    def port_created(self, port: dict) -> None:
        self._members(member_delta(port, None))

    def port_updated(self, port: dict, original: dict | None = None) -> None:
        self._members(member_delta(port, original))

    def port_deleted(self, port: dict) -> None:
        self._members(member_delta(None, port))

    def _members(self, delta: dict[str, tuple[set[str], set[str]]]) -> None:
        if not delta or self.loop is None:
            return
        with self._lock:
            for g, (added, removed) in delta.items():
                changes = self._pending.setdefault(g, {})
                changes.update(dict.fromkeys(removed, False))
                changes.update(dict.fromkeys(added, True))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._outbox.submit(self._flush_soon, delay=self.COALESCE_SECONDS)

    async def _flush_soon(self) -> None:
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._flush_scheduled = self._pending, {}, False
        if not pending:
            return
        removed = {g: {a for a, add in ch.items() if not add} for g, ch in pending.items()}
        removed = {g: a for g, a in removed.items() if a}

        async def send() -> None:
            # One flush at a time, in order: an add-only flush must not overtake an
            # earlier one still checking its removals (the agents apply deltas in order).
            if self._order is None:
                self._order = asyncio.Lock()
            async with self._order:
                await send_in_order()

        async def send_in_order() -> None:
            keep: dict[str, set[str]] = {}
            if removed and self.db is not None:
                try:
                    keep = await asyncio.get_running_loop().run_in_executor(
                        None, self.db.read, lambda s: still_members(s, removed))
                except Exception as e:  # without the check, agents re-read the groups instead
                    log.warning("member check failed, agents will re-read: %s", e)
                    await self.bus.fanout(topics.AGENT_FANOUT, SG_MEMBER_UPDATED, security_groups=sorted(pending))
                    count_notification(SG_MEMBER_UPDATED)
                    return
            members = {g: {"added": sorted(a for a, add in ch.items() if add),
                           "removed": sorted(a for a, add in ch.items() if not add and a not in keep.get(g, ()))}
                       for g, ch in sorted(pending.items())}
            await self.bus.fanout(topics.AGENT_FANOUT, SG_MEMBER_UPDATED, security_groups=sorted(pending),
                                  members=members)
            count_notification(SG_MEMBER_UPDATED)

        self._run(send)

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
    parts.notifiers.append(SecurityNotifier(parts.bus, parts.loop, parts.engine))
