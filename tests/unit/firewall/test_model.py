"""The firewall's pure model: validation and normalisation of ports and rules."""

from __future__ import annotations

import pytest

from lbtap.domain.models import DeviceDetails, FixedIP
from lbtap.drivers.firewall.model import (
    EGRESS, INGRESS, IPV6, PortFilter, RemoteGroups, Rule, eui64_link_local, from_details,
)


@pytest.mark.parametrize("kwargs, message", [
    ({"direction": "in"}, "direction"),
    ({"direction": INGRESS, "ethertype": "IPv5"}, "ethertype"),
    ({"direction": INGRESS, "remote_ip_prefix": "2001:db8::/32"}, "does not match"),
    ({"direction": INGRESS, "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "g"}, "exclusive"),
    ({"direction": INGRESS, "protocol": "tcp", "port_range_min": 0}, "1-65535"),
    ({"direction": INGRESS, "protocol": "udp", "port_range_min": 90, "port_range_max": 80}, "min > "),
    ({"direction": INGRESS, "protocol": "icmp", "port_range_min": 300}, "0-255"),
    ({"direction": INGRESS, "protocol": "icmp", "port_range_max": 0}, "without type"),
    ({"direction": INGRESS, "protocol": "gre", "port_range_min": 1}, "port range"),
    ({"direction": INGRESS, "protocol": "bogus"}, "unknown protocol"),
    ({"direction": INGRESS, "protocol": 256}, "out of range"),
])
def test_invalid_rules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rule(**kwargs)


@pytest.mark.parametrize("rule, number", [
    (Rule(INGRESS), None),
    (Rule(INGRESS, protocol="any"), None),
    (Rule(INGRESS, protocol="TCP"), 6),
    (Rule(INGRESS, protocol="47"), 47),
    (Rule(INGRESS, protocol=132), 132),
    (Rule(INGRESS, IPV6, protocol="icmp"), 58),  # Neutron: icmp under IPv6 is ICMPv6
    (Rule(INGRESS, IPV6, protocol="ipv6-icmp"), 58),
])
def test_protocol_numbers(rule, number):
    assert rule.protocol_number == number


def test_remote_prefix_is_normalised_and_zero_prefix_means_any():
    assert Rule(INGRESS, remote_ip_prefix="10.1.2.3/8").remote_ip_prefix == "10.0.0.0/8"
    assert Rule(INGRESS, remote_ip_prefix="0.0.0.0/0").remote_ip_prefix is None
    assert Rule(INGRESS, remote_ip_prefix="10.1.2.3/8") == Rule(INGRESS, remote_ip_prefix="10.0.0.0/8")


def test_port_normalises_addresses_and_lists_source_pairs():
    p = PortFilter("tapx", "FA-16-3E-00-00-01", ("2001:DB8::0001", "10.0.0.5"),
                   allowed_address_pairs=(("10.9.1.7/24", None), ("10.0.0.50", "fa:16:3e:00:00:AA")))
    assert p.mac == "fa:16:3e:00:00:01"
    assert p.ips == ("2001:db8::1", "10.0.0.5")
    assert p.source_pairs() == [
        ("fa:16:3e:00:00:01", "10.0.0.5"), ("fa:16:3e:00:00:01", "10.9.1.0/24"),
        ("fa:16:3e:00:00:01", "2001:db8::1"), ("fa:16:3e:00:00:aa", "10.0.0.50"),
    ]
    assert p.macs() == ["fa:16:3e:00:00:01", "fa:16:3e:00:00:aa"]


@pytest.mark.parametrize("kw, filtered", [
    ({}, True),
    ({"device_owner": "compute:nova"}, True),
    ({"device_owner": "network:dhcp"}, False),
    ({"device_owner": "network:router_interface"}, False),
    ({"port_security_enabled": False}, False),
])
def test_which_ports_are_filtered(kw, filtered):
    assert PortFilter("tapx", "fa:16:3e:00:00:01", **kw).filtered is filtered


@pytest.mark.parametrize("kw", [
    {"tap": "tap-name-way-too-long"}, {"mac": "fa:16:3e:00:00"}, {"ips": ("10.0.0.300",)},
    {"allowed_address_pairs": (("10.0.0.0/33", None),)},
])
def test_invalid_ports_are_refused(kw):
    base = {"tap": "tapx", "mac": "fa:16:3e:00:00:01"}
    with pytest.raises(ValueError):
        PortFilter(**{**base, **kw})


def test_equal_ports_hash_equal_and_security_groups_are_a_set():
    a = PortFilter("tapx", "fa:16:3e:00:00:01", ("10.0.0.1",), rules=(Rule(EGRESS),), security_groups=("b", "a", "a"))
    b = PortFilter("tapx", "fa:16:3e:00:00:01", ("10.0.0.1",), rules=(Rule(EGRESS),), security_groups=("a", "b"))
    assert a == b and hash(a) == hash(b) and a.security_groups == ("a", "b")


def test_remote_groups_split_by_family_and_reject_bad_ids():
    g = RemoteGroups.of({"web": ["10.0.0.1", "2001:db8::1", "10.1.0.9/16"]})
    assert g.by_family("web", 4) == {"10.0.0.1", "10.1.0.0/16"}
    assert g.by_family("web", 6) == {"2001:db8::1"}
    assert g.by_family("missing", 4) == frozenset()
    with pytest.raises(ValueError):
        RemoteGroups.of({"bad id; flush ruleset": ["10.0.0.1"]})


def test_from_details_keeps_addresses_security_and_groups():
    d = DeviceDetails.for_port("0123456789abcdef", network_id="n", mac_address="fa:16:3e:00:00:01",
                               fixed_ips=(FixedIP("s", "10.0.0.4"),), allowed_address_pairs=(("10.0.0.9", None),),
                               device_owner="compute:nova", security_groups=("sg1",))
    p = from_details(d, [Rule(EGRESS)])
    assert (p.tap, p.ips, p.allowed_address_pairs, p.security_groups) == (
        "tap0123456789a", ("10.0.0.4",), (("10.0.0.9", None),), ("sg1",))
    assert p.rules == (Rule(EGRESS),) and p.filtered
    assert p.network_id == "n", "the network picks the port's conntrack zone"


def test_network_id_is_checked_and_empty_means_none():
    assert PortFilter("tap1", "fa:16:3e:00:00:01", network_id="").network_id is None
    with pytest.raises(ValueError):
        PortFilter("tap1", "fa:16:3e:00:00:01", network_id='n" ; flush ruleset')
    a, b = (PortFilter("tap1", "fa:16:3e:00:00:01", network_id=n) for n in ("n1", "n2"))
    assert a != b and hash(a) != hash(b)


def test_eui64_link_local():
    assert eui64_link_local("fa:16:3e:00:00:01") == "fe80::f816:3eff:fe00:1"
