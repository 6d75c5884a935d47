"""``lbtap logs --diagnose``: known error signatures in agent/server logs → cause and remedy.

Input is lbtap's structured log (``<ts> LEVEL logger message key=value ...``, see
``monitoring.logs``; traceback lines that follow a record belong to it), but any text
log works: a line that does not parse is matched as free text, and device names are
then picked out of it (tap…, brq…, vxlan-…).

The table is ordered: the first matching signature wins, so specific ones (an
address "File exists") come before generic ones (any EEXIST).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

try:  # the keys the formatter appends, in its order
    from lbtap.monitoring.logs import _CONTEXT_KEYS as CONTEXT_KEYS
except ImportError:  # pragma: no cover - keep working if logs.py renames it
    CONTEXT_KEYS = ("device", "port_id", "network_id", "host", "op", "attempt", "retry_in", "error")

_HEAD = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d[T ][\d:.,]+Z?)\s+(?:\d+\s+)?(?P<level>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|TRACE)\s+(?P<logger>\S+)\s+(?P<rest>.*)$")
_KV = re.compile(r"(?:^|\s)(" + "|".join(CONTEXT_KEYS) + r")=")
_DEVICE = re.compile(r"\b(tap[0-9a-f][0-9a-f-]{0,10}|brq[0-9a-f][0-9a-f-]{0,10}|vxlan-\d+)\b")


@dataclass(frozen=True)
class Signature:
    id: str
    pattern: re.Pattern
    severity: str
    cause: str
    remedy: str


def _sig(id: str, pattern: str, severity: str, cause: str, remedy: str) -> Signature:
    return Signature(id, re.compile(pattern, re.IGNORECASE | re.DOTALL), severity, cause, remedy)


SIGNATURES: tuple[Signature, ...] = (
    _sig("address-exists",
         # EEXIST anywhere in the record, together with an address operation or a CIDR
         r"^(?=.*(File exists|EEXIST|\(17,|errno 17))(?=.*(add_address|\baddr\b|address|\d+\.\d+\.\d+\.\d+/\d+))",
         "critical",
         "the address is already on another link — typically the seed's fault: moving a NIC's IP onto its "
         "bridge added it to the bridge but did not delete it from the NIC, so every re-add fails",
         "run `lbtap doctor --fix` (deletes the address from the NIC only, keeps the bridge's addresses), "
         "then check the agent stops retrying"),
    _sig("route-lost",
         r"could not restore route",
         "critical",
         "moving a route (e.g. the default route from a NIC to its bridge) failed half-way and the old route "
         "could not be put back: the host may have lost that route",
         "check `ip route` in the agent's namespace and re-add the route on the bridge; `lbtap doctor` shows "
         "routes left on bridge ports"),
    _sig("enslave-bridge",
         r"can'?t enslave a bridge|cannot enslave a bridge|can not enslave a bridge|ELOOP|Too many levels of symbolic links",
         "critical",
         "an uplink in physical_interface_mappings is itself a bridge; a bridge cannot be a port of another bridge",
         "map the physical network to the NIC under that bridge (or to a veth into it), then restart the agent"),
    _sig("netlink-overflow",
         r"ENOBUFS|No buffer space available|\(105,|event (socket )?overflow|events? lost",
         "warning",
         "the netlink event socket overflowed (too many link changes at once); events were lost",
         "harmless if rare: the agent reopens the socket and does a full reconcile; if frequent, raise the "
         "event socket buffer or reduce device churn"),
    _sig("rpc-timeout",
         r"CallTimeout|MessagingTimeout|RPC timeout|timed out waiting for a reply|\bUnreachable\b"
         r"|BusError|AMQPConnectionError|AMQP connection lost|Connection refused.*5672|report .* not delivered"
         r"|heartbeat not delivered|device details unavailable",
         "critical",
         "the agent cannot reach the server over the bus (server down, overloaded, or the broker unreachable); "
         "device state and heartbeats are not delivered and the agent will resend",
         "check `lbtap status` (agent alive, server reachable) and the broker (RabbitMQ on :5672); "
         "look for 'database is locked' or slow requests on the server"),
    _sig("bus-backlog",
         r"backlog full|dropping the oldest message",
         "warning",
         "the in-process bus is overloaded and drops messages — e.g. an update_device_up storm",
         "look for repeated status reports of the same devices (lbtap logs, the server's /metrics "
         "lbtap_rpc_messages_total) and fix the failing device that causes them"),
    _sig("fault-injection",
         r"FAULT INJECTION ENABLED",
         "warning",
         "the agent runs with a testing-only fault-injection hook",
         "remove inject_faults from the agent's configuration"),
    _sig("db-locked",
         r"database is locked|database table is locked|SQLITE_BUSY",
         "critical",
         "SQLite rejected a concurrent write: too many writers for a file database",
         "use PostgreSQL or MariaDB (--db-url) for more than a toy deployment, or run one server process"),
    _sig("db-unreachable",
         r"OperationalError.*(could not connect|Can't connect|Connection refused)|Connection refused.*(5432|3306)",
         "critical",
         "the server cannot reach its database",
         "check the database service and --db-url"),
    _sig("dnsmasq",
         r"dnsmasq.*(fail|error|exit|cannot|unable)|failed to create listening socket|dhcp.*(fail|error).*(start|spawn)",
         "warning",
         "dnsmasq (the DHCP server of a network) did not start or died: port 67 in use, its interface "
         "missing, or a bad option; instances get no address",
         "check the DHCP port's tap exists and is up; look for another DHCP server in that namespace"),
    _sig("no-such-device",
         r"No such device|ENODEV|\(19,|Cannot find device|does not exist",
         "warning",
         "a device disappeared while it was being configured (VM deleted or unplugged mid-operation)",
         "harmless once; repeated for the same device means stale agent state — run `lbtap doctor`"),
    _sig("exists",
         r"File exists|EEXIST|\(17,",
         "warning",
         "a create found a conflicting object of the same name (e.g. a device of another kind)",
         "run `lbtap doctor`; delete the conflicting device if nothing owns it"),
    _sig("busy", r"Device or resource busy|EBUSY|\(16,", "warning",
         "the device is in use — typically already enslaved to another bridge",
         "see which bridge holds it (lbtap bridges) and release it"),
    _sig("not-supported", r"Operation not supported|EOPNOTSUPP|\(95,|NotSupported", "warning",
         "the kernel lacks a feature (e.g. 802.1Q VLAN devices, a tc action)",
         "use a network type this kernel supports, or a kernel with the module"),
    _sig("permission", r"Operation not permitted|EPERM|Permission denied|\(1, 'Operation", "critical",
         "the agent lacks privileges (not root, or CAP_NET_ADMIN missing)",
         "run the agent as root or grant CAP_NET_ADMIN"),
    _sig("invalid-mtu", r"Numerical result out of range|ERANGE|invalid mtu|mtu.*(greater|exceed)", "warning",
         "an MTU larger than the device or its underlay allows",
         "lower the network MTU (VXLAN needs underlay MTU - 50)"),
    _sig("resync", r"full resync|resync(ing)? all|sync=True|Error in agent loop", "warning",
         "the agent re-processes every device after an error — the seed's update_device_up storm mechanism",
         "find the failing device in the lines around it and fix it; `lbtap doctor` checks the usual causes"),
)


@dataclass
class Record:
    """One log record; ``text`` includes the traceback lines that followed it."""

    ts: str | None
    level: str | None
    logger: str | None
    message: str
    fields: dict[str, str] = field(default_factory=dict)
    text: str = ""


def parse_line(line: str) -> Record | None:
    """A structured record from its first line, or None when it is not one."""
    m = _HEAD.match(line.rstrip("\n"))
    if not m:
        return None
    rest = m.group("rest")
    keys = list(_KV.finditer(rest))
    message = rest[: keys[0].start()].strip() if keys else rest.strip()
    fields = {}
    for i, k in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(rest)
        fields[k.group(1)] = rest[k.end():end].strip()
    level = "WARNING" if m.group("level") == "WARN" else m.group("level")
    return Record(m.group("ts"), level, m.group("logger"), message, fields, line.rstrip("\n"))


def records(lines: Iterable[str]) -> Iterable[Record]:
    """Records with continuation lines (tracebacks) folded in; unparsable lines that
    follow nothing become free-text records."""
    cur: Record | None = None
    for line in lines:
        rec = parse_line(line)
        if rec is not None:
            if cur is not None:
                yield cur
            cur = rec
        elif cur is not None and line.strip() and (line.startswith((" ", "\t")) or _looks_like_traceback(line)):
            cur.text += "\n" + line.rstrip("\n")
        else:
            if cur is not None:
                yield cur
                cur = None
            if line.strip():
                yield Record(None, None, None, line.strip(), {}, line.rstrip("\n"))
    if cur is not None:
        yield cur


def _looks_like_traceback(line: str) -> bool:
    return line.startswith("Traceback") or bool(re.match(r"^[\w.]+(Error|Exception|Timeout)\b", line))


@dataclass
class Group:
    signature: Signature
    count: int = 0
    first: str | None = None
    last: str | None = None
    devices: Counter = field(default_factory=Counter)
    ports: Counter = field(default_factory=Counter)
    example: str = ""

    def to_dict(self) -> dict:
        s = self.signature
        return {"signature": s.id, "severity": s.severity, "count": self.count, "cause": s.cause,
                "remedy": s.remedy, "first": self.first, "last": self.last,
                "devices": dict(self.devices.most_common()), "port_ids": dict(self.ports.most_common()),
                "example": self.example}


def classify(rec: Record) -> Signature | None:
    """The first signature matching the record's whole text (error field included)."""
    for sig in SIGNATURES:
        if sig.pattern.search(rec.text):
            return sig
    return None


