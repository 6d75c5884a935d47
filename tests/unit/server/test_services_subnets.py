"""Subnet service: CIDR, gateway and pool rules, IPv6, in-use and visibility."""

from __future__ import annotations

import pytest

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.services import ListQuery, Services
from tests.support import fresh_db_url, migrated_engine

ADMIN = Context.admin()
ALICE = Context(project_id="alice", roles=frozenset({"member"}))
BOB = Context(project_id="bob", roles=frozenset({"member"}))


@pytest.fixture
def svc(tmp_path):
    return Services(migrated_engine(fresh_db_url("sqlite", tmp_path)), Settings())


@pytest.fixture
def net(svc):
    return svc.create(ALICE, "networks", {"name": "n"})


def sub(svc, net, cidr="10.0.0.0/24", ctx=ALICE, **kw):
    version = 6 if ":" in cidr else 4
    return svc.create(ctx, "subnets", {"network_id": net["id"], "ip_version": version, "cidr": cidr, **kw})


def test_defaults_gateway_first_host_and_pool_rest(svc, net):
    s = sub(svc, net)
    assert s["gateway_ip"] == "10.0.0.1"
    assert s["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert (s["enable_dhcp"], s["dns_nameservers"], s["host_routes"], s["subnetpool_id"]) == (True, [], [], None)
    assert s["project_id"] == "alice"
    assert svc.get(ALICE, "networks", net["id"])["subnets"] == [s["id"]]


def test_gateway_in_middle_splits_default_pool(svc, net):
    s = sub(svc, net, gateway_ip="10.0.0.100")
    assert s["allocation_pools"] == [{"start": "10.0.0.1", "end": "10.0.0.99"},
                                     {"start": "10.0.0.101", "end": "10.0.0.254"}]


def test_no_gateway(svc, net):
    s = sub(svc, net, gateway_ip=None)
    assert s["gateway_ip"] is None and s["allocation_pools"] == [{"start": "10.0.0.1", "end": "10.0.0.254"}]


@pytest.mark.parametrize("kw, exc", [
    ({"cidr": "10.0.0.5/24"}, errors.InvalidInput),
    ({"cidr": "10.0.0.0/33"}, errors.InvalidInput),
    ({"cidr": "banana"}, errors.InvalidInput),
    ({"ip_version": 6}, errors.InvalidInput),
    ({"gateway_ip": "10.1.0.1"}, errors.InvalidInput),
    ({"gateway_ip": "10.0.0.255"}, errors.InvalidInput),
    ({"allocation_pools": [{"start": "10.0.0.10", "end": "10.0.0.20"}, {"start": "10.0.0.15", "end": "10.0.0.30"}]},
     errors.InvalidInput),
    ({"allocation_pools": [{"start": "10.0.0.20", "end": "10.0.0.10"}]}, errors.InvalidInput),
    ({"allocation_pools": [{"start": "10.0.0.0", "end": "10.0.0.10"}]}, errors.InvalidInput),
    ({"allocation_pools": [{"start": "10.0.1.1", "end": "10.0.1.10"}]}, errors.InvalidInput),
    ({"allocation_pools": [{"start": "10.0.0.1", "end": "10.0.0.10"}]}, errors.GatewayConflictWithAllocationPools),
    ({"dns_nameservers": ["not-an-ip"]}, errors.InvalidInput),
    ({"host_routes": [{"destination": "10.2.0.0/16"}]}, errors.InvalidInput),
    ({"ipv6_address_mode": "slaac"}, errors.InvalidInput),
    ({"subnetpool_id": "8c0a6d8e-7a2b-4a53-9d39-1b6a5d0b6b38"}, errors.InvalidInput),
])
def test_bad_subnets_rejected_and_nothing_created(svc, net, kw, exc):
    body = {"network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24", **kw}
    with pytest.raises(exc):
        svc.create(ALICE, "subnets", body)
    assert svc.list(ADMIN, "subnets", ListQuery()).items == []


def test_required_attributes(svc, net):
    with pytest.raises(errors.BadRequest):
        svc.create(ALICE, "subnets", {"network_id": net["id"], "ip_version": 4})
    with pytest.raises(errors.NetworkNotFound):
        svc.create(ALICE, "subnets", {"network_id": "8c0a6d8e-7a2b-4a53-9d39-1b6a5d0b6b38",
                                      "ip_version": 4, "cidr": "10.0.0.0/24"})


def test_overlapping_subnets_on_one_network_rejected_bulk_is_atomic(svc, net):
    sub(svc, net)
    with pytest.raises(errors.InvalidInput):
        sub(svc, net, "10.0.0.128/25")
    bodies = [{"network_id": net["id"], "ip_version": 4, "cidr": "10.1.0.0/24"},
              {"network_id": net["id"], "ip_version": 4, "cidr": "10.1.0.0/16"}]
    with pytest.raises(errors.InvalidInput):
        svc.create_bulk(ALICE, "subnets", bodies)
    assert len(svc.list(ADMIN, "subnets", ListQuery()).items) == 1
    other = svc.create(ALICE, "networks", {})
    assert sub(svc, other)["cidr"] == "10.0.0.0/24"  # other networks may overlap


def test_ipv6_subnets(svc, net):
    s = sub(svc, net, "fd00:1::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    assert s["gateway_ip"] == "fd00:1::1" and s["ip_version"] == 6
    assert s["allocation_pools"] == [{"start": "fd00:1::2", "end": "fd00:1::ffff:ffff:ffff:ffff"}]
    with pytest.raises(errors.InvalidInput):
        sub(svc, net, "fd00:2::/64", ipv6_ra_mode="slaac", ipv6_address_mode="dhcpv6-stateful")


def test_update_gateway_pools_dns(svc, net):
    s = sub(svc, net)
    with pytest.raises(errors.GatewayConflictWithAllocationPools):
        svc.update(ALICE, "subnets", s["id"], {"gateway_ip": "10.0.0.50"})
    up = svc.update(ALICE, "subnets", s["id"], {
        "allocation_pools": [{"start": "10.0.0.100", "end": "10.0.0.200"}], "gateway_ip": "10.0.0.50",
        "dns_nameservers": ["10.0.0.53"], "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.9"}],
        "enable_dhcp": False})
    assert up["gateway_ip"] == "10.0.0.50" and up["revision_number"] == 1
    assert up["allocation_pools"] == [{"start": "10.0.0.100", "end": "10.0.0.200"}]
    assert up["host_routes"] == [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.9"}]
    with pytest.raises(errors.BadRequest):
        svc.update(ALICE, "subnets", s["id"], {"cidr": "10.0.0.0/25"})
    assert svc.get(ALICE, "subnets", s["id"]) == up


def test_subnet_in_use_and_dhcp_port_does_not_block(svc, net):
    s = sub(svc, net)
    dhcp = svc.create(ADMIN, "ports", {"network_id": net["id"], "device_owner": "network:dhcp"})
    vm = svc.create(ALICE, "ports", {"network_id": net["id"], "device_owner": "compute:nova"})
    with pytest.raises(errors.SubnetInUse):
        svc.delete(ALICE, "subnets", s["id"])
    svc.delete(ALICE, "ports", vm["id"])
    svc.delete(ALICE, "subnets", s["id"])
    assert svc.get(ADMIN, "ports", dhcp["id"])["fixed_ips"] == []


def test_visibility_of_subnets_follows_networks(svc, net):
    mine = sub(svc, net)
    shared_net = svc.create(ADMIN, "networks", {"shared": True, "project_id": "ops"})
    shared = sub(svc, shared_net, "10.5.0.0/24", ctx=ADMIN)
    assert {s["id"] for s in svc.list(BOB, "subnets", ListQuery()).items} == {shared["id"]}
    with pytest.raises(errors.SubnetNotFound):
        svc.get(BOB, "subnets", mine["id"])
    with pytest.raises(errors.PolicyNotAuthorized):
        sub(svc, shared_net, "10.6.0.0/24", ctx=BOB)
    with pytest.raises(errors.NetworkNotFound):
        sub(svc, net, "10.7.0.0/24", ctx=BOB)
