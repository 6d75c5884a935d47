"""Routers, floating IPs, the DHCP RPC and ``sync_routers`` on SQLite (issue 7)."""

from __future__ import annotations

import pytest

from lbtap.config import Settings
from lbtap.drivers.router import Router as RouterModel
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.dhcp_ext import DhcpRpc, dhcp_device_id
from lbtap.server.l3_ext import L3Rpc
from lbtap.server.notifier import RecordingNotifier
from lbtap.server.services import ListQuery, Services
from tests.support import FakeClock, fresh_db_url, migrated_engine

ADMIN = Context.admin()
ALICE = Context(project_id="alice", roles=frozenset({"member"}))


class Recorder(RecordingNotifier):
    def router_updated(self, router: dict) -> None:
        self.calls.append(("router_updated", (router,)))

    def router_deleted(self, router: dict) -> None:
        self.calls.append(("router_deleted", (router,)))

    def routers(self, method: str = "router_updated") -> list[str]:
        return [args[0]["id"] for m, args in self.calls if m == method]


class World:
    def __init__(self, tmp_path):
        self.engine = migrated_engine(fresh_db_url("sqlite", tmp_path))
        self.notifier = Recorder()
        self.svc = Services(self.engine, Settings(), notifier=self.notifier, clock=FakeClock())
        self.ext = self.svc.create(ADMIN, "networks", {"name": "public", "router:external": True})
        self.ext_sub = self.svc.create(ADMIN, "subnets", {
            "network_id": self.ext["id"], "cidr": "203.0.113.0/24", "ip_version": 4, "enable_dhcp": False,
            "allocation_pools": [{"start": "203.0.113.100", "end": "203.0.113.150"}]})
        self.net = self.svc.create(ALICE, "networks", {"name": "a"})
        self.sub = self.svc.create(ALICE, "subnets", {"network_id": self.net["id"], "cidr": "10.0.0.0/24",
                                                      "ip_version": 4})

    def ports(self, **filters):
        q = ListQuery(filters={k: [v] for k, v in filters.items()})
        return self.svc.list(ADMIN, "ports", q).items

    @property
    def routers(self):
        return self.svc._svc("routers")


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def test_router_with_gateway_creates_gateway_port_and_notifies(w):
    r = w.svc.create(ALICE, "routers", {"name": "r", "external_gateway_info": {"network_id": w.ext["id"]}})
    gw = r["external_gateway_info"]
    assert gw["network_id"] == w.ext["id"] and gw["enable_snat"] is True
    [port] = w.ports(device_owner="network:router_gateway")
    assert port["device_id"] == r["id"] and port["fixed_ips"] == gw["external_fixed_ips"]
    assert port["status"] == "DOWN"
    assert w.notifier.routers() == [r["id"]]


def test_gateway_must_be_an_external_network(w):
    with pytest.raises(errors.BadRequest):
        w.svc.create(ALICE, "routers", {"external_gateway_info": {"network_id": w.net["id"]}})
    assert w.ports(device_owner="network:router_gateway") == []
    assert w.svc.list(ADMIN, "routers", ListQuery()).items == []


def test_clearing_the_gateway_deletes_its_port_and_snat_toggles_in_place(w):
    r = w.svc.create(ALICE, "routers", {"external_gateway_info": {"network_id": w.ext["id"]}})
    [gw] = w.ports(device_owner="network:router_gateway")
    r2 = w.svc.update(ALICE, "routers", r["id"], {"external_gateway_info": {"network_id": w.ext["id"],
                                                                             "enable_snat": False}})
    assert r2["external_gateway_info"]["enable_snat"] is False
    assert [p["id"] for p in w.ports(device_owner="network:router_gateway")] == [gw["id"]]
    r3 = w.svc.update(ALICE, "routers", r["id"], {"external_gateway_info": None})
    assert r3["external_gateway_info"] is None and w.ports(device_owner="network:router_gateway") == []


