"""``lbtap network|subnet|port list|show|create|update|delete``: the API from a shell.

Talks HTTP to the server (``--url``, else ``LBTAP_URL``, else http://127.0.0.1:9696).
``--token`` / ``LBTAP_TOKEN`` sends ``X-Auth-Token``; ``--project`` / ``LBTAP_PROJECT``
sends ``X-Project-Id`` (noauth). Tables for people, ``--json`` for scripts. Every
failure is one line on stderr and exit code 1 (2 for bad command-line input).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:9696"

# (singular, plural, columns of `list`)
RESOURCES: dict[str, tuple[str, list[str]]] = {
    "network": ("networks", ["id", "name", "tenant_id", "status", "admin_state_up", "shared",
                             "provider:network_type", "provider:segmentation_id", "mtu", "subnets"]),
    "subnet": ("subnets", ["id", "name", "tenant_id", "network_id", "cidr", "ip_version", "gateway_ip",
                           "enable_dhcp", "allocation_pools"]),
    # The seed operators' `select * from ports` columns, in that order.
    "port": ("ports", ["tenant_id", "id", "name", "network_id", "mac_address", "admin_state_up", "status",
                       "device_id", "device_owner", "dns_name"]),
}


_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


class CommandError(Exception):
    """Printed as ``lbtap: <message>``; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- HTTP


