"""Hooks security groups and QoS into ``Services``: their resource services, and the
checks ports and networks run inside their write transactions.

Kept in one function so ``Services`` needs a single line for the whole feature.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from lbtap.server.context import Context
from lbtap.server.services.base import ResourceService
from lbtap.server.services.qos import QosPolicyService, check_qos_policy
from lbtap.server.services.security_groups import (
    SecurityGroupRuleService, SecurityGroupService, check_port_security,
)


def security_services(args: tuple, existing: dict[str, ResourceService]) -> dict[str, ResourceService]:
    """The new services by resource name; installs the port and network checks."""
    groups = SecurityGroupService(*args)
    rules = SecurityGroupRuleService(*args, groups=groups)
    qos = QosPolicyService(*args)

    def port_check(session: Session, ctx: Context, values: dict[str, Any], given: dict, create: bool) -> None:
        check_port_security(groups, session, ctx, values, given, create)
        if "qos_policy_id" in given:
            check_qos_policy(qos, session, ctx, values.get("qos_policy_id"))

    def network_check(session: Session, ctx: Context, values: dict[str, Any], given: dict, create: bool) -> None:
        if "qos_policy_id" in given:
            check_qos_policy(qos, session, ctx, values.get("qos_policy_id"))

    if "ports" in existing:
        existing["ports"].write_checks = (*existing["ports"].write_checks, port_check)
    if "networks" in existing:
        existing["networks"].write_checks = (*existing["networks"].write_checks, network_check)
    return {"security_groups": groups, "security_group_rules": rules, "qos_policies": qos}
