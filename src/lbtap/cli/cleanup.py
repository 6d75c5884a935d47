"""``lbtap cleanup``: remove what a crashed or killed deployment left on this machine.

Only lbtap's own state decides (see ``lbtap.agents.cleanup_core``): the dnsmasq
processes named by the DHCP pid files of the state dir (each checked to be a dnsmasq
started for that directory before it is signalled), the ``qdhcp-``/``qrouter-``
namespaces the agents recorded there, and with ``--host NAME`` every namespace lbtap
names for agent host NAME (``qdhcp-<id>-NAME``, ``qrouter-<id>-NAME``). One line per
thing removed; running it again finds nothing (exit 0). Refused while a DHCP or L3
agent runs with that state dir.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def cmd_cleanup(args: argparse.Namespace) -> int:
    from lbtap.agents.cleanup_core import plan_cleanup
    from lbtap.agents.cleanup_host import apply_plan, read_state
    from lbtap.agents.state import ExclusiveLock, StateDirBusy
    from lbtap.cli.main import CliError
    from lbtap.config import load_settings

    host = args.host
    if host is not None and (not host.strip() or host != host.strip()):
        raise CliError(f"invalid --host {host!r}: an agent host name, as given to lbtap up / dhcp-agent / l3-agent")
    state_dir: str | None = args.state_dir or load_settings(args.config).state_dir
    assert state_dir is not None
    st = Path(state_dir)
    if st.exists() and not st.is_dir():
        raise CliError(f"state dir {state_dir} is not a directory")
    if not st.is_dir():
        if host is None:
            raise CliError(f"no state dir {state_dir}: give the deployment's --state-dir (or --config), "
                           "or --host NAME to remove namespaces named for that host")
        state_dir = None  # nothing recorded: only the namespaces named for --host
    if not args.dry_run and os.geteuid() != 0:
        raise CliError("cleanup needs root (namespaces, other users' processes); --dry-run shows what it would do")

    def run() -> Any:
        dhcp, records, namespaces = read_state(state_dir)
        plan = plan_cleanup(dhcp=dhcp, records=records, namespaces=namespaces, host=host)
        return plan, apply_plan(plan, state_dir, dry_run=args.dry_run, emit=print)

    try:
        if state_dir is None:
            plan, res = run()
        else:
            with ExclusiveLock(state_dir, create=not args.dry_run):
                plan, res = run()
    except StateDirBusy:
        raise CliError(f"a DHCP or L3 agent (lbtap up, dhcp-agent or l3-agent) is running with state dir "
                       f"{state_dir}: stop it first") from None
    for err in res.errors:
        print(f"lbtap: {err}", file=sys.stderr)
    if res.errors:
        return 1
    if not res.lines:
        print("nothing to clean up")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cleanup", help="remove dnsmasq processes and DHCP/router namespaces a dead deployment left")
    p.add_argument("--config", help="the deployment's TOML configuration (for its state_dir)")
    p.add_argument("--state-dir", help="the deployment's state dir (default: from --config, else /var/lib/lbtap)")
    p.add_argument("--host", help="only that agent host's leftovers, plus every qdhcp-/qrouter- namespace "
                                  "named for it (-<host> suffix), recorded or not")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    p.set_defaults(func=cmd_cleanup)
