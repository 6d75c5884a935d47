"""Guest-side helpers for the DHCP/L3 fullstack tests: a real DHCP client in a guest.

dhclient runs with its own config, lease file and a script that only records what it
was given (the machine's resolv.conf and DHCP setup are never used or changed); the
test then applies the address, gateway and MTU to the guest itself.
"""

from __future__ import annotations

import ipaddress
import subprocess
import tempfile
import time
from pathlib import Path

from tests.fullstack import harness as h

DHCLIENT_CONF = """\
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,
        host-name, interface-mtu, rfc3442-classless-static-routes;
timeout 60;
"""


def dhclient(guest: str, workdir: Path, timeout: float = 70.0, ifname: str = "eth0") -> dict[str, str]:
    """Run dhclient in ``guest`` until BOUND; the environment its script got ({} if none).

    Generous timeouts (dhclient's own and ours) for a loaded machine: it returns as soon
    as the lease is bound.
    """
    d = Path(tempfile.mkdtemp(prefix=f"dhc-{guest}-", dir=workdir))
    (d / "dhclient.conf").write_text(DHCLIENT_CONF)
    script = d / "script.sh"
    # Written aside then renamed: an env.<reason> file that exists is complete.
    script.write_text(f'#!/bin/sh\nenv > "{d}/.env.$reason" && mv "{d}/.env.$reason" "{d}/env.$reason"\n')
    script.chmod(0o755)
    p = subprocess.Popen(["ip", "netns", "exec", guest, "dhclient", "-4", "-d", "-1", "-v",
                          "-cf", str(d / "dhclient.conf"), "-lf", str(d / "leases"), "-pf", str(d / "pid"),
                          "-sf", str(script), ifname], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            bound = d / "env.BOUND"
            if bound.exists():
                lines = bound.read_text().splitlines()
                return dict(line.split("=", 1) for line in lines if "=" in line)
            if p.poll() is not None:
                break
            time.sleep(0.05)
        return {}
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def apply_lease(guest: str, env: dict[str, str], ifname: str = "eth0") -> None:
    """Configure the guest as a DHCP client script would: address, MTU, default route."""
    plen = ipaddress.ip_network(f"0.0.0.0/{env['new_subnet_mask']}").prefixlen
    h.ns(guest, "ip", "addr", "replace", f"{env['new_ip_address']}/{plen}", "dev", ifname)
    if env.get("new_interface_mtu"):
        h.ns(guest, "ip", "link", "set", ifname, "mtu", env["new_interface_mtu"])
    if env.get("new_routers"):
        h.ns(guest, "ip", "route", "replace", "default", "via", env["new_routers"].split()[0])


def dnsmasq_pids(state_dir: Path) -> list[int]:
    """PIDs of the dnsmasq processes serving from ``state_dir``."""
    out = []
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            args = (pid / "cmdline").read_bytes().split(b"\0")
            st = (pid / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if st not in ("Z", "X") and args and args[0].endswith(b"dnsmasq") and any(
                str(state_dir).encode() in a for a in args):
            out.append(int(pid.name))
    return out


def namespaces(prefix: str, host: str) -> list[str]:
    return [n for n in h.sh("ip", "netns", "list").stdout.split() if n.startswith(prefix) and n.endswith("-" + host)]
