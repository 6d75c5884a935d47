"""Security groups and their rules: validation, the per-project default group, and the
port-side checks (``security_groups`` must exist and be visible, port security off
needs no groups and no allowed pairs).

Neutron's behaviour, kept here:

* every new group starts with two rules allowing all IPv4 and all IPv6 egress;
* each project has one ``default`` group, created on first need (listing groups,
  creating a port without ``security_groups``), that allows all egress and ingress only
  from its own members (``remote_group_id`` = itself); it cannot be deleted while its
  project exists (409 ``SecurityGroupCannotRemoveDefault``);
* a group used by a port cannot be deleted (409 ``SecurityGroupInUse``); a rule
  referencing a deleted group as remote is deleted with it (FK cascade);
* rules are validated with the agent's own ``Rule`` model, so nothing the API accepts is
  refused by the firewall renderer.

Agents are told through the notifier (methods looked up by name, so a notifier without
them is fine): ``security_group_rule_updated(sg_ids)`` after rule changes.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lbtap.domain import constants as c
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.models import Port
from lbtap.server.db.security_models import DefaultSecurityGroup, SecurityGroup, SecurityGroupRule
from lbtap.server.services import attributes
from lbtap.server.services import validators as v
from lbtap.server.services.attributes import COMMON, Attr, _ro
from lbtap.server.services.base import ResourceService, check_can_write, check_owner, chunks
from lbtap.server.services.security_rules import (  # noqa: F401 - also re-exported for callers
    AddressPairAndPortSecurityRequired, DuplicateSecurityGroupRuleInPost, IPV6_ONLY_PROTOCOLS,
    PortSecurityPortHasSecurityGroup, SecurityGroupCannotRemoveDefault,
    SecurityGroupEthertypeConflictWithProtocol, SecurityGroupInUse, SecurityGroupInvalidIcmpValue,
    SecurityGroupInvalidPortRange, SecurityGroupInvalidPortValue,
    SecurityGroupInvalidProtocolForPort, SecurityGroupMissingIcmpType, SecurityGroupNotFound,
    SecurityGroupProtocolRequiredWithPorts, SecurityGroupRuleExists,
    SecurityGroupRuleInvalidProtocol, SecurityGroupRuleNotFound, SecurityGroupRuleParameterConflict,
    check_rule, protocol_number, rule_dict, rule_key,
)


DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")

SECURITY_GROUP: dict[str, Attr] = {
    **COMMON,
    "security_group_rules": _ro(),
    "stateful": Attr(convert=lambda n, x: _stateful(n, x), post=True),
    "shared": _ro(),
}


def _stateful(name: str, x: Any) -> bool:
    if not v.boolean(name, x):
        raise v.bad(name, "only stateful security groups are supported")
    return True


def _int_or_none(name: str, x: Any) -> int | None:
    return None if x is None else v.integer(name, x, 0, 65535)


def _protocol(name: str, x: Any) -> str | None:
    if x is None or x == "" or x == "any":
        return None
    if isinstance(x, int) and not isinstance(x, bool):
        x = str(x)
    if not isinstance(x, str):
        raise SecurityGroupRuleInvalidProtocol(f"Security group rule protocol {x!r} not supported.")
    return x.lower()


SECURITY_GROUP_RULE: dict[str, Attr] = {
    "id": _ro("id"),
    "tenant_id": COMMON["tenant_id"],
    "project_id": COMMON["project_id"],
    "description": COMMON["description"],
    "created_at": COMMON["created_at"],
    "updated_at": COMMON["updated_at"],
    "revision_number": COMMON["revision_number"],
    "security_group_id": Attr(convert=v.uuid_str, post=True, column="security_group_id"),
    "direction": Attr(convert=lambda n, x: v.one_of(n, x, DIRECTIONS), post=True, column="direction"),
    "ethertype": Attr(convert=lambda n, x: v.one_of(n, x, ETHERTYPES), post=True, column="ethertype"),
    "protocol": Attr(convert=_protocol, post=True, column="protocol"),
    "port_range_min": Attr(convert=_int_or_none, post=True, column="port_range_min", kind="int"),
    "port_range_max": Attr(convert=_int_or_none, post=True, column="port_range_max", kind="int"),
    "remote_ip_prefix": Attr(convert=lambda n, x: None if x is None else v.string(n, x, 64), post=True,
                             column="remote_ip_prefix"),
    "remote_group_id": Attr(convert=v.uuid_or_none, post=True, column="remote_group_id"),
    "remote_address_group_id": _ro(),
    "normalized_cidr": _ro(),
}

attributes.ATTRIBUTES.setdefault("security_groups", SECURITY_GROUP)
attributes.ATTRIBUTES.setdefault("security_group_rules", SECURITY_GROUP_RULE)


class SecurityGroupService(ResourceService):
    resource = "security_groups"
    model = SecurityGroup
    not_found = SecurityGroupNotFound

    def missing(self, id: str) -> errors.NotFound:
        return SecurityGroupNotFound(f"Security group {id} does not exist")

    # -- default group -----------------------------------------------------------------
    def ensure_default(self, session: Session, project_id: str) -> str:
        """The id of ``project_id``'s default group, created (with its rules) if missing.
        Remembered for the transaction: a bulk of 1000 ports asks once."""
        cache = session.info.setdefault("lbtap_default_sg", {})
        if project_id not in cache:
            cache[project_id] = self._ensure_default(session, project_id)
        return cache[project_id]

    def _ensure_default(self, session: Session, project_id: str) -> str:
        found = session.scalar(select(DefaultSecurityGroup.security_group_id)
                               .where(DefaultSecurityGroup.project_id == project_id))
        if found:
            return found
        sg_id = self._insert_group(session, project_id, "default", "Default security group")
        for eth in ETHERTYPES:
            self._insert_rule(session, project_id, sg_id, "ingress", eth, remote_group_id=sg_id)
        session.add(DefaultSecurityGroup(project_id=project_id, security_group_id=sg_id))
        session.flush()
        return sg_id

    def _insert_group(self, session: Session, project_id: str, name: str, description: str = "",
                      tags: list | None = None) -> str:
        now = self.now()
        sg_id = str(uuid.uuid4())
        session.add(SecurityGroup(id=sg_id, project_id=project_id, name=name, description=description,
                                  tags=tags or [], stateful=True, created_at=now, updated_at=now,
                                  revision_number=0))
        session.flush()
        for eth in ETHERTYPES:  # Neutron: every new group may send anything
            self._insert_rule(session, project_id, sg_id, "egress", eth)
        return sg_id

    def _insert_rule(self, session: Session, project_id: str, sg_id: str, direction: str, ethertype: str,
                     **kw: Any) -> SecurityGroupRule:
        now = self.now()
        row = SecurityGroupRule(id=str(uuid.uuid4()), project_id=project_id, security_group_id=sg_id,
                                direction=direction, ethertype=ethertype, description=kw.pop("description", ""),
                                tags=[], created_at=now, updated_at=now, revision_number=0, **kw)
        session.add(row)
        return row

    def ensure_default_for(self, ctx: Context) -> None:
        """Neutron creates the caller's default group when it first lists groups."""
        if not ctx.project_id or not ctx.can_write:
            return
        exists = self.db.read(lambda s: s.scalar(select(DefaultSecurityGroup.security_group_id).where(
            DefaultSecurityGroup.project_id == ctx.project_id)))
        if not exists:
            self.db.write(lambda s: self.ensure_default(s, ctx.project_id))

    # -- reads ---------------------------------------------------------------------------
    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows: dict[str, SecurityGroup] = {}
        rules: dict[str, list[dict]] = {i: [] for i in ids}
        for part in chunks(ids):
            rows.update((g.id, g) for g in session.scalars(select(SecurityGroup).where(SecurityGroup.id.in_(part))))
            for r in session.scalars(select(SecurityGroupRule).where(SecurityGroupRule.security_group_id.in_(part))
                                     .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)):
                rules[r.security_group_id].append(rule_dict(r))
        return [{"id": g.id, "name": g.name, "stateful": g.stateful, "shared": False,
                 "security_group_rules": rules[g.id], **self.std_fields(g)} for i in ids if (g := rows.get(i))]

    def list(self, ctx: Context, query):  # noqa: ANN001, ANN201
        self.ensure_default_for(ctx)
        return super().list(ctx, query)

    # -- writes ----------------------------------------------------------------------------
    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        check_can_write(ctx)
        checked = [attributes.check_body(self.resource, b, ctx, create=True) for b in bodies]

        def run(session: Session) -> list[str]:
            ids = []
            for given in checked:
                project = attributes.owner_project(ctx, given)
                if given.get("name") == "default":
                    # Neutron: "default" is the one the server creates.
                    self.ensure_default(session, project)
                    raise errors.Conflict("Default security group already exists.", type_name="SecurityGroupDefaultAlreadyExists")
                self.ensure_default(session, project)
                ids.append(self._insert_group(session, project, given.get("name", ""), given.get("description", ""),
                                              given.get("tags")))
            return ids

        ids = self.db.write(run)
        return self.db.read(lambda s: self.load(s, ctx, ids))

    def update(self, ctx: Context, id: str, body: dict) -> dict:
        check_can_write(ctx)
        given = attributes.check_body(self.resource, body, ctx, create=False)

        def run(session: Session) -> dict:
            sg = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, sg.project_id, "security group")
            if sg.name == "default" and given.get("name", "default") != "default" and self._is_default(session, id):
                raise errors.Conflict("Updating the default security group's name is not allowed.",
                                      type_name="SecurityGroupCannotUpdateDefault")
            changed = False
            for key in ("name", "description", "tags"):
                if key in given and getattr(sg, key) != given[key]:
                    setattr(sg, key, given[key])
                    changed = True
            if changed:
                self.bump(sg)
            session.flush()
            return self.load(session, ctx, [id])[0]

        return self.db.write(run)

    @staticmethod
    def _is_default(session: Session, sg_id: str) -> bool:
        return session.scalar(select(DefaultSecurityGroup.project_id)
                              .where(DefaultSecurityGroup.security_group_id == sg_id)) is not None

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> list[str]:
            sg = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, sg.project_id, "security group")
            if self._is_default(session, id) and not ctx.is_admin:
                raise SecurityGroupCannotRemoveDefault("Insufficient rights for removing default security group.")
            if id in ports_using_groups(session, [id]):
                raise SecurityGroupInUse(f"Security Group {id} in use.")
            # Groups whose rules referenced this one lose those rules (cascade): tell agents.
            touched = sorted(set(session.scalars(select(SecurityGroupRule.security_group_id).where(
                SecurityGroupRule.remote_group_id == id, SecurityGroupRule.security_group_id != id))))
            session.execute(delete(SecurityGroupRule).where(
                (SecurityGroupRule.security_group_id == id) | (SecurityGroupRule.remote_group_id == id)))
            session.execute(delete(DefaultSecurityGroup).where(DefaultSecurityGroup.security_group_id == id))
            session.execute(delete(SecurityGroup).where(SecurityGroup.id == id))
            return touched

        touched = self.db.write(run)
        if touched:
            notify(self, "security_group_rule_updated", touched)


