"""The server's ASGI application: Neutron v2.0 API, version discovery and /metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from lbtap import __version__
from lbtap.config import Settings
from lbtap.server.api import RESOURCES, build_resources_router, build_versions_router, implemented_extensions
from lbtap.server.api.common import NeutronJSONResponse, install_error_handlers
from lbtap.server.api.routers_api import build_router_actions
from lbtap.server.api.events import build_events_router
from lbtap.server.api.security_api import build_qos_rules_router
from lbtap.server.auth import make_authenticator
from lbtap.server.context import Context
from lbtap.server.metrics import ApiMetrics, MetricsMiddleware


def _port_status_counter(services: Any):
    """A ``() -> {status: count}`` reading the ports table with one GROUP BY."""
    engine = getattr(services, "engine", None)
    if engine is None and getattr(services, "db", None) is not None:
        engine = getattr(services.db, "engine", None)

    if engine is not None:
        from sqlalchemy import func, select

        from lbtap.server.db.models import Port

        stmt = select(Port.status, func.count()).group_by(Port.status)

        def count() -> Mapping[str, int]:
            with engine.connect() as conn:
                return {status: n for status, n in conn.execute(stmt)}

        return count

    from lbtap.server.services.query import ListQuery

    def count_via_services() -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for port in services.list(Context.admin(), "ports", ListQuery()).items:
            counts[port["status"]] = counts.get(port["status"], 0) + 1
        return counts

    return count_via_services


def create_app(settings: Settings, services: Any, *, registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the API app over ``services``.

    ``registry``: where the app's request and port metrics go (a fresh one when None;
    it also exposes ``lbtap.server.metrics.REGISTRY``). Authentication follows
    ``settings.server.auth_strategy`` (see ``lbtap.server.auth``).
    """
    authenticate = make_authenticator(settings)

    async def context_dependency(request: Request) -> Context:
        ctx = authenticate(request)
        request.state.request_id = ctx.request_id
        return ctx

    app = FastAPI(
        title="lbtap networking API",
        version=__version__,
        description="Neutron v2.0-compatible networks, subnets, ports and agents.",
        default_response_class=NeutronJSONResponse,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    collections = [spec.collection for spec in RESOURCES]
    extensions = implemented_extensions(services.attribute_names)
    app.include_router(build_versions_router(collections, extensions, context_dependency))
    app.include_router(build_resources_router(services, context_dependency))
    app.include_router(build_router_actions(services, context_dependency))
    app.include_router(build_events_router(context_dependency))
    app.include_router(build_qos_rules_router(services, context_dependency))

    metrics = ApiMetrics(registry, _port_status_counter(services))

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        # Collecting runs a DB query: keep it off the event loop.
        data = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    app.state.metrics = metrics
    app.state.services = services
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
