"""The ``HostDriver`` contract: one suite, run against ``FakeHost`` (tests/unit) and
``NetlinkHost`` in a throwaway namespace (tests/functional).

A test module subclasses ``HostContract`` and provides two fixtures:
``host`` (a fresh, empty namespace's driver) and ``peer_ns`` (a tuple ``(name, driver)``
of a second namespace, for veth peers). Only addresses from 198.51.100.0/24,
203.0.113.0/24 and 10.0.0.0/8 are used.
"""

from __future__ import annotations

import time

import pytest

from lbtap.drivers.host import errors
from lbtap.drivers.host.base import FdbEntry, LinkEvent, Route, VxlanInfo

ZERO = "00:00:00:00:00:00"


def wait_for(pred, timeout: float = 30.0):
    """Poll ``pred`` (events may arrive from another thread) until truthy, or until a
    deadline generous enough for a loaded machine (it returns as soon as ``pred`` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.005)


def names(host) -> set[str]:
    return {link.name for link in host.list_links()}


def global_addrs(host, ifname=None) -> list[tuple[str, str, bool]]:
    return [(a.ifname, a.cidr, a.secondary) for a in host.list_addresses(ifname) if a.scope == "global"]


class HostContract:
    # ------------------------------------------------------------------ links
    def test_fresh_namespace_has_only_loopback(self, host):
        links = host.list_links()
        assert [link.name for link in links] == ["lo"]
        assert links[0].kind == "" and links[0].up is False

    def test_create_bridge_is_idempotent(self, host):
        host.create_bridge("brq1", mtu=1400)
        host.create_bridge("brq1")
        link = host.get_link("brq1")
        assert link.kind == "bridge" and link.mtu == 1400 and link.master is None
        assert [link.name for link in host.list_links()].count("brq1") == 1

    def test_create_conflicting_kind_raises_already_exists(self, host):
        host.create_bridge("brq1")
        with pytest.raises(errors.AlreadyExists):
            host.create_tap("brq1")
        host.create_tap("tap1")
        with pytest.raises(errors.AlreadyExists):
            host.create_bridge("tap1")
        with pytest.raises(errors.AlreadyExists):
            host.create_veth("tap1", "tap1p")

    def test_get_missing_link_is_none_and_delete_missing_is_success(self, host):
        assert host.get_link("nope0") is None
        host.delete_link("nope0")
        host.create_tap("tap1")
        host.delete_link("tap1")
        host.delete_link("tap1")
        assert "tap1" not in names(host)

    def test_invalid_names_are_invalid_argument(self, host):
        with pytest.raises(errors.InvalidArgument):
            host.create_bridge("x" * 16)
        with pytest.raises(errors.InvalidArgument):
            host.create_tap("a/b")

    def test_tap_reports_kind_tun_with_mac_and_mtu(self, host):
        host.create_tap("tap1", mac="FA:16:3E:00:00:01", mtu=1450)
        host.create_tap("tap1", mac="fa:16:3e:00:00:01", mtu=1450)
        link = host.get_link("tap1")
        assert (link.kind, link.mac, link.mtu, link.up, link.carrier) == ("tun", "fa:16:3e:00:00:01", 1450, False, False)

    def test_set_link_up_mtu_mac(self, host):
        host.create_tap("tap1")
        host.set_link("tap1", up=True, mtu=1300, mac="02:11:22:33:44:55")
        link = host.get_link("tap1")
        assert (link.up, link.mtu, link.mac) == (True, 1300, "02:11:22:33:44:55")
        assert link.carrier is False  # a TAP nobody has opened has no carrier
        host.set_link("tap1", up=False)
        assert host.get_link("tap1").up is False

    def test_set_link_missing_is_not_found(self, host):
        with pytest.raises(errors.NotFound):
            host.set_link("nope0", up=True)

    def test_set_link_bad_mtu_is_invalid(self, host):
        host.create_tap("tap1")
        with pytest.raises(errors.InvalidArgument):
            host.set_link("tap1", mtu=10)

    # ------------------------------------------------------------------ bridges
    def test_enslave_and_release(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1")
        host.enslave("tap1", "brq1")
        host.enslave("tap1", "brq1")
        assert host.get_link("tap1").master == "brq1"
        host.release("tap1")
        host.release("tap1")
        assert host.get_link("tap1").master is None
        host.release("nope0")

    def test_enslave_missing_device_or_bridge_is_not_found(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1")
        with pytest.raises(errors.NotFound):
            host.enslave("nope0", "brq1")
        with pytest.raises(errors.NotFound):
            host.enslave("tap1", "nope1")

    def test_enslave_bridge_into_bridge_is_refused(self, host):
        host.create_bridge("brq1")
        host.create_bridge("brq2")
        with pytest.raises(errors.InvalidArgument):
            host.enslave("brq2", "brq1")
        assert host.get_link("brq2").master is None

    def test_enslave_into_non_bridge_is_not_supported(self, host):
        host.create_tap("tap1")
        host.create_tap("tap2")
        with pytest.raises(errors.NotSupported):
            host.enslave("tap1", "tap2")

    def test_enslave_moves_between_bridges(self, host):
        host.create_bridge("brq1")
        host.create_bridge("brq2")
        host.create_tap("tap1")
        host.enslave("tap1", "brq1")
        host.enslave("tap1", "brq2")
        assert host.get_link("tap1").master == "brq2"

    def test_deleting_bridge_releases_ports(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1")
        host.create_tap("tap2")
        host.enslave("tap1", "brq1")
        host.enslave("tap2", "brq1")
        host.delete_link("brq1")
        assert host.get_link("tap1").master is None
        assert host.get_link("tap2").master is None

    def test_bridge_mtu_follows_ports_unless_set(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1", mtu=1400)
        host.enslave("tap1", "brq1")
        assert host.get_link("brq1").mtu == 1400
        host.create_bridge("brq2", mtu=1450)  # a creation MTU is only a default ...
        host.create_tap("tap2", mtu=1400)
        host.enslave("tap2", "brq2")
        assert host.get_link("brq2").mtu == 1400
        host.create_bridge("brq3")
        host.set_link("brq3", mtu=1450)  # ... set_link pins it
        host.create_tap("tap3", mtu=1400)
        host.enslave("tap3", "brq3")
        assert host.get_link("brq3").mtu == 1450

    # ------------------------------------------------------------------ veth, vxlan, vlan
    def test_veth_pair_and_delete_removes_both(self, host):
        host.create_veth("tap1", "tap1g", mac="02:00:00:00:01:01", peer_mac="02:00:00:00:01:02", mtu=1400)
        host.create_veth("tap1", "tap1g")
        a, b = host.get_link("tap1"), host.get_link("tap1g")
        assert (a.kind, b.kind) == ("veth", "veth")
        assert (a.mac, b.mac, a.mtu, b.mtu) == ("02:00:00:00:01:01", "02:00:00:00:01:02", 1400, 1400)
        assert a.peer_index == b.index and b.peer_index == a.index
        host.set_link("tap1", up=True)
        assert host.get_link("tap1").carrier is False
        host.set_link("tap1g", up=True)
        assert wait_for(lambda: host.get_link("tap1").carrier)
        host.delete_link("tap1g")
        assert not {"tap1", "tap1g"} & names(host)

    def test_veth_peer_name_taken_is_already_exists(self, host):
        host.create_tap("tap1g")
        with pytest.raises(errors.AlreadyExists):
            host.create_veth("tap1", "tap1g")
        assert host.get_link("tap1") is None

    def test_veth_peer_into_other_namespace(self, host, peer_ns):
        ns_name, other = peer_ns
        host.create_veth("tap1", "eth0", peer_netns=ns_name)
        assert host.get_link("tap1").kind == "veth"
        assert host.get_link("eth0") is None
        assert other.get_link("eth0").kind == "veth"
        host.delete_link("tap1")
        assert wait_for(lambda: other.get_link("eth0") is None)

    def test_veth_peer_into_missing_namespace_is_not_found(self, host):
        with pytest.raises(errors.NotFound):
            host.create_veth("tap1", "eth0", peer_netns="lbtt-missing-ns")

    def test_vxlan_create_idempotent_and_reported(self, host):
        info = VxlanInfo(vni=1001, local="10.0.0.1", port=4789, learning=False)
        host.create_vxlan("vxlan-1001", info)
        host.create_vxlan("vxlan-1001", info)
        link = host.get_link("vxlan-1001")
        assert link.kind == "vxlan" and link.vxlan == info and link.mtu == 1500

    def test_vxlan_with_group_and_dev(self, host):
        host.create_veth("uplink0", "uplink0p", mtu=1500)
        info = VxlanInfo(vni=7, local="10.0.0.1", group="239.1.1.1", dev="uplink0", port=8472, learning=True)
        host.create_vxlan("vxlan-7", info)
        link = host.get_link("vxlan-7")
        assert link.vxlan == info
        assert link.mtu == 1450  # underlay MTU minus the VXLAN/IPv4 headers

    def test_vxlan_conflicts_are_already_exists(self, host):
        host.create_vxlan("vxlan-5", VxlanInfo(vni=5, local="10.0.0.1"))
        with pytest.raises(errors.AlreadyExists):
            host.create_vxlan("vxlan-5", VxlanInfo(vni=6, local="10.0.0.1"))
        with pytest.raises(errors.AlreadyExists):  # same VNI, port and local IP
            host.create_vxlan("vxlan-5b", VxlanInfo(vni=5, local="10.0.0.1"))

    def test_vxlan_bad_vni_is_invalid_argument(self, host):
        with pytest.raises(errors.InvalidArgument):
            host.create_vxlan("vxlan-big", VxlanInfo(vni=2**24))
        assert host.get_link("vxlan-big") is None

    def test_vxlan_missing_underlay_is_not_found(self, host):
        with pytest.raises(errors.NotFound):
            host.create_vxlan("vxlan-9", VxlanInfo(vni=9, dev="nope0"))

    def test_vlan_missing_parent_is_not_found(self, host):
        with pytest.raises(errors.NotFound):
            host.create_vlan("nope0.5", "nope0", 5)

    # ------------------------------------------------------------------ addresses
    def test_add_address_idempotent_and_listed(self, host):
        host.create_bridge("brq1")
        host.add_address("brq1", "198.51.100.5/24")
        host.add_address("brq1", "198.51.100.5/24")
        host.add_address("brq1", "2001:db8::5/64")
        assert global_addrs(host, "brq1") == [
            ("brq1", "198.51.100.5/24", False),
            ("brq1", "2001:db8::5/64", False),
        ]

    def test_add_address_missing_link_is_not_found(self, host):
        with pytest.raises(errors.NotFound):
            host.add_address("nope0", "198.51.100.5/24")

    def test_bad_address_is_invalid_argument(self, host):
        host.create_bridge("brq1")
        with pytest.raises(errors.InvalidArgument):
            host.add_address("brq1", "300.1.1.1/24")

    def test_same_address_on_two_links(self, host):
        """The seed's fault state: the NIC and the bridge both hold the address."""
        host.create_bridge("brq1")
        host.create_veth("nic0", "nic0p")
        host.add_address("nic0", "198.51.100.5/24")
        host.add_address("brq1", "198.51.100.5/24")
        assert set(global_addrs(host)) == {("nic0", "198.51.100.5/24", False), ("brq1", "198.51.100.5/24", False)}
        host.delete_address("nic0", "198.51.100.5/24")
        assert global_addrs(host) == [("brq1", "198.51.100.5/24", False)]

    def test_delete_address_missing_is_success(self, host):
        host.create_bridge("brq1")
        host.delete_address("brq1", "198.51.100.5/24")
        host.delete_address("nope0", "198.51.100.5/24")

    def test_second_address_in_subnet_is_secondary_and_dies_with_primary(self, host):
        host.create_bridge("brq1")
        host.add_address("brq1", "198.51.100.5/24")
        host.add_address("brq1", "198.51.100.6/24")
        assert global_addrs(host, "brq1") == [("brq1", "198.51.100.5/24", False), ("brq1", "198.51.100.6/24", True)]
        host.delete_address("brq1", "198.51.100.5/24")
        assert global_addrs(host, "brq1") == []

    def test_promote_secondaries_keeps_them(self, host):
        host.create_bridge("brq1")
        host.set_promote_secondaries("brq1")
        host.add_address("brq1", "198.51.100.5/24")
        host.add_address("brq1", "198.51.100.6/24")
        host.delete_address("brq1", "198.51.100.5/24")
        assert global_addrs(host, "brq1") == [("brq1", "198.51.100.6/24", False)]

    def test_promote_secondaries_missing_link_is_not_found(self, host):
        with pytest.raises(errors.NotFound):
            host.set_promote_secondaries("nope0")

    def test_link_down_drops_ipv6_but_keeps_ipv4(self, host):
        host.create_bridge("brq1")
        host.set_link("brq1", up=True)
        host.add_address("brq1", "198.51.100.5/24")
        host.add_address("brq1", "2001:db8::5/64")
        host.set_link("brq1", up=False)  # keep_addr_on_down=0
        assert global_addrs(host) == [("brq1", "198.51.100.5/24", False)]

    def test_loopback_gets_its_addresses_when_up(self, host):
        host.set_link("lo", up=True)
        got = {(a.cidr, a.scope) for a in host.list_addresses("lo")}
        assert got == {("127.0.0.1/8", "host"), ("::1/128", "host")}

    def test_loopback_cannot_be_enslaved(self, host):
        host.create_bridge("brq1")
        with pytest.raises(errors.InvalidArgument):
            host.enslave("lo", "brq1")

    def test_tap_mtu_limit(self, host):
        host.create_tap("tap1")
        host.set_link("tap1", mtu=65521)
        with pytest.raises(errors.InvalidArgument):
            host.set_link("tap1", mtu=65535)

    def test_delete_address_needs_exact_prefix(self, host):
        host.create_bridge("brq1")
        host.add_address("brq1", "198.51.100.5/24")
        host.delete_address("brq1", "198.51.100.5/16")
        assert global_addrs(host) == [("brq1", "198.51.100.5/24", False)]

    def test_route_delete_without_gateway_matches_any(self, host):
        self._uplink(host)
        host.add_route(Route("10.20.0.0/16", "brq1", gateway="198.51.100.9"))
        host.delete_route(Route("10.20.0.0/16", "brq1"))
        assert host.list_routes() == []

    def test_delete_link_removes_its_addresses(self, host):
        host.create_tap("tap1")
        host.add_address("tap1", "203.0.113.1/24")
        host.delete_link("tap1")
        host.create_tap("tap1")
        assert global_addrs(host) == []

    # ------------------------------------------------------------------ routes
    def _uplink(self, host, name="brq1", cidr="198.51.100.5/24"):
        host.create_bridge(name)
        host.set_link(name, up=True)
        host.add_address(name, cidr)

    def test_route_add_idempotent_list_delete(self, host):
        self._uplink(host)
        gw = Route("default", "brq1", gateway="198.51.100.1")
        net = Route("10.20.0.0/16", "brq1", gateway="198.51.100.2", metric=100)
        for r in (gw, gw, net, net):
            host.add_route(r)
        assert host.list_routes("brq1") == [
            Route("default", "brq1", gateway="198.51.100.1"),
            Route("10.20.0.0/16", "brq1", gateway="198.51.100.2", metric=100),
        ]
        host.delete_route(gw)
        host.delete_route(gw)
        assert host.list_routes() == [net]

    def test_route_conflict_is_already_exists(self, host):
        self._uplink(host)
        self._uplink(host, "brq2", "203.0.113.5/24")
        host.add_route(Route("default", "brq1", gateway="198.51.100.1"))
        with pytest.raises(errors.AlreadyExists):
            host.add_route(Route("default", "brq2", gateway="203.0.113.1"))
        host.add_route(Route("default", "brq2", gateway="203.0.113.1", metric=200))  # other metric: fine
        assert len(host.list_routes()) == 2

    def test_route_needs_link(self, host):
        with pytest.raises(errors.NotFound):
            host.add_route(Route("10.20.0.0/16", "nope0"))
        host.delete_route(Route("10.20.0.0/16", "nope0"))

    def test_route_needs_link_up_and_gateway_on_link(self, host):
        host.create_bridge("brq1")
        host.add_address("brq1", "198.51.100.5/24")
        with pytest.raises(errors.HostError):
            host.add_route(Route("10.20.0.0/16", "brq1"))
        with pytest.raises(errors.HostError):  # the kernel says ENETUNREACH or EINVAL
            host.add_route(Route("default", "brq1", gateway="198.51.100.1"))
        host.set_link("brq1", up=True)
        with pytest.raises(errors.HostError):
            host.add_route(Route("default", "brq1", gateway="10.99.0.1"))
        host.add_route(Route("default", "brq1", gateway="198.51.100.1"))
        assert len(host.list_routes()) == 1

    def test_bad_route_destination_is_invalid(self, host):
        self._uplink(host)
        with pytest.raises(errors.InvalidArgument):
            host.add_route(Route("10.20.0.1/16", "brq1"))

    def test_routes_flushed_when_link_goes_down_or_is_deleted(self, host):
        self._uplink(host)
        host.add_route(Route("default", "brq1", gateway="198.51.100.1"))
        host.set_link("brq1", up=False)
        assert host.list_routes() == []
        host.set_link("brq1", up=True)
        host.add_route(Route("default", "brq1", gateway="198.51.100.1"))
        host.delete_link("brq1")
        assert host.list_routes() == []

    def test_routes_flushed_when_last_ipv4_address_goes(self, host):
        self._uplink(host)
        host.add_route(Route("10.20.0.0/16", "brq1", gateway="198.51.100.1"))
        host.delete_address("brq1", "198.51.100.5/24")
        assert host.list_routes() == []

    def test_ip_move_from_nic_to_bridge(self, host):
        """The flat-network move the agent performs, in the order the seed uses."""
        host.create_veth("nic0", "nic0p")
        host.set_link("nic0", up=True)
        host.add_address("nic0", "198.51.100.5/24")
        host.add_route(Route("default", "nic0", gateway="198.51.100.1"))
        self._uplink(host, "brq1", "198.51.100.5/24")
        host.enslave("nic0", "brq1")
        host.add_route(Route("default", "brq1", gateway="198.51.100.1", metric=1))
        host.delete_route(Route("default", "nic0", gateway="198.51.100.1"))
        host.delete_address("nic0", "198.51.100.5/24")
        assert global_addrs(host) == [("brq1", "198.51.100.5/24", False)]
        assert host.list_routes() == [Route("default", "brq1", gateway="198.51.100.1", metric=1)]

    def test_ipv6_route_default_metric(self, host):
        host.create_veth("nic0", "nic0p")
        host.set_link("nic0", up=True)
        host.set_link("nic0p", up=True)
        host.add_address("nic0", "2001:db8::5/64")
        host.add_route(Route("2001:db8:5::/48", "nic0", gateway="2001:db8::1", family=6))
        assert host.list_routes("nic0") == [Route("2001:db8:5::/48", "nic0", gateway="2001:db8::1", metric=1024, family=6)]
        host.delete_route(Route("2001:db8:5::/48", "nic0", gateway="2001:db8::1", family=6))
        assert host.list_routes("nic0") == []

    # ------------------------------------------------------------------ FDB
    def test_bridge_port_mac_is_a_permanent_entry(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1", mac="02:00:00:00:00:01")
        host.enslave("tap1", "brq1")
        assert FdbEntry("02:00:00:00:00:01", "tap1", master="brq1", permanent=True) in host.list_fdb(master="brq1")
        host.release("tap1")
        assert host.list_fdb(master="brq1") == []

    def test_bridge_fdb_add_move_delete(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1", mac="02:00:00:00:00:01")
        host.create_tap("tap2", mac="02:00:00:00:00:02")
        host.enslave("tap1", "brq1")
        host.enslave("tap2", "brq1")
        e = FdbEntry("02:aa:00:00:00:01", "tap1", master="brq1")
        host.add_fdb(e)
        host.add_fdb(e)
        assert [x for x in host.list_fdb(master="brq1") if x.mac == e.mac] == [e]
        host.add_fdb(FdbEntry("02:aa:00:00:00:01", "tap2", master="brq1"))
        assert [x.ifname for x in host.list_fdb(master="brq1") if x.mac == e.mac] == ["tap2"]
        host.delete_fdb(FdbEntry("02:aa:00:00:00:01", "tap2", master="brq1"))
        host.delete_fdb(FdbEntry("02:aa:00:00:00:01", "tap2", master="brq1"))
        assert [x for x in host.list_fdb() if x.mac == e.mac] == []

    def test_bridge_fdb_on_non_port_is_not_supported(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1")
        with pytest.raises(errors.NotSupported):
            host.add_fdb(FdbEntry("02:aa:00:00:00:01", "tap1", master="brq1"))
        with pytest.raises(errors.NotFound):
            host.add_fdb(FdbEntry("02:aa:00:00:00:01", "nope0", master="brq1"))

    def test_vxlan_flood_list_and_unicast_entries(self, host):
        host.create_vxlan("vxlan-5", VxlanInfo(vni=5, local="10.0.0.1"))
        for dst in ("10.0.0.7", "10.0.0.8", "10.0.0.8"):
            host.add_fdb(FdbEntry(ZERO, "vxlan-5", dst=dst))
        host.add_fdb(FdbEntry("02:bb:00:00:00:01", "vxlan-5", dst="10.0.0.7"))
        host.add_fdb(FdbEntry("02:bb:00:00:00:01", "vxlan-5", dst="10.0.0.9"))  # moved
        got = sorted((e.mac, e.dst) for e in host.list_fdb("vxlan-5"))
        assert got == [(ZERO, "10.0.0.7"), (ZERO, "10.0.0.8"), ("02:bb:00:00:00:01", "10.0.0.9")]
        host.delete_fdb(FdbEntry(ZERO, "vxlan-5", dst="10.0.0.7"))
        assert sorted(e.dst for e in host.list_fdb("vxlan-5") if e.mac == ZERO) == ["10.0.0.8"]

    def test_delete_link_removes_its_fdb(self, host):
        host.create_bridge("brq1")
        host.create_tap("tap1")
        host.enslave("tap1", "brq1")
        host.add_fdb(FdbEntry("02:aa:00:00:00:01", "tap1", master="brq1"))
        host.delete_link("tap1")
        assert host.list_fdb() == []

    # ------------------------------------------------------------------ stats, events
    def test_link_stats_cover_every_link(self, host):
        host.create_tap("tap1")
        stats = host.link_stats()
        assert set(stats) == names(host)
        assert stats["tap1"].rx_packets == 0 and stats["tap1"].tx_bytes == 0

    def test_watch_links_new_change_del(self, host):
        events: list[LinkEvent] = []
        stop = host.watch_links(events.append)
        try:
            host.create_bridge("brq1")
            host.create_tap("tap1")
            assert wait_for(lambda: any(e.kind == "new" and e.name == "tap1" for e in events))
            host.enslave("tap1", "brq1")
            assert wait_for(lambda: any(e.kind == "new" and e.link and e.link.master == "brq1" for e in events))
            host.delete_link("tap1")
            assert wait_for(lambda: any(e.kind == "del" and e.name == "tap1" for e in events))
            first_new = next(e for e in events if e.name == "tap1")
            assert first_new.link.kind == "tun"
        finally:
            stop()
        n = len(events)
        host.create_tap("tap2")
        time.sleep(0.05)
        assert len(events) == n  # nothing after stop()
