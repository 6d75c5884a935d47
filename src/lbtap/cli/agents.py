"""``lbtap dhcp-agent`` and ``lbtap l3-agent``: one host's DHCP / L3 agent process.

Both take the L2 agent's ``--host`` and ``--netns``: the host ends of their veths go
into the namespace that host's L2 agent manages, and with ``--netns`` the namespaces
they create carry the host name (``qdhcp-<net>-<host>``, ``qrouter-<id>-<host>``).
"""

from __future__ import annotations

import argparse


def _args(p: argparse.ArgumentParser) -> None:
    from lbtap.cli.main import _common_settings_args

    _common_settings_args(p)
    p.add_argument("--host", help="agent host name (default: this machine's hostname)")
    p.add_argument("--netns", help="host namespace the L2 agent manages (taps go there)")
    p.add_argument("--transport-url", help="bus URL (amqp://... to reach a separate server)")


def cmd_dhcp_agent(args: argparse.Namespace) -> int:
    from lbtap.cli.main import run_daemon

    return run_daemon(args, "lbtap.agents.dhcp:run_dhcp_agent", needs_broker=True)


def cmd_l3_agent(args: argparse.Namespace) -> int:
    from lbtap.cli.main import run_daemon

    return run_daemon(args, "lbtap.agents.l3:run_l3_agent", needs_broker=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dhcp-agent", help="run the DHCP agent (dnsmasq per network) for one host")
    _args(p)
    p.set_defaults(func=cmd_dhcp_agent)
    p = sub.add_parser("l3-agent", help="run the L3 agent (router namespaces, NAT) for one host")
    _args(p)
    p.set_defaults(func=cmd_l3_agent)
