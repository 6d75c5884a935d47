"""Named network namespaces (``/run/netns/NAME``, as ``ip netns`` uses them).

Why not ``pyroute2.netns.pushns/popns``: they keep the saved namespaces in one
process-wide stack and save ``/proc/self/ns/net`` (the *main* thread's namespace), so two
threads switching at once restore each other's namespace, and they silently create a
missing namespace. ``in_namespace`` here is per thread, never creates, and always
restores the thread's own namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import threading
from typing import Iterator

from lbtap.drivers.host import errors

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_create_lock = threading.Lock()


def path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise errors.InvalidArgument(f"invalid namespace name {name!r}", op="netns", device=name, code=errno.EINVAL)
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    """Whether the named namespace exists."""
    return os.path.exists(path(name))


def list_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise errors.from_errno(code, f"setns failed: {os.strerror(code)}", op="setns")


def create(name: str) -> None:
    """Create the namespace ``name``; success if it exists already.

    Done by ``pyroute2.netns.create`` (a forked child unshares and bind-mounts its
    namespace, exactly as ``ip netns add``), so no thread of ours changes namespace.
    """
    from pyroute2 import netns as pnetns

    p = path(name)
    with _create_lock:
        if os.path.exists(p):
            return
        try:
            pnetns.create(name)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise errors.from_errno(e.errno, f"cannot create namespace {name}: {e}", op="netns_create", device=name) from e


def delete(name: str) -> None:
    """Delete the namespace ``name``; success if it does not exist.

    The kernel frees the namespace (and destroys its virtual links) once no process,
    thread or socket holds it any more.
    """
    p = path(name)
    if not os.path.exists(p):
        return
    if _libc.umount2(p.encode(), 2) != 0:  # MNT_DETACH
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise errors.from_errno(code, f"cannot unmount {p}", op="netns_delete", device=name)
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


remove = delete  # pyroute2's name for it; src/lbtap/compute/cli.py uses it


def open_fd(name: str) -> int:
    """An fd on the namespace (caller closes); ``NotFound`` if it does not exist."""
    try:
        return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise errors.NotFound(f"no namespace {name}", op="netns", device=name, code=errno.ENOENT) from e


@contextlib.contextmanager
def in_namespace(name: str | None) -> Iterator[None]:
    """Run the block with the *current thread* inside namespace ``name``.

    ``None`` means "stay where you are". Sockets created in the block stay bound to
    that namespace after it ends; so does a TAP created with the TUN ioctl, and
    ``/proc/sys/net`` opened in it shows that namespace's sysctls.
    """
    if name is None:
        yield
        return
    target = open_fd(name)
    try:
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        _setns(target)
        try:
            yield
        finally:
            # If we cannot get back, this thread would go on acting in the wrong
            # namespace (an exception would not stop a pool thread): better to end the
            # process than to touch the wrong host's interfaces.
            if _libc.setns(saved, CLONE_NEWNET) != 0:
                logging.getLogger(__name__).critical("cannot restore the thread's network namespace; exiting")
                os._exit(70)
    finally:
        os.close(target)
        os.close(saved)


def move_link(ifname: str, to_netns: str, *, from_netns: str | None = None) -> None:
    """Move link ``ifname`` (in ``from_netns``, default: this thread's namespace) into
    the namespace ``to_netns`` (e.g. a veth guest end). Success if ``ifname`` is
    already there and absent here."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    fd = open_fd(to_netns)
    try:
        with in_namespace(from_netns):
            ipr = IPRoute()
        try:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                # /sys/class/net shows the namespace sysfs was mounted in, so ask
                # netlink in the target namespace instead.
                with in_namespace(to_netns):
                    there_ipr = IPRoute()
                try:
                    if there_ipr.link_lookup(ifname=ifname):
                        return
                finally:
                    there_ipr.close()
                raise errors.NotFound(f"no link {ifname}", op="move_link", device=ifname, code=errno.ENODEV)
            ipr.link("set", index=idx[0], net_ns_fd=fd)
        except NetlinkError as e:
            raise errors.from_errno(e.code, f"move {ifname} to {to_netns}: {e}", op="move_link", device=ifname) from e
        finally:
            ipr.close()
    finally:
        os.close(fd)
