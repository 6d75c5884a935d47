"""Who is asking: the request context every service call receives."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Context:
    """The caller of one request.

    ``project_id`` None with ``is_admin`` True is the unscoped admin of ``noauth``.
    Readers may only read; only admins see and set provider and binding attributes or
    other projects' resources.
    """

    project_id: str | None = None
    roles: frozenset[str] = field(default_factory=lambda: frozenset({"admin"}))
    user_id: str | None = None
    request_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def can_write(self) -> bool:
        return bool(self.roles & {"admin", "member"})

    @classmethod
    def admin(cls) -> "Context":
        return cls(project_id=None, roles=frozenset({"admin"}))
