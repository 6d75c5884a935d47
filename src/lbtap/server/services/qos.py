"""QoS policies and their ``bandwidth_limit`` rules.

A policy is a plain resource (``/v2.0/qos/policies``); its rules are nested
(``/v2.0/qos/policies/{id}/bandwidth_limit_rules[/{rule_id}]``, see
``lbtap.server.api.qos_rules``), at most one per direction ("egress", from the guest,
the default; "ingress", toward it). Ports and networks name a policy in
``qos_policy_id``; ``check_qos_policy`` verifies it exists and is visible (own or
shared). A port's own policy wins over its network's, and ``network:*`` ports do not
inherit the network's (Neutron's rule) — see ``effective_policies``.

Rule changes are pushed to agents with the notifier's ``qos_policy_updated(policy_id)``
(looked up by name, so a notifier without it is fine).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.drivers.qos.model import MAX_RATE_KBPS, max_burst_kbps
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.models import Network, Port
from lbtap.server.db.security_models import QosBandwidthLimitRule, QosPolicy
from lbtap.server.services import attributes
from lbtap.server.services import validators as v
from lbtap.server.services.attributes import COMMON, Attr, _ro, _rw
from lbtap.server.services.base import ResourceService, check_can_write, check_owner, chunks, sees_all
from lbtap.server.services.security_groups import notify


class QosPolicyNotFound(errors.NotFound):
    pass


class QoSRuleNotFound(errors.NotFound):
    pass


class QosPolicyInUse(errors.InUse):
    pass


class QoSRulesConflict(errors.Conflict):
    pass


QOS_POLICY: dict[str, Attr] = {
    **COMMON,
    "shared": _rw(v.boolean, "shared", "bool"),
    "is_default": _rw(v.boolean, "is_default", "bool"),
    "rules": _ro(),
}
RULE_ATTRS = {
    "max_kbps": lambda n, x: v.integer(n, x, 0, MAX_RATE_KBPS),
    "max_burst_kbps": lambda n, x: v.integer(n, x, 0, 2**31 - 1),
    "direction": lambda n, x: v.one_of(n, x, ("ingress", "egress")),
}
attributes.ATTRIBUTES.setdefault("qos_policies", QOS_POLICY)


def rule_dict(r: QosBandwidthLimitRule) -> dict[str, Any]:
    return {"id": r.id, "qos_policy_id": r.qos_policy_id, "max_kbps": r.max_kbps,
            "max_burst_kbps": r.max_burst_kbps, "direction": r.direction, "type": "bandwidth_limit"}


def effective_policies(session: Session, port_ids: list[str]) -> dict[str, str | None]:
    """port id -> the QoS policy that applies to it (its own, else its network's)."""
    out: dict[str, str | None] = {}
    for part in chunks(port_ids):
        stmt = (select(Port.id, Port.qos_policy_id, Port.device_owner, Network.qos_policy_id)
                .join(Network, Network.id == Port.network_id).where(Port.id.in_(part)))
        for pid, own, owner, net_policy in session.execute(stmt):
            inherit = not (owner or "").startswith(c.DEVICE_OWNER_NETWORK_PREFIX)
            out[pid] = own or (net_policy if inherit else None)
    return out


def rules_of(session: Session, policy_ids: set[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {p: [] for p in policy_ids}
    for part in chunks(sorted(policy_ids)):
        for r in session.scalars(select(QosBandwidthLimitRule).where(QosBandwidthLimitRule.qos_policy_id.in_(part))
                                 .order_by(QosBandwidthLimitRule.direction)):
            out[r.qos_policy_id].append(rule_dict(r))
    return out


class QosPolicyService(ResourceService):
    resource = "qos_policies"
    model = QosPolicy
    not_found = QosPolicyNotFound

    def missing(self, id: str) -> errors.NotFound:
        return QosPolicyNotFound(f"QoS policy {id} could not be found.")

    def visibility(self, ctx: Context):  # noqa: ANN201
        if sees_all(ctx):
            return super().visibility(ctx)
        return or_(QosPolicy.project_id == ctx.project_id, QosPolicy.shared.is_(True))

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows: dict[str, QosPolicy] = {}
        for part in chunks(ids):
            rows.update((p.id, p) for p in session.scalars(select(QosPolicy).where(QosPolicy.id.in_(part))))
        rules = rules_of(session, set(rows))
        return [{"id": p.id, "name": p.name, "shared": p.shared, "is_default": p.is_default,
                 "rules": rules[p.id], **self.std_fields(p)} for i in ids if (p := rows.get(i))]

    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        check_can_write(ctx)
        checked = [attributes.check_body(self.resource, b, ctx, create=True) for b in bodies]

        def run(session: Session) -> list[str]:
            ids, now = [], self.now()
            for given in checked:
                pid = str(uuid.uuid4())
                session.add(QosPolicy(id=pid, project_id=attributes.owner_project(ctx, given),
                                      name=given.get("name", ""), description=given.get("description", ""),
                                      tags=given.get("tags", []), shared=given.get("shared", False),
                                      is_default=given.get("is_default", False), created_at=now, updated_at=now,
                                      revision_number=0))
                ids.append(pid)
            session.flush()
            return ids

        ids = self.db.write(run)
        return self.db.read(lambda s: self.load(s, ctx, ids))

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)

        def run(session: Session) -> dict:
            p = self._own(session, ctx, id)
            changed = False
            for key in ("name", "description", "tags", "shared", "is_default"):
                if key in given and getattr(p, key) != given[key]:
                    setattr(p, key, given[key])
                    changed = True
            if changed:
                self.bump(p)
            session.flush()
            return self.load(session, ctx, [id])[0]

        return self.db.write(run)

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> None:
            self._own(session, ctx, id)
            used = session.scalar(select(Port.id).where(Port.qos_policy_id == id).limit(1)) or session.scalar(
                select(Network.id).where(Network.qos_policy_id == id).limit(1))
            if used:
                raise QosPolicyInUse(f"QoS Policy {id} is used by a port or network.")
            session.execute(delete(QosBandwidthLimitRule).where(QosBandwidthLimitRule.qos_policy_id == id))
            session.execute(delete(QosPolicy).where(QosPolicy.id == id))

        self.db.write(run)

    def _own(self, session: Session, ctx: Context, id: str) -> QosPolicy:
        p = self.fetch(session, ctx, id, for_update=True)
        check_owner(ctx, p.project_id, "QoS policy")
        return p

    # -- nested bandwidth_limit rules -----------------------------------------------------
    def list_rules(self, ctx: Context, policy_id: str) -> list[dict]:
        def run(session: Session) -> list[dict]:
            self.fetch(session, ctx, policy_id)
            return rules_of(session, {policy_id})[policy_id]

        return self.db.read(run)

    def get_rule(self, ctx: Context, policy_id: str, rule_id: str) -> dict:
        for r in self.list_rules(ctx, policy_id):
            if r["id"] == rule_id:
                return r
        raise QoSRuleNotFound(f"QoS rule {rule_id} for policy {policy_id} could not be found.")

    def _check_rule(self, body: Any, create: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.BadRequest("Body of a bandwidth_limit_rule must be an object.")
        unknown = sorted(k for k in body if k not in RULE_ATTRS and k not in ("id", "qos_policy_id", "type"))
        if unknown:
            raise errors.BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        out = {k: RULE_ATTRS[k](k, x) for k, x in body.items() if k in RULE_ATTRS}
        if create and "max_kbps" not in out:
            raise errors.BadRequest("Failed to parse request. Required attribute 'max_kbps' not specified")
        if out.get("max_kbps") == 0:
            raise errors.InvalidInput("Invalid input for max_kbps. Reason: '0' is not in range 1 through "
                                      f"{MAX_RATE_KBPS}.")
        return out

    @staticmethod
    def _check_burst(max_kbps: int, burst: int | None) -> None:
        """400 for a burst tc cannot express at this rate (its transmit time, about 275 s
        at most, and rate x latency + burst bytes are 32-bit in a TBF)."""
        bound = max_burst_kbps(max_kbps)
        if burst and burst > bound:
            raise errors.InvalidInput(f"Invalid input for max_burst_kbps. Reason: {burst} is more than the "
                                      f"largest burst {bound} that can be applied with max_kbps {max_kbps}.")

    @staticmethod
    def _check_direction_free(session: Session, policy_id: str, direction: str, rule_id: str | None = None) -> None:
        stmt = select(QosBandwidthLimitRule.id).where(QosBandwidthLimitRule.qos_policy_id == policy_id,
                                                      QosBandwidthLimitRule.direction == direction)
        if rule_id is not None:
            stmt = stmt.where(QosBandwidthLimitRule.id != rule_id)
        if session.scalar(stmt):
            raise QoSRulesConflict(f"Rule bandwidth_limit with direction {direction} already "
                                   f"exists in policy {policy_id}.")

    def create_rule(self, ctx: Context, policy_id: str, body: Any) -> dict:
        check_can_write(ctx)
        given = self._check_rule(body, create=True)
        given.setdefault("direction", "egress")
        self._check_burst(given["max_kbps"], given.get("max_burst_kbps"))

        def run(session: Session) -> dict:
            p = self._own(session, ctx, policy_id)
            self._check_direction_free(session, policy_id, given["direction"])
            row = QosBandwidthLimitRule(id=str(uuid.uuid4()), qos_policy_id=policy_id,
                                        max_kbps=given["max_kbps"], max_burst_kbps=given.get("max_burst_kbps", 0),
                                        direction=given["direction"])
            session.add(row)
            self.bump(p)
            session.flush()
            return rule_dict(row)

        rule = self.db.write(run)
        notify(self, "qos_policy_updated", policy_id)
        return rule

    def update_rule(self, ctx: Context, policy_id: str, rule_id: str, body: Any) -> dict:
        check_can_write(ctx)
        given = self._check_rule(body, create=False)

        def run(session: Session) -> dict:
            p = self._own(session, ctx, policy_id)
            row = session.scalar(select(QosBandwidthLimitRule).where(
                QosBandwidthLimitRule.id == rule_id, QosBandwidthLimitRule.qos_policy_id == policy_id))
            if row is None:
                raise QoSRuleNotFound(f"QoS rule {rule_id} for policy {policy_id} could not be found.")
            self._check_burst(given.get("max_kbps", row.max_kbps), given.get("max_burst_kbps", row.max_burst_kbps))
            if given.get("direction", row.direction) != row.direction:
                # Neutron's 409 at once, not a unique-constraint clash retried as a race
                self._check_direction_free(session, policy_id, given["direction"], rule_id)
            for k, val in given.items():
                setattr(row, k, val)
            self.bump(p)
            session.flush()
            return rule_dict(row)

        rule = self.db.write(run)
        notify(self, "qos_policy_updated", policy_id)
        return rule

    def delete_rule(self, ctx: Context, policy_id: str, rule_id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> None:
            p = self._own(session, ctx, policy_id)
            n = session.execute(delete(QosBandwidthLimitRule).where(
                QosBandwidthLimitRule.id == rule_id, QosBandwidthLimitRule.qos_policy_id == policy_id)).rowcount
            if not n:
                raise QoSRuleNotFound(f"QoS rule {rule_id} for policy {policy_id} could not be found.")
            self.bump(p)

        self.db.write(run)
        notify(self, "qos_policy_updated", policy_id)


def check_qos_policy(svc: QosPolicyService, session: Session, ctx: Context, policy_id: str | None) -> None:
    """404 unless ``policy_id`` (when given) names a policy ``ctx`` may see."""
    if policy_id is None:
        return
    if session.scalar(select(QosPolicy.id).where(QosPolicy.id == policy_id, svc.visibility(ctx))) is None:
        raise svc.missing(policy_id)
