"""``lbtap vif plug|unplug``: the compute side for users and tests."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

import httpx

from lbtap.compute import vif


class _ApiError(Exception):
    pass


def _api(url: str):
    return httpx.Client(base_url=url.rstrip("/"), timeout=30)


def _get(client: httpx.Client, path: str) -> dict:
    try:
        r = client.get(path)
    except httpx.HTTPError as e:
        raise _ApiError(f"cannot reach the API at {client.base_url}: {e}") from None
    if r.status_code != 200:
        raise _ApiError(_error_message(r))
    return r.json()


def _error_message(r: httpx.Response) -> str:
    try:
        return r.json()["NeutronError"]["message"]
    except Exception:
        return f"HTTP {r.status_code}"


def _bind(client: httpx.Client, port: dict, host: str) -> dict:
    if port.get("binding:host_id") == host:
        return port
    r = client.put(f"/v2.0/ports/{port['id']}", json={"port": {"binding:host_id": host, "device_owner": port.get("device_owner") or "compute:nova"}})
    if r.status_code != 200:
        raise _ApiError(f"cannot bind port to host {host}: {_error_message(r)}")
    return r.json()["port"]


def _drivers(host_netns: str | None, guest_netns: str | None):
    from lbtap.drivers.host import netns
    from lbtap.drivers.host.netlink import NetlinkHost

    if host_netns and not netns.exists(host_netns):
        raise _ApiError(f"host namespace {host_netns} does not exist")
    host = NetlinkHost(netns=host_netns)
    guest = None
    if guest_netns:
        netns.create(guest_netns)
        guest = NetlinkHost(netns=guest_netns)
    return host, guest


def cmd_plug(args: argparse.Namespace) -> int:
    from lbtap.drivers.host.errors import HostError

    with _api(args.url) as client:
        port = _get(client, f"/v2.0/ports/{args.port_id}")["port"]
        network = _get(client, f"/v2.0/networks/{port['network_id']}")["network"]
        subnets = {s["id"]: s for s in _get(client, f"/v2.0/subnets?network_id={port['network_id']}")["subnets"]}
        if not args.no_bind:
            port = _bind(client, port, args.host)
    mtu = int(network.get("mtu") or 1500)
    try:
        host, guest = _drivers(args.netns, args.guest_netns)
        try:
            if guest is not None:
                cfg = vif.guest_config(port, subnets, mtu)
                if getattr(args, "dhcp", False):  # the guest's DHCP client configures it
                    cfg = vif.GuestConfig(mac=cfg.mac, mtu=cfg.mtu, addresses=(), gateways=())
                name = vif.plug_guest(host, guest, args.guest_netns, port, cfg)
            else:
                name = vif.plug_tap(host, port, mtu)
        finally:
            host.close()
            if guest is not None:
                guest.close()
    except HostError as e:
        raise _ApiError(f"plugging {args.port_id} failed: {e}") from None
    out = {"port_id": port["id"], "device": name, "host": args.host, "guest_netns": args.guest_netns}
    print(json.dumps(out) if args.json else f"plugged {name} for port {port['id']}" + (f" (guest {args.guest_netns})" if args.guest_netns else ""))
    return 0


def cmd_unplug(args: argparse.Namespace) -> int:
    from lbtap.drivers.host import netns
    from lbtap.drivers.host.errors import HostError

    try:
        host, _ = _drivers(args.netns, None)
        try:
            name = vif.unplug(host, args.port_id)
        finally:
            host.close()
        if args.guest_netns:
            netns.remove(args.guest_netns)
    except HostError as e:
        raise _ApiError(f"unplugging {args.port_id} failed: {e}") from None
    print(json.dumps({"port_id": args.port_id, "device": name}) if args.json else f"unplugged {name}")
    return 0


def _run(fn):
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _ApiError as e:
            print(f"lbtap: {e}", file=sys.stderr)
            return 1
    return wrapped


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vif plug`` and ``vif unplug``."""
    p = sub.add_parser("vif", help="plug or unplug a port's device (the hypervisor's role)")
    vsub = p.add_subparsers(dest="vif_command", metavar="ACTION", required=True)
    for action, fn in (("plug", cmd_plug), ("unplug", cmd_unplug)):
        a = vsub.add_parser(action, help=f"{action} a port's device")
        a.add_argument("port_id")
        a.add_argument("--netns", help="host namespace the agent manages (default: current)")
        a.add_argument("--guest-netns", help="fake guest: namespace joined by a veth")
        a.add_argument("--url", default=os.environ.get("LBTAP_URL", "http://127.0.0.1:9696"))
        a.add_argument("--json", action="store_true")
        if action == "plug":
            a.add_argument("--host", default=socket.gethostname(), help="binding:host_id to set (default: hostname)")
            a.add_argument("--no-bind", action="store_true", help="do not set binding:host_id")
            a.add_argument("--dhcp", action="store_true",
                           help="with --guest-netns: leave eth0 unaddressed for a DHCP client")
        a.set_defaults(func=_run(fn))