def devices_of(rec: Record) -> list[str]:
    """The record's ``device`` field plus every device name in its text (the error of a
    tap's failure often names the bridge that really holds the problem)."""
    names = set(_DEVICE.findall(rec.text))
    if rec.fields.get("device"):
        names.add(rec.fields["device"])
    return sorted(names)


def diagnose(lines: Iterable[str]) -> tuple[list[Group], dict]:
    """Group matching records by signature (most frequent first) and summarise the rest:
    ``{"records": n, "errors": n, "unmatched_errors": n, "unmatched_examples": [...]}``."""
    groups: dict[str, Group] = {}
    summary = {"records": 0, "errors": 0, "unmatched_errors": 0, "unmatched_examples": []}
    for rec in records(lines):
        summary["records"] += 1
        is_error = rec.level in ("WARNING", "ERROR", "CRITICAL")
        summary["errors"] += is_error
        sig = classify(rec)
        if sig is None:
            if is_error:
                summary["unmatched_errors"] += 1
                if len(summary["unmatched_examples"]) < 5:
                    summary["unmatched_examples"].append(rec.text.splitlines()[0])
            continue
        g = groups.setdefault(sig.id, Group(sig))
        g.count += 1
        g.first = g.first or rec.ts
        g.last = rec.ts or g.last
        g.devices.update(devices_of(rec))
        if rec.fields.get("port_id"):
            g.ports[rec.fields["port_id"]] += 1
        if not g.example:
            g.example = rec.text.splitlines()[0]
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(groups.values(), key=lambda g: (order[g.signature.severity], -g.count)), summary