def ports_using_groups(session: Session, sg_ids: list[str]) -> set[str]:
    """Which of ``sg_ids`` some port uses (ports keep their groups as a JSON list)."""
    wanted, used = set(sg_ids), set()
    for groups in session.scalars(select(Port.security_groups)):
        used |= wanted & set(groups or ())
    return used


def notify(svc: ResourceService, method: str, *args: Any) -> None:
    """Call ``method`` on the notifier if it has one (the base Notifier protocol does not
    know security groups; the server extension's notifier does)."""
    fn = getattr(svc.notifier, method, None)
    if fn is not None:
        svc.notify(method, *args)


class SecurityGroupRuleService(ResourceService):
    resource = "security_group_rules"
    model = SecurityGroupRule
    not_found = SecurityGroupRuleNotFound

    def __init__(self, *args: Any, groups: SecurityGroupService):
        super().__init__(*args)
        self.groups = groups

    def missing(self, id: str) -> errors.NotFound:
        return SecurityGroupRuleNotFound(f"Security group rule {id} does not exist")

    def load(self, session: Session, ctx: Context, ids: list[str]) -> list[dict]:
        rows: dict[str, SecurityGroupRule] = {}
        for part in chunks(ids):
            rows.update((r.id, r) for r in session.scalars(select(SecurityGroupRule).where(SecurityGroupRule.id.in_(part))))
        return [rule_dict(rows[i]) for i in ids if i in rows]

    def create_bulk(self, ctx: Context, bodies: list[dict]) -> list[dict]:
        check_can_write(ctx)
        checked = []
        for b in bodies:
            given = attributes.check_body(self.resource, b, ctx, create=True)
            for key in ("security_group_id", "direction"):
                if key not in given:
                    raise errors.BadRequest(f"Failed to parse request. Required attribute '{key}' not specified")
            given.setdefault("ethertype", "IPv4")
            checked.append(check_rule(given))
        seen: set[tuple] = set()
        for given in checked:  # Neutron: one POST may not hold the same rule twice
            key = (given["security_group_id"], *rule_key(given))
            if key in seen:
                raise DuplicateSecurityGroupRuleInPost("Duplicate Security Group Rule in POST.")
            seen.add(key)

        def run(session: Session) -> list[str]:
            ids = []
            for given in checked:
                sg = self.groups.fetch(session, ctx, given["security_group_id"])
                check_owner(ctx, sg.project_id, "security group")
                if given.get("remote_group_id"):
                    self.groups.fetch(session, ctx, given["remote_group_id"])
                key = {k: given.get(k) for k in ("direction", "ethertype", "protocol", "port_range_min",
                                                 "port_range_max", "remote_ip_prefix", "remote_group_id")}
                wanted = rule_key(key)
                for r in session.scalars(select(SecurityGroupRule).where(
                        SecurityGroupRule.security_group_id == sg.id)):
                    if rule_key(r) == wanted:
                        raise SecurityGroupRuleExists(f"Security group rule already exists. Rule id is {r.id}.")
                row = self.groups._insert_rule(session, sg.project_id, sg.id, description=given.get("description", ""),
                                               **key)
                session.flush()
                ids.append(row.id)
                self.bump(sg)
            return ids

        ids = self.db.write(run)
        created = self.db.read(lambda s: self.load(s, ctx, ids))
        notify(self, "security_group_rule_updated", sorted({r["security_group_id"] for r in created}))
        return created

    def delete(self, ctx: Context, id: str) -> None:
        check_can_write(ctx)

        def run(session: Session) -> str:
            rule = self.fetch(session, ctx, id, for_update=True)
            check_owner(ctx, rule.project_id, "security group rule")
            session.execute(delete(SecurityGroupRule).where(SecurityGroupRule.id == id))
            return rule.security_group_id

        sg_id = self.db.write(run)
        notify(self, "security_group_rule_updated", [sg_id])