def test_interface_takes_the_subnet_gateway_and_blocks_router_delete(w):
    r = w.svc.create(ALICE, "routers", {"name": "r"})
    info = w.routers.add_interface(ALICE, r["id"], {"subnet_id": w.sub["id"]})
    port = w.svc.get(ADMIN, "ports", info["port_id"])
    assert port["device_owner"] == "network:router_interface" and port["device_id"] == r["id"]
    assert port["fixed_ips"] == [{"subnet_id": w.sub["id"], "ip_address": "10.0.0.1"}]
    assert info["subnet_ids"] == [w.sub["id"]] and info["network_id"] == w.net["id"]
    with pytest.raises(errors.BadRequest):  # same subnet twice
        w.routers.add_interface(ALICE, r["id"], {"subnet_id": w.sub["id"]})
    with pytest.raises(errors.Conflict):
        w.svc.delete(ALICE, "routers", r["id"])
    w.routers.remove_interface(ALICE, r["id"], {"subnet_id": w.sub["id"]})
    assert w.ports(device_owner="network:router_interface") == []
    with pytest.raises(errors.NotFound):
        w.routers.remove_interface(ALICE, r["id"], {"subnet_id": w.sub["id"]})
    w.svc.delete(ALICE, "routers", r["id"])
    assert w.notifier.routers("router_deleted") == [r["id"]]


def test_interface_by_port_and_bad_bodies(w):
    r = w.svc.create(ALICE, "routers", {})
    p = w.svc.create(ALICE, "ports", {"network_id": w.net["id"]})
    info = w.routers.add_interface(ALICE, r["id"], {"port_id": p["id"]})
    assert w.svc.get(ADMIN, "ports", p["id"])["device_owner"] == "network:router_interface"
    assert info["port_id"] == p["id"]
    for body in ({}, {"subnet_id": w.sub["id"], "port_id": p["id"]}, "x"):
        with pytest.raises(errors.BadRequest):
            w.routers.add_interface(ALICE, r["id"], body)


def test_extra_routes_need_a_connected_nexthop(w):
    r = w.svc.create(ALICE, "routers", {})
    w.routers.add_interface(ALICE, r["id"], {"subnet_id": w.sub["id"]})
    with pytest.raises(errors.BadRequest):
        w.svc.update(ALICE, "routers", r["id"], {"routes": [{"destination": "10.9.0.0/24", "nexthop": "10.5.0.9"}]})
    with pytest.raises(errors.BadRequest):  # the router's own address
        w.svc.update(ALICE, "routers", r["id"], {"routes": [{"destination": "10.9.0.0/24", "nexthop": "10.0.0.1"}]})
    out = w.svc.update(ALICE, "routers", r["id"], {"routes": [{"destination": "10.9.0.0/24", "nexthop": "10.0.0.9"}]})
    assert out["routes"] == [{"destination": "10.9.0.0/24", "nexthop": "10.0.0.9"}]


def make_nat_world(w):
    r = w.svc.create(ALICE, "routers", {"external_gateway_info": {"network_id": w.ext["id"]}})
    w.routers.add_interface(ALICE, r["id"], {"subnet_id": w.sub["id"]})
    vm = w.svc.create(ALICE, "ports", {"network_id": w.net["id"]})
    return r, vm


def test_floating_ip_port_is_na_and_association_finds_the_router(w):
    r, vm = make_nat_world(w)
    fip = w.svc.create(ALICE, "floatingips", {"floating_network_id": w.ext["id"]})
    assert fip["status"] == "DOWN" and fip["router_id"] is None and fip["port_id"] is None
    [fport] = w.ports(device_owner="network:floatingip")
    assert fport["status"] == "N/A" and fport["device_id"] == fip["id"]
    assert fport["fixed_ips"][0]["ip_address"] == fip["floating_ip_address"]
    w.notifier.calls.clear()
    a = w.svc.update(ALICE, "floatingips", fip["id"], {"port_id": vm["id"]})
    assert a["router_id"] == r["id"] and a["fixed_ip_address"] == vm["fixed_ips"][0]["ip_address"]
    assert a["status"] == "ACTIVE" and w.notifier.routers() == [r["id"]]
    with pytest.raises(errors.Conflict):  # one floating IP per fixed IP and external network
        w.svc.create(ALICE, "floatingips", {"floating_network_id": w.ext["id"], "port_id": vm["id"]})
    with pytest.raises(errors.Conflict):  # the interface is needed by the floating IP
        w.routers.remove_interface(ALICE, r["id"], {"subnet_id": w.sub["id"]})
    d = w.svc.update(ALICE, "floatingips", fip["id"], {"port_id": None})
    assert d["router_id"] is None and d["status"] == "DOWN"
    w.svc.delete(ALICE, "floatingips", fip["id"])
    assert w.ports(device_owner="network:floatingip") == []


