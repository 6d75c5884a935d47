"""Port service: MAC/IP allocation, binding, bulk, filters, visibility, atomicity."""

from __future__ import annotations

import ipaddress

import pytest

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.notifier import RecordingNotifier
from lbtap.server.rpc_handlers import RpcHandlers
from lbtap.server.services import ListQuery, Services
from tests.support import FakeClock, fresh_db_url, migrated_engine

ADMIN = Context.admin()
ALICE = Context(project_id="alice", roles=frozenset({"member"}))
BOB = Context(project_id="bob", roles=frozenset({"member"}))
LB = "Linux bridge agent"


class World:
    def __init__(self, tmp_path, **server):
        self.engine = migrated_engine(fresh_db_url("sqlite", tmp_path))
        self.settings = Settings(server=server) if server else Settings()
        self.clock = FakeClock()
        self.notifier = RecordingNotifier()
        self.svc = Services(self.engine, self.settings, notifier=self.notifier, clock=self.clock)
        self.rpc = RpcHandlers(self.engine, self.settings, clock=self.clock)
        self.net = self.svc.create(ALICE, "networks", {"name": "n"})
        self.subnet = self.svc.create(ALICE, "subnets", {"network_id": self.net["id"], "ip_version": 4,
                                                         "cidr": "10.0.0.0/24"})

    def port(self, ctx=ALICE, **kw):
        return self.svc.create(ctx, "ports", {"network_id": self.net["id"], **kw})

    def count(self):
        return len(self.svc.list(ADMIN, "ports", ListQuery()).items)


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def test_new_port_defaults(w):
    p = w.port(name="vm1", device_owner="compute:nova", device_id="vm-1")
    assert p["status"] == "DOWN"
    assert p["mac_address"].startswith("fa:16:3e:")
    ip = p["fixed_ips"][0]
    assert ip["subnet_id"] == w.subnet["id"]
    assert ipaddress.ip_address(ip["ip_address"]) in ipaddress.ip_network("10.0.0.0/24")
    assert ip["ip_address"] not in ("10.0.0.0", "10.0.0.1", "10.0.0.255")
    assert (p["tenant_id"], p["project_id"], p["revision_number"]) == ("alice", "alice", 0)
    assert p["created_at"].endswith("Z") and p["port_security_enabled"] is True
    assert "binding:vif_type" not in p  # binding attributes are admin-only
    full = w.svc.get(ADMIN, "ports", p["id"])
    assert (full["binding:vif_type"], full["binding:host_id"], full["binding:vnic_type"]) == ("unbound", "", "normal")
    assert w.notifier.calls[-1][0] == "port_created"


def test_base_mac_is_configurable(tmp_path):
    w = World(tmp_path, base_mac="fa:16:3e:4f:00:00")
    assert all(w.port()["mac_address"].startswith("fa:16:3e:4f:") for _ in range(5))


def test_requested_ip_mac_and_conflicts(w):
    p = w.port(fixed_ips=[{"ip_address": "10.0.0.77"}], mac_address="FA:16:3E:00:00:01")
    assert p["fixed_ips"] == [{"subnet_id": w.subnet["id"], "ip_address": "10.0.0.77"}]
    assert p["mac_address"] == "fa:16:3e:00:00:01"
    with pytest.raises(errors.IpAddressInUse):
        w.port(fixed_ips=[{"ip_address": "10.0.0.77"}])
    with pytest.raises(errors.MacAddressInUse):
        w.port(mac_address="fa:16:3e:00:00:01")
    with pytest.raises(errors.InvalidInput):
        w.port(fixed_ips=[{"ip_address": "10.9.9.9"}])
    with pytest.raises(errors.InvalidInput):
        w.port(fixed_ips=[{"subnet_id": w.subnet["id"], "ip_address": "10.0.1.5"}])
    with pytest.raises(errors.InvalidInput):
        w.port(fixed_ips=[{"ip_address": "10.0.0.255"}])
    with pytest.raises(errors.IpAddressInUse):
        w.port(fixed_ips=[{"ip_address": "10.0.0.1"}])  # the gateway, not a router port
    assert w.port(fixed_ips=[{"ip_address": "10.0.0.1"}], device_owner="network:router_interface")
    with pytest.raises(errors.InvalidInput):
        w.port(mac_address="01:00:5e:00:00:01")
    with pytest.raises(errors.InvalidInput):
        w.port(mac_address="zz:16:3e:00:00:01")
    with pytest.raises(errors.SubnetNotFound):
        w.port(fixed_ips=[{"subnet_id": "8c0a6d8e-7a2b-4a53-9d39-1b6a5d0b6b38"}])
    assert w.count() == 2


