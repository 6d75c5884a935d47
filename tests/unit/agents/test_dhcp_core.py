"""DHCP agent decisions: which casts make work, and what a network needs."""

from __future__ import annotations

from lbtap.agents.dhcp_core import DhcpIntents, dhcp_ips, plan_network, port_cidrs, port_matches

NET = "11111111-1111-1111-1111-111111111111"
SUB4 = {"id": "s4", "cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.1", "enable_dhcp": True}
SUB4_OFF = {**SUB4, "id": "s4off", "cidr": "10.1.0.0/24", "enable_dhcp": False}
SLAAC = {"id": "s6", "cidr": "fd00::/64", "ip_version": 6, "enable_dhcp": True,
         "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"}


def info(*subnets, ports=(), up=True, mtu=1450):
    return {"id": NET, "admin_state_up": up, "mtu": mtu, "subnets": list(subnets), "ports": list(ports)}


def test_first_take_is_a_full_sync_then_only_what_casts_asked():
    i = DhcpIntents()
    assert i.take() == (True, set(), set())
    assert i.take() == (False, set(), set())
    assert i.on_cast("subnet_create_end", {"network_id": NET, "subnet_id": "s"}, served=set())
    assert i.take() == (False, {NET}, set())


def test_port_casts_of_networks_not_served_are_dropped():
    i = DhcpIntents(full_sync=False)
    assert not i.on_cast("port_create_end", {"network_id": NET, "port_id": "p"}, served=set())
    assert i.take() == (False, set(), set())
    assert i.on_cast("port_create_end", {"network_id": NET, "port_id": "p"}, served={NET})
    assert i.on_cast("port_delete_end", {"network_id": NET, "port_id": "q"}, served={NET})
    assert i.port_events == 2
    assert i.take() == (False, {NET}, set()), "a burst of port casts is one dirty network"


def test_network_delete_wins_over_earlier_dirt_and_a_later_create_revives():
    i = DhcpIntents(full_sync=False)
    i.on_cast("port_update_end", {"network_id": NET}, served={NET})
    i.on_cast("network_delete_end", {"network_id": NET}, served={NET})
    assert i.take() == (False, set(), {NET})
    i.on_cast("network_delete_end", {"network_id": NET}, served={NET})
    i.on_cast("network_create_end", {"network_id": NET}, served=set())
    assert i.take() == (False, {NET}, set())


def test_casts_without_network_or_unknown_are_ignored():
    i = DhcpIntents(full_sync=False)
    assert not i.on_cast("subnet_create_end", {}, served=set())
    assert not i.on_cast("agent_updated", {"network_id": NET}, served={NET})


def test_plan_serves_only_networks_with_a_dhcp_subnet():
    assert plan_network(None).action == "teardown"
    assert plan_network(info()).action == "teardown"
    assert plan_network(info(SUB4_OFF)).action == "teardown"
    assert plan_network(info(SLAAC)).action == "teardown", "SLAAC is served by RAs, not dnsmasq"
    assert plan_network(info(SUB4, up=False)).action == "teardown"
    p = plan_network(info(SUB4, SUB4_OFF, mtu=1450))
    assert p.action == "serve" and p.network.mtu == 1450
    assert [s.id for s in p.network.dhcp_subnets] == ["s4"]


def test_dhcp_port_must_cover_exactly_the_served_subnets():
    net = plan_network(info(SUB4, SUB4_OFF)).network
    good = {"id": "p", "fixed_ips": [{"subnet_id": "s4", "ip_address": "10.0.0.2"}]}
    assert port_matches(good, net)
    assert not port_matches(None, net)
    assert not port_matches({"id": "p", "fixed_ips": []}, net), "subnet added: port needs an address"
    extra = {"id": "p", "fixed_ips": [*good["fixed_ips"], {"subnet_id": "gone", "ip_address": "10.9.0.2"}]}
    assert not port_matches(extra, net), "subnet removed: port must drop its address"
    assert port_cidrs(extra, net) == {"10.0.0.2/24"}
    assert dhcp_ips({"fixed_ips": [{"ip_address": "fd00::2"}, {"ip_address": "10.0.0.2"}]}) == ("10.0.0.2", "fd00::2")