def test_floating_ip_without_a_router_path_is_refused_and_leaves_no_port(w):
    vm = w.svc.create(ALICE, "ports", {"network_id": w.net["id"]})
    with pytest.raises(errors.NotFound) as e:
        w.svc.create(ALICE, "floatingips", {"floating_network_id": w.ext["id"], "port_id": vm["id"]})
    assert e.value.type_name == "ExternalGatewayForFloatingIPNotFound"
    assert w.ports(device_owner="network:floatingip") == []
    with pytest.raises(errors.BadRequest):  # not external
        w.svc.create(ALICE, "floatingips", {"floating_network_id": w.net["id"]})


def test_sync_routers_claims_and_has_the_l3_driver_shape(w):
    r, vm = make_nat_world(w)
    fip = w.svc.create(ALICE, "floatingips", {"floating_network_id": w.ext["id"], "port_id": vm["id"]})
    rpc = L3Rpc(w.svc)
    [d] = rpc.sync_routers("h1")
    assert rpc.sync_routers("h2") == [], "a router belongs to the agent that claimed it"
    model = RouterModel.from_dict(d)
    assert model.gateway is not None and model.gateway.enable_snat
    assert model.interfaces[0].ip_cidrs == ("10.0.0.1/24",)
    assert model.gateway.port.ip_cidrs[0].startswith("203.0.113.") and model.gateway.port.ip_cidrs[0].endswith("/24")
    assert [(f.floating_ip_address, f.fixed_ip_address) for f in model.active_floating_ips] == [
        (fip["floating_ip_address"], vm["fixed_ips"][0]["ip_address"])]
    assert {p["binding:host_id"] for p in w.ports(device_id=r["id"])} == {"h1"}
    w.svc.update(ALICE, "routers", r["id"], {"admin_state_up": False})
    assert rpc.sync_routers("h1") == [], "a router set down is removed from its host"


def test_dhcp_port_is_one_per_network_and_host_and_follows_subnets(w):
    rpc = DhcpRpc(w.svc)
    p = rpc.create_dhcp_port(w.net["id"], "h1")
    assert p["device_owner"] == "network:dhcp" and p["binding:host_id"] == "h1"
    assert p["device_id"] == dhcp_device_id(w.net["id"], "h1")
    assert rpc.create_dhcp_port(w.net["id"], "h1")["id"] == p["id"]
    assert rpc.create_dhcp_port(w.net["id"], "h2")["id"] != p["id"], "each host serves with its own port"
    sub2 = w.svc.create(ALICE, "subnets", {"network_id": w.net["id"], "cidr": "10.1.0.0/24", "ip_version": 4})
    p2 = rpc.create_dhcp_port(w.net["id"], "h1")
    assert p2["id"] == p["id"] and {f["subnet_id"] for f in p2["fixed_ips"]} == {w.sub["id"], sub2["id"]}
    assert p2["fixed_ips"][0]["ip_address"] == p["fixed_ips"][0]["ip_address"], "existing address kept"
    info = rpc.get_network_info(w.net["id"])
    assert {s["id"] for s in info["subnets"]} == {w.sub["id"], sub2["id"]} and len(info["ports"]) == 2
    assert [i["id"] for i in rpc.get_active_networks_info("h1")] == [w.net["id"]], "external net has no DHCP"
    assert rpc.release_dhcp_port(w.net["id"], "h1") == 1
    assert rpc.get_network_info("00000000-0000-0000-0000-000000000000") is None
    assert rpc.create_dhcp_port(w.ext["id"], "h1") is None, "no DHCP-enabled subnet: no port"
