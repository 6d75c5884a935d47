"""The monitoring commands: status, bridges, fdb, stats, ports, logs, doctor.

Host-side commands take ``--netns`` (default: the current namespace), API-side ones
``--url`` (or ``LBTAP_URL``), all ``--json``. Every failure is one line on stderr and a
non-zero exit: 2 for errors (bad input, unreachable namespace or server), 1 where a
command found something unhealthy (``doctor`` findings ≥ warning, a dead agent, known
error signatures in a log), 0 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from typing import Callable

from lbtap.domain import naming
from lbtap.drivers.host.errors import HostError
from lbtap.monitoring import doctor as doc
from lbtap.monitoring import render, stats
from lbtap.monitoring.apiview import ApiUnavailable, ApiView, agent_rows, parse_metrics, pick_agent
from lbtap.monitoring.diagnose import diagnose
from lbtap.monitoring.hoststate import bridge_table, fdb_table, take_snapshot

PORT_COLUMNS = ["tenant_id", "id", "name", "network_id", "mac_address", "admin_state_up", "status",
                "device_id", "device_owner", "dns_name"]


class UsageError(Exception):
    pass


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected failures into one stderr line and exit code 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (HostError, ApiUnavailable, UsageError, OSError) as e:
            print(f"lbtap: {e}", file=sys.stderr)
            return 2

    return run


def _driver(args: argparse.Namespace):
    from lbtap.drivers.host.netlink import NetlinkHost

    return NetlinkHost(netns=args.netns)


def _out(args: argparse.Namespace, data, text: str) -> None:
    print(render.dumps(data) if args.json else text)


# ---------------------------------------------------------------------- status

@_guarded
def cmd_status(args: argparse.Namespace) -> int:
    now = time.time()
    with ApiView(args.url) as api:
        server = {"url": api.url, "reachable": True, "error": None}
        try:
            agents = agent_rows(api.list("agents"), now)
        except ApiUnavailable as e:
            agents, server["reachable"], server["error"] = [], False, str(e)
        metrics = api.metrics_text() if server["reachable"] else None
    if metrics is not None:
        server.update(parse_metrics(metrics))
    data = {"server": server, "agents": agents}
    if args.json:
        print(render.dumps(data))
    else:
        rows = [dict(r, hb=render.human_age(r["heartbeat_age"]), rss=render.human_bytes(r["rss_bytes"])) for r in agents]
        print(render.table(rows, ["host", "agent_type", "alive", "hb", "devices", "cpu_percent", "cpu_percent_sustained",
                                  "rss", "netns"],
                           ["HOST", "TYPE", "ALIVE", "HEARTBEAT AGE", "DEVICES", "CPU%", "CPU% 1MIN LOW", "RSS", "NETNS"]))
        line = f"server {server['url']}: " + ("reachable" if server["reachable"] else "UNREACHABLE")
        proc = server.get("process") or {}
        if proc.get("process_resident_memory_bytes") is not None:
            line += f", rss {render.human_bytes(proc['process_resident_memory_bytes'])}"
        if proc.get("process_cpu_seconds_total") is not None:
            line += f", cpu {proc['process_cpu_seconds_total']:.1f}s"
        if server.get("ports_by_status"):
            line += ", ports " + " ".join(f"{k}={v}" for k, v in sorted(server["ports_by_status"].items()))
        print(line)
    if not server["reachable"]:
        print(f"lbtap: {server['error']}", file=sys.stderr)
        return 2
    return 1 if any(not a["alive"] for a in agents) else 0


# ---------------------------------------------------------------------- bridges, fdb

@_guarded
def cmd_bridges(args: argparse.Namespace) -> int:
    drv = _driver(args)
    try:
        snap = take_snapshot(drv, netns=args.netns, sysctl=lambda *_: None, firewall=lambda _: ())
    finally:
        drv.close()
    rows = bridge_table(snap)
    lines = []
    for r in rows:
        ports = r["interfaces"] or [{"name": "-"}]
        for i, p in enumerate(ports):
            head = [r["bridge"], str(r["mtu"]), render.cell(r["up"]), render.cell(r["addresses"])] if i == 0 else ["", "", "", ""]
            lines.append(dict(zip(["bridge", "mtu", "up", "addresses"], head), interface=p["name"],
                              kind=p.get("kind"), port_up=p.get("up"), port_mtu=p.get("mtu")))
    _out(args, rows, render.table(lines, ["bridge", "mtu", "up", "addresses", "interface", "kind", "port_up", "port_mtu"],
                                  ["BRIDGE", "MTU", "UP", "ADDRESSES", "INTERFACE", "KIND", "PORT UP", "PORT MTU"]))
    return 0


@_guarded
def cmd_fdb(args: argparse.Namespace) -> int:
    drv = _driver(args)
    try:
        br = drv.get_link(args.bridge)
        if br is None or br.kind != "bridge":
            raise UsageError(f"no bridge {args.bridge}" + (f" in namespace {args.netns}" if args.netns else ""))
        rows = fdb_table(drv.list_fdb(master=args.bridge))
    finally:
        drv.close()
    view = [dict(r, age=render.human_age(r["age"]) if r["age"] is not None else "-") for r in rows]
    _out(args, rows, render.table(view, ["mac", "port", "type", "age"]))
    return 0


# ---------------------------------------------------------------------- stats

def _port_filter(drv, port: str | None) -> set[str] | None:
    if not port:
        return None
    names = {lk.name for lk in drv.list_links()}
    if port in names:
        return {port}
    tap = naming.tap_name(port)
    if tap not in names:
        raise UsageError(f"no device for port {port} (expected {tap})")
    return {tap}


def _stats_rows(reports: list[stats.DeviceReport]) -> list[dict]:
    rows = []
    for r in reports:
        t, rt = r.totals, r.rates or {}
        rows.append({
            "device": r.device, "rx_pkts": t.rx_packets, "tx_pkts": t.tx_packets,
            "rx_bytes": render.human_bytes(t.rx_bytes), "tx_bytes": render.human_bytes(t.tx_bytes),
            "err": t.rx_errors + t.tx_errors, "drop": t.rx_dropped + t.tx_dropped,
            "rx_pps": render.human_rate(rt.get("rx_packets")) if r.rates else "-",
            "tx_pps": render.human_rate(rt.get("tx_packets")) if r.rates else "-",
            "rx_bps": render.human_rate(rt["rx_bytes"] * 8, "b") if r.rates else "-",
            "tx_bps": render.human_rate(rt["tx_bytes"] * 8, "b") if r.rates else "-",
            "flags": ",".join(r.flags) or "-",
        })
    return rows


@_guarded
def cmd_stats(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    params = stats.Params(idle_after=args.idle_after, burst_factor=args.burst_factor)
    interval = args.watch if args.watch is not None else args.interval
    if interval <= 0:
        raise UsageError("the sampling interval must be positive")
    rounds = (args.count if args.count is not None else (1 if args.watch is None else None))
    drv = _driver(args)
    state = stats.TrafficState()
    try:
        only = _port_filter(drv, args.port)
        stats.observe(state, stats.Sample(time.monotonic(), drv.link_stats()), params)
        done = 0
        while rounds is None or done < rounds:
            time.sleep(interval)
            reports = stats.select(stats.observe(state, stats.Sample(time.monotonic(), drv.link_stats()), params), only)
            done += 1
            if args.json:
                doc = {"round": done, "interval": interval, "devices": [r.to_dict() for r in reports]}
                # --watch: one JSON document per line, so a script can follow the stream
                print(render.dumps(doc) if args.watch is None else json.dumps(doc))
            else:
                if done > 1:
                    print()
                print(render.table(_stats_rows(reports),
                                   ["device", "rx_pkts", "tx_pkts", "rx_bytes", "tx_bytes", "err", "drop",
                                    "rx_pps", "tx_pps", "rx_bps", "tx_bps", "flags"]))
            sys.stdout.flush()
    finally:
        drv.close()
    return 0


# ---------------------------------------------------------------------- ports

@_guarded
def cmd_ports(args: argparse.Namespace) -> int:
    filters = {k: v for k, v in (("network_id", args.network), ("status", args.status)) if v}
    with ApiView(args.url) as api:
        ports = api.list("ports", **filters)
    ports = [p for p in ports if all(p.get(k) == v for k, v in filters.items())]
    if args.host:
        ports = [p for p in ports if p.get("binding:host_id") == args.host]
    rows = [{c: p.get(c) for c in PORT_COLUMNS} | {"binding:host_id": p.get("binding:host_id")} for p in ports]
    _out(args, rows, render.table(rows, PORT_COLUMNS))
    return 0


# ---------------------------------------------------------------------- logs

@_guarded
def cmd_logs(args: argparse.Namespace) -> int:
    if not args.diagnose:
        raise UsageError("logs: give --diagnose FILE (or - for stdin)")
    if args.diagnose == "-":
        groups, summary = diagnose(sys.stdin)
    else:
        with open(args.diagnose, errors="replace") as f:
            groups, summary = diagnose(f)
    if args.json:
        print(render.dumps({"groups": [g.to_dict() for g in groups], "summary": summary}))
    else:
        for g in groups:
            d = g.to_dict()
            devs = ", ".join(f"{k}×{v}" for k, v in list(d["devices"].items())[:10]) or "-"
            print(f"{d['severity'].upper():8} {d['signature']}  ×{d['count']}  ({d['first']} … {d['last']})")
            print(f"  devices: {devs}")
            print(f"  cause:   {d['cause']}")
            print(f"  remedy:  {d['remedy']}")
            print(f"  e.g.     {d['example'][:200]}")
        print(f"{summary['records']} records, {summary['errors']} warnings/errors, "
              f"{summary['unmatched_errors']} not matching a known signature")
        for ex in summary["unmatched_examples"]:
            print(f"  unmatched: {ex[:200]}")
    return 1 if groups else 0


# ---------------------------------------------------------------------- doctor

def _db_view(args: argparse.Namespace) -> tuple[doc.DbView | None, str]:
    """The server's view for the consistency checks, or None and why it was skipped."""
    import socket

    try:
        with ApiView(args.url) as api:
            agents = api.list("agents")
            ports = api.list("ports")
            try:
                networks = api.list("networks")
            except ApiUnavailable:
                networks = None
    except ApiUnavailable as e:
        return None, f"skipped: {e}"
    agent = pick_agent(agents, args.netns, args.host)
    host = args.host or (agent or {}).get("host") or socket.gethostname()
    return doc.DbView(host=host, ports=ports, networks=networks, agent=agent), f"ran for host {host}"


