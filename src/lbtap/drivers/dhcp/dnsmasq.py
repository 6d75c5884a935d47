"""One dnsmasq per network, running inside that network's DHCP namespace.

Process model: we spawn ``ip netns exec <ns> dnsmasq --keep-in-foreground ...`` in a
new session (a Ctrl-C or the agent's own exit does not take it down). ``ip netns
exec`` execs dnsmasq, and ``--keep-in-foreground`` stops dnsmasq from forking, so the
PID we spawn is the server's PID. dnsmasq still writes its ``--pid-file``; a
restarted agent adopts a running server from it after checking that the process's
command line names *this* state directory (PIDs get reused).

Changes to ports, options and names only rewrite files (atomically: temp file +
rename) and send SIGHUP, on which dnsmasq re-reads ``--dhcp-hostsfile``,
``--dhcp-optsfile`` and ``--addn-hosts``; only a change of the command line (the set of
served subnets, the interface, settings) restarts it.

dnsmasq drops root to an unprivileged user after start-up and re-reads the files as
that user, so the state directory is made world-traversable and the files
world-readable; every directory above it must be traversable too.

Whoever stops a dnsmasq it is the parent of also reaps it (``reap``): the agent that
spawned it, or ``lbtap cleanup`` run from that process, never leaves a ``<defunct>``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from lbtap.drivers.dhcp.leases import LeaseDiff, diff_leases
from lbtap.drivers.dhcp.release import send_releases
from lbtap.drivers.dhcp.model import DhcpNetwork, Port
from lbtap.drivers.dhcp.render import (
    DEFAULT_DOMAIN,
    DEFAULT_LEASE_SECONDS,
    DnsmasqPaths,
    Lease,
    render_addn_hosts,
    render_cmdline,
    render_hosts,
    render_opts,
    static_leases,
)
from lbtap.drivers.host import errors

log = logging.getLogger(__name__)

START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0


def write_atomic(path: Path, content: str, mode: int = 0o644) -> bool:
    """Replace ``path`` with ``content`` in one rename; False if it already had it.

    A reader (dnsmasq on SIGHUP) sees the old or the new file, never half of one.
    """
    try:
        if path.read_text() == content:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return None  # a zombie serves nothing
    return [a.decode() for a in raw.split(b"\0") if a]


def reap(pid: int) -> bool:
    """Collect the exit status of ``pid`` if it is our child and has exited.

    True if it was reaped now. A process that is not our child (adopted from a pid
    file, or already reaped by a ``Popen``) is left to its parent: False.
    """
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def read_pid(paths: DnsmasqPaths) -> int | None:
    """The PID in dnsmasq's pid file (not checked: see ``is_lbtap_dnsmasq``)."""
    try:
        pid = int(paths.pid.read_text().strip())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return pid if pid > 0 else None


def is_lbtap_dnsmasq(pid: int, paths: DnsmasqPaths) -> bool:
    """Whether ``pid`` is a live dnsmasq that lbtap started for the state directory of
    ``paths``: the program is dnsmasq and its command line names that directory's pid
    and hosts files (a PID from a stale pid file may belong to anyone by now)."""
    args = _cmdline(pid)
    return (bool(args) and os.path.basename(args[0]) == "dnsmasq" and f"--pid-file={paths.pid}" in args
            and f"--dhcp-hostsfile={paths.hosts}" in args)


