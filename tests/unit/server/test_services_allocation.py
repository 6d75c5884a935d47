"""Pure allocation decisions."""

from __future__ import annotations

import ipaddress
import random

import pytest

from lbtap.server.services import allocation as a

N = ipaddress.ip_network


def test_mac_generator_keeps_base_octets_and_never_repeats():
    taken = {"fa:16:3e:00:00:01"}
    gen = a.mac_generator("fa:16:3e:00:00:00", taken, random.Random(1))
    macs = [next(gen) for _ in range(2000)]
    assert len(set(macs)) == 2000 and "fa:16:3e:00:00:01" not in macs
    assert all(m.startswith("fa:16:3e:") for m in macs)
    four = a.mac_generator("fa:16:3e:7f:00:00", set(), random.Random(1))
    assert all(next(four).startswith("fa:16:3e:7f:") for _ in range(50))


def test_mac_space_exhaustion_is_reported():
    taken: set[str] = set()
    gen = a.mac_generator("fa:16:3e:7f:ff:00", taken, random.Random(1))  # 4 fixed octets: 65536
    taken.update(f"fa:16:3e:7f:{i >> 8:02x}:{i & 255:02x}" for i in range(65536))
    with pytest.raises(RuntimeError):
        next(gen)


@pytest.mark.parametrize("cidr, gw, pools", [
    ("10.0.0.0/24", "10.0.0.1", [("10.0.0.2", "10.0.0.254")]),
    ("10.0.0.0/30", "10.0.0.1", [("10.0.0.2", "10.0.0.2")]),
    ("10.0.0.0/31", "10.0.0.1", [("10.0.0.0", "10.0.0.0")]),
    ("10.0.0.0/32", None, [("10.0.0.0", "10.0.0.0")]),
    ("10.0.0.0/24", None, [("10.0.0.1", "10.0.0.254")]),
    ("fd00::/126", "fd00::1", [("fd00::2", "fd00::3")]),
])
def test_default_pools(cidr, gw, pools):
    net = N(cidr)
    if gw is not None or net.num_addresses == 1:  # else: "no gateway" was asked for
        assert a.default_gateway(net) == gw
    assert a.default_pools(net, gw) == [{"start": s, "end": e} for s, e in pools]


def test_check_pools_reasons():
    net = N("10.0.0.0/24")
    pool = lambda s, e: {"start": s, "end": e}  # noqa: E731
    assert a.check_pools(net, [pool("10.0.0.2", "10.0.0.9"), pool("10.0.0.10", "10.0.0.20")], "10.0.0.1") is None
    assert "overlap" in a.check_pools(net, [pool("10.0.0.2", "10.0.0.10"), pool("10.0.0.10", "10.0.0.20")], None)
    assert a.check_pools(net, [pool("10.0.0.1", "10.0.0.5")], "10.0.0.1") == "gateway"
    assert "usable" in a.check_pools(net, [pool("10.0.0.250", "10.0.0.255")], None)
    assert "after" in a.check_pools(net, [pool("10.0.0.9", "10.0.0.2")], None)
    assert "IPv4" in a.check_pools(net, [pool("fd00::1", "fd00::2")], None)


def test_pick_ip_takes_from_the_lowest_free_window():
    ranges = [(10, 12), (20, 100)]
    used = {10, 11}
    assert a.pick_ip(ranges, used, window=1) == 12
    picks = {a.pick_ip(ranges, used, window=4, rng=random.Random(i)) for i in range(50)}
    assert picks == {12, 20, 21, 22}
    assert a.pick_ip([(1, 2)], {1, 2}) is None


def test_eui64_matches_rfc4291_example():
    assert a.eui64(N("fd00::/64"), "fa:16:3e:11:22:33") == "fd00::f816:3eff:fe11:2233"


def test_first_free_and_mtu():
    assert a.first_free([(1, 3), (10, 12)], {1, 2, 3, 10}) == 11
    assert a.first_free([(1, 2)], {1, 2}) is None
    assert a.network_mtu("vxlan", 1500) == 1450 and a.network_mtu("vlan", 9000) == 9000
    assert a.network_mtu("vxlan", 1500, overlay_ip_version=6) == 1430
    assert a.network_mtu("flat", 1500, overlay_ip_version=6) == 1500
