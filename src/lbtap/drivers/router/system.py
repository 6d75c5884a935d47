"""The few namespace-level operations a router needs beyond ``HostDriver``.

``LinuxSystem`` does them for real: named namespaces, per-namespace sysctls, one
``nft -f`` transaction and conntrack flushes, each inside the router's namespace
only (``ip netns exec`` for the tools, a per-thread ``setns`` for ``/proc/sys``).
Link, address and route work goes through ``HostDriver`` (``NetlinkHost`` here), so
that tests can run the same applier on ``FakeHost``.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from typing import Protocol

from lbtap.drivers.host import errors
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.host.base import HostDriver

COMMAND_TIMEOUT = 30.0


class RouterSystem(Protocol):
    """What ``RouterNamespace`` needs from the machine, besides links and addresses."""

    def namespace_exists(self, name: str) -> bool: ...
    def create_namespace(self, name: str) -> None: ...
    def delete_namespace(self, name: str) -> None: ...
    def driver(self, netns: str | None) -> HostDriver: ...
    def forget(self, netns: str) -> None: ...
    def set_sysctl(self, netns: str, key: str, value: str) -> None: ...
    def apply_nft(self, netns: str, script: str) -> None: ...
    def flush_conntrack(self, netns: str, addresses: list[str]) -> None: ...


def run_in_namespace(netns: str, argv: list[str], *, input: str | None = None, op: str) -> subprocess.CompletedProcess:
    """Run ``argv`` inside ``netns``; ``HostError`` if it cannot start or times out."""
    if not netns_mod.exists(netns):
        raise errors.NotFound(f"no namespace {netns}", op=op, device=netns, code=errno.ENOENT)
    try:
        return subprocess.run(["ip", "netns", "exec", netns, *argv], input=input, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError as e:
        raise errors.NotSupported(f"{op}: {e}", op=op, device=netns, code=errno.ENOENT) from e
    except subprocess.TimeoutExpired as e:
        raise errors.Transient(f"{op}: {argv[0]} timed out", op=op, device=netns, code=errno.ETIMEDOUT) from e


def _identity(netns: str | None) -> tuple[int, int] | None:
    if netns is None:
        return None
    try:
        st = os.stat(netns_mod.path(netns))
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class LinuxSystem:
    """The real ``RouterSystem`` (needs root)."""

    def __init__(self) -> None:
        self._drivers: dict[str | None, tuple[HostDriver, tuple[int, int] | None]] = {}

    def namespace_exists(self, name: str) -> bool:
        return netns_mod.exists(name)

    def create_namespace(self, name: str) -> None:
        netns_mod.create(name)

    def delete_namespace(self, name: str) -> None:
        self.forget(name)
        netns_mod.delete(name)

    def driver(self, netns: str | None) -> HostDriver:
        """A cached ``NetlinkHost`` bound to ``netns`` (None: the caller's own).

        A namespace deleted and re-created under the same name behind our back is a
        new namespace: the cached socket would still point at the old one, so the
        cache is keyed on the namespace file's identity too.
        """
        ident = _identity(netns)
        cached = self._drivers.get(netns)
        if cached is not None and cached[1] == ident:
            return cached[0]
        if cached is not None:
            self.forget(netns)
        from lbtap.drivers.host.netlink import NetlinkHost

        drv = NetlinkHost(netns=netns)
        self._drivers[netns] = (drv, ident)
        return drv

    def forget(self, netns: str | None) -> None:
        """Close our sockets in ``netns`` (an open netlink socket pins a namespace)."""
        cached = self._drivers.pop(netns, None)
        if cached is not None:
            cached[0].close()

    def close(self) -> None:
        for name in list(self._drivers):
            self.forget(name)

    def set_sysctl(self, netns: str, key: str, value: str) -> None:
        """Write ``/proc/sys/<key with / for .>`` as seen from inside ``netns``."""
        path = "/proc/sys/" + key.replace(".", "/")
        with netns_mod.in_namespace(netns):
            try:
                with open(path, "w") as f:
                    f.write(value + "\n")
            except OSError as e:
                raise errors.from_errno(e.errno, f"sysctl {key}={value} in {netns}: {e}", op="sysctl",
                                        device=netns) from e

    def apply_nft(self, netns: str, script: str) -> None:
        """Apply ``script`` with one ``nft -f -`` (one kernel transaction)."""
        res = run_in_namespace(netns, ["nft", "-f", "-"], input=script, op="apply_nft")
        if res.returncode != 0:
            raise errors.InvalidArgument(f"nft in {netns} failed: {res.stderr.strip()}", op="apply_nft",
                                         device=netns, code=errno.EINVAL)

    def flush_conntrack(self, netns: str, addresses: list[str]) -> None:
        """Forget tracked connections to or from ``addresses`` (removed floating IPs).

        Without this, a flow NATed through a floating IP keeps being NATed after the
        floating IP is gone. Best effort: no ``conntrack`` tool means nothing to do
        beyond waiting for the entries to time out.
        """
        if not addresses or shutil.which("conntrack") is None:
            return
        for addr in addresses:
            # Inbound flows have the floating IP as original destination, outbound
            # (SNATed) ones as reply destination. Exit code 1 means "none found".
            for sel in (["-d", addr], ["--reply-dst", addr]):
                run_in_namespace(netns, ["conntrack", "-D", *sel], op="flush_conntrack")
