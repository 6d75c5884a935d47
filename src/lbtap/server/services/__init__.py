"""The server's services: validation, allocation and CRUD over the database.

``Services`` is the one object the API layer talks to. The contract (kept exact, the
HTTP layer codes against it)::

    Services(engine, settings: Settings, *, notifier: Notifier | None = None, clock=time.time)
    RESOURCES = ("networks", "subnets", "ports", "agents")
    list(ctx, resource, query: ListQuery) -> ListResult
    get(ctx, resource, id) -> dict
    create(ctx, resource, body: dict) -> dict            # body = the inner dict
    create_bulk(ctx, resource, bodies: list[dict]) -> list[dict]   # all or nothing
    update(ctx, resource, id, body: dict) -> dict
    delete(ctx, resource, id) -> None
    attribute_names(resource) -> frozenset[str]          # for ``fields=``

Every method is synchronous and runs as one database transaction (re-run on lost
races); a failed request changes nothing. Results are JSON-ready dicts in Neutron's
shape. Errors are only ``lbtap.server.errors`` classes: 400 bad input (unknown or
read-only attributes, wrong types, bad MAC/CIDR/IP, IP outside subnet, overlapping
pools or subnets, names over 255); 403 readers writing, non-admins setting
provider:/binding:/shared/router:external or changing another project's resource;
404 unknown ids and resources the caller may not see; 405 creating agents; 409 IP or
MAC in use, network/subnet in use, no free IP or segment, gateway inside a pool.

Visibility: the unscoped admin (``ctx.project_id is None``) sees everything; a
scoped caller sees its own resources plus shared networks and their subnets. Only
admins see ``provider:*`` and ``binding:host_id/profile/vif_type/vif_details``, and
agents. ``services.db.engine`` is the engine (for health checks). An unscoped admin creating without tenant_id/project_id creates networks in
project "admin" and subnets/ports in their network's project. The Notifier is called after commit (see ``lbtap.server.notifier``).
"""

from __future__ import annotations

import time
from typing import Callable

import functools
import logging

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.db.engine import Database
from lbtap.server.notifier import Notifier
from lbtap.server.services import attributes
from lbtap.server.services.agents import AgentService
from lbtap.server.services.base import ResourceService
from lbtap.server.services.l3_wiring import l3_services
from lbtap.server.services.networks import NetworkService
from lbtap.server.services.ports import PortService
from lbtap.server.services.query import ListQuery, ListResult
from lbtap.server.services.security_wiring import security_services
from lbtap.server.services.subnets import SubnetService

__all__ = ["Services", "ListQuery", "ListResult"]

log = logging.getLogger(__name__)


def _db_errors_as_neutron(method):  # noqa: ANN001, ANN201
    """Database errors that survive the retries become Neutron errors, never a 500
    with a stack trace: a constraint still violated is a conflict, bad data a 400,
    anything else (connection lost, timeouts) a 503 the client may retry."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return method(*args, **kwargs)
        except IntegrityError as e:
            log.warning("integrity error in %s: %s", method.__name__, e.orig)
            raise errors.Conflict("The request conflicts with a concurrent change; try again.") from e
        except DataError as e:
            log.warning("data error in %s: %s", method.__name__, e.orig)
            raise errors.InvalidInput("A value is invalid for the database.") from e
        except DBAPIError as e:
            log.error("database error in %s: %s", method.__name__, e.orig)
            raise errors.ServiceUnavailable("The database is unavailable; try again.") from e

    return wrapper


class Services:
    """Facade over the per-resource services (see the module docstring)."""

    RESOURCES = ("networks", "subnets", "ports", "agents")

    def __init__(self, engine: Engine, settings: Settings, *, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time):
        self.db = Database(engine)
        self.settings = settings
        args = (self.db, settings, notifier, clock)
        self._by_name: dict[str, ResourceService] = {
            "networks": NetworkService(*args),
            "subnets": SubnetService(*args),
            "ports": PortService(*args),
            "agents": AgentService(*args),
        }
        self._by_name.update(security_services(args, self._by_name))
        self._by_name.update(l3_services(args, self._by_name))

    def _svc(self, resource: str) -> ResourceService:
        try:
            return self._by_name[resource]
        except KeyError:
            raise errors.HTTPNotFound(f"The resource {resource} could not be found.") from None

    @_db_errors_as_neutron
    def list(self, ctx: Context, resource: str, query: ListQuery) -> ListResult:
        return self._svc(resource).list(ctx, query)

    @_db_errors_as_neutron
    def get(self, ctx: Context, resource: str, id: str) -> dict:
        return self._svc(resource).get(ctx, id)

    def create(self, ctx: Context, resource: str, body: dict) -> dict:
        return self.create_bulk(ctx, resource, [body])[0]

    @_db_errors_as_neutron
    def create_bulk(self, ctx: Context, resource: str, bodies: list[dict]) -> list[dict]:
        svc = self._svc(resource)
        if not isinstance(bodies, list) or not bodies:
            raise errors.BadRequest(f"Resources required: a non-empty list of {resource}")
        return svc.create_bulk(ctx, bodies)

    @_db_errors_as_neutron
    def update(self, ctx: Context, resource: str, id: str, body: dict) -> dict:
        return self._svc(resource).update(ctx, id, body)

    @_db_errors_as_neutron
    def delete(self, ctx: Context, resource: str, id: str) -> None:
        self._svc(resource).delete(ctx, id)

    def service(self, resource: str) -> ResourceService:
        """The per-resource service (nested routes, e.g. QoS rules, call it directly)."""
        return self._svc(resource)

    def attribute_names(self, resource: str) -> frozenset[str]:
        self._svc(resource)
        return frozenset(attributes.ATTRIBUTES[resource])
