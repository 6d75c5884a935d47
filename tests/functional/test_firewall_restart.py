"""An agent restart never leaves a port unfiltered, and every pass is one transaction.

Real nftables in a throwaway ``lbtt-`` namespace: a first ``security`` extension (the
previous agent) filters some ports; then a new extension with a new driver (the
restarted agent) starts while those tables are still loaded. An nft wrapper snapshots
``nft list table bridge lbtap`` after every transaction the agents make and checks that
every port still has its port index and anti-spoofing elements in each snapshot: there
is no instant at which a port that was filtered, and still exists, is not. It also
counts the transactions: one per agent pass that changes filters.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from lbtap.agent.security import SG_MEMBER_UPDATED, SecurityExtension
from lbtap.drivers.firewall import FirewallDriver
from lbtap.drivers.firewall.nft import Nft, nft_available
from tests.support import require_root
from tests.unit.agent_runtime.test_security_qos_ext import EGRESS_ALL, StubAgent, details

N = 24


def tap(n: int) -> str:
    return f"tap{n:011d}"


def expected(n: int) -> list[tuple[str, str]]:
    """(set, element text) that filtering port n puts in ``bridge lbtap``."""
    mac, addr = f"fa:16:3e:00:00:{n:02x}", f"10.0.0.{n}"
    return [("port_idx", f'"{tap(n)}" :'), ("mac_ok", f'"{tap(n)}" . {mac}'),
            ("ip4_ok", f'"{tap(n)}" . {mac} . {addr}')]


def blocks(listing: str) -> dict[str, str]:
    """set/map name -> its body, whitespace collapsed, from ``nft list table`` text."""
    out = {}
    for m in re.finditer(r"^\t(?:set|map) (\S+) \{\n(.*?)^\t\}", listing, re.S | re.M):
        out[m[1]] = " ".join(m[2].split())
    return out


class Snapshots:
    """Delegates to a real ``Nft``; after each transaction lists ``bridge lbtap`` and
    checks that every port of ``must_hold`` has all its elements there."""

    def __init__(self, nft: Nft):
        self.inner = nft
        self.ops: list[str] = []
        self.must_hold: set[int] = set()
        self.failures: list[str] = []

    def run(self, script: str, *, json_output: bool = False, op: str = "nft") -> str:
        out = self.inner.run(script, json_output=json_output, op=op)
        if json_output or not script.strip():
            return out
        self.ops.append(op)
        sets = blocks(self.inner.run("list table bridge lbtap", op="snapshot"))
        for n in sorted(self.must_hold):
            for name, elem in expected(n):
                if elem not in sets.get(name, ""):
                    self.failures.append(f"after transaction {len(self.ops)} ({op}): {name} lacks {elem}")
        return out

    def json(self, command: str) -> list:
        return self.inner.json(command)

    def counters(self, family: str, table: str) -> dict[str, int]:
        return self.inner.counters(family, table)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def host(make_netns):
    require_root()
    reason = nft_available()
    if reason:
        pytest.skip(reason)
    return make_netns("fwr")


def agent() -> StubAgent:
    a = StubAgent()
    a.groups = {"sg-a": [EGRESS_ALL, {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "sg-a"},
                         {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                          "port_range_max": 22}]}
    a.members = {"sg-a": [f"10.0.0.{n}" for n in range(1, N + 1)]}
    return a


def start(ns: str) -> tuple[SecurityExtension, Snapshots]:
    """A fresh agent's extension with a fresh driver, its ports all reported."""
    nft = Snapshots(Nft(ns))
    ext = SecurityExtension(firewall_factory=lambda _: FirewallDriver(ns, nft=nft, enable_br_netfilter=False))
    ext.bind(agent())
    for n in range(1, N + 1):
        ext.port_details(details(n))
    return ext, nft


def zones(ns: str) -> str:
    return blocks(Nft(ns).run("list table inet lbtap")).get("zones", "")


def test_restart_keeps_every_port_filtered_and_each_pass_is_one_transaction(host):
    previous, nft = start(host)
    asyncio.run(previous.process(0.0))
    assert nft.ops == ["firewall_apply"] and nft.failures == []
    zones_before = zones(host)
    assert zones_before
    previous.fw.close()  # the old agent exits; its tables stay in the kernel

    restarted, nft = start(host)
    nft.must_hold = set(range(1, N + 1))
    asyncio.run(restarted.process(0.0))
    assert nft.failures == []
    assert len(nft.ops) == 1, f"first pass after a restart: {nft.ops}"
    assert zones(host) == zones_before, "the restarted agent keeps the network's conntrack zone"
    assert not any(restarted.holds(tap(n)) for n in range(1, N + 1))

    # Two ports removed: one transaction, the others never lose their elements.
    nft.ops.clear()
    nft.must_hold = set(range(3, N + 1))
    restarted.device_gone(tap(1))
    restarted.device_gone(tap(2))
    asyncio.run(restarted.process(1.0))
    assert nft.failures == [] and len(nft.ops) == 1
    sets = blocks(Nft(host).run("list table bridge lbtap"))
    assert all(elem not in sets.get(name, "") for n in (1, 2) for name, elem in expected(n))

    # A member leaving, a port arriving and one leaving in the same pass: one transaction.
    nft.ops.clear()
    nft.must_hold = set(range(4, N + 1)) | {N + 1}
    restarted.cast_handlers()[SG_MEMBER_UPDATED](
        {"security_groups": ["sg-a"], "members": {"sg-a": {"added": [f"10.0.0.{N + 1}"], "removed": ["10.0.0.1"]}}})
    restarted.device_gone(tap(3))
    restarted.port_details(details(N + 1))
    asyncio.run(restarted.process(2.0))
    assert nft.failures == [] and len(nft.ops) == 1
    restarted.fw.close()
