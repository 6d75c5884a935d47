"""``lbtap events`` and ``lbtap explain``: storm alarms, port timelines, why not ACTIVE.

API-side commands (``--url`` or ``LBTAP_URL``, ``--json``) over the events extension's
routes (``lbtap.server.api.events``). Exit codes follow ``lbtap.monitoring.cli``: 2 for
errors (bad input, unreachable server, unknown port; one line on stderr), 1 when the
answer is unhealthy (an active storm alarm; a port that is not ACTIVE), 0 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys

import httpx

from lbtap.monitoring import render
from lbtap.monitoring.apiview import ApiUnavailable, ApiView

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class EventsError(Exception):
    """A one-line, user-facing failure."""


def _get(api: ApiView, path: str, **params: object) -> dict:
    """GET a JSON object; the server's NeutronError message becomes the error line."""
    try:
        resp = api.client.get(path, params={k: v for k, v in params.items() if v is not None} or None)
    except httpx.HTTPError as e:
        raise EventsError(f"cannot reach the API at {api.url}: {e or type(e).__name__}") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        err = (body or {}).get("NeutronError") if isinstance(body, dict) else None
        msg = err.get("message") if isinstance(err, dict) else resp.text.strip()[:200]
        if resp.status_code == 404 and not err:
            msg = "the server has no events extension (404)"
        raise EventsError(f"{resp.status_code}: {msg}")
    if not isinstance(body, dict):
        raise EventsError(f"GET {path}: the server did not answer a JSON object")
    return body


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _detail(ev: dict) -> str:
    d = dict(ev.get("detail") or {})
    if ev["kind"] == "storm_alarm":
        devs = d.pop("devices", [])
        return f"{d.get('reason')}: {d.get('detail')}; devices: {','.join(devs[:10])}{' ...' if len(devs) > 10 else ''}"
    return " ".join(f"{k}={v}" for k, v in sorted(d.items()) if v not in (None, "")) or "-"


def _guard(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (EventsError, ApiUnavailable) as e:
            print(f"lbtap: {e}", file=sys.stderr)
            return 2

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _check_port(value: str | None) -> None:
    if value is not None and not _UUID.match(value):
        raise EventsError(f"{value!r} is not a port id (a UUID)")


@_guard
def cmd_events(args: argparse.Namespace) -> int:
    """Storm alarms (newest first) and lifecycle events (oldest first)."""
    _check_port(args.port)
    if args.limit is not None and args.limit < 1:
        raise EventsError("--limit must be at least 1")
    with ApiView(args.url) as api:
        body = _get(api, "/v2.0/lbtap/events", port_id=args.port, host=args.host, kind=args.kind, limit=args.limit)
    alarms, events = body.get("alarms", []), body.get("events", [])
    active = [a for a in alarms if a.get("active")]
    if args.json:
        print(render.dumps(body))
    else:
        print(f"storm alarms: {len(active)} active, {len(alarms) - len(active)} past")
        for a in alarms:
            devs = a.get("devices", [])
            print(f"  {'ACTIVE' if a.get('active') else 'past':6} #{a['id']} host {a['host']} {a['reason']} "
                  f"{_when(a.get('first_at'))} .. {_when(a.get('last_at'))}: {a.get('detail')}")
            print(f"         devices ({a.get('devices_total', len(devs))}): {', '.join(devs[:20])}"
                  f"{' ...' if len(devs) > 20 else ''}")
        rows = [{"at": _when(e["at"]), "kind": e["kind"], "port_id": e.get("port_id"), "device": e.get("device"),
                 "host": e.get("host"), "detail": _detail(e)} for e in events]
        print(render.table(rows, ["at", "kind", "port_id", "device", "host", "detail"]))
    return 1 if active else 0


@_guard
def cmd_explain(args: argparse.Namespace) -> int:
    """Why a port is not ACTIVE: one cause and its remedy, the checks and the timeline."""
    _check_port(args.port)
    with ApiView(args.url) as api:
        body = _get(api, f"/v2.0/lbtap/ports/{args.port}/explain").get("explanation")
    if not isinstance(body, dict):
        raise EventsError("the server's answer has no explanation")
    if args.json:
        print(render.dumps(body))
    else:
        print(f"port {body['port_id']} ({body['device']}): {body.get('status')} on host {body.get('host') or '-'}")
        print(f"verdict: {body['verdict']}")
        print(f"reason:  {body['reason']}")
        print(f"remedy:  {body['remedy']}")
        for c in body.get("checks", []):
            print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['what']}")
        timeline = body.get("timeline", [])
        if timeline:
            print("timeline:")
            for e in timeline:
                print(f"  {_when(e['at'])}  {e['kind']:12} {e.get('host') or '-':16} {_detail(e)}")
    return 0 if body.get("active") else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``events`` and ``explain`` to the ``lbtap`` parser."""
    p = sub.add_parser("events", help="storm alarms and port lifecycle timelines")
    p.add_argument("--port", help="only this port's timeline (port id)")
    p.add_argument("--host", help="only events and alarms of this agent host")
    p.add_argument("--kind", help="only events of this kind (created, bound, device_seen, active, down, ...)")
    p.add_argument("--limit", type=int, help="newest N events (default 200)")
    p.add_argument("--url", help="API URL (default: $LBTAP_URL or http://127.0.0.1:9696)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("explain", help="why a port is not ACTIVE")
    p.add_argument("port", help="port id")
    p.add_argument("--url", help="API URL (default: $LBTAP_URL or http://127.0.0.1:9696)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)
