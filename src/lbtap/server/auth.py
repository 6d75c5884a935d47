"""Who is calling: ``noauth`` headers or static tokens → ``Context``.

Two strategies (``settings.server.auth_strategy``):

``noauth`` (default; the server binds to 127.0.0.1)
    A request without ``X-Project-Id`` is the unscoped admin. With ``X-Project-Id: P``
    it acts as project P with role ``member``, or with the comma-separated roles of
    ``X-Roles`` (e.g. ``X-Roles: reader``) when that header is sent.

``token``
    ``settings.server.token_file`` maps static tokens to a project and roles; clients
    send the token in ``X-Auth-Token`` (what openstacksdk's ``admin_token`` auth does).
    A missing or unknown token is 401. The file is TOML (or JSON when its name ends in
    ``.json``)::

        [tokens.s3cr3t-admin]
        project_id = "admin-project"
        roles = ["admin"]

        [tokens.s3cr3t-alice]
        project_id = "alice"
        roles = ["member"]

    JSON: ``{"tokens": {"s3cr3t-alice": {"project_id": "alice", "roles": ["member"]}}}``.
    Roles are a subset of admin/member/reader. The file is read once at start-up.
"""

from __future__ import annotations

import hmac
import json
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from lbtap.config import ConfigError, Settings
from lbtap.server.context import Context
from lbtap.server.errors import BadRequest, NotAuthenticated

ROLES = frozenset({"admin", "member", "reader"})
_MAX_HEADER = 255


@dataclass(frozen=True)
class TokenEntry:
    project_id: str | None
    roles: frozenset[str]
    user_id: str | None = None


def load_token_file(path: str | Path) -> dict[str, TokenEntry]:
    """Parse a token file (see the module docstring); raise ConfigError when invalid."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"token file {p}: {e.strerror or e}") from None
    try:
        data = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"token file {p}: {e}") from None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict):
        raise ConfigError(f"token file {p}: expected a 'tokens' table")
    out: dict[str, TokenEntry] = {}
    for token, entry in tokens.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"token file {p}: token entry must be a table")
        roles = entry.get("roles", ["member"])
        if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
            raise ConfigError(f"token file {p}: roles must be a non-empty subset of {sorted(ROLES)}")
        project = entry.get("project_id")
        if project is not None and not isinstance(project, str):
            raise ConfigError(f"token file {p}: project_id must be a string")
        if project is None and "admin" not in roles:
            raise ConfigError(f"token file {p}: a non-admin token needs a project_id")
        out[token] = TokenEntry(project_id=project, roles=frozenset(roles), user_id=entry.get("user_id"))
    return out


def _request_id() -> str:
    return f"req-{uuid.uuid4()}"


def _noauth(request: Request) -> Context:
    project = request.headers.get("x-project-id") or request.headers.get("x-tenant-id")
    if not project:
        return Context(project_id=None, roles=frozenset({"admin"}), request_id=_request_id())
    project = project.strip()
    if not project or len(project) > _MAX_HEADER:
        raise BadRequest("Invalid X-Project-Id header.", type_name="InvalidInput")
    roles_header = request.headers.get("x-roles")
    if roles_header:
        roles = frozenset(r.strip().lower() for r in roles_header.split(",") if r.strip())
        if not roles or not roles <= ROLES:
            raise BadRequest(f"X-Roles must name roles among {sorted(ROLES)}.", type_name="InvalidInput")
    else:
        roles = frozenset({"member"})
    return Context(project_id=project, roles=roles, user_id=request.headers.get("x-user-id"),
                   request_id=_request_id())


def _lookup(tokens: Mapping[str, TokenEntry], token: str) -> TokenEntry | None:
    # Constant-time comparison so response timing does not leak token prefixes.
    found = None
    for known, entry in tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = entry
    return found


def make_authenticator(settings: Settings) -> Callable[[Request], Context]:
    """Build the per-request ``Request → Context`` function for the configured strategy."""
    if settings.server.auth_strategy == "noauth":
        return _noauth
    if not settings.server.token_file:
        raise ConfigError("auth_strategy 'token' needs server.token_file")
    tokens = load_token_file(settings.server.token_file)

    def token_auth(request: Request) -> Context:
        token = request.headers.get("x-auth-token")
        entry = _lookup(tokens, token) if token else None
        if entry is None:
            raise NotAuthenticated("Authentication required: missing or invalid X-Auth-Token.",
                                   type_name="HTTPUnauthorized")
        return Context(project_id=entry.project_id, roles=entry.roles, user_id=entry.user_id,
                       request_id=_request_id())

    return token_auth
