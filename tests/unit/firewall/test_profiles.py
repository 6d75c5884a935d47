"""How a profile's rules become set elements (and when they stay rules).

The property test checks the compiled form against the rules themselves: a packet is
accepted by the elements-plus-spilled-rules exactly when one of the rules accepts it
(``conntrack.allows`` is the reference reading of a rule)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtap.drivers.firewall.conntrack import Entry, allows
from lbtap.drivers.firewall.model import EGRESS, INGRESS, IPV4, IPV6, RemoteGroups, Rule
from lbtap.drivers.firewall.profiles import as_element, collapse, compile_rules, rule_expr


@pytest.mark.parametrize("rule, expected", [
    (Rule(EGRESS), ("e4_proto", "0.0.0.0/0 . 0-255")),
    (Rule(INGRESS, IPV6), ("i6_proto", "::/0 . 0-255")),
    (Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22), ("i4_port", "0.0.0.0/0 . 6 . 22")),
    (Rule(INGRESS, protocol="udp", port_range_min=1000), ("i4_port", "0.0.0.0/0 . 17 . 1000-65535")),
    (Rule(INGRESS, protocol="tcp"), ("i4_proto", "0.0.0.0/0 . 6")),
    (Rule(EGRESS, protocol="sctp", port_range_max=80, remote_ip_prefix="10.1.2.3/32"),
     ("e4_port", "10.1.2.3/32 . 132 . 1-80")),
    (Rule(INGRESS, protocol="icmp", port_range_min=8), ("i4_icmp", "0.0.0.0/0 . 8 . 0-255")),
    (Rule(INGRESS, protocol="icmp", port_range_min=3, port_range_max=1), ("i4_icmp", "0.0.0.0/0 . 3 . 1")),
    (Rule(INGRESS, IPV6, protocol="icmp", port_range_min=128, remote_ip_prefix="2001:db8::/32"),
     ("i6_icmp", "2001:db8::/32 . 128 . 0-255")),
    (Rule(INGRESS, protocol="vrrp", remote_ip_prefix="10.0.0.0/8"), ("i4_proto", "10.0.0.0/8 . 112")),
])
def test_rules_as_elements(rule, expected):
    assert as_element(rule)[:2] == expected


@pytest.mark.parametrize("rule", [
    Rule(INGRESS, remote_group_id="web"),  # the group's addresses are its own set
    Rule(INGRESS, IPV4, protocol=58, port_range_min=128),  # ICMPv6 type under IPv4: a rule says it exactly
])
def test_rules_that_stay_rules(rule):
    assert as_element(rule) is None
    body = compile_rules((rule,))
    assert body.data == () and rule_expr(rule) + " accept" in body.lines[1]


def test_a_narrower_rule_inside_a_broader_one_is_dropped_not_spilled():
    broad = Rule(INGRESS, protocol="tcp", port_range_min=20, port_range_max=30)
    narrow = Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="10.0.0.0/8")
    body = compile_rules((narrow, broad))
    assert body.data == (("i4_port", "0.0.0.0/0 . 6 . 20-30"),) and body.lines == ((), ())


def test_partly_overlapping_rules_spill_one_of_them_into_the_chain():
    a = Rule(INGRESS, protocol="udp", port_range_min=1000, port_range_max=2000, remote_ip_prefix="10.1.0.0/16")
    b = Rule(INGRESS, protocol="udp", port_range_min=1500, port_range_max=2500)
    body = compile_rules((a, b))
    assert len(body.data) == 1 and len(body.lines[1]) == 1
    assert body == compile_rules((b, a)), "the order of rules does not matter"


def test_same_box_in_different_sets_does_not_count_as_overlap():
    body = compile_rules((Rule(INGRESS, protocol="tcp"), Rule(INGRESS, protocol="tcp", port_range_min=1),
                          Rule(EGRESS, protocol="tcp")))
    assert {name for name, _ in body.data} == {"i4_proto", "i4_port", "e4_proto"}


def test_collapse_makes_members_disjoint_and_leaves_plain_addresses_alone():
    plain = frozenset({"10.0.0.1", "10.0.0.2"})
    assert collapse(plain) is plain
    assert collapse(frozenset({"10.0.0.0/24", "10.0.0.5", "10.0.1.0/24", "2001:db8::1"})) == {
        "10.0.0.0/23", "2001:db8::1"}


# -- property: the compiled profile accepts what the rules accept -----------------------
_PREFIXES = [None, "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32"]


@st.composite
def _rule(draw) -> Rule:  # noqa: ANN001
    proto = draw(st.sampled_from([None, "tcp", "udp", "icmp", "gre"]))
    lo = hi = None
    if proto in ("tcp", "udp"):
        lo, hi = draw(st.one_of(st.none(), st.integers(1, 4))), draw(st.one_of(st.none(), st.integers(1, 4)))
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
    elif proto == "icmp":
        lo = draw(st.one_of(st.none(), st.integers(0, 4)))
        hi = draw(st.one_of(st.none(), st.integers(0, 2))) if lo is not None else None
    group = draw(st.booleans())
    return Rule(draw(st.sampled_from([INGRESS, EGRESS])), IPV4, protocol=proto, port_range_min=lo,
                port_range_max=hi, remote_ip_prefix=None if group else draw(st.sampled_from(_PREFIXES)),
                remote_group_id="g" if group else None)


_packet = st.builds(
    lambda remote, proto, port, code: Entry(
        4, remote, remote, proto, dport=port if proto in (6, 17) else None,
        icmp_type=port if proto == 1 else None, icmp_code=code if proto == 1 else None),
    st.sampled_from(["10.1.2.3", "10.1.9.9", "10.200.0.1", "192.0.2.77"]), st.sampled_from([1, 6, 17, 47, 50]),
    st.integers(1, 5), st.integers(0, 2))
GROUPS = RemoteGroups.of({"g": ["10.1.9.9", "10.200.0.0/16"]})


def _element_accepts(name: str, text: str, direction: str, e: Entry) -> bool:
    if name[0] != ("i" if direction == INGRESS else "e"):
        return False
    fields = text.split(" . ")
    if ipaddress.ip_address(e.src) not in ipaddress.ip_network(fields[0]):
        return False

    def within(value, span: str) -> bool:  # noqa: ANN001
        lo, _, hi = span.partition("-")
        return value is not None and int(lo) <= value <= int(hi or lo)

    kind = name[3:]
    if kind == "proto":
        return within(e.proto, fields[1])
    if kind == "port":
        return within(e.proto, fields[1]) and within(e.dport, fields[2])
    return e.proto == 1 and within(e.icmp_type, fields[1]) and within(e.icmp_code, fields[2])


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(_rule(), max_size=6).map(tuple), packet=_packet, direction=st.sampled_from([INGRESS, EGRESS]))
def test_compiled_profile_accepts_exactly_what_the_rules_accept(rules, packet, direction):
    body = compile_rules(rules)
    by_line = {rule_expr(r) + " accept": r for r in rules}
    spilled = [by_line[line] for lines in body.lines for line in lines]
    got = (any(_element_accepts(n, t, direction, packet) for n, t in body.data)
           or allows(spilled, GROUPS, direction, packet))
    assert got == allows(rules, GROUPS, direction, packet)