def test_ip_outside_pool_but_inside_subnet_is_allowed(w):
    w.svc.update(ALICE, "subnets", w.subnet["id"], {"allocation_pools": [{"start": "10.0.0.10", "end": "10.0.0.20"}]})
    assert w.port(fixed_ips=[{"ip_address": "10.0.0.200"}])["fixed_ips"][0]["ip_address"] == "10.0.0.200"
    auto = w.port()["fixed_ips"][0]["ip_address"]
    assert 10 <= int(auto.rsplit(".", 1)[1]) <= 20


def test_pool_exhaustion_is_409(tmp_path):
    w = World(tmp_path)
    sub = w.svc.create(ALICE, "subnets", {"network_id": w.svc.create(ALICE, "networks", {})["id"],
                                          "ip_version": 4, "cidr": "10.1.0.0/29"})
    net_id = sub["network_id"]
    ports = [w.svc.create(ALICE, "ports", {"network_id": net_id}) for _ in range(5)]
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 5
    with pytest.raises(errors.IpAddressGenerationFailure):
        w.svc.create(ALICE, "ports", {"network_id": net_id})


def test_no_subnet_no_ip_and_empty_fixed_ips(w):
    bare = w.svc.create(ALICE, "networks", {})
    assert w.svc.create(ALICE, "ports", {"network_id": bare["id"]})["fixed_ips"] == []
    assert w.port(fixed_ips=[])["fixed_ips"] == []


def test_dual_stack_slaac_gets_eui64(w):
    v6 = w.svc.create(ALICE, "subnets", {"network_id": w.net["id"], "ip_version": 6, "cidr": "fd00::/64",
                                         "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"})
    p = w.port(mac_address="fa:16:3e:11:22:33")
    assert p["fixed_ips"][1] == {"subnet_id": v6["id"], "ip_address": "fd00::f816:3eff:fe11:2233"}


def test_binding_needs_live_agent_and_admin(w):
    with pytest.raises(errors.PolicyNotAuthorized):
        w.port(**{"binding:host_id": "h1"})
    failed = w.port(ADMIN, **{"binding:host_id": "h1"})
    assert failed["binding:vif_type"] == "binding_failed"
    w.rpc.report_state({"agent_type": LB, "host": "h1", "binary": "lbtap-agent", "topic": "t"})
    bound = w.port(ADMIN, **{"binding:host_id": "h1"})
    assert bound["binding:vif_type"] == "bridge"
    assert bound["binding:vif_details"] == {"connectivity": "l2", "port_filter": True,
                                            "bridge_name": "brq" + w.net["id"][:11]}
    again = w.svc.update(ADMIN, "ports", failed["id"], {"binding:host_id": "h1"})
    assert again["binding:vif_type"] == "bridge"
    w.clock.advance(w.settings.server.agent_down_time + 1)
    dead = w.svc.update(ADMIN, "ports", bound["id"], {"binding:host_id": "h1", "name": "x"})
    assert dead["binding:vif_type"] == "bridge"  # unchanged host: a working binding is kept
    assert w.port(ADMIN, **{"binding:host_id": "h1"})["binding:vif_type"] == "binding_failed"
    unbound = w.svc.update(ADMIN, "ports", bound["id"], {"binding:host_id": ""})
    assert (unbound["binding:vif_type"], unbound["binding:vif_details"]) == ("unbound", {})


def test_update_fixed_ips_and_notification_carries_original(w):
    p = w.port()
    old_ip = p["fixed_ips"][0]["ip_address"]
    up = w.svc.update(ALICE, "ports", p["id"], {"fixed_ips": [{"ip_address": "10.0.0.123"}], "name": "r"})
    assert up["fixed_ips"] == [{"subnet_id": w.subnet["id"], "ip_address": "10.0.0.123"}]
    assert up["revision_number"] == 1
    assert w.port(fixed_ips=[{"ip_address": old_ip}])  # released
    kept = w.svc.update(ALICE, "ports", p["id"], {"fixed_ips": [{"subnet_id": w.subnet["id"]}]})
    assert kept["fixed_ips"][0]["ip_address"] == "10.0.0.123"
    name, (new, original) = next(c for c in w.notifier.calls if c[0] == "port_updated")
    assert new["name"] == "r" and original["name"] == "" and "binding:host_id" in new
    with pytest.raises(errors.PolicyNotAuthorized):
        w.svc.update(ALICE, "ports", p["id"], {"mac_address": "fa:16:3e:00:00:09"})
    with pytest.raises(errors.BadRequest):
        w.svc.update(ALICE, "ports", p["id"], {"network_id": w.net["id"]})
    with pytest.raises(errors.BadRequest):
        w.svc.update(ALICE, "ports", p["id"], {"binding:vif_type": "bridge"})


def test_failed_update_changes_nothing(w):
    p = w.port()
    other = w.port()
    with pytest.raises(errors.IpAddressInUse):
        w.svc.update(ALICE, "ports", p["id"], {"name": "changed",
                                               "fixed_ips": [other["fixed_ips"][0]]})
    assert w.svc.get(ALICE, "ports", p["id"]) == p


