"""FirewallDriver's transaction logic against a recording nft (the kernel boundary),
and FakeFirewall's bookkeeping. Scripts are replayed into ``nftsim`` so the tests check
what the kernel would end up holding, not just which strings were sent."""

from __future__ import annotations

import errno

import pytest

from lbtap.drivers.firewall import EGRESS, INGRESS, FakeFirewall, FirewallDriver, PortFilter, RemoteGroups, Rule
from lbtap.drivers.firewall.conntrack import Flush
from lbtap.drivers.firewall.nft import error_from_nft
from lbtap.drivers.firewall.render import compile_state, render_full
from lbtap.drivers.host import errors
from tests.unit.firewall.nftsim import Ruleset


class RecordingNft:
    """Keeps a simulated ruleset; ``fail`` makes the next run raise like nft would."""

    def __init__(self):
        self.scripts: list[str] = []
        self.rs = Ruleset()
        self.fail: errors.HostError | None = None

    def run(self, script: str, *, op: str = "nft", json_output: bool = False) -> str:
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        self.scripts.append(script)
        self.rs.load(script)
        return ""

    def counters(self, family, table):
        return {"spoof_ip": 2} if family == "bridge" else {}

    def json(self, command: str) -> list:
        """``list map|set <family> <table> <name>`` of the simulated ruleset, as nft -j
        gives it (map elements as [key, value], integers as numbers)."""
        kind, family, table, name = command.split()[1:]
        t = self.rs.tables.get((family, table))
        if t is None or name not in t.sets:
            raise errors.NotFound("No such file or directory", op="nft_list", code=errno.ENOENT)

        def value(text: str):
            text = text.strip()
            return int(text) if text.isdigit() else text.strip('"')

        elems = [[value(x) for x in e.split(" : ")] if kind == "map" else value(e) for e in sorted(t.sets[name])]
        return [{kind: {"family": family, "table": table, "name": name, "elem": elems}}]

    def close(self):
        pass


def mkport(i: int, *rules: Rule, **kw) -> PortFilter:
    return PortFilter(f"tap{i}", f"fa:16:3e:00:00:{i:02x}", (f"10.0.0.{i}",), rules=rules or (Rule(EGRESS),), **kw)


class RecordingConntrack:
    """Records the flushes instead of touching a conntrack table; ``fail`` makes the
    next flush raise."""

    def __init__(self):
        self.calls: list[list[Flush]] = []
        self.fail: errors.HostError | None = None

    def flush(self, flushes) -> int:
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        self.calls.append(list(flushes))
        return 0


@pytest.fixture
def drv():
    return FirewallDriver(None, nft=RecordingNft(), enable_br_netfilter=False, conntrack=RecordingConntrack())


def kernel_equals_full_render(drv) -> bool:
    ports = list(drv.ports.values())
    want = Ruleset().load(render_full(compile_state(ports, drv.groups, drv.state)))
    return drv.nft.rs.snapshot() == want.snapshot()


def test_apply_is_one_full_transaction_and_updates_are_deltas(drv):
    drv.apply([mkport(1), mkport(2)], RemoteGroups())
    assert len(drv.nft.scripts) == 1 and "delete table inet lbtap" in drv.nft.scripts[0]
    drv.update_port(mkport(2, Rule(EGRESS), Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22)))
    assert len(drv.nft.scripts) == 2 and "delete table" not in drv.nft.scripts[1]
    assert kernel_equals_full_render(drv)


def test_update_ports_batches_into_one_transaction(drv):
    drv.apply([mkport(i) for i in range(1, 5)])
    drv.update_ports([mkport(i, Rule(INGRESS)) for i in range(1, 5)])
    assert len(drv.nft.scripts) == 2
    assert kernel_equals_full_render(drv)


def test_noop_update_sends_nothing(drv):
    drv.apply([mkport(1)])
    drv.update_port(mkport(1))
    drv.remove_port("tap-unknown")
    assert len(drv.nft.scripts) == 1


def test_remove_port_and_group_updates(drv):
    r = Rule(INGRESS, remote_group_id="web")
    drv.apply([mkport(1, r), mkport(2, r)], RemoteGroups.of({"web": ["10.0.0.1"]}))
    drv.update_groups(RemoteGroups.of({"web": ["10.0.0.1", "10.0.0.2"]}))
    assert drv.nft.scripts[-1].strip() == "add element inet lbtap g4-web { 10.0.0.2 }"
    drv.remove_port("tap1")
    assert set(drv.ports) == {"tap2"}
    assert kernel_equals_full_render(drv)


def test_first_update_without_apply_programs_everything(drv):
    drv.update_port(mkport(1))
    assert "delete table bridge lbtap" in drv.nft.scripts[0]
    assert kernel_equals_full_render(drv)


def test_failed_delta_falls_back_to_one_full_replace(drv):
    drv.apply([mkport(1)])
    drv.nft.fail = errors.NotFound("No such file or directory", op="nft", code=errno.ENOENT)
    drv.update_port(mkport(2))
    assert "delete table bridge lbtap" in drv.nft.scripts[-1]
    assert set(drv.ports) == {"tap1", "tap2"}


