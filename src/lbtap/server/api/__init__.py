"""The Neutron v2.0 HTTP API: routes, query parsing and error rendering.

``create_app`` in ``lbtap.server.app`` assembles these routers into the FastAPI app.
"""

from lbtap.server.api.resources import RESOURCES, build_resources_router
from lbtap.server.api.versions import build_versions_router, implemented_extensions

__all__ = ["RESOURCES", "build_resources_router", "build_versions_router", "implemented_extensions"]