def terminate(pid: int, running: Callable[[], bool], popen: subprocess.Popen | None = None,
              timeout: float | None = None) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` while ``running()``, then SIGKILL; reap it
    if it is our child.

    The caller has checked that ``pid`` is the process it means; ``running`` re-checks
    that (a zombie or a reused PID is not running) before each signal.
    """
    if timeout is None:
        timeout = STOP_TIMEOUT
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while running() and time.monotonic() < deadline:
        if popen is None and reap(pid):
            break
        time.sleep(0.01)
    if running():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if popen is not None:
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("dnsmasq pid %d did not exit after SIGKILL", pid)
        else:
            deadline = time.monotonic() + timeout
            while not reap(pid) and running() and time.monotonic() < deadline:
                time.sleep(0.01)
    if popen is not None:
        popen.poll()  # reaps it if it is gone
    else:
        # Its command line empties before the exit completes: when it is our child,
        # wait (briefly) for the exit status, or it would stay a zombie.
        deadline = time.monotonic() + timeout
        while _is_child_pending(pid) and time.monotonic() < deadline:
            time.sleep(0.005)


def _is_child_pending(pid: int) -> bool:
    """True while ``pid`` is our child and not yet reaped (reaps it once it exited)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child, or already reaped
    return done != pid


class DnsmasqProcess:
    """The dnsmasq of one network in one namespace.

    ``network`` holds the subnets, MTU and ports to serve; ``namespace`` must exist
    and contain ``interface`` (the DHCP port's namespace end, addressed) before
    ``start``. ``dhcp_ips`` are that port's addresses (offered as DNS server on
    subnets without ``dns_nameservers``). All state lives in ``state_dir``.
    """

    def __init__(self, network: DhcpNetwork, *, namespace: str, interface: str, state_dir: str | Path,
                 dhcp_ips: tuple[str, ...] | list[str] = (), domain: str = DEFAULT_DOMAIN,
                 lease_seconds: int = DEFAULT_LEASE_SECONDS, binary: str = "dnsmasq",
                 user: str | None = None, log_dhcp: bool = False):
        self._network = network
        self.namespace = namespace
        self.interface = interface
        self.paths = DnsmasqPaths(Path(state_dir))
        self.dhcp_ips = tuple(dhcp_ips)
        self.domain = domain
        self.lease_seconds = lease_seconds
        self.binary = binary
        self.user = user
        self.log_dhcp = log_dhcp
        self._popen: subprocess.Popen | None = None
        self._pid: int | None = None
        self._leases: list[Lease] | None = None  # what the files on disk hold
        self.restarts = 0  # times ensure_running found it not running and started it
        self.reloads = 0  # SIGHUPs sent

    # -- what to run ---------------------------------------------------------------
    @property
    def network(self) -> DhcpNetwork:
        return self._network

    def command(self) -> list[str]:
        """The full argv (``ip netns exec`` + dnsmasq's own)."""
        return ["ip", "netns", "exec", self.namespace, *render_cmdline(
            self._network, interface=self.interface, paths=self.paths, lease_seconds=self.lease_seconds,
            domain=self.domain, binary=self.binary, user=self.user, log_dhcp=self.log_dhcp)]

    def _write_files(self, leases: list[Lease] | None = None) -> bool:
        if leases is None:
            leases = static_leases(self._network)
        d = self.paths.directory
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
        changed = False
        for path, text in ((self.paths.hosts, render_hosts(self._network, self.domain, leases)),
                           (self.paths.opts, render_opts(self._network, self.dhcp_ips, self.domain)),
                           (self.paths.addn_hosts, render_addn_hosts(self._network, self.domain, leases))):
            changed |= write_atomic(path, text)
        self._leases = leases
        return changed

    # -- process state -------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The running server's PID, or None."""
        return self._pid if self.is_alive() else None

    def _owns(self, pid: int) -> bool:
        """Whether ``pid`` is a dnsmasq serving our state directory."""
        args = _cmdline(pid)
        return bool(args) and f"--dhcp-hostsfile={self.paths.hosts}" in args

    def is_alive(self) -> bool:
        """Whether our dnsmasq runs (reaps it if it died; adopts one from the pid file)."""
        if self._popen is not None:
            if self._popen.poll() is None:
                return True
            self._popen = None
            self._pid = None
            return False
        if self._pid is None:
            self._pid = self._read_pidfile()
        if self._pid is not None and self._owns(self._pid):
            return True
        self._pid = None
        return False

    def needs_restart(self) -> bool:
        """Whether the running dnsmasq was started with another command line than
        ours (e.g. an adopted one from before a settings change, or subnets changed)."""
        if not self.is_alive():
            return False
        assert self._pid is not None
        return _cmdline(self._pid) != self.command()[4:]  # without "ip netns exec NS"

    def _read_pidfile(self) -> int | None:
        pid = read_pid(self.paths)
        return pid if pid is not None and self._owns(pid) else None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> int:
        """Write the files and start dnsmasq unless ours already runs; return its PID.

        Returns once dnsmasq has written its pid file: from then on it handles SIGHUP
        (before that, SIGHUP's default action would kill it). Raises ``HostError`` if
        it exits during start-up (e.g. the interface does not exist).
        """
        if self.is_alive() and not self.needs_restart():
            if self._write_files():
                self._hup()
            assert self._pid is not None
            return self._pid
        if self.is_alive():
            self.stop(clean=False)
        self._write_files()
        cmd = self.command()
        log = open(self.paths.log.with_suffix(".stderr"), "ab")
        try:
            self._popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           start_new_session=True, close_fds=True)
        except FileNotFoundError as e:
            raise errors.NotSupported(f"cannot run {cmd[0]}: {e}", op="dnsmasq_start", code=errno.ENOENT) from e
        finally:
            log.close()
        self._pid = self._popen.pid
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                rc = self._popen.returncode
                self._popen = None
                self._pid = None
                # Retriable: the usual cause is an interface not (yet) there or addressed.
                raise errors.HostError(f"dnsmasq for {self._network.id} exited with {rc} at start: "
                                       f"{self._tail_log()}", op="dnsmasq_start", device=self.interface)
            try:
                if int(self.paths.pid.read_text().strip() or 0) == self._pid:
                    return self._pid
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.01)
        self.stop(clean=False)
        raise errors.Transient(f"dnsmasq for {self._network.id} did not start within {START_TIMEOUT}s",
                               op="dnsmasq_start", device=self.interface)

    def _tail_log(self) -> str:
        out = []
        for p in (self.paths.log.with_suffix(".stderr"), self.paths.log):
            try:
                out.append(p.read_text()[-500:].strip())
            except FileNotFoundError:
                pass
        return " | ".join(x for x in out if x)

    def ensure_running(self) -> bool:
        """Start dnsmasq again if it died; True if it had to (re)start it."""
        if self.is_alive():
            return False
        self.start()
        self.restarts += 1
        return True

    def _hup(self) -> None:
        assert self._pid is not None
        try:
            os.kill(self._pid, signal.SIGHUP)
        except ProcessLookupError:
            self._pid = None
            return
        self.reloads += 1

    def reload(self, ports: list[Port] | tuple[Port, ...]) -> LeaseDiff:
        """Serve ``ports`` from now on: rewrite the files and SIGHUP (no restart).

        Returns the lease changes; nothing is written nor signalled when the files
        would not change. Removed leases are released first (see ``release``), so
        their addresses can be reused at once. Starts dnsmasq if it is not running.
        """
        return self._apply(self._network.with_ports(tuple(ports)))[1]

    def release(self, leases: list[Lease]) -> int:
        """Make dnsmasq forget the IPv4 ``leases`` now (DHCPRELEASE), so that their
        addresses can go to other MACs at once; returns how many were sent.

        Best effort, as Neutron's use of ``dhcp_release``: a failure is logged, the
        lease then simply expires.
        """
        todo = []
        for lease in leases:
            server = self._server_for(lease.ip)
            if server is not None:
                todo.append((lease.ip, lease.mac, server))
        try:
            send_releases(self.namespace, self.interface, todo)
        except errors.HostError as e:
            log.warning("dhcp release for %s failed: %s", self._network.id, e)
            return 0
        return len(todo)

    def _server_for(self, ip: str) -> str | None:
        """Our IPv4 address on the subnet of ``ip`` (the DHCP server identifier)."""
        addr = ipaddress.ip_address(ip)
        if addr.version != 4:
            return None  # DHCPv6 leases expire on their own
        for sub in self._network.subnets:
            if addr in sub.network:
                for own in self.dhcp_ips:
                    if ipaddress.ip_address(own) in sub.network:
                        return own
        return None

    def update(self, network: DhcpNetwork, dhcp_ips: tuple[str, ...] | list[str] | None = None) -> str:
        """Serve a new version of the network: "unchanged", "reloaded" or "restarted".

        A changed command line (e.g. a subnet added or DHCP disabled on one) needs a
        restart; anything else is a reload, as in ``reload``.
        """
        if dhcp_ips is not None:
            self.dhcp_ips = tuple(dhcp_ips)
        return self._apply(network)[0]

    def _apply(self, network: DhcpNetwork) -> tuple[str, LeaseDiff]:
        before = self._leases if self._leases is not None else static_leases(self._network)
        self._network = network
        after = static_leases(network)
        delta = diff_leases(before, after)
        if not self.is_alive() or self.needs_restart():
            self.start()
            return "restarted", delta
        if delta.removed:
            self.release(list(delta.removed))
        if self._write_files(after):
            self._hup()
            return "reloaded", delta
        return "unchanged", delta

    def stop(self, clean: bool = True) -> None:
        """Stop our dnsmasq (SIGTERM, then SIGKILL) and, with ``clean``, remove its files.

        Only the PID we started or verified as ours is ever signalled.
        """
        if self.is_alive():
            pid = self._pid
            assert pid is not None
            # Reaped too when we are its parent but hold no Popen (e.g. adopted from the
            # pid file by another DnsmasqProcess of this process): no zombie stays.
            terminate(pid, lambda: self._still_running(pid), self._popen)
        self._popen = None
        self._pid = None
        if clean:
            self._remove_files()

    def _still_running(self, pid: int) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return self._owns(pid)

    def _remove_files(self) -> None:
        p = self.paths
        for path in (p.hosts, p.opts, p.addn_hosts, p.leases, p.pid, p.log, p.log.with_suffix(".stderr")):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        try:
            p.directory.rmdir()
        except OSError:
            pass  # not empty: someone else's files, leave them
