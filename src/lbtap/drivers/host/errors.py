"""The small typed exception tree that every host driver raises.

Netlink (and ioctl) errors are translated into these exactly once, at the driver
boundary, so that the agent core can decide per device what a failure means without
knowing errno values. Idempotent operations never raise ``AlreadyExists`` for "create"
nor ``NotFound`` for "delete": those outcomes are success.
"""

from __future__ import annotations

import errno


class HostError(Exception):
    """Base of every host-driver failure.

    ``op`` names the operation ("add_address"), ``device`` the link it concerned and
    ``code`` the original errno when there was one.
    """

    retriable = True  # may succeed later without anyone changing anything

    def __init__(self, message: str, *, op: str = "", device: str | None = None, code: int | None = None):
        super().__init__(message)
        self.op = op
        self.device = device
        self.code = code


class NotFound(HostError):
    """The device (or address, route, entry) an operation needs does not exist."""


class AlreadyExists(HostError):
    """Something conflicting exists (e.g. a device of another kind with the same name)."""


class InvalidArgument(HostError):
    """The kernel rejected the request's arguments (EINVAL, ERANGE, ...)."""

    retriable = False


class NotSupported(HostError):
    """The kernel lacks the feature (EOPNOTSUPP, missing device kind or tc action)."""

    retriable = False


class PermissionDenied(HostError):
    """EPERM / EACCES: not root, or a capability is missing."""

    retriable = False


class Busy(HostError):
    """EBUSY and friends: the device is in use (e.g. enslaved elsewhere)."""


class Transient(HostError):
    """ENOBUFS, EAGAIN, EINTR, timeouts: try again."""


_ERRNO_MAP: dict[int, type[HostError]] = {
    errno.ENODEV: NotFound,
    errno.ENOENT: NotFound,
    errno.ESRCH: NotFound,
    errno.EADDRNOTAVAIL: NotFound,
    errno.ENXIO: NotFound,
    errno.EEXIST: AlreadyExists,
    errno.EINVAL: InvalidArgument,
    errno.ERANGE: InvalidArgument,
    errno.E2BIG: InvalidArgument,
    errno.ENAMETOOLONG: InvalidArgument,
    errno.EOPNOTSUPP: NotSupported,
    errno.EPROTONOSUPPORT: NotSupported,
    errno.EAFNOSUPPORT: NotSupported,
    errno.ENOSYS: NotSupported,
    errno.EPERM: PermissionDenied,
    errno.EACCES: PermissionDenied,
    errno.EBUSY: Busy,
    errno.ELOOP: InvalidArgument,  # e.g. enslaving a bridge to itself
    errno.ENOBUFS: Transient,
    errno.EAGAIN: Transient,
    errno.EINTR: Transient,
    errno.ETIMEDOUT: Transient,
}


def from_errno(code: int | None, message: str, *, op: str = "", device: str | None = None) -> HostError:
    """Build the typed error for an errno value (unknown codes give ``HostError``)."""
    cls = _ERRNO_MAP.get(code or 0, HostError)
    return cls(message, op=op, device=device, code=code)