def _print_findings(findings: list[doc.Finding], fixed: dict[doc.Finding, str | None]) -> None:
    if not findings:
        print("no findings: healthy")
    for f in findings:
        state = ("fixed" if fixed[f] is None else f"fix failed: {fixed[f]}") if f in fixed else (
            "fixable with --fix" if f.fixable else "manual")
        print(f"{f.severity.upper():8} {f.check}: {f.what}")
        print(f"  remedy: {f.remedy} [{state}]")


@_guarded
def cmd_doctor(args: argparse.Namespace) -> int:
    drv = _driver(args)
    try:
        snap = take_snapshot(drv, netns=args.netns)
        db, db_note = (None, "skipped: --no-db") if args.no_db else _db_view(args)
        findings = doc.run_checks(snap, db)
        results: dict[doc.Finding, str | None] = {}
        remaining = findings
        if args.fix and any(f.fixable for f in findings):
            results = dict(doc.apply_fixes(drv, findings))
            remaining = doc.run_checks(take_snapshot(drv, netns=args.netns), db)
    finally:
        drv.close()
    code = doc.exit_code(remaining)
    if args.json:
        print(render.dumps({
            "netns": args.netns, "db_checks": db_note,
            "findings": [f.to_dict() for f in findings],
            "fixes": [{"check": f.check, "devices": list(f.devices), "error": err} for f, err in results.items()],
            "remaining": [f.to_dict() for f in remaining],
            "exit_code": code,
        }))
    else:
        print(f"namespace {args.netns or '(current)'}; DB checks {db_note}")
        _print_findings(findings, results)
        if results:
            print(f"after --fix: {len(remaining)} finding(s) remain")
            for f in remaining:
                print(f"  {f.severity.upper():8} {f.check}: {f.what}")
    return code


