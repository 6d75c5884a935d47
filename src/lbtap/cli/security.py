"""``lbtap security-group|security-group-rule|qos-policy|qos-rule ...``, and the
security-group / QoS flags of ``lbtap port|network create|update``.

Same conventions as ``lbtap.cli.resources``: HTTP to the API (``--url``, ``--token``,
``--project``), tables for people and ``--json`` for scripts, names accepted where an
id is expected when they resolve uniquely, and every failure one line on stderr (exit
code 1, or 2 for bad command-line input).
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbtap.cli.resources import (
    _UUID, Api, CommandError, _client_args, _emit, _pair, _run, _show_table, format_table,
)


@dataclass(frozen=True)
class Collection:
    """Where a collection lives: these differ from the plain ``/networks`` pattern."""

    path: str  # URL under /v2.0
    key: str  # list wrapper
    member: str  # item wrapper
    noun: str  # for messages


SECURITY_GROUPS = Collection("security-groups", "security_groups", "security_group", "security group")
SG_RULES = Collection("security-group-rules", "security_group_rules", "security_group_rule", "security group rule")
QOS_POLICIES = Collection("qos/policies", "policies", "policy", "QoS policy")
QOS_RULE, QOS_RULES = "bandwidth_limit_rule", "bandwidth_limit_rules"

SG_COLUMNS = ["id", "name", "description", "tenant_id"]
RULE_COLUMNS = ["id", "security_group_id", "direction", "ethertype", "protocol", "port_range",
                "remote_ip_prefix", "remote_group_id"]
POLICY_COLUMNS = ["id", "name", "shared", "is_default", "tenant_id", "rules"]
QOS_RULE_COLUMNS = ["id", "direction", "max_kbps", "max_burst_kbps"]

# With these protocols --port-range is ICMP TYPE[:CODE], so one number is a type only.
_ICMP = {"icmp", "icmpv6", "ipv6-icmp", "1", "58"}


# ---------------------------------------------------------------- API helpers


def list_all(api: Api, coll: Collection, params: list[tuple[str, str]]) -> list[dict]:
    """Every item of ``coll``, following the ``<key>_links`` next pages."""
    return api.list_all(coll.key, params, path=coll.path)


def resolve(api: Api, coll: Collection, ident: str) -> str:
    """An id from an id or a unique name (``resources.resolve`` for these collections)."""
    if _UUID.match(ident):
        return ident
    items = api.request("GET", f"/{coll.path}", params=[("name", ident), ("fields", "id")])[coll.key]
    if len(items) == 1:
        return items[0]["id"]
    if not items:
        raise CommandError(f"no {coll.noun} has the id or name {ident!r}")
    raise CommandError(f"{len(items)} {coll.noun}s are named {ident!r}: give the id")


def resolve_qos_rule(api: Api, policy_id: str, ident: str) -> str:
    """A bandwidth-limit rule id; rules have no names, but a policy has at most one per
    direction, so "ingress"/"egress" name one too."""
    if ident not in ("ingress", "egress"):
        return ident
    rules = api.request("GET", f"/{QOS_POLICIES.path}/{policy_id}/{QOS_RULES}")[QOS_RULES]
    found = [r["id"] for r in rules if r["direction"] == ident]
    if not found:
        raise CommandError(f"QoS policy {policy_id} has no {ident} bandwidth limit rule")
    return found[0]


# ---------------------------------------------------------------- input and output


def parse_port_range(text: str, protocol: str | None) -> tuple[int, int | None]:
    """``MIN[:MAX]`` → (min, max). One number is one port, or an ICMP type alone."""
    lo_text, sep, hi_text = text.partition(":")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if sep else None
    except ValueError:
        raise CommandError(f"--port-range expects MIN[:MAX] in whole numbers, got {text!r}", code=2) from None
    if hi is None and str(protocol or "").lower() not in _ICMP:
        hi = lo
    return lo, hi


def parse_allowed_address(text: str) -> dict[str, str]:
    """``IP[,MAC]`` (or the openstack CLI's ``ip-address=IP[,mac-address=MAC]``) → a pair."""
    parts = [p.strip() for p in text.split(",")]
    if "=" in text:
        keys = {"ip-address": "ip_address", "mac-address": "mac_address"}
        pair = {keys.get(k, k): v for k, v in (_pair(p) for p in parts)}
        if set(pair) - {"ip_address", "mac_address"}:
            raise CommandError(f"--allowed-address expects ip-address=IP[,mac-address=MAC], got {text!r}", code=2)
    elif 1 <= len(parts) <= 2:
        pair = dict(zip(("ip_address", "mac_address"), parts))
    else:
        pair = {}
    if not pair.get("ip_address") or pair.get("mac_address") == "":
        raise CommandError(f"--allowed-address expects IP[,MAC], got {text!r}", code=2)
    return pair


def _port_range_cell(rule: dict) -> str:
    """Ports as MIN:MAX (one number for one port), or ICMP TYPE[:CODE]. The API now
    refuses a TCP/UDP range with one end, but older rules may have one: the firewall
    opens the missing end to 1 or 65535, so that is what is shown."""
    lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
    if lo is None and hi is None:
        return "any"
    if str(rule.get("protocol") or "").lower() in _ICMP:
        return f"{'any' if lo is None else lo}{'' if hi is None else f':{hi}'}"
    lo, hi = 1 if lo is None else lo, 65535 if hi is None else hi
    return str(lo) if lo == hi else f"{lo}:{hi}"


def rule_summary(rule: dict) -> str:
    """One security-group rule as a phrase, for the rules cell of ``show``."""
    remote = rule.get("remote_ip_prefix") or (f"group {rule['remote_group_id']}" if rule.get("remote_group_id")
                                              else "any")
    ports = _port_range_cell(rule)
    return (f"{rule['direction']} {rule['ethertype']} {rule.get('protocol') or 'any'}"
            f"{'' if ports == 'any' else ' ' + ports} {'from' if rule['direction'] == 'ingress' else 'to'} {remote}"
            f" ({rule['id']})")


def qos_rule_summary(rule: dict) -> str:
    return f"{rule['direction']} {rule['max_kbps']} kbps (burst {rule['max_burst_kbps']})"


def _rows(items: list[dict], columns: list[str], cells: dict[str, Callable[[dict], Any]]) -> list[list[Any]]:
    return [[cells[c](i) if c in cells else i.get(c) for c in columns] for i in items]


_LIST_CELLS: dict[str, Callable[[dict], Any]] = {
    "port_range": _port_range_cell,
    "rules": lambda p: [qos_rule_summary(r) for r in p.get("rules", [])],
}


def _show(args: argparse.Namespace, item: dict) -> None:
    def table() -> str:
        shown = dict(item)
        if "security_group_rules" in shown:
            shown["security_group_rules"] = [rule_summary(r) for r in shown["security_group_rules"]]
        if "rules" in shown:  # a QoS policy's
            shown["rules"] = [qos_rule_summary(r) for r in shown["rules"]]
        return _show_table(shown)

    _emit(args, item, table)


def _show_list(args: argparse.Namespace, items: list[dict], columns: list[str]) -> None:
    _emit(args, items, lambda: format_table(columns, _rows(items, columns, _LIST_CELLS)))


# ---------------------------------------------------------------- port / network flags


def add_attr_args(p: argparse.ArgumentParser, resource: str, creating: bool) -> None:
    """Add the security-group and QoS flags to ``lbtap port|network create|update``."""
    g = p.add_argument_group("security groups and QoS")
    if resource == "port":
        g.add_argument("--security-group", action="append", metavar="ID",
                       help="id or name (repeatable); on update the list replaces the port's groups")
        g.add_argument("--no-security-group", action="store_true", help="no security groups at all")
        g.add_argument("--port-security", action=argparse.BooleanOptionalAction,
                       help="port_security_enabled; disabling needs --no-security-group too")
        g.add_argument("--allowed-address", action="append", metavar="IP[,MAC]",
                       help="allowed address pair, IP or CIDR (repeatable; replaces the list on update)")
        g.add_argument("--no-allowed-address", action="store_true", help="no allowed address pairs")
    g.add_argument("--qos-policy", metavar="ID", help="QoS policy id or name")
    if not creating or resource == "port":
        g.add_argument("--no-qos-policy", action="store_true", help="no QoS policy of its own (clears it on update)")


def add_to_body(api: Api, args: argparse.Namespace, body: dict) -> None:
    """Turn the flags of ``add_attr_args`` into port/network attributes of ``body``.

    Everything is parsed before any name is looked up, so bad input costs no request.
    """
    g = lambda name: getattr(args, name, None)  # noqa: E731
    for flag in ("security_group", "allowed_address", "qos_policy"):
        if g(flag) and g(f"no_{flag}"):
            dashed = flag.replace("_", "-")
            raise CommandError(f"--{dashed} and --no-{dashed} exclude each other", code=2)
    pairs = [parse_allowed_address(a) for a in g("allowed_address") or []]
    if g("no_security_group"):
        body["security_groups"] = []
    elif g("security_group"):
        body["security_groups"] = list(dict.fromkeys(resolve(api, SECURITY_GROUPS, s) for s in g("security_group")))
    if g("port_security") is not None:
        body["port_security_enabled"] = g("port_security")
    if g("no_allowed_address") or pairs:
        body["allowed_address_pairs"] = pairs
    if g("no_qos_policy"):
        body["qos_policy_id"] = None
    elif g("qos_policy"):
        body["qos_policy_id"] = resolve(api, QOS_POLICIES, g("qos_policy"))


# ---------------------------------------------------------------- commands


def _nothing_to_update(body: dict) -> None:
    if not body:
        raise CommandError("nothing to update: give --name, --description, ...", code=2)


def _fields(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _crud(coll: Collection, columns: list[str]) -> dict[str, Callable[[argparse.Namespace], int]]:
    """list/show/delete of a plain collection, and create/update from ``args.body_of``."""

    def do_list(args: argparse.Namespace) -> int:
        def action(api: Api) -> int:
            params = [_pair(f) for f in getattr(args, "filter", None) or []]
            if getattr(args, "security_group", None):
                params.append(("security_group_id", resolve(api, SECURITY_GROUPS, args.security_group)))
            _show_list(args, list_all(api, coll, params), columns)
            return 0
        return _run(args, action)

    def do_show(args: argparse.Namespace) -> int:
        def action(api: Api) -> int:
            _show(args, api.request("GET", f"/{coll.path}/{resolve(api, coll, args.id)}")[coll.member])
            return 0
        return _run(args, action)

    def do_create(args: argparse.Namespace) -> int:
        def action(api: Api) -> int:
            body = args.body_of(api, args)
            _show(args, api.request("POST", f"/{coll.path}", json={coll.member: body})[coll.member])
            return 0
        return _run(args, action)

    def do_update(args: argparse.Namespace) -> int:
        def action(api: Api) -> int:
            body = _fields(args, "name", "description", "shared")
            _nothing_to_update(body)
            ident = resolve(api, coll, args.id)
            _show(args, api.request("PUT", f"/{coll.path}/{ident}", json={coll.member: body})[coll.member])
            return 0
        return _run(args, action)

    def do_delete(args: argparse.Namespace) -> int:
        def action(api: Api) -> int:
            for ident in args.id:
                api.request("DELETE", f"/{coll.path}/{resolve(api, coll, ident)}")
            return 0
        return _run(args, action)

    return {"list": do_list, "show": do_show, "create": do_create, "update": do_update, "delete": do_delete}


def _group_body(api: Api, args: argparse.Namespace) -> dict:
    return {"name": args.name, **_fields(args, "description")}


def _policy_body(api: Api, args: argparse.Namespace) -> dict:
    return {"name": args.name, **_fields(args, "description", "shared")}


def _rule_body(api: Api, args: argparse.Namespace) -> dict:
    body: dict[str, Any] = {"direction": args.direction, **_fields(args, "protocol", "description")}
    if args.port_range is not None:
        body["port_range_min"], body["port_range_max"] = parse_port_range(args.port_range, args.protocol)
    ethertype = args.ethertype
    if args.remote_ip_prefix is not None:
        body["remote_ip_prefix"] = args.remote_ip_prefix
        if ethertype is None:  # `--remote-ip-prefix ::/0` alone should just work
            try:
                ethertype = f"IPv{ipaddress.ip_network(args.remote_ip_prefix, strict=False).version}"
            except ValueError:
                pass  # the server words the error
    if ethertype is not None:
        body["ethertype"] = ethertype
    # Names are looked up last: bad input above costs no request.
    body["security_group_id"] = resolve(api, SECURITY_GROUPS, args.security_group_id)
    if args.remote_group is not None:
        body["remote_group_id"] = resolve(api, SECURITY_GROUPS, args.remote_group)
    return body


def _qos_rule(args: argparse.Namespace) -> int:
    """qos-rule list|show|create|update|delete, nested under a policy."""

    def action(api: Api) -> int:
        policy = resolve(api, QOS_POLICIES, args.policy)
        base = f"/{QOS_POLICIES.path}/{policy}/{QOS_RULES}"
        body = _fields(args, "max_kbps", "max_burst_kbps", "direction")
        if args.action == "list":
            _show_list(args, api.request("GET", base)[QOS_RULES], QOS_RULE_COLUMNS)
        elif args.action == "create":
            _show(args, api.request("POST", base, json={QOS_RULE: body})[QOS_RULE])
        elif args.action == "delete":
            for rule in args.rule:
                api.request("DELETE", f"{base}/{resolve_qos_rule(api, policy, rule)}")
        elif args.action == "update":
            _nothing_to_update(body)
            rule = resolve_qos_rule(api, policy, args.rule)
            _show(args, api.request("PUT", f"{base}/{rule}", json={QOS_RULE: body})[QOS_RULE])
        else:
            _show(args, api.request("GET", f"{base}/{resolve_qos_rule(api, policy, args.rule)}")[QOS_RULE])
        return 0

    return _run(args, action)


def _action(actions: argparse._SubParsersAction, name: str, text: str, func: Callable) -> argparse.ArgumentParser:
    p = actions.add_parser(name, help=text)
    _client_args(p)
    p.set_defaults(func=func)
    return p


def _resource(sub: argparse._SubParsersAction, command: str, coll: Collection, columns: list[str],
              body_of: Callable[[Api, argparse.Namespace], dict], shared: bool) -> argparse._SubParsersAction:
    plural = f"{coll.noun}s"
    crud = _crud(coll, columns)
    top = sub.add_parser(command, help=f"manage {plural} through the API")
    actions = top.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, "list", f"list {plural}", crud["list"]).add_argument(
        "--filter", action="append", metavar="KEY=VALUE", help="repeat a key to OR values")
    _action(actions, "show", f"show one {coll.noun}", crud["show"]).add_argument("id", help="id or name")
    p = _action(actions, "create", f"create a {coll.noun}", crud["create"])
    p.set_defaults(body_of=body_of)
    p.add_argument("name")
    p.add_argument("--description")
    if shared:
        p.add_argument("--shared", action="store_true", default=None, help="visible to every project")
    p = _action(actions, "update", f"update a {coll.noun}", crud["update"])
    p.add_argument("id", help="id or name")
    p.add_argument("--name")
    p.add_argument("--description")
    if shared:
        p.add_argument("--shared", action=argparse.BooleanOptionalAction)
    _action(actions, "delete", f"delete {plural}", crud["delete"]).add_argument("id", nargs="+", help="ids or names")
    return actions


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``security-group``, ``security-group-rule``, ``qos-policy`` and ``qos-rule``."""
    _resource(sub, "security-group", SECURITY_GROUPS, SG_COLUMNS, _group_body, shared=False)
    _resource(sub, "qos-policy", QOS_POLICIES, POLICY_COLUMNS, _policy_body, shared=True)

    crud = _crud(SG_RULES, RULE_COLUMNS)
    top = sub.add_parser("security-group-rule", help="manage security group rules through the API")
    actions = top.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, "list", "list security group rules", crud["list"]).add_argument(
        "--security-group", metavar="ID", help="only this group's rules (id or name)")
    _action(actions, "show", "show one rule", crud["show"]).add_argument("id")
    p = _action(actions, "create", "create a rule", crud["create"])
    p.set_defaults(body_of=_rule_body)
    p.add_argument("security_group_id", metavar="SECURITY_GROUP", help="id or name of the rule's group")
    p.add_argument("--direction", required=True, choices=["ingress", "egress"])
    p.add_argument("--ethertype", choices=["IPv4", "IPv6"], help="default: the remote prefix's, else IPv4")
    p.add_argument("--protocol", help="tcp, udp, icmp, ... or a protocol number (default: any)")
    p.add_argument("--port-range", metavar="MIN[:MAX]", help="ports; for ICMP the TYPE[:CODE]")
    remote = p.add_mutually_exclusive_group()
    remote.add_argument("--remote-ip-prefix", metavar="CIDR")
    remote.add_argument("--remote-group", metavar="ID", help="id or name of the remote security group")
    p.add_argument("--description")
    _action(actions, "delete", "delete rules", crud["delete"]).add_argument("id", nargs="+")

    top = sub.add_parser("qos-rule", help="manage the bandwidth limit rules of a QoS policy")
    actions = top.add_subparsers(dest="action", metavar="ACTION", required=True)
    rule_help = "rule id, or its direction (a policy has one rule per direction)"
    _action(actions, "list", "list a policy's rules", _qos_rule).add_argument("policy", metavar="POLICY", help="id or name")
    p = _action(actions, "show", "show one rule", _qos_rule)
    p.add_argument("policy", metavar="POLICY", help="id or name")
    p.add_argument("rule", metavar="RULE", help=rule_help)
    for name in ("create", "update"):
        p = _action(actions, name, f"{name} a bandwidth limit rule", _qos_rule)
        p.add_argument("policy", metavar="POLICY", help="id or name")
        if name == "update":
            p.add_argument("rule", metavar="RULE", help=rule_help)
        p.add_argument("--max-kbps", type=int, metavar="N", required=name == "create")
        p.add_argument("--max-burst-kbps", type=int, metavar="N")
        p.add_argument("--direction", choices=["ingress", "egress"],
                       help="egress (from the guest, the default) or ingress (toward it)")
    p = _action(actions, "delete", "delete rules", _qos_rule)
    p.add_argument("policy", metavar="POLICY", help="id or name")
    p.add_argument("rule", metavar="RULE", nargs="+", help=rule_help)
