"""Network service: defaults, segments, provider attributes, visibility, updates."""

from __future__ import annotations

import pytest

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.notifier import RecordingNotifier
from lbtap.server.services import ListQuery, Services
from tests.support import fresh_db_url, migrated_engine

ADMIN = Context.admin()
ALICE = Context(project_id="alice", roles=frozenset({"member"}))
BOB = Context(project_id="bob", roles=frozenset({"member"}))
READER = Context(project_id="alice", roles=frozenset({"reader"}))


def make(tmp_path, notifier=None, **server):
    # Tenant networks are VXLAN here (the shipped default is "local"): it exercises allocation.
    settings = Settings(server={"tenant_network_types": ["vxlan"], **server})
    return Services(migrated_engine(fresh_db_url("sqlite", tmp_path)), settings, notifier=notifier)


@pytest.fixture
def svc(tmp_path):
    return make(tmp_path)


def test_tenant_network_gets_next_vni_and_vxlan_mtu(svc):
    a = svc.create(ALICE, "networks", {"name": "a"})
    b = svc.create(ADMIN, "networks", {"name": "b"})
    assert b["provider:network_type"] == "vxlan"
    assert b["provider:segmentation_id"] == 2
    assert b["mtu"] == 1450 and b["status"] == "ACTIVE" and b["subnets"] == []
    assert a["project_id"] == a["tenant_id"] == "alice"
    assert not any(k.startswith("provider:") for k in a)  # hidden from non-admins
    assert svc.get(ADMIN, "networks", a["id"])["provider:segmentation_id"] == 1
    assert b["project_id"] == "admin"


def test_deleted_network_frees_its_vni(svc):
    a = svc.create(ADMIN, "networks", {})
    svc.delete(ADMIN, "networks", a["id"])
    assert svc.create(ADMIN, "networks", {})["provider:segmentation_id"] == a["provider:segmentation_id"]


def test_vni_range_exhausted_is_409(tmp_path):
    svc = make(tmp_path, vni_ranges=[[5, 6]])
    assert [svc.create(ADMIN, "networks", {})["provider:segmentation_id"] for _ in range(2)] == [5, 6]
    with pytest.raises(errors.NoNetworkAvailable):
        svc.create(ADMIN, "networks", {})


def test_tenant_types_fall_through_to_vlan(tmp_path):
    svc = make(tmp_path, tenant_network_types=["vxlan", "vlan"], vni_ranges=[[1, 1]],
               network_vlan_ranges={"physnet1": [[100, 101]]})
    svc.create(ADMIN, "networks", {})
    n = svc.create(ADMIN, "networks", {})
    assert (n["provider:network_type"], n["provider:physical_network"], n["provider:segmentation_id"]) == (
        "vlan", "physnet1", 100)
    assert n["mtu"] == 1500


def test_provider_attributes_are_validated(tmp_path):
    svc = make(tmp_path, network_vlan_ranges={"physnet1": [[100, 200]]}, flat_networks=["ext"])
    flat = svc.create(ADMIN, "networks", {"provider:network_type": "flat", "provider:physical_network": "ext"})
    assert flat["provider:segmentation_id"] is None and flat["mtu"] == 1500
    with pytest.raises(errors.FlatNetworkInUse):
        svc.create(ADMIN, "networks", {"provider:network_type": "flat", "provider:physical_network": "ext"})
    with pytest.raises(errors.InvalidInput):
        svc.create(ADMIN, "networks", {"provider:network_type": "flat", "provider:physical_network": "other"})
    with pytest.raises(errors.InvalidInput):
        svc.create(ADMIN, "networks", {"provider:network_type": "flat"})
    vlan = svc.create(ADMIN, "networks", {"provider:network_type": "vlan", "provider:physical_network": "physnet1",
                                          "provider:segmentation_id": 4000})
    assert vlan["provider:segmentation_id"] == 4000  # outside the tenant range is fine for admins
    with pytest.raises(errors.VlanIdInUse):
        svc.create(ADMIN, "networks", {"provider:network_type": "vlan", "provider:physical_network": "physnet1",
                                       "provider:segmentation_id": 4000})
    with pytest.raises(errors.InvalidInput):
        svc.create(ADMIN, "networks", {"provider:network_type": "vlan", "provider:physical_network": "physnet1",
                                       "provider:segmentation_id": 5000})
    with pytest.raises(errors.InvalidInput):
        svc.create(ADMIN, "networks", {"provider:network_type": "vlan", "provider:physical_network": "nope"})
    with pytest.raises(errors.InvalidInput):
        svc.create(ADMIN, "networks", {"provider:network_type": "bogus"})
    vx = svc.create(ADMIN, "networks", {"provider:network_type": "vxlan", "provider:segmentation_id": 7777})
    with pytest.raises(errors.TunnelIdInUse):
        svc.create(ADMIN, "networks", {"provider:network_type": "vxlan", "provider:segmentation_id": 7777})
    assert vx["mtu"] == 1450
    local = svc.create(ADMIN, "networks", {"provider:network_type": "local"})
    assert local["provider:segmentation_id"] is None


