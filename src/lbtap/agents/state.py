"""What the DHCP and L3 agents keep in the state dir besides dnsmasq's own files.

- Namespace records, ``<state_dir>/netns/<namespace>``: one small JSON file per
  ``qdhcp-``/``qrouter-`` namespace an agent created, written before the namespace is
  and removed after it is deleted. They are how ``lbtap cleanup`` (and an agent
  stopping with teardown) knows which namespaces are lbtap's, also without a host
  suffix in their names (a real Neutron on the same machine uses the same names).
- The agents' lock, ``<state_dir>/network-agents.lock``: every running DHCP/L3 agent
  holds a shared ``flock`` on it; ``lbtap cleanup`` takes it exclusively, so it never
  pulls namespaces from under a running agent, and an agent starting meanwhile waits.
  The kernel drops the lock when a process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lbtap.drivers.router.naming import DHCP_NS_PREFIX, ROUTER_NS_PREFIX, dhcp_namespace, router_namespace

log = logging.getLogger("lbtap.agents")

RECORDS_DIR = "netns"
LOCK_FILE = "network-agents.lock"
KINDS = {"dhcp": (DHCP_NS_PREFIX, dhcp_namespace), "router": (ROUTER_NS_PREFIX, router_namespace)}


@dataclass(frozen=True)
class NamespaceRecord:
    """One namespace an agent created: ``kind`` ("dhcp" or "router"), the network or
    router id, the agent's host and the suffix its names carry (None: plain names)."""

    name: str
    kind: str
    resource_id: str
    host: str
    suffix: str | None = None

    def valid(self) -> bool:
        """Whether lbtap's naming function gives exactly ``name`` for this record."""
        if self.kind not in KINDS:
            return False
        try:
            return KINDS[self.kind][1](self.resource_id, self.suffix) == self.name
        except ValueError:
            return False

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "id": self.resource_id, "host": self.host, "suffix": self.suffix},
                          sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, name: str, text: str) -> "NamespaceRecord | None":
        try:
            d = json.loads(text)
            rec = cls(name=name, kind=str(d["kind"]), resource_id=str(d["id"]), host=str(d["host"]),
                      suffix=None if d.get("suffix") is None else str(d["suffix"]))
        except (ValueError, KeyError, TypeError):
            return None
        return rec


class NamespaceRecords:
    """The records of one state dir. ``add`` writes a record once per process."""

    def __init__(self, state_dir: str | Path):
        self.directory = Path(state_dir) / RECORDS_DIR
        self._written: set[str] = set()

    def add(self, record: NamespaceRecord) -> None:
        if record.name in self._written:
            return
        if not record.valid() or "/" in record.name or record.name.startswith("."):
            raise ValueError(f"not an lbtap namespace record: {record}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / record.name
        tmp = self.directory / f".{record.name}.tmp"
        tmp.write_text(record.to_json())
        os.replace(tmp, path)
        self._written.add(record.name)

    def remove(self, name: str) -> bool:
        """Forget ``name``; True if a record was there."""
        self._written.discard(name)
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            return False
        return True

    def read(self) -> list[NamespaceRecord]:
        """Every well-formed record (others are skipped: never acted upon)."""
        try:
            names = sorted(os.listdir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in names:
            if name.startswith("."):
                continue
            try:
                text = (self.directory / name).read_text()
            except OSError:
                continue
            rec = NamespaceRecord.from_json(name, text)
            if rec is not None:
                out.append(rec)
        return out


def lock_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / LOCK_FILE


class AgentsLock:
    """A running agent's shared hold on its state dir (see the module doc)."""

    def __init__(self, state_dir: str | Path):
        self.path = lock_path(state_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Blocks while ``lbtap cleanup`` holds the state dir."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


class StateDirBusy(Exception):
    """A DHCP or L3 agent is running with this state dir."""


class ExclusiveLock:
    """``lbtap cleanup``'s hold on a state dir: fails at once if an agent runs there."""

    def __init__(self, state_dir: str | Path, *, create: bool = True):
        self.path = lock_path(state_dir)
        self.create = create  # False (dry run): no lock file means no agent ever ran here
        self._fd: int | None = None

    def __enter__(self) -> "ExclusiveLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if self.create else 0), 0o644)
        except FileNotFoundError:
            if self.create:
                raise
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(str(self.path.parent)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
