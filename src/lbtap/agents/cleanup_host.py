"""``lbtap cleanup``'s host side: read lbtap's state, then apply a ``CleanupPlan``.

Reading: the DHCP state directories and their pid files (a PID counts only if its
command line is a dnsmasq started for that directory), the namespace records and the
namespace list. Applying: dnsmasq stopped by that PID (re-verified just before the
signal, reaped if it is our child), namespaces deleted with their veths, DHCP files
removed (only the names dnsmasq's driver writes), records dropped. Every step is
idempotent; one failure does not stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lbtap.agents.cleanup_core import CleanupPlan, DhcpState
from lbtap.agents.state import NamespaceRecord, NamespaceRecords
from lbtap.drivers.dhcp.dnsmasq import is_lbtap_dnsmasq, read_pid, terminate
from lbtap.drivers.dhcp.render import DnsmasqPaths
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.router.namespace import destroy_namespace
from lbtap.drivers.router.system import LinuxSystem, RouterSystem

DHCP_DIR = "dhcp"  # DhcpHost's state: <state_dir>/dhcp/<network_id>


def dhcp_files(paths: DnsmasqPaths) -> list[Path]:
    """The files the DHCP driver writes for one network (and nothing else)."""
    return [paths.hosts, paths.opts, paths.addn_hosts, paths.leases, paths.pid, paths.log,
            paths.log.with_suffix(".stderr")]


def read_dhcp_states(state_dir: str | Path) -> list[DhcpState]:
    """One entry per network directory holding DHCP files (or left empty)."""
    base = Path(state_dir) / DHCP_DIR
    try:
        entries = sorted(base.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for d in entries:
        if d.name.startswith(".") or d.is_symlink() or not d.is_dir():
            continue
        paths = DnsmasqPaths(d)
        if not any(p.exists() for p in dhcp_files(paths)) and any(d.iterdir()):
            continue  # someone else's directory: not ours to touch
        pid = read_pid(paths)
        out.append(DhcpState(d.name, pid if pid is not None and is_lbtap_dnsmasq(pid, paths) else None))
    return out


def read_state(state_dir: str | Path | None) -> tuple[list[DhcpState], list[NamespaceRecord], list[str]]:
    """(DHCP states, namespace records, namespaces on the machine)."""
    if state_dir is None:
        return [], [], netns_mod.list_namespaces()
    return read_dhcp_states(state_dir), NamespaceRecords(state_dir).read(), netns_mod.list_namespaces()


@dataclass
class CleanupResult:
    lines: list[str] = field(default_factory=list)  # one per thing removed (or to remove)
    errors: list[str] = field(default_factory=list)


def apply_plan(plan: CleanupPlan, state_dir: str | Path | None, *, dry_run: bool = False,
               emit: Callable[[str], None] | None = None, system: RouterSystem | None = None) -> CleanupResult:
    """Remove what ``plan`` says; ``dry_run`` only tells. ``emit`` sees each line as it
    happens (``lbtap cleanup`` prints it)."""
    res = CleanupResult()

    def say(line: str) -> None:
        res.lines.append(line)
        if emit is not None:
            emit(line)

    base = Path(state_dir) / DHCP_DIR if state_dir is not None else None
    for net, pid in plan.dnsmasq:
        assert base is not None
        paths = DnsmasqPaths(base / net)
        if dry_run:
            say(f"would stop dnsmasq pid {pid} (network {net})")
            continue
        if not is_lbtap_dnsmasq(pid, paths):
            continue  # exited meanwhile (or the PID is someone else's by now): nothing to stop
        try:
            terminate(pid, lambda pid=pid, paths=paths: is_lbtap_dnsmasq(pid, paths))
        except OSError as e:
            res.errors.append(f"cannot stop dnsmasq pid {pid} (network {net}): {e.strerror or e}")
            continue
        if is_lbtap_dnsmasq(pid, paths):
            res.errors.append(f"dnsmasq pid {pid} (network {net}) did not exit")
            continue
        say(f"stopped dnsmasq pid {pid} (network {net})")

    failed: set[str] = set()
    own_system = system is None and bool(plan.namespaces) and not dry_run
    if own_system:
        system = LinuxSystem()
    try:
        for name in plan.namespaces:
            if dry_run:
                say(f"would delete namespace {name}")
                continue
            assert system is not None
            try:
                if destroy_namespace(system, name):
                    say(f"deleted namespace {name}")
            except Exception as e:  # noqa: BLE001 - HostError and the like: report, go on
                failed.add(name)
                res.errors.append(f"cannot delete namespace {name}: {e}")
    finally:
        if own_system:
            system.close()  # type: ignore[union-attr]

    for net in plan.dhcp_files:
        assert base is not None
        d = base / net
        paths = DnsmasqPaths(d)
        present = [p for p in dhcp_files(paths) if p.exists()]
        if dry_run:
            if present or d.is_dir():
                say(f"would remove DHCP files {d}")
            continue
        if any(pid for n, pid in plan.dnsmasq if n == net and is_lbtap_dnsmasq(pid, paths)):
            continue  # its dnsmasq still runs (reported above): keep its files
        try:
            for p in present:
                p.unlink(missing_ok=True)
        except OSError as e:
            res.errors.append(f"cannot remove DHCP files {d}: {e.strerror or e}")
            continue
        try:
            d.rmdir()
            removed_dir = True
        except OSError:  # gone already, or someone else's files are in it: they stay
            removed_dir = False
        if present or removed_dir:
            say(f"removed DHCP files {d}")

    if not dry_run and state_dir is not None:
        records = NamespaceRecords(state_dir)
        for name in plan.records:
            if name not in failed:
                records.remove(name)
    return res

