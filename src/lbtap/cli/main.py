"""Entry point of the ``lbtap`` command: parses arguments, builds Settings, dispatches.

Every failure a user can cause ends as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from typing import Any, Callable

from lbtap import __version__
from lbtap.config import ConfigError, Settings, load_settings, parse_mappings

log = logging.getLogger("lbtap.cli")


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _common_settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file (see docs/config.md)")
    p.add_argument("--state-dir", help="directory for the SQLite database and agent state")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db-url", help="SQLAlchemy URL (default: SQLite in the state dir)")
    p.add_argument("--bind", help="API listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default 9696)")
    p.add_argument("--auth-strategy", choices=["noauth", "token"])
    p.add_argument("--token-file", help="token file for --auth-strategy token")
    p.add_argument("--transport-url", help="bus: memory:// (default) or amqp://user:pass@host:port/vhost")


def _agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="agent host name (default: this machine's hostname)")
    p.add_argument("--netns", help="network namespace the agent manages (default: the current one)")
    p.add_argument("--physical-interface-mappings", help="physnet:nic[,physnet:nic...]")
    p.add_argument("--local-ip", help="VXLAN tunnel endpoint address")


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from --config plus the flags that were given."""
    g = lambda name: getattr(args, name, None)  # noqa: E731
    mappings = g("physical_interface_mappings")
    overrides: dict[str, Any] = {
        "state_dir": g("state_dir"),
        "log_level": g("log_level"),
        "server.db_url": g("db_url"),
        "server.bind": g("bind"),
        "server.port": g("port"),
        "server.auth_strategy": g("auth_strategy"),
        "server.token_file": g("token_file"),
        "bus.transport_url": g("transport_url"),
        "agent.host": g("host"),
        "agent.netns": g("netns"),
        "agent.physical_interface_mappings": parse_mappings(mappings) if mappings else None,
        "agent.local_ip": g("local_ip"),
        "agent.metrics_port": g("metrics_port"),
        "agent.keep_on_exit": g("keep_on_exit") or None,
    }
    return load_settings(g("config"), overrides)


def _prepare(settings: Settings) -> None:
    from lbtap.monitoring.logs import setup_logging

    # The daemons hand work between the event loop, the host worker, the netlink event
    # reader and DB threads; CPython's default 5 ms GIL switch interval adds up to that
    # much to every hand-off, which dominated port-bind latency.
    sys.setswitchinterval(0.0005)

    setup_logging(settings.log_level)
    try:
        os.makedirs(settings.state_dir, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create state dir {settings.state_dir}: {e.strerror}") from None


def _why_it_stopped(e: BaseException) -> str | None:
    """One line for the failures an operator causes (broker or database unreachable or
    refusing, a namespace that does not exist, no privileges); None for anything else,
    which keeps its traceback (a bug)."""
    from lbtap.bus.base import BusError
    from lbtap.drivers.host.errors import HostError

    if isinstance(e, BusError):
        return f"message bus: {e}"
    if isinstance(e, HostError):
        return f"host: {e}"
    try:
        from sqlalchemy.exc import ArgumentError, DBAPIError
    except ImportError:  # pragma: no cover - the server's dependency
        return None
    if isinstance(e, DBAPIError):
        # The driver's own message, without SQLAlchemy's statement and help link.
        return f"database: {str(e.orig).strip().splitlines()[0] if e.orig is not None else e}"
    if isinstance(e, ArgumentError):
        return f"database URL: {e}"
    return None


def run_daemon(args: argparse.Namespace, target: str, *, needs_broker: bool = False) -> int:
    """Settings from the flags, process set-up, then ``asyncio.run`` of the coroutine
    function ``target`` ("module:function", imported only now: ``lbtap --help`` stays
    fast) until it returns on SIGINT/SIGTERM.

    ``needs_broker``: a process that only talks to others over the bus (the standalone
    agents) refuses the in-process ``memory://`` bus, where it would wait forever alone."""
    settings = build_settings(args)
    if needs_broker and settings.bus.transport_url.startswith("memory://"):
        raise CliError(f"{args.command} needs --transport-url amqp://user:pass@host:port/vhost "
                       "(the broker the server uses); memory:// is only for lbtap up")
    _prepare(settings)
    module, _, name = target.partition(":")
    try:
        asyncio.run(getattr(importlib.import_module(module), name)(settings))
    except Exception as e:
        why = _why_it_stopped(e)
        if why is None:
            raise
        log.debug("stopped by", exc_info=True)
        raise CliError(why) from None
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    return run_daemon(args, "lbtap.server.process:run_server")


def cmd_up(args: argparse.Namespace) -> int:
    return run_daemon(args, "lbtap.allinone:run_all_in_one")


def cmd_agent(args: argparse.Namespace) -> int:
    return run_daemon(args, "lbtap.agent.runtime:run_agent", needs_broker=True)


def _optional_register(module: str, sub: argparse._SubParsersAction) -> None:
    """Register the subcommands of a module that may not exist in this build yet."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return
        raise
    mod.register(sub)


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other lbtap error; the
    usage text stays one ``--help`` away. Subcommand parsers inherit the class."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="lbtap", description="Linux bridge + TAP tenant networks")
    parser.add_argument("--version", action="version", version=f"lbtap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("server", help="run the API server and RPC handlers")
    _common_settings_args(p)
    _server_args(p)
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("up", help="all-in-one: server, agents, SQLite and in-process bus")
    _common_settings_args(p)
    _server_args(p)
    _agent_args(p)
    p.add_argument("--keep-on-exit", action="store_true",
                   help="leave dnsmasq and the qdhcp-/qrouter- namespaces running when stopped "
                        "(the next lbtap up adopts them); default: remove them")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("agent", help="run the L2 agent for one host")
    _common_settings_args(p)
    _agent_args(p)
    p.add_argument("--transport-url", help="bus URL (amqp://... to reach a separate server)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT (default off)")
    p.set_defaults(func=cmd_agent)

    for module in ("lbtap.compute.cli", "lbtap.cli.resources", "lbtap.monitoring.cli", "lbtap.cli.agents",
                   "lbtap.cli.security", "lbtap.cli.cleanup"):
        _optional_register(module, sub)
    return parser


def main(argv: list[str] | None = None, *, _exit: Callable[[int], Any] = sys.exit) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return _exit(2)
    try:
        code = args.func(args)
    except (ConfigError, CliError) as e:
        print(f"lbtap: {e}", file=sys.stderr)
        code = getattr(e, "code", 2) if isinstance(e, CliError) else 2
    except KeyboardInterrupt:
        code = 130
    return _exit(code or 0)


if __name__ == "__main__":
    main()