def test_non_admin_cannot_set_admin_attributes(svc):
    for body in ({"provider:network_type": "vxlan"}, {"shared": True}, {"router:external": True}):
        with pytest.raises(errors.PolicyNotAuthorized):
            svc.create(ALICE, "networks", body)
    assert svc.list(ADMIN, "networks", ListQuery()).items == []


@pytest.mark.parametrize("body, exc", [
    ({"bogus": 1}, errors.BadRequest),
    ({"name": "x" * 256}, errors.InvalidInput),
    ({"name": 5}, errors.InvalidInput),
    ({"admin_state_up": "maybe"}, errors.InvalidInput),
    ({"mtu": 9000}, errors.InvalidInput),
    ({"id": "8c0a6d8e-7a2b-4a53-9d39-1b6a5d0b6b38"}, errors.BadRequest),
    ({"status": "DOWN"}, errors.BadRequest),
    ({"tenant_id": "a", "project_id": "b"}, errors.BadRequest),
])
def test_bad_create_bodies_are_400_and_change_nothing(svc, body, exc):
    with pytest.raises(exc) as info:
        svc.create(ADMIN, "networks", body)
    assert info.value.status == 400
    assert svc.list(ADMIN, "networks", ListQuery()).items == []


def test_projects_see_own_and_shared_networks_only(svc):
    mine = svc.create(ALICE, "networks", {"name": "mine"})
    shared = svc.create(ADMIN, "networks", {"name": "shared", "shared": True, "project_id": "ops"})
    other = svc.create(ADMIN, "networks", {"name": "other", "project_id": "ops"})
    names = {n["name"] for n in svc.list(ALICE, "networks", ListQuery()).items}
    assert names == {"mine", "shared"}
    with pytest.raises(errors.NetworkNotFound):
        svc.get(ALICE, "networks", other["id"])
    with pytest.raises(errors.NetworkNotFound):
        svc.get(BOB, "networks", mine["id"])
    with pytest.raises(errors.NetworkNotFound):
        svc.update(BOB, "networks", mine["id"], {"name": "x"})
    with pytest.raises(errors.PolicyNotAuthorized):
        svc.update(ALICE, "networks", shared["id"], {"name": "x"})
    with pytest.raises(errors.BadRequest):
        svc.create(ALICE, "networks", {"project_id": "bob"})


def test_reader_cannot_write(svc):
    net = svc.create(ALICE, "networks", {})
    assert svc.get(READER, "networks", net["id"])["id"] == net["id"]
    with pytest.raises(errors.PolicyNotAuthorized):
        svc.create(READER, "networks", {})
    with pytest.raises(errors.PolicyNotAuthorized):
        svc.delete(READER, "networks", net["id"])


