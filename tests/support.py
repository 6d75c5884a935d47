"""Shared test helpers: external services, privileges, namespace names."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

SERVICE_DEFAULTS = {
    "LBTAP_TEST_PG_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "LBTAP_TEST_MYSQL_URL": "mysql+pymysql://root@127.0.0.1:3306/test",
    "LBTAP_TEST_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
}

# Every namespace a test creates starts with this, so cleanup never touches others.
NETNS_PREFIX = "lbtt-"


def _reachable(url: str) -> bool:
    u = urlparse(url.replace("+psycopg", "").replace("+pymysql", ""))
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 0), timeout=1):
            return True
    except OSError:
        return False


def service_url(env_name: str) -> str:
    """URL of an external service for a test; skip (or fail in CI) when unreachable."""
    url = os.environ.get(env_name, SERVICE_DEFAULTS[env_name])
    if not _reachable(url):
        msg = f"service for {env_name} unreachable at {url}"
        if os.environ.get("LBTAP_REQUIRE_SERVICES") == "1":
            pytest.fail(msg + " (LBTAP_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    return url


def require_root() -> None:
    """Skip functional/fullstack tests where we cannot create namespaces."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


def unique_netns(tag: str = "") -> str:
    """A fresh namespace name with the test prefix."""
    return f"{NETNS_PREFIX}{tag}{uuid.uuid4().hex[:8]}"
