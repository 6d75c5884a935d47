"""``lbtap cleanup``'s pure decisions: what to remove given the state dir and the
namespaces on the machine. Only lbtap's own state and naming may select anything."""

from __future__ import annotations

from lbtap.agents.cleanup_core import CleanupPlan, DhcpState, plan_cleanup
from lbtap.agents.state import NamespaceRecord
from lbtap.drivers.router.naming import dhcp_namespace, router_namespace

NET = "11111111-1111-4111-8111-111111111111"
NET2 = "22222222-2222-4222-8222-222222222222"
RTR = "33333333-3333-4333-8333-333333333333"
RTR2 = "44444444-4444-4444-8444-444444444444"
H, OTHER = "lbtt-h1", "lbtt-h2"


def dhcp_rec(net: str, host: str = H, suffix: str | None = H) -> NamespaceRecord:
    return NamespaceRecord(dhcp_namespace(net, suffix), "dhcp", net, host, suffix)


def router_rec(rid: str, host: str = H, suffix: str | None = H) -> NamespaceRecord:
    return NamespaceRecord(router_namespace(rid, suffix), "router", rid, host, suffix)


def test_nothing_recorded_and_no_host_means_nothing_to_do() -> None:
    plan = plan_cleanup(dhcp=[], records=[], namespaces=[dhcp_namespace(NET, H), router_namespace(RTR),
                                                          "lbtt-x", "qdhcp-" + NET])
    assert plan == CleanupPlan() and plan.empty


def test_recorded_namespaces_and_verified_dnsmasq_go_with_their_files() -> None:
    recs = [dhcp_rec(NET), router_rec(RTR), router_rec(RTR2, suffix=None)]
    present = [r.name for r in recs] + ["lbtt-unrelated"]
    plan = plan_cleanup(dhcp=[DhcpState(NET, 4242), DhcpState(NET2, None)], records=recs, namespaces=present)
    assert plan.dnsmasq == [(NET, 4242)]  # NET2's pid file named no live lbtap dnsmasq
    assert plan.namespaces == sorted(r.name for r in recs)
    assert plan.dhcp_files == [NET, NET2]
    assert plan.records == sorted(r.name for r in recs)
    assert "lbtt-unrelated" not in plan.namespaces and not plan.empty


def test_a_record_of_a_namespace_already_gone_is_only_dropped() -> None:
    plan = plan_cleanup(dhcp=[], records=[router_rec(RTR)], namespaces=[])
    assert plan.namespaces == [] and plan.records == [router_rec(RTR).name]
    assert plan.empty  # nothing a user would see


def test_records_not_matching_lbtaps_naming_are_never_acted_upon() -> None:
    bad = [
        NamespaceRecord("lbtt-victim", "dhcp", NET, H, H),  # name is not qdhcp-<id>-<host>
        NamespaceRecord(dhcp_namespace(NET, H), "router", NET, H, H),  # qdhcp- name, router kind
        NamespaceRecord("qrouter-x", "router", RTR, H, None),  # id does not give that name
        NamespaceRecord("qdhcp-a-b", "mystery", "a", H, "b"),
    ]
    names = [r.name for r in bad]
    plan = plan_cleanup(dhcp=[], records=bad, namespaces=names)
    assert plan.namespaces == [] and plan.records == []


def test_host_also_removes_unrecorded_namespaces_named_for_it_only() -> None:
    present = [
        dhcp_namespace(NET, H), router_namespace(RTR, H),  # named for H: lbtap's, recorded or not
        dhcp_namespace(NET, OTHER), router_namespace(RTR, OTHER),  # another host's
        "qdhcp-" + NET, "qrouter-" + RTR,  # plain names: could be a Neutron's
        f"qdhcp-{NET}-{H}x", f"lbtt-{H}", H, f"qfoo-{NET}-{H}",
    ]
    plan = plan_cleanup(dhcp=[], records=[], namespaces=present, host=H)
    assert plan.namespaces == sorted([dhcp_namespace(NET, H), router_namespace(RTR, H)])


def test_host_narrows_records_and_the_dnsmasq_of_networks_recorded_for_another_host() -> None:
    recs = [dhcp_rec(NET, host=H), dhcp_rec(NET2, host=OTHER, suffix=OTHER), router_rec(RTR, host=OTHER, suffix=None)]
    present = [r.name for r in recs]
    third = "55555555-5555-4555-8555-555555555555"  # DHCP state without a record: host unknown, kept in
    plan = plan_cleanup(dhcp=[DhcpState(NET, 10), DhcpState(NET2, 20), DhcpState(third, 30)], records=recs,
                        namespaces=present, host=H)
    assert plan.namespaces == [dhcp_namespace(NET, H)]
    assert plan.dnsmasq == [(NET, 10), (third, 30)]
    assert plan.dhcp_files == sorted([NET, third])
    assert plan.records == [dhcp_namespace(NET, H)]


def test_a_host_with_unsafe_characters_matches_its_hashed_suffix() -> None:
    host = "node 1/rack"
    name = dhcp_namespace(NET, host)
    assert "/" not in name
    plan = plan_cleanup(dhcp=[], records=[], namespaces=[name, dhcp_namespace(NET, "node_1_rack")], host=host)
    assert plan.namespaces == [name]