# -- the port-side checks (called by PortService inside its transaction) ------------------
def check_port_security(svc: SecurityGroupService, session: Session, ctx: Context, port: dict[str, Any],
                        given: dict[str, Any], create: bool) -> None:
    """Validate (and on create, default) a port's security attributes in place.

    ``port`` holds the port's values after the request: project_id, device_owner,
    security_groups, port_security_enabled, allowed_address_pairs.
    """
    psec = port["port_security_enabled"]
    trusted = (port.get("device_owner") or "").startswith(c.DEVICE_OWNER_NETWORK_PREFIX)
    if create and "security_groups" not in given and psec and not trusted:
        port["security_groups"] = [svc.ensure_default(session, port["project_id"])]
    groups = list(dict.fromkeys(port["security_groups"] or []))
    port["security_groups"] = groups
    if not psec:
        if groups and ("security_groups" in given or "port_security_enabled" in given):
            raise PortSecurityPortHasSecurityGroup(
                "Port has security group associated. Cannot disable port security or ip address until "
                "security group is removed")
        if port.get("allowed_address_pairs"):
            raise AddressPairAndPortSecurityRequired(
                "Port Security must be enabled in order to have allowed address pairs on a port.")
    if "security_groups" in given and groups:
        found = set(session.scalars(select(SecurityGroup.id).where(SecurityGroup.id.in_(groups), svc.visibility(ctx))))
        for g in groups:
            if g not in found:
                raise SecurityGroupNotFound(f"Security group {g} does not exist")