def test_bulk_is_atomic(w):
    bodies = [{"network_id": w.net["id"]} for _ in range(5)]
    bodies.append({"network_id": w.net["id"], "fixed_ips": [{"ip_address": "10.9.0.1"}]})
    with pytest.raises(errors.InvalidInput):
        w.svc.create_bulk(ALICE, "ports", bodies)
    assert w.count() == 0
    dup = [{"network_id": w.net["id"], "mac_address": "fa:16:3e:00:00:05"}] * 2
    with pytest.raises(errors.MacAddressInUse):
        w.svc.create_bulk(ALICE, "ports", dup)
    assert w.count() == 0


def test_bulk_of_1000_is_distinct(tmp_path):
    """Speed is measured by bench/api.py; this checks the result."""
    w = World(tmp_path)
    net = w.svc.create(ADMIN, "networks", {})
    w.svc.create(ADMIN, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.50.0.0/20"})
    ports = w.svc.create_bulk(ADMIN, "ports", [{"network_id": net["id"]} for _ in range(1000)])
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 1000
    assert len({p["mac_address"] for p in ports}) == 1000
    assert len(w.svc.list(ADMIN, "ports", ListQuery(filters={"network_id": [net["id"]]})).items) == 1000


def test_port_visibility_and_shared_network(w):
    p = w.port()
    with pytest.raises(errors.PortNotFound):
        w.svc.get(BOB, "ports", p["id"])
    with pytest.raises(errors.PortNotFound):
        w.svc.delete(BOB, "ports", p["id"])
    with pytest.raises(errors.NetworkNotFound):
        w.port(BOB)
    shared = w.svc.create(ADMIN, "networks", {"shared": True, "project_id": "ops"})
    bp = w.svc.create(BOB, "ports", {"network_id": shared["id"]})
    assert bp["project_id"] == "bob"
    assert [x["id"] for x in w.svc.list(BOB, "ports", ListQuery()).items] == [bp["id"]]
    with pytest.raises(errors.InvalidSharedSetting):
        w.svc.update(ADMIN, "networks", shared["id"], {"shared": False})


def test_port_filters(w):
    a = w.port(name="a", fixed_ips=[{"ip_address": "10.0.0.10"}], device_owner="compute:nova")
    b = w.port(name="b", fixed_ips=[{"ip_address": "10.0.0.11"}], admin_state_up=False)
    q = lambda f: sorted(p["name"] for p in w.svc.list(ADMIN, "ports", ListQuery(filters=f)).items)  # noqa: E731
    assert q({"fixed_ips": ["ip_address=10.0.0.10", "ip_address=10.0.0.11"]}) == ["a", "b"]
    assert q({"fixed_ips": ["ip_address=10.0.0.11", f"subnet_id={w.subnet['id']}"]}) == ["b"]
    assert q({"fixed_ips": ["ip_address_substr=0.0.1"]}) == ["a", "b"]
    assert q({"admin_state_up": ["True"]}) == ["a"]
    assert q({"device_owner": ["compute:nova"], "name": ["a", "b"]}) == ["a"]
    assert q({"mac_address": [a["mac_address"].upper()]}) == ["a"]
    assert q({"binding:vif_type": ["unbound"]}) == ["a", "b"]
    assert q({"id": [b["id"]]}) == ["b"]
    with pytest.raises(errors.BadRequest):
        q({"fixed_ips": ["bogus"]})
    with pytest.raises(errors.BadRequest):
        w.svc.list(ALICE, "ports", ListQuery(filters={"binding:host_id": ["h"]}))


def test_delete_network_with_ports_is_409_until_empty(w):
    p = w.port()
    dhcp = w.port(ADMIN, device_owner="network:dhcp")
    with pytest.raises(errors.NetworkInUse):
        w.svc.delete(ALICE, "networks", w.net["id"])
    w.svc.delete(ALICE, "ports", p["id"])
    w.svc.delete(ALICE, "networks", w.net["id"])
    with pytest.raises(errors.PortNotFound):
        w.svc.get(ADMIN, "ports", dhcp["id"])
    assert w.count() == 0


def test_floating_ip_port_status_na(w):
    p = w.port(ADMIN, device_owner="network:floatingip")
    assert p["status"] == "N/A"


def test_failing_notifier_does_not_fail_a_committed_change(tmp_path):
    class Broken(RecordingNotifier):
        def port_created(self, port):
            raise RuntimeError("bus down")

    w = World(tmp_path)
    w.svc = Services(w.engine, w.settings, notifier=Broken())
    p = w.port()
    assert w.svc.get(ALICE, "ports", p["id"])["id"] == p["id"]
