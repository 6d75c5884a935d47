"""``FirewallDriver.converge``: a whole agent pass (changed ports, removed ports, new
remote-group membership) as ONE nft transaction, with the conntrack cleanup of
everything it took away; the first call of a driver is one full apply."""

from __future__ import annotations

from lbtap.drivers.firewall import EGRESS, INGRESS, FakeFirewall, FirewallDriver, RemoteGroups, Rule
from tests.unit.firewall.test_driver import SSH, RecordingConntrack, RecordingNft, kernel_equals_full_render, mkport

WEB = Rule(INGRESS, remote_group_id="web")


def mkdrv(nft: RecordingNft | None = None) -> FirewallDriver:
    return FirewallDriver(None, nft=nft or RecordingNft(), enable_br_netfilter=False, conntrack=RecordingConntrack())


def test_removing_two_ports_is_one_delta_transaction():
    drv = mkdrv()
    drv.apply([mkport(i) for i in range(1, 5)])
    drv.converge((), ["tap1", "tap2"])
    assert len(drv.nft.scripts) == 2 and "delete table" not in drv.nft.scripts[1]
    assert set(drv.ports) == {"tap3", "tap4"}
    assert kernel_equals_full_render(drv)


def test_remove_ports_is_one_transaction_too():
    drv = mkdrv()
    drv.apply([mkport(i) for i in range(1, 5)])
    drv.remove_ports(["tap1", "tap3", "tap-unknown"])
    assert len(drv.nft.scripts) == 2 and set(drv.ports) == {"tap2", "tap4"}
    assert kernel_equals_full_render(drv)


def test_changes_removals_and_membership_in_one_transaction():
    drv = mkdrv()
    drv.apply([mkport(1, WEB), mkport(2, WEB), mkport(3, WEB)], RemoteGroups.of({"web": ["10.0.0.1"]}))
    drv.converge([mkport(4, WEB), mkport(1, WEB, SSH)], ["tap3"], RemoteGroups.of({"web": ["10.0.0.1", "10.0.0.4"]}))
    assert len(drv.nft.scripts) == 2
    delta = drv.nft.scripts[1]
    assert "delete table" not in delta and "g4-web { 10.0.0.4 }" in delta
    assert set(drv.ports) == {"tap1", "tap2", "tap4"}
    assert drv.groups.members["web"] == frozenset({"10.0.0.1", "10.0.0.4"})
    assert kernel_equals_full_render(drv)


def test_converge_without_a_difference_sends_nothing():
    drv = mkdrv()
    r = RemoteGroups.of({"web": ["10.0.0.1"]})
    drv.apply([mkport(1, WEB)], r)
    drv.converge([mkport(1, WEB)], ["tap-unknown"], RemoteGroups.of({"web": ["10.0.0.1"]}))
    drv.converge()
    assert len(drv.nft.scripts) == 1


def test_first_converge_is_one_full_apply_of_every_port():
    drv = mkdrv()
    drv.converge([mkport(i, WEB) for i in range(1, 4)], [], RemoteGroups.of({"web": ["10.0.0.1"]}))
    (script,) = drv.nft.scripts
    assert "delete table bridge lbtap" in script
    assert all(f'"tap{i}"' in script for i in range(1, 4))
    assert kernel_equals_full_render(drv)


def test_a_tap_both_changed_and_removed_is_removed():
    drv = mkdrv()
    drv.apply([mkport(1), mkport(2)])
    drv.converge([mkport(1, SSH)], ["tap1"])
    assert set(drv.ports) == {"tap2"} and len(drv.nft.scripts) == 2


def test_conntrack_cleanup_of_one_pass_is_one_flush_after_the_transaction():
    drv = mkdrv()
    drv.apply([mkport(1, Rule(EGRESS), SSH), mkport(2, WEB), mkport(3)], RemoteGroups.of({"web": ["10.0.0.1", "10.0.0.9"]}))
    drv.converge([mkport(1, Rule(EGRESS))], ["tap3"], RemoteGroups.of({"web": ["10.0.0.1"]}))
    (call,) = drv.conntrack.calls
    assert sorted((f.tap, f.direction, f.remotes) for f in call) == [
        ("tap1", INGRESS, None),  # its SSH rule is gone
        ("tap2", INGRESS, ("10.0.0.9",)),  # a member of its remote group is gone
        ("tap3", None, None),  # the port is gone
    ]

def test_fake_firewall_converge_counts_one_transaction():
    fake = FakeFirewall()
    fake.apply([mkport(1, SSH), mkport(2, SSH), mkport(3)])
    fake.converge([mkport(1)], ["tap2", "tap3"], RemoteGroups.of({"g": ["10.0.0.5"]}))
    assert fake.transactions == 2 and set(fake.ports) == {"tap1"}
    fake.converge([mkport(1)], ["tap9"])
    assert fake.transactions == 2
    fake.remove_ports(["tap1"])
    assert fake.transactions == 3 and not fake.ports
