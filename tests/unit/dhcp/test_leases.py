"""The lease diff the DHCP agent uses to batch port changes into few reloads."""

from __future__ import annotations

from lbtap.drivers.dhcp import DhcpNetwork, FixedIP, Port, Subnet, diff_ports

NET = DhcpNetwork("n", (Subnet("s", "10.0.0.0/16", 4, "10.0.0.1"),
                        Subnet("sl", "2001:db8::/64", 6, ipv6_address_mode="slaac")))


def p(i: int, ip: str | None = None, name: str = "") -> Port:
    return Port(f"p{i}", f"fa:16:3e:00:{i // 256:02x}:{i % 256:02x}",
                (FixedIP("s", ip or f"10.0.{i // 256}.{i % 256}"), FixedIP("sl", f"2001:db8::{i:x}")),
                dns_name=name)


def test_no_change_is_empty() -> None:
    d = diff_ports(NET, [p(1), p(2)], [p(2), p(1)])
    assert d.empty and len(d) == 0


def test_added_removed_changed() -> None:
    d = diff_ports(NET, [p(1), p(2), p(3)], [p(1), p(3, name="renamed"), p(4)])
    assert [x.ip for x in d.added] == ["10.0.0.4"]
    assert [x.ip for x in d.removed] == ["10.0.0.2"]
    assert [(x.ip, x.hostname) for x in d.changed] == [("10.0.0.3", "renamed")]


def test_address_move_is_removal_plus_addition() -> None:
    d = diff_ports(NET, [p(1)], [p(1, ip="10.0.9.9")])
    assert [x.ip for x in d.removed] == ["10.0.0.1"] and [x.ip for x in d.added] == ["10.0.9.9"]
    assert not d.changed


def test_slaac_addresses_are_not_leases() -> None:
    d = diff_ports(NET, [], [p(7)])
    assert [x.ip for x in d.added] == ["10.0.0.7"]


def test_five_hundred_creates_are_one_diff() -> None:
    old = [p(i) for i in range(1, 11)]
    new = old + [p(i) for i in range(11, 511)]
    d = diff_ports(NET, old, new)
    assert len(d.added) == 500 and not d.removed and not d.changed
