"""The ``security`` extension against the real ``FirewallDriver`` and a recording nft
that replays every script into ``nftsim``: each agent pass that changes filters is
exactly ONE nft transaction, and no transaction — including the first pass of a
restarted agent, whose predecessor's tables are still loaded — leaves a port that was
filtered, and still exists, without its entries."""

from __future__ import annotations

import asyncio

from lbtap.agent.security import SecurityExtension
from lbtap.drivers.firewall import FirewallDriver
from lbtap.drivers.firewall.antispoof import BRIDGE_SETS
from tests.unit.agent_runtime.test_security_qos_ext import EGRESS_ALL, StubAgent, details
from tests.unit.firewall.test_driver import RecordingConntrack, RecordingNft

N = 6
TAPS = [f"tap{n:011d}" for n in range(1, N + 1)]


class CheckingNft(RecordingNft):
    """After each transaction, asserts that every tap of ``must_hold`` still has all
    the bridge elements (port index, anti-spoofing) it had when ``must_hold`` was set."""

    def __init__(self):
        super().__init__()
        self.must_hold: dict[str, set[tuple[str, str]]] = {}
        self.ops: list[str] = []

    def run(self, script: str, *, op: str = "nft", json_output: bool = False) -> str:
        out = super().run(script, op=op)
        self.ops.append(op)
        have = port_entries(self)
        for tap, entries in self.must_hold.items():
            missing = entries - have.get(tap, set())
            assert not missing, f"after transaction {len(self.scripts)} ({op}) {tap} lacks {sorted(missing)}"
        return out


def port_entries(nft: RecordingNft) -> dict[str, set[tuple[str, str]]]:
    """tap -> {(set, element)} of the bridge table as the (simulated) kernel holds it."""
    t = nft.rs.tables.get(("bridge", "lbtap"))
    out: dict[str, set[tuple[str, str]]] = {}
    for name in ("port_idx", *BRIDGE_SETS):
        for e in (t.sets.get(name, ()) if t else ()):
            tap = e.split('"')[1]
            out.setdefault(tap, set()).add((name, e))
    return out


def agent():
    a = StubAgent()
    a.groups = {"sg-a": [EGRESS_ALL, {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "sg-a"}]}
    a.members = {"sg-a": [f"10.0.0.{n}" for n in range(1, N + 1)]}
    return a


def extension(nft: RecordingNft, a: StubAgent | None = None) -> SecurityExtension:
    ext = SecurityExtension(firewall_factory=lambda _: FirewallDriver(
        None, nft=nft, conntrack=RecordingConntrack(), enable_br_netfilter=False))
    ext.bind(a or agent())
    return ext


def first_pass(ext: SecurityExtension) -> None:
    for n in range(1, N + 1):
        ext.port_details(details(n))
    asyncio.run(ext.process(0.0))


def test_first_pass_is_one_full_transaction_holding_every_tap():
    nft = CheckingNft()
    first_pass(extension(nft))
    assert len(nft.scripts) == 1
    assert "delete table bridge lbtap" in nft.scripts[0]
    assert all(f'"{tap}"' in nft.scripts[0] for tap in TAPS)
    assert set(port_entries(nft)) == set(TAPS)


def test_restart_never_leaves_a_port_unfiltered():
    nft = CheckingNft()
    first_pass(extension(nft))  # the previous agent
    nft.must_hold = port_entries(nft)  # from now on, in every transaction
    assert set(nft.must_hold) == set(TAPS) and all(len(v) >= 3 for v in nft.must_hold.values())
    nft.scripts.clear()
    restarted = extension(nft)  # new extension and driver, the tables still loaded
    first_pass(restarted)
    assert len(nft.scripts) == 1, "the restarted agent's first pass is one transaction"
    assert port_entries(nft) == nft.must_hold
    assert not any(restarted.holds(t) for t in TAPS)


def test_removing_two_ports_is_one_transaction():
    nft = CheckingNft()
    ext = extension(nft)
    first_pass(ext)
    nft.scripts.clear()
    ext.device_gone(TAPS[0])
    ext.device_gone(TAPS[1])
    asyncio.run(ext.process(1.0))
    assert len(nft.scripts) == 1 and "delete table" not in nft.scripts[0]
    assert set(port_entries(nft)) == set(TAPS[2:])
    assert ext.stats["removals"] == 2


def test_member_delta_new_port_and_removal_in_one_pass_is_one_transaction():
    nft = CheckingNft()
    a = agent()
    ext = extension(nft, a)
    first_pass(ext)
    nft.scripts.clear()
    nft.must_hold = {t: e for t, e in port_entries(nft).items() if t != TAPS[0]}
    ext.device_gone(TAPS[0])
    ext.port_details(details(N + 1))
    ext.cast_handlers()["security_groups_member_updated"](
        {"security_groups": ["sg-a"], "members": {"sg-a": {"added": ["10.0.0.50"], "removed": ["10.0.0.1"]}}})
    asyncio.run(ext.process(1.0))
    (delta,) = nft.scripts
    assert "delete table" not in delta and "10.0.0.50" in delta
    assert set(port_entries(nft)) == {*TAPS[1:], f"tap{N + 1:011d}"}


def test_a_pass_without_changes_sends_nothing():
    nft = CheckingNft()
    ext = extension(nft)
    first_pass(ext)
    nft.scripts.clear()
    ext.port_details(details(1))  # same details again
    asyncio.run(ext.process(1.0))
    assert nft.scripts == []