def test_failure_of_the_full_apply_propagates_and_keeps_old_state(drv):
    drv.apply([mkport(1)])
    drv.nft.fail = errors.PermissionDenied("Operation not permitted", op="nft", code=errno.EPERM)
    with pytest.raises(errors.PermissionDenied):
        drv.apply([mkport(1), mkport(2)])
    assert set(drv.ports) == {"tap1"}


def test_drop_counters_report_every_counter(drv):
    c = drv.drop_counters()
    assert c["spoof_ip"] == 2 and c["spoof_mac"] == 0 and c["ingress_drop"] == 0


@pytest.mark.parametrize("text, cls", [
    ("Error: Could not process rule: No such file or directory", errors.NotFound),
    ("Error: Could not process rule: Operation not supported", errors.NotSupported),
    ("Error: Could not process rule: Device or resource busy", errors.Busy),
    ("Error: Could not process rule: Operation not permitted", errors.PermissionDenied),
    ("Error: syntax error, unexpected '}'", errors.InvalidArgument),
])
def test_nft_errors_become_typed_host_errors(text, cls):
    assert type(error_from_nft(text, op="nft")) is cls


def test_fake_firewall_records_data_and_can_fail():
    fake = FakeFirewall()
    fake.apply([mkport(1)], RemoteGroups.of({"g": ["10.0.0.1"]}))
    fake.update_port(mkport(2))
    fake.remove_port("tap1")
    assert set(fake.ports) == {"tap2"} and fake.transactions == 3
    assert set(fake.compiled.index) == {"tap2"}
    fake.fail_next = errors.Transient("try again", op="nft")
    with pytest.raises(errors.Transient):
        fake.update_port(mkport(3))
    assert set(fake.ports) == {"tap2"}


def test_same_tap_twice_in_one_batch_keeps_the_last(drv):
    drv.apply([mkport(1)])
    drv.update_ports([mkport(1, Rule(INGRESS)), PortFilter("tap1", "fa:16:3e:00:00:01", ("10.0.0.77",))])
    assert drv.ports["tap1"].ips == ("10.0.0.77",)
    assert kernel_equals_full_render(drv)


# -- conntrack cleanup ----------------------------------------------------------------
SSH = Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22)


def test_a_rule_removed_is_flushed_after_the_transaction_a_rule_added_is_not(drv):
    drv.apply([mkport(1, Rule(EGRESS), SSH)])
    drv.update_port(mkport(1, Rule(EGRESS), SSH, Rule(INGRESS, protocol="udp")))
    assert drv.conntrack.calls == []
    drv.update_port(mkport(1, Rule(EGRESS)))
    (call,) = drv.conntrack.calls
    assert [(f.tap, f.direction, f.addresses, f.rules) for f in call] == [
        ("tap1", INGRESS, ("10.0.0.1",), (Rule(EGRESS),))]
    assert drv.last_flushes == tuple(call)


def test_removing_a_port_and_a_member_are_flushed(drv):
    r = Rule(INGRESS, remote_group_id="web")
    drv.apply([mkport(1, r), mkport(2, r)], RemoteGroups.of({"web": ["10.0.0.1", "10.0.0.2"]}))
    drv.update_groups(RemoteGroups.of({"web": ["10.0.0.1"]}))
    assert {(f.tap, f.remotes) for f in drv.conntrack.calls[-1]} == {("tap1", ("10.0.0.2",)), ("tap2", ("10.0.0.2",))}
    drv.remove_port("tap2")
    assert [(f.tap, f.direction, f.rules) for f in drv.conntrack.calls[-1]] == [("tap2", None, None)]


def test_a_retriable_cleanup_failure_raises_after_the_change_and_is_retried(drv):
    drv.apply([mkport(1, SSH)])
    drv.conntrack.fail = errors.Transient("ENOBUFS", op="conntrack_flush", code=errno.ENOBUFS)
    with pytest.raises(errors.Transient):
        drv.update_port(mkport(1))
    assert drv.ports["tap1"].rules == (Rule(EGRESS),), "the ruleset and the state moved on"
    assert kernel_equals_full_render(drv)
    drv.update_port(mkport(1))  # nothing to program: the pending cleanup runs
    assert [f.tap for f in drv.conntrack.calls[-1]] == ["tap1"]


def test_a_permanent_cleanup_failure_is_not_retried(drv):
    drv.apply([mkport(1, SSH)])
    drv.conntrack.fail = errors.PermissionDenied("EPERM", op="conntrack_flush", code=errno.EPERM)
    with pytest.raises(errors.PermissionDenied):
        drv.update_port(mkport(1))
    drv.update_port(mkport(1))
    assert drv.conntrack.calls == []


def test_fake_firewall_records_flushes():
    fake = FakeFirewall()
    fake.apply([mkport(1, SSH), mkport(2, SSH)])
    fake.update_ports([mkport(1), mkport(2, SSH)])
    fake.remove_port("tap2")
    assert [(f.tap, f.direction) for f in fake.flushes] == [("tap1", INGRESS), ("tap2", None)]
    assert fake.transactions == 3
