"""Kernel feature probes: try the feature in a throwaway namespace and report.

Each probe returns ``(supported, reason)``; ``reason`` is the kernel's (or the tool's)
own words when unsupported, for logs, ``lbtap doctor`` and test skips. Results are
cached per process: modules cannot appear while we run on this kind of host.

Nothing touches the caller's namespace: every probe creates its own namespace (name
prefix ``lbtap-probe-`` by default; tests pass ``lbtt-``) and deletes it, also on error.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from lbtap.drivers.host import errors
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.host.base import VxlanInfo

Result = tuple[bool, str]
DEFAULT_PREFIX = "lbtap-probe-"


@contextmanager
def _throwaway(prefix: str) -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    netns_mod.create(name)
    try:
        yield name
    finally:
        netns_mod.delete(name)


def _run(ns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True, timeout=10)


def _tool(ns: str, argv: list[str], stdin: str | None = None) -> Result:
    if shutil.which(argv[0]) is None:
        return False, f"{argv[0]} not installed"
    p = _run(ns, *argv, stdin=stdin)
    if p.returncode == 0:
        return True, "ok"
    return False, (p.stderr or p.stdout).strip().splitlines()[0] if (p.stderr or p.stdout).strip() else f"exit {p.returncode}"


def _with_host(prefix: str, fn: Callable) -> Result:
    from lbtap.drivers.host.netlink import NetlinkHost

    with _throwaway(prefix) as ns:
        host = NetlinkHost(ns)
        try:
            fn(host, ns)
            return True, "ok"
        except errors.HostError as e:
            return False, f"{type(e).__name__}: {e}"
        finally:
            host.close()


@functools.lru_cache(maxsize=None)
def vlan(prefix: str = DEFAULT_PREFIX) -> Result:
    """802.1Q VLAN devices (missing on the project's VMs: EOPNOTSUPP)."""
    def go(host, ns):
        host.create_veth("p0", "p1")
        host.create_vlan("p0.10", "p0", 10)
    return _with_host(prefix, go)


@functools.lru_cache(maxsize=None)
def vxlan(prefix: str = DEFAULT_PREFIX) -> Result:
    """VXLAN devices."""
    return _with_host(prefix, lambda host, ns: host.create_vxlan("vx0", VxlanInfo(vni=42, local="10.0.0.1")))


@functools.lru_cache(maxsize=None)
def tc_police(prefix: str = DEFAULT_PREFIX) -> Result:
    """The tc ``police`` action (ingress rate limiting the Neutron way)."""
    with _throwaway(prefix) as ns:
        ok, why = _tool(ns, ["tc", "qdisc", "add", "dev", "lo", "ingress"])
        if not ok:
            return False, f"ingress qdisc: {why}"
        return _tool(ns, ["tc", "filter", "add", "dev", "lo", "parent", "ffff:", "protocol", "all", "u32",
                          "match", "u32", "0", "0", "police", "rate", "1mbit", "burst", "10k", "drop"])


@functools.lru_cache(maxsize=None)
def tc_tbf(prefix: str = DEFAULT_PREFIX) -> Result:
    """The ``tbf`` qdisc (egress shaping)."""
    with _throwaway(prefix) as ns:
        return _tool(ns, ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst", "10k", "latency", "50ms"])


@functools.lru_cache(maxsize=None)
def bridge_conntrack(prefix: str = DEFAULT_PREFIX) -> Result:
    """``ct state`` in an nftables bridge-family chain (missing here: protocol error)."""
    rules = ("table bridge lbtprobe {\n chain c {\n  type filter hook forward priority 0;\n"
             "  ct state established accept\n }\n}\n")
    with _throwaway(prefix) as ns:
        return _tool(ns, ["nft", "-f", "-"], stdin=rules)


@functools.lru_cache(maxsize=None)
def br_netfilter(prefix: str = DEFAULT_PREFIX) -> Result:
    """br_netfilter (``net.bridge.bridge-nf-call-iptables`` exists per namespace)."""
    with _throwaway(prefix) as ns:
        with netns_mod.in_namespace(ns):
            try:
                with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
                    f.read()
            except OSError as e:
                return False, f"no bridge-nf-call-iptables sysctl: {e.strerror}"
        return True, "ok"


PROBES: dict[str, Callable[..., Result]] = {
    "vlan": vlan,
    "vxlan": vxlan,
    "tc_police": tc_police,
    "tc_tbf": tc_tbf,
    "bridge_conntrack": bridge_conntrack,
    "br_netfilter": br_netfilter,
}


def probe_all(prefix: str = DEFAULT_PREFIX) -> dict[str, Result]:
    """Every probe's result, by name."""
    out = {}
    for name, fn in PROBES.items():
        try:
            out[name] = fn(prefix)
        except Exception as e:  # a broken probe must not hide the others
            out[name] = (False, f"probe failed: {e}")
    return out