# ---------------------------------------------------------------------- registration

def _netns_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--netns", help="network namespace to inspect (default: the current one)")


def _url_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="API URL (default: $LBTAP_URL or http://127.0.0.1:9696)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the monitoring subcommands to the ``lbtap`` parser."""
    p = sub.add_parser("status", help="agents (alive, heartbeat, devices, CPU, RSS) and the server")
    _url_arg(p), _json_arg(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("bridges", help="bridges and their interfaces (brctl show)")
    _netns_arg(p), _json_arg(p)
    p.set_defaults(func=cmd_bridges)

    p = sub.add_parser("fdb", help="a bridge's MAC table")
    p.add_argument("bridge")
    _netns_arg(p), _json_arg(p)
    p.set_defaults(func=cmd_fdb)

    p = sub.add_parser("stats", help="per-device counters, rates and traffic flags")
    _netns_arg(p), _json_arg(p)
    p.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                   help="repeat every SECONDS (default 2) until interrupted or --count rounds")
    p.add_argument("--count", type=int, help="number of rounds (with --watch)")
    p.add_argument("--interval", type=float, default=1.0, help="sampling window of a single run (default 1s)")
    p.add_argument("--port", help="only this port (id, id prefix or device name)")
    p.add_argument("--idle-after", type=float, default=60.0, metavar="SECONDS",
                   help="flag devices without packets for this long (default 60; needs --watch to see that long)")
    p.add_argument("--burst-factor", type=float, default=10.0,
                   help="flag rates this many times above the device's baseline (default 10)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("ports", help="the port table from the database (the seed's select * from ports)")
    _url_arg(p), _json_arg(p)
    p.add_argument("--network", help="only ports of this network id")
    p.add_argument("--status", help="only ports in this status (ACTIVE, DOWN, ...)")
    p.add_argument("--host", help="only ports bound to this host")
    p.set_defaults(func=cmd_ports)

    p = sub.add_parser("logs", help="explain known error signatures in a log")
    p.add_argument("--diagnose", metavar="FILE", help="log file, or - for stdin")
    _json_arg(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("doctor", help="host checks and host-vs-database consistency; --fix applies safe remedies")
    _netns_arg(p), _url_arg(p), _json_arg(p)
    p.add_argument("--fix", action="store_true", help="apply the remedies marked fixable")
    p.add_argument("--host", help="agent host whose bound ports belong here (default: the agent of --netns)")
    p.add_argument("--no-db", action="store_true", help="skip the API and run the host checks only")
    p.set_defaults(func=cmd_doctor)

    from lbtap.monitoring import eventscli

    eventscli.register(sub)  # events, explain
