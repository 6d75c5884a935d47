"""Renderer output checked structurally (parsed by ``nftsim``), and deltas checked
against full renders: full(old) + delta(old, new) must equal full(new)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtap.drivers.firewall.model import EGRESS, INGRESS, IPV4, IPV6, PortFilter, RemoteGroups, Rule
from lbtap.drivers.firewall.render import (
    EGRESS_TAG, INGRESS_TAG, SHARDS, compile_groups, compile_state, compile_update, render, render_delta,
    render_full, rule_expr,
)
from lbtap.drivers.firewall.profiles import compile_rules
from lbtap.domain.naming import bridge_name
from tests.unit.firewall.nftsim import Ruleset

BR, INET = ("bridge", "lbtap"), ("inet", "lbtap")


@pytest.mark.parametrize("rule, expected", [
    (Rule(EGRESS), "meta nfproto ipv4"),
    (Rule(EGRESS, IPV6), "meta nfproto ipv6"),
    (Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22), "meta nfproto ipv4 tcp dport 22"),
    (Rule(INGRESS, protocol="udp", port_range_min=1000, port_range_max=2000), "meta nfproto ipv4 udp dport 1000-2000"),
    (Rule(INGRESS, protocol="tcp", port_range_min=80), "meta nfproto ipv4 tcp dport 80-65535"),
    (Rule(INGRESS, protocol="tcp"), "meta nfproto ipv4 meta l4proto 6"),
    (Rule(INGRESS, protocol="icmp"), "meta nfproto ipv4 meta l4proto 1"),
    (Rule(INGRESS, protocol="icmp", port_range_min=8), "meta nfproto ipv4 meta l4proto 1 icmp type 8"),
    (Rule(INGRESS, protocol="icmp", port_range_min=3, port_range_max=4),
     "meta nfproto ipv4 meta l4proto 1 icmp type 3 icmp code 4"),
    (Rule(INGRESS, IPV6, protocol="icmp", port_range_min=128),
     "meta nfproto ipv6 meta l4proto 58 icmpv6 type 128"),
    (Rule(INGRESS, protocol=112), "meta nfproto ipv4 meta l4proto 112"),
    (Rule(INGRESS, remote_ip_prefix="10.0.0.0/8"), "meta nfproto ipv4 ip saddr 10.0.0.0/8"),
    (Rule(EGRESS, remote_ip_prefix="10.0.0.0/8"), "meta nfproto ipv4 ip daddr 10.0.0.0/8"),
    (Rule(INGRESS, IPV6, remote_ip_prefix="2001:db8::/32", protocol="tcp", port_range_min=443, port_range_max=443),
     "meta nfproto ipv6 ip6 saddr 2001:db8::/32 tcp dport 443"),
    (Rule(INGRESS, remote_group_id="sg1"), "meta nfproto ipv4 ip saddr @g4-sg1"),
    (Rule(EGRESS, IPV6, remote_group_id="sg1"), "meta nfproto ipv6 ip6 daddr @g6-sg1"),
])
def test_rule_expressions(rule, expected):
    assert rule_expr(rule) == expected


A = PortFilter("tapa", "fa:16:3e:00:00:0a", ("10.0.0.10", "2001:db8::a"),
               allowed_address_pairs=(("10.0.0.50", None), ("10.9.0.0/24", "fa:16:3e:00:00:99")),
               rules=(Rule(EGRESS), Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22),
                      Rule(INGRESS, remote_group_id="sg1")), security_groups=("sg1",))
B = PortFilter("tapb", "fa:16:3e:00:00:0b", ("10.0.0.11",), rules=A.rules, security_groups=("sg1",))
DHCP = PortFilter("tapd", "fa:16:3e:00:00:0d", ("10.0.0.2",), device_owner="network:dhcp")
OFF = PortFilter("tapo", "fa:16:3e:00:00:0e", ("10.0.0.3",), port_security_enabled=False)
GROUPS = RemoteGroups.of({"sg1": ["10.0.0.10", "10.0.0.11", "2001:db8::a"]})


def parsed(ports, groups=GROUPS) -> Ruleset:
    return Ruleset().load(render(ports, groups))


def test_script_replaces_only_lbtaps_tables():
    script = render([A], GROUPS)
    assert "flush ruleset" not in script
    assert re.findall(r"^(?:delete )?table \w+ \w+", script, re.M) == [
        "table bridge lbtap", "delete table bridge lbtap", "table bridge lbtap",
        "table inet lbtap", "delete table inet lbtap", "table inet lbtap"]


def test_anti_spoofing_elements_cover_exactly_the_filtered_ports():
    rs = parsed([A, B, DHCP, OFF])
    sets = rs.tables[BR].sets
    assert sets["mac_ok"] == {'"tapa" . fa:16:3e:00:00:0a', '"tapa" . fa:16:3e:00:00:99', '"tapb" . fa:16:3e:00:00:0b'}
    assert sets["ip4_ok"] == {'"tapa" . fa:16:3e:00:00:0a . 10.0.0.10', '"tapa" . fa:16:3e:00:00:0a . 10.0.0.50',
                              '"tapb" . fa:16:3e:00:00:0b . 10.0.0.11'}
    assert sets["ip4_net"] == {'"tapa" . fa:16:3e:00:00:99 . 10.9.0.0/24'}
    assert sets["ip6_ok"] == {'"tapa" . fa:16:3e:00:00:0a . 2001:db8::a'}
    assert {e.split(" : ")[0] for e in sets["port_idx"]} == {'"tapa"', '"tapb"'}  # not DHCP, not security off


def test_antispoof_chain_checks_mac_ip_and_arp_and_counts_drops():
    chain = parsed([A]).tables[BR].chains["antispoof"]
    drops = [r for r in chain if r.endswith(" drop")]
    assert all(" counter name " in r for r in drops)
    assert any("ether saddr != @mac_ok" in r for r in chain)
    assert any("arp saddr ether . arp saddr ip @ip4_ok return" in r for r in chain)
    assert chain.index("ether type arp counter name spoof_arp drop") > chain.index(
        "iifname . arp saddr ether . arp saddr ip @ip4_net return")
    assert "ether type ip counter name spoof_ip drop" in chain
    assert "ether type ip6 counter name spoof_ip drop" in chain


def test_ports_of_the_same_groups_share_one_profile_as_set_elements():
    rs = parsed([A, B])
    inet, bridge = rs.tables[INET], rs.tables[BR]
    assert bridge.sets["port_idx"] == {'"tapa" : 0x1', '"tapb" : 0x1'}  # one profile number, in the mark
    # Plain rules are elements keyed on the mark (tag | profile), not rules per port.
    # (profile 1 lives in shard 1 of each set)
    assert inet.sets["i4_port-1"] == {f"{INGRESS_TAG | 1:#x} . 0.0.0.0/0 . 6 . 22"}
    assert inet.sets["e4_proto-1"] == {f"{EGRESS_TAG | 1:#x} . 0.0.0.0/0 . 0-255"}
    # The remote-group rule stays a rule, in one chain the profile map jumps to.
    assert inet.sets["profile"] == {f"{INGRESS_TAG | 1:#x} : jump r-" + next(
        c[2:] for c in inet.chains if c.startswith("r-"))}
    assert [c for c in inet.chains if c.startswith("r-")] and all(
        body == ["meta nfproto ipv4 ip saddr @g4-sg1 accept"] for c, body in inet.chains.items() if c.startswith("r-"))
    assert inet.sets["g4-sg1"] == {"10.0.0.10", "10.0.0.11"} and inet.sets["g6-sg1"] == {"2001:db8::a"}


def test_ruleset_size_does_not_grow_with_ports_or_rules():
    def tcp(p: int) -> Rule:
        return Rule(INGRESS, protocol="tcp", port_range_min=p, port_range_max=p)

    many = [PortFilter(f"tap{i}", f"fa:16:3e:00:01:{i:02x}", (f"10.1.0.{i}",), security_groups=(f"sg{i}",),
                       rules=(Rule(EGRESS), *(tcp(1000 + 10 * i + k) for k in range(8)))) for i in range(1, 40)]
    rs = parsed(many, RemoteGroups())
    inet = rs.tables[INET]
    assert sum(len(body) for body in inet.chains.values()) == sum(
        len(body) for body in parsed(many[:1], RemoteGroups()).tables[INET].chains.values())
    assert sum(len(inet.sets[f"i4_port-{k}"]) for k in range(SHARDS)) == 39 * 8


def test_different_rules_without_groups_get_different_profiles():
    a = PortFilter("tapa", "fa:16:3e:00:00:0a", rules=(Rule(EGRESS),))
    b = PortFilter("tapb", "fa:16:3e:00:00:0b", rules=(Rule(INGRESS),))
    c = PortFilter("tapc", "fa:16:3e:00:00:0c", rules=(Rule(EGRESS),))
    s = compile_state([a, b, c], RemoteGroups())
    assert s.profile["tapa"] == s.profile["tapc"] != s.profile["tapb"]


def test_base_chains_default_deny_with_conntrack_first():
    inet = parsed([A]).tables[INET]
    pre, fwd = inet.chains["prerouting"], inet.chains["forward"]
    assert pre[0].startswith("#hook type filter hook prerouting priority -150")
    assert pre[1] == "ct state established,related accept"
    assert pre[-1] == "counter name egress_drop drop" and fwd[-1] == "counter name ingress_drop drop"
    assert "ct state invalid counter name invalid_drop drop" in inet.chains["i-base"]
    # DHCP replies and neighbour discovery reach the guest before any rule.
    assert any("udp sport 67 udp dport 68 accept" in r for r in inet.chains["i-base"])


def test_profile_numbers_are_kept_across_compiles():
    c = PortFilter("tapc", "fa:16:3e:00:00:0c", ("10.0.0.12",), rules=(Rule(INGRESS),))
    first = compile_state([A, B, c], GROUPS)
    assert first.index == {"tapa": 1, "tapb": 1, "tapc": 2}
    d = PortFilter("tapd", "fa:16:3e:00:00:0d", ("10.0.0.13",), rules=(Rule(EGRESS, IPV6),))
    second = compile_state([c, d], GROUPS, first)
    assert second.index["tapc"] == 2
    assert second.index["tapd"] == 1  # the freed number is reused


def test_unchanged_state_gives_an_empty_delta():
    s = compile_state([A, B], GROUPS)
    assert render_delta(s, compile_state([A, B], GROUPS, s)) == ""


def delta_matches_full(old, new) -> None:
    rs = Ruleset().load(render_full(old))
    rs.load(render_delta(old, new))
    assert rs.snapshot() == Ruleset().load(render_full(new)).snapshot()


def test_group_rule_change_is_one_element_of_the_shared_profile():
    old = compile_state([A, B], GROUPS)
    extra = Rule(INGRESS, protocol="udp", port_range_min=53, port_range_max=53)
    a2 = PortFilter(A.tap, A.mac, A.ips, A.allowed_address_pairs, rules=A.rules + (extra,), security_groups=("sg1",))
    b2 = PortFilter(B.tap, B.mac, B.ips, rules=a2.rules, security_groups=("sg1",))
    new = compile_update(old, [(A, a2), (B, b2)], GROUPS)
    # No port re-pointed, no chain touched, addresses unchanged: one element.
    assert render_delta(old, new).splitlines() == [
        f"add element inet lbtap i4_port-1 {{ {INGRESS_TAG | 1:#x} . 0.0.0.0/0 . 17 . 53 }}"]
    delta_matches_full(old, new)
    assert new == compile_state([a2, b2], GROUPS, old)
    back = compile_update(new, [(a2, A)], GROUPS)
    assert render_delta(new, back).splitlines() == [
        f"delete element inet lbtap i4_port-1 {{ {INGRESS_TAG | 1:#x} . 0.0.0.0/0 . 17 . 53 }}"]


def test_address_change_touches_only_anti_spoofing_elements():
    old = compile_state([A, B], GROUPS)
    b2 = PortFilter(B.tap, B.mac, ("10.0.0.99",), rules=B.rules, security_groups=B.security_groups)
    script = render_delta(old, compile_update(old, [(B, b2)], GROUPS))
    assert script.splitlines() == [
        'delete element bridge lbtap ip4_ok { "tapb" . fa:16:3e:00:00:0b . 10.0.0.11 }',
        'add element bridge lbtap ip4_ok { "tapb" . fa:16:3e:00:00:0b . 10.0.0.99 }',
    ]


def test_removing_the_last_user_deletes_chain_and_keeps_referenced_sets():
    old = compile_state([A], GROUPS)
    new = compile_update(old, [(A, None)], GROUPS)
    assert not new.profile and not new.chains
    delta_matches_full(old, new)
    regrouped = compile_groups(new, RemoteGroups())
    assert regrouped.sets == {}
    delta_matches_full(new, regrouped)


def test_group_membership_change_is_set_elements_only():
    old = compile_state([A, B], GROUPS)
    new = compile_groups(old, RemoteGroups.of({"sg1": ["10.0.0.10"]}))
    assert render_delta(old, new).splitlines() == [
        "delete element inet lbtap g4-sg1 { 10.0.0.11 }", "delete element inet lbtap g6-sg1 { 2001:db8::a }"]
    delta_matches_full(old, new)


# -- property: any sequence of updates, applied as deltas, equals the full render ------
_rules = st.lists(st.sampled_from([
    Rule(EGRESS), Rule(EGRESS, IPV6), Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22),
    Rule(INGRESS, protocol="icmp"), Rule(INGRESS, remote_group_id="g1"), Rule(EGRESS, remote_group_id="g2"),
    Rule(INGRESS, IPV4, remote_ip_prefix="10.1.0.0/16"),
]), max_size=4).map(tuple)


@st.composite
def _port(draw):
    i = draw(st.integers(0, 5))
    return PortFilter(
        f"tap{i}", f"fa:16:3e:00:00:{i:02x}", (f"10.0.0.{draw(st.integers(1, 3)) + 10 * i}",),
        allowed_address_pairs=draw(st.sampled_from([(), (("10.8.0.0/24", None),), (("10.0.0.200", "fa:16:3e:aa:00:01"),)])),
        port_security_enabled=draw(st.booleans()) or draw(st.booleans()),
        rules=draw(_rules), security_groups=draw(st.sampled_from([(), ("g1",), ("g1", "g2")])),
        network_id=draw(st.sampled_from([None, "net-a", "net-b", "net-c"])))


_groups = st.dictionaries(st.sampled_from(["g1", "g2"]), st.lists(st.sampled_from(
    ["10.0.0.1", "10.0.0.2", "2001:db8::1", "10.5.0.0/16"]), max_size=3), max_size=2).map(RemoteGroups.of)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(st.one_of(st.tuples(st.just("update"), st.lists(_port(), min_size=1, max_size=3)),
                              st.tuples(st.just("remove"), st.integers(0, 5)),
                              st.tuples(st.just("groups"), _groups)), max_size=8))
def test_deltas_always_reach_the_full_render(ops):
    ports: dict[str, PortFilter] = {}
    groups = RemoteGroups()
    state = compile_state([], groups)
    rs = Ruleset().load(render_full(state))
    for kind, arg in ops:
        if kind == "update":
            batch = {p.tap: p for p in arg}  # one change per tap, as the driver passes them
            changes = [(ports.get(t), p) for t, p in batch.items()]
            ports.update(batch)
            new = compile_update(state, changes, groups)
        elif kind == "remove":
            old = ports.pop(f"tap{arg}", None)
            new = compile_update(state, [(old, None)], groups) if old else state
        else:
            groups = arg
            new = compile_groups(state, groups)
        rs.load(render_delta(state, new))
        state = new
        assert rs.snapshot() == Ruleset().load(render_full(state)).snapshot()
    # Whatever the path, a filtered port without groups is programmed with its own
    # rules (ports sharing groups share the last-updated rules, by design).
    for tap, p in ports.items():
        if p.filtered and not p.security_groups:
            body = compile_rules(state.rules_of(tap))
            assert body == compile_rules(p.rules)
            number = state.index[tap]
            for name, text in body.data:
                mark = (EGRESS_TAG if name[0] == "e" else INGRESS_TAG) | number
                assert f"{mark:#x} . {text}" in state.data[f"{name}-{number % SHARDS}"]
    # Every network present has its own zone, never a retired one; no other zones.
    present = {bridge_name(p.network_id) for p in ports.values() if p.network_id}
    assert set(state.zones) == present
    assert len(set(state.zones.values())) == len(present) and not set(state.zones.values()) & state.retired


def test_overlapping_members_and_pair_cidrs_are_collapsed_for_interval_sets():
    # The kernel refuses overlapping elements in an interval set: the whole
    # transaction would fail.
    groups = RemoteGroups.of({"sg1": ["10.0.0.0/24", "10.0.0.10", "10.0.1.0/24"]})
    s = compile_state([A], groups)
    assert s.sets["g4-sg1"] == {"10.0.0.0/23"}
    inside = compile_groups(s, RemoteGroups.of({"sg1": ["10.0.0.0/24", "10.0.0.10", "10.0.1.0/24", "10.0.1.7"]}))
    assert render_delta(s, inside) == ""
    p = PortFilter("tapp", "fa:16:3e:00:00:0f", ("10.0.0.15",),
                   allowed_address_pairs=(("10.9.0.0/16", None), ("10.9.1.0/24", None)))
    assert compile_state([p], GROUPS).elements["ip4_net"] == {'"tapp" . fa:16:3e:00:00:0f . 10.9.0.0/16'}


def test_profiles_spread_over_the_shards_by_number():
    ports = [PortFilter(f"tap{i}", f"fa:16:3e:00:02:{i:02x}", (f"10.2.0.{i}",), rules=(Rule(EGRESS),),
                        security_groups=(f"sg{i}",)) for i in range(1, SHARDS + 2)]
    s = compile_state(ports, RemoteGroups())
    assert {n: len(e) for n, e in s.data.items() if n.startswith("e4_proto-") and e} == {
        **{f"e4_proto-{k}": 1 for k in range(SHARDS)}, "e4_proto-1": 2}
    script = render_full(s)
    assert f"meta mark and {SHARDS - 1:#x} vmap {{ 0 : jump e-s0," in script