def test_update_bumps_revision_and_notifies_after_commit(tmp_path):
    rec = RecordingNotifier()
    svc = make(tmp_path, notifier=rec)
    net = svc.create(ADMIN, "networks", {"name": "a"})
    up = svc.update(ADMIN, "networks", net["id"], {"name": "b", "admin_state_up": False, "mtu": 1400})
    assert (up["name"], up["admin_state_up"], up["mtu"], up["revision_number"]) == ("b", False, 1400, 1)
    same = svc.update(ADMIN, "networks", net["id"], {"name": "b"})
    assert same["revision_number"] == 1
    with pytest.raises(errors.BadRequest):
        svc.update(ADMIN, "networks", net["id"], {"provider:segmentation_id": 9})
    with pytest.raises(errors.InvalidInput):
        svc.update(ADMIN, "networks", net["id"], {"mtu": 1451})
    svc.delete(ADMIN, "networks", net["id"])
    assert [name for name, _ in rec.calls] == ["network_created", "network_updated", "network_deleted"]


def test_filters_sorting_and_paging(svc):
    for name, up in (("c", True), ("a", False), ("b", True), ("a", True)):
        svc.create(ADMIN, "networks", {"name": name, "admin_state_up": up, "tags": [f"t-{name}"]})
    q = lambda **kw: svc.list(ADMIN, "networks", ListQuery(**kw))  # noqa: E731
    assert sorted(n["name"] for n in q(filters={"name": ["a", "b"]}).items) == ["a", "a", "b"]
    assert {n["name"] for n in q(filters={"admin_state_up": ["false"]}).items} == {"a"}
    assert [n["name"] for n in q(filters={"tags-any": ["t-a,t-c"]}, sorts=[("name", False)]).items] == ["c", "a", "a"]
    with pytest.raises(errors.BadRequest):
        q(filters={"bogus": ["1"]})
    with pytest.raises(errors.BadRequest):
        q(filters={"admin_state_up": ["maybe"]})
    with pytest.raises(errors.BadRequest):
        q(sorts=[("subnets", True)])
    first = q(sorts=[("name", True)], limit=3)
    assert [n["name"] for n in first.items] == ["a", "a", "b"] and first.has_more
    rest = q(sorts=[("name", True)], limit=3, marker=first.items[-1]["id"])
    assert [n["name"] for n in rest.items] == ["c"] and not rest.has_more
    back = q(sorts=[("name", True)], limit=2, marker=rest.items[0]["id"], page_reverse=True)
    assert [n["name"] for n in back.items] == ["a", "b"] and back.has_more
    with pytest.raises(errors.NetworkNotFound):
        q(marker="00000000-0000-0000-0000-000000000000")
    with pytest.raises(errors.BadRequest):
        svc.list(ALICE, "networks", ListQuery(filters={"provider:network_type": ["vxlan"]}))
    assert len(q(filters={"provider:network_type": ["vxlan"]}).items) == 4


def test_unknown_resource_and_attribute_names(svc):
    with pytest.raises(errors.NotFound):
        svc.list(ADMIN, "bgpvpns", ListQuery())
    assert {"provider:network_type", "router:external", "subnets"} <= svc.attribute_names("networks")
    assert {"binding:host_id", "fixed_ips", "status"} <= svc.attribute_names("ports")


def test_shipped_default_tenant_type_is_local(tmp_path):
    svc = Services(migrated_engine(fresh_db_url("sqlite", tmp_path)), Settings())
    nets = [svc.create(ADMIN, "networks", {}) for _ in range(3)]  # local needs no allocation
    assert {(n["provider:network_type"], n["provider:segmentation_id"], n["mtu"]) for n in nets} == {
        ("local", None, 1500)}


def test_vxlan_over_an_ipv6_underlay_leaves_room_for_the_longer_header(tmp_path):
    svc = make(tmp_path, overlay_ip_version=6)
    net = svc.create(ADMIN, "networks", {"name": "v6-underlay"})
    assert net["mtu"] == 1430
    with pytest.raises(errors.InvalidInput):
        svc.create(ADMIN, "networks", {"name": "too-big", "mtu": 1450})