class Api:
    """A thin client of the Neutron API with Neutron-shaped error messages."""

    def __init__(self, url: str, token: str | None = None, project: str | None = None, timeout: float = 30.0):
        headers = {"Accept": "application/json"}
        if token:
            headers["X-Auth-Token"] = token
        if project:
            headers["X-Project-Id"] = project
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url + "/v2.0", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise CommandError(f"cannot reach the API at {self.url}: {e}") from None
        if resp.status_code >= 400:
            raise CommandError(_error_line(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise CommandError(f"{method} {path}: the server did not answer JSON") from None

    def list_all(self, plural: str, params: list[tuple[str, str]], path: str | None = None) -> list[dict]:
        """Every item, following ``<plural>_links`` next pages (``path``: when the URL
        differs from the collection key, e.g. ``qos/policies``)."""
        items: list[dict] = []
        body = self.request("GET", f"/{path or plural}", params=params)
        while True:
            items.extend(body.get(plural, []))
            nxt = next((link["href"] for link in body.get(f"{plural}_links", []) if link.get("rel") == "next"), None)
            if not nxt:
                return items
            try:
                resp = self.client.get(nxt)
            except httpx.HTTPError as e:
                raise CommandError(f"cannot reach the API at {self.url}: {e}") from None
            if resp.status_code >= 400:
                raise CommandError(_error_line(resp))
            body = resp.json()

    def close(self) -> None:
        self.client.close()


def resolve(api: Api, plural: str, ident: str) -> str:
    """An id from an id or a unique name, as the openstack CLI accepts either."""
    if _UUID.match(ident):
        return ident
    items = api.request("GET", f"/{plural}", params=[("name", ident), ("fields", "id")])[plural]
    if len(items) == 1:
        return items[0]["id"]
    if not items:
        raise CommandError(f"no {plural[:-1]} has the id or name {ident!r}")
    raise CommandError(f"{len(items)} {plural} are named {ident!r}: give the id")


def _error_line(resp: httpx.Response) -> str:
    try:
        err = resp.json()["NeutronError"]
        return f"{resp.status_code} {err['type']}: {err['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{resp.status_code} {resp.reason_phrase}: {resp.text.strip()[:200]}"


def _api(args: argparse.Namespace) -> Api:
    return Api(args.url or os.environ.get("LBTAP_URL") or DEFAULT_URL,
               token=args.token or os.environ.get("LBTAP_TOKEN"),
               project=args.project or os.environ.get("LBTAP_PROJECT"))


# ---------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return "; ".join(", ".join(f"{k}={v}" for k, v in d.items()) for d in value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def format_table(columns: list[str], rows: Iterable[list[Any]]) -> str:
    """A plain text table with a header rule, like the openstack CLI's."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([rule, line(columns), rule, *(line(r) for r in cells), rule])


def _emit(args: argparse.Namespace, data: Any, table: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(table())


def _show_table(item: dict) -> str:
    return format_table(["Field", "Value"], [[k, item[k]] for k in sorted(item)])


# ---------------------------------------------------------------- input


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CommandError(f"expected KEY=VALUE, got {text!r}", code=2)
    return key, value


def _value(text: str) -> Any:
    """JSON when it parses (true, 5, ["a"], {...}), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _kv_dict(text: str) -> dict[str, str]:
    """``subnet=ID,ip-address=10.0.0.5`` → {"subnet": ..., "ip-address": ...}."""
    return dict(_pair(p) for p in text.split(",") if p)


_FIXED_IP_KEYS = {"subnet": "subnet_id", "ip-address": "ip_address"}


def _body(args: argparse.Namespace) -> dict:
    body: dict[str, Any] = {}
    for attr, flag in (("name", "name"), ("description", "description"), ("network_id", "network"),
                       ("cidr", "cidr"), ("ip_version", "ip_version"), ("gateway_ip", "gateway"),
                       ("mac_address", "mac_address"), ("device_id", "device_id"),
                       ("device_owner", "device_owner"), ("binding:host_id", "host"),
                       ("provider:network_type", "provider_network_type"),
                       ("provider:physical_network", "provider_physical_network"),
                       ("provider:segmentation_id", "provider_segment"), ("mtu", "mtu")):
        value = getattr(args, flag, None)
        if value is not None:
            body[attr] = value
    if getattr(args, "admin_state", None) is not None:
        body["admin_state_up"] = args.admin_state
    if getattr(args, "shared", None):
        body["shared"] = True
    if getattr(args, "fixed_ip", None):
        body["fixed_ips"] = [{_FIXED_IP_KEYS.get(k, k): v for k, v in _kv_dict(f).items()} for f in args.fixed_ip]
    if getattr(args, "allocation_pool", None):
        body["allocation_pools"] = [_kv_dict(p) for p in args.allocation_pool]
    if getattr(args, "dns_nameserver", None):
        body["dns_nameservers"] = list(args.dns_nameserver)
    if getattr(args, "no_dhcp", False):
        body["enable_dhcp"] = False
    for text in args.set or []:
        key, value = _pair(text)
        body[key] = _value(value)
    return body


# ---------------------------------------------------------------- commands


def _security() -> Any:
    """``lbtap.cli.security``, which adds the security-group and QoS flags of ports and
    networks; imported late because it builds on this module."""
    from lbtap.cli import security

    return security


def _run(args: argparse.Namespace, action: Callable[[Api], int]) -> int:
    api = None
    try:
        api = _api(args)
        return action(api)
    except CommandError as e:
        print(f"lbtap: {e}", file=sys.stderr)
        return e.code
    finally:
        if api is not None:
            api.close()


def _list(args: argparse.Namespace) -> int:
    plural, columns = RESOURCES[args.resource]

    def action(api: Api) -> int:
        params = [_pair(f) for f in args.filter or []]
        if args.sort_key:
            params.append(("sort_key", args.sort_key))
            params.append(("sort_dir", args.sort_dir))
        if args.limit is not None:
            params.append(("limit", str(args.limit)))
            items = api.request("GET", f"/{plural}", params=params)[plural]
        else:
            items = api.list_all(plural, params)
        cols = args.column or columns
        _emit(args, items, lambda: format_table(cols, [[i.get(c) for c in cols] for i in items]))
        return 0

    return _run(args, action)


def _show(args: argparse.Namespace) -> int:
    plural, _ = RESOURCES[args.resource]

    def action(api: Api) -> int:
        item = api.request("GET", f"/{plural}/{resolve(api, plural, args.id)}")[args.resource]
        _emit(args, item, lambda: _show_table(item))
        return 0

    return _run(args, action)


def _create(args: argparse.Namespace) -> int:
    plural, _ = RESOURCES[args.resource]

    def action(api: Api) -> int:
        body = _body(args)
        _security().add_to_body(api, args, body)
        if "network_id" in body:  # --network takes a name too
            body["network_id"] = resolve(api, "networks", body["network_id"])
        item = api.request("POST", f"/{plural}", json={args.resource: body})[args.resource]
        _emit(args, item, lambda: _show_table(item))
        return 0

    return _run(args, action)


def _update(args: argparse.Namespace) -> int:
    plural, _ = RESOURCES[args.resource]

    def action(api: Api) -> int:
        body = _body(args)
        _security().add_to_body(api, args, body)
        if not body:
            raise CommandError("nothing to update: give --name, --set KEY=VALUE, ...", code=2)
        ident = resolve(api, plural, args.id)
        item = api.request("PUT", f"/{plural}/{ident}", json={args.resource: body})[args.resource]
        _emit(args, item, lambda: _show_table(item))
        return 0

    return _run(args, action)


def _delete(args: argparse.Namespace) -> int:
    plural, _ = RESOURCES[args.resource]

    def action(api: Api) -> int:
        for ident in args.id:
            api.request("DELETE", f"/{plural}/{resolve(api, plural, ident)}")
        return 0

    return _run(args, action)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "1", "up"):
        return True
    if text.lower() in ("false", "no", "0", "down"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"API endpoint (default: $LBTAP_URL or {DEFAULT_URL})")
    p.add_argument("--token", help="X-Auth-Token (default: $LBTAP_TOKEN)")
    p.add_argument("--project", help="act as this project under noauth (default: $LBTAP_PROJECT)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _attr_args(p: argparse.ArgumentParser, resource: str, creating: bool) -> None:
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument("--admin-state", type=_bool, metavar="true|false", help="admin_state_up")
    if resource == "network":
        p.add_argument("--shared", action="store_true", default=None)
        p.add_argument("--mtu", type=int)
        if creating:
            p.add_argument("--provider-network-type", choices=["flat", "vlan", "vxlan", "local"])
            p.add_argument("--provider-physical-network")
            p.add_argument("--provider-segment", type=int)
    if resource == "subnet":
        if creating:
            p.add_argument("--network", required=True, help="network id or name")
            p.add_argument("--cidr", required=True, help="e.g. 10.0.0.0/24")
            p.add_argument("--ip-version", type=int, choices=[4, 6], default=4)
        p.add_argument("--gateway", help="gateway IP")
        p.add_argument("--allocation-pool", action="append", metavar="start=IP,end=IP")
        p.add_argument("--dns-nameserver", action="append", metavar="IP")
        p.add_argument("--no-dhcp", action="store_true")
    if resource == "port":
        if creating:
            p.add_argument("--network", required=True, help="network id or name")
            p.add_argument("--mac-address")
        p.add_argument("--fixed-ip", action="append", metavar="subnet=ID,ip-address=IP")
        p.add_argument("--device-id")
        p.add_argument("--device-owner")
        p.add_argument("--host", help="binding:host_id")
    if resource in ("network", "port"):
        _security().add_attr_args(p, resource, creating)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any attribute; VALUE is JSON when it parses (e.g. --set shared=true)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``network``, ``subnet`` and ``port`` with their five actions to ``lbtap``."""
    for resource, (plural, _) in RESOURCES.items():
        top = subparsers.add_parser(resource, help=f"manage {plural} through the API")
        actions = top.add_subparsers(dest="action", metavar="ACTION", required=True)

        p = actions.add_parser("list", help=f"list {plural}")
        _client_args(p)
        p.add_argument("--filter", action="append", metavar="KEY=VALUE", help="repeat a key to OR values")
        p.add_argument("--sort-key")
        p.add_argument("--sort-dir", choices=["asc", "desc"], default="asc")
        p.add_argument("--limit", type=int, help="one page of this size (default: all)")
        p.add_argument("-c", "--column", action="append", help="column to show (repeatable)")
        p.set_defaults(func=_list, resource=resource)

        p = actions.add_parser("show", help=f"show one {resource}")
        _client_args(p)
        p.add_argument("id", help="id or name")
        p.set_defaults(func=_show, resource=resource)

        p = actions.add_parser("create", help=f"create a {resource}")
        _client_args(p)
        _attr_args(p, resource, creating=True)
        p.set_defaults(func=_create, resource=resource)

        p = actions.add_parser("update", help=f"update a {resource}")
        _client_args(p)
        p.add_argument("id")
        _attr_args(p, resource, creating=False)
        p.set_defaults(func=_update, resource=resource)

        p = actions.add_parser("delete", help=f"delete {plural}")
        _client_args(p)
        p.add_argument("id", nargs="+")
        p.set_defaults(func=_delete, resource=resource)
