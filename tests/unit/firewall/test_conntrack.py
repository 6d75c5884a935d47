"""Which conntrack entries a firewall change ends: the pure decisions, and the cleaner's
handling of a (fake) ctnetlink socket."""

from __future__ import annotations

import errno
import socket

import pytest

from lbtap.drivers.firewall import conntrack as ct
from lbtap.drivers.firewall.conntrack import ConntrackCleaner, Entry, Flush, FlushIndex, doomed, plan_flushes, queries
from lbtap.drivers.firewall.model import EGRESS, INGRESS, IPV6, PortFilter, RemoteGroups, Rule
from lbtap.drivers.firewall.render import compile_groups, compile_state, compile_update
from lbtap.drivers.host import errors

SSH = Rule(INGRESS, protocol="tcp", port_range_min=22, port_range_max=22)
WEB = Rule(INGRESS, protocol="tcp", port_range_min=80, port_range_max=80)
OUT = Rule(EGRESS)
FROM_G = Rule(INGRESS, protocol="tcp", port_range_min=5432, port_range_max=5432, remote_group_id="db")


def port(i: int, *rules: Rule, ips=None, groups=("sg",), **kw) -> PortFilter:  # noqa: ANN001
    return PortFilter(f"tap{i}", f"fa:16:3e:00:00:{i:02x}", ips or (f"10.0.0.{i}",), rules=rules,
                      security_groups=groups, **kw)


def change(old_ports, new_ports, old_groups=RemoteGroups(), new_groups=None):  # noqa: ANN001
    """plan_flushes between two port lists, the states compiled as the driver does
    (only the ports that differ are passed to ``compile_update``)."""
    new_groups = old_groups if new_groups is None else new_groups
    old = {p.tap: p for p in old_ports}
    new = {p.tap: p for p in new_ports}
    s0 = compile_state(old.values(), old_groups)
    s1 = compile_update(s0, [(old.get(t), new.get(t)) for t in sorted(old.keys() | new.keys())
                             if old.get(t) != new.get(t)], old_groups)
    if new_groups is not old_groups:
        s1 = compile_groups(s1, new_groups)
    return plan_flushes(s0, s1, old, new, old_groups, new_groups)


def test_nothing_taken_away_means_nothing_flushed():
    assert change([port(1, SSH)], [port(1, SSH, WEB)]) == []
    assert change([port(1, SSH)], [port(1, SSH)]) == []


def test_a_removed_rule_flushes_that_direction_keeping_what_the_rest_allows():
    (f,) = change([port(1, SSH, WEB, OUT)], [port(1, SSH, OUT)])
    assert (f.tap, f.direction, f.addresses, f.remotes) == ("tap1", INGRESS, ("10.0.0.1",), None)
    assert set(f.rules) == {SSH, OUT}


def test_a_groups_rule_change_reaches_every_port_of_the_profile():
    # Only tap1 is updated, but tap2 shares its groups, hence its profile and rules.
    flushes = change([port(1, SSH, WEB), port(2, SSH, WEB)], [port(1, SSH), port(2, SSH, WEB)])
    assert sorted(f.tap for f in flushes) == ["tap1", "tap2"]


def test_removed_port_and_removed_address_flush_everything_of_those_addresses():
    (gone,) = change([port(1, SSH), port(2, SSH)], [port(2, SSH)])
    assert (gone.tap, gone.direction, gone.addresses, gone.rules) == ("tap1", None, ("10.0.0.1",), None)
    (moved,) = change([port(1, SSH, ips=("10.0.0.1", "10.0.0.9"))], [port(1, SSH, ips=("10.0.0.1",))])
    assert (moved.direction, moved.addresses, moved.rules) == (None, ("10.0.0.9",), None)


def test_a_port_becoming_filtered_loses_allow_all_in_both_directions():
    flushes = change([port(1, SSH, port_security_enabled=False)], [port(1, SSH)])
    assert {f.direction for f in flushes} == {INGRESS, EGRESS}


def test_a_port_becoming_unfiltered_flushes_nothing():
    assert change([port(1, SSH)], [port(1, SSH, device_owner="network:dhcp")]) == []


def test_member_removal_flushes_only_towards_the_removed_member():
    before, after = RemoteGroups.of({"db": ["10.0.1.1", "10.0.1.2"]}), RemoteGroups.of({"db": ["10.0.1.2"]})
    ports = [port(1, FROM_G), port(2, SSH, groups=("other",))]
    (f,) = change(ports, ports, before, after)
    assert (f.tap, f.direction, f.remotes) == ("tap1", INGRESS, ("10.0.1.1",))
    assert change(ports, ports, after, before) == [], "a member added takes nothing away"


# -- judging entries -------------------------------------------------------------------
def tcp(src: str, dst: str, dport: int) -> Entry:
    return Entry(4, src, dst, 6, sport=40000, dport=dport)


def test_doomed_keeps_what_the_new_rules_allow_and_respects_the_direction():
    f = Flush("tap1", INGRESS, ("10.0.0.1",), (SSH,))
    assert not doomed(f, tcp("10.9.0.1", "10.0.0.1", 22))
    assert doomed(f, tcp("10.9.0.1", "10.0.0.1", 80))
    assert not doomed(f, tcp("10.0.0.1", "10.9.0.1", 80)), "a flow the port started is an egress matter"
    assert not doomed(f, tcp("10.9.0.1", "10.0.0.2", 80)), "not this port's address"


def test_doomed_with_remotes_and_remote_groups():
    groups = RemoteGroups.of({"db": ["10.0.1.2"]})
    f = Flush("tap1", INGRESS, ("10.0.0.1",), (FROM_G,), ("10.0.1.1",), groups)
    assert doomed(f, tcp("10.0.1.1", "10.0.0.1", 5432))
    assert not doomed(f, tcp("10.0.1.3", "10.0.0.1", 5432)), "not a removed member: left alone"
    f2 = Flush("tap1", INGRESS, ("10.0.0.1",), (FROM_G,), ("10.0.1.2",), groups)
    assert not doomed(f2, tcp("10.0.1.2", "10.0.0.1", 5432)), "still a member: still allowed"


def test_doomed_everything_of_an_address_and_cidrs():
    f = Flush("tap1", None, ("10.0.0.1", "10.5.0.0/16"))
    assert doomed(f, tcp("10.0.0.1", "10.9.0.1", 1)) and doomed(f, tcp("10.9.0.1", "10.5.3.3", 1))
    assert not doomed(f, tcp("10.9.0.1", "10.9.0.2", 1))


@pytest.mark.parametrize("rule, entry, allowed", [
    (Rule(INGRESS, protocol="icmp", port_range_min=8), Entry(4, "10.9.0.1", "10.0.0.1", 1, icmp_type=8, icmp_code=0),
     True),
    (Rule(INGRESS, protocol="icmp", port_range_min=8, port_range_max=1),
     Entry(4, "10.9.0.1", "10.0.0.1", 1, icmp_type=8, icmp_code=0), False),
    (Rule(INGRESS, protocol="udp", port_range_min=53), Entry(4, "10.9.0.1", "10.0.0.1", 17, 999, 60000), True),
    (Rule(INGRESS, remote_ip_prefix="10.9.0.0/16"), Entry(4, "10.8.0.1", "10.0.0.1", 47), False),
    (Rule(INGRESS, IPV6), Entry(4, "10.9.0.1", "10.0.0.1", 6, 1, 22), False),
    (Rule(INGRESS, IPV6, protocol="icmp"), Entry(6, "2001:db8::9", "2001:db8::1", 58, icmp_type=128, icmp_code=0),
     True),
])
def test_allows_reads_rules_as_nft_does(rule, entry, allowed):
    assert ct.allows((rule,), RemoteGroups(), INGRESS, entry) is allowed


def test_base_accepts_survive_any_rule_change():
    dhcp = Entry(4, "10.0.0.1", "255.255.255.255", 17, 68, 67)
    assert not doomed(Flush("tap1", EGRESS, ("10.0.0.1",), ()), dhcp)


def test_queries_pick_the_narrow_side_and_give_up_on_cidrs():
    flushes = [Flush("tap1", INGRESS, ("10.0.0.1", "2001:db8::1"), ()),
               Flush("tap2", EGRESS, ("10.0.0.2",), (), ("10.0.1.1",))]
    assert queries(flushes) == [(4, "daddr", "10.0.0.1"), (4, "daddr", "10.0.1.1"), (6, "daddr", "2001:db8::1")]
    assert queries([Flush("tap1", None, ("10.5.0.0/16",))]) is None


def test_flush_index_finds_flushes_by_either_end():
    a, b = Flush("tap1", None, ("10.0.0.1",)), Flush("tap2", None, ("2001:DB8::0001", "10.6.0.0/16"))
    index = FlushIndex([a, b])
    assert index.doomed(tcp("10.0.0.1", "10.9.9.9", 1)) and index.doomed(tcp("10.9.9.9", "10.6.1.1", 1))
    assert index.doomed(Entry(6, "2001:db8::1", "2001:db8::9", 6))
    assert not index.doomed(tcp("10.9.9.9", "10.9.9.8", 1))


# -- the cleaner against a fake ctnetlink ------------------------------------------------
class FakeMsg(dict):
    """Just enough of pyroute2's nfct_msg for ``parse_entry``."""

    def __init__(self, family: int, attrs: dict):
        super().__init__(nfgen_family=family, attrs=list(attrs.items()))

    def get_attr(self, name: str):  # noqa: ANN201
        return dict(self["attrs"]).get(name)


def ct_msg(src: str, dst: str, proto: int, dport: int) -> FakeMsg:
    v = "V6" if ":" in src else "V4"
    tup = FakeMsg(0, {"CTA_TUPLE_IP": FakeMsg(0, {f"CTA_IP_{v}_SRC": src, f"CTA_IP_{v}_DST": dst}),
                      "CTA_TUPLE_PROTO": FakeMsg(0, {"CTA_PROTO_NUM": proto, "CTA_PROTO_SRC_PORT": 40000,
                                                     "CTA_PROTO_DST_PORT": dport})})
    return FakeMsg(socket.AF_INET6 if v == "V6" else socket.AF_INET, {"CTA_TUPLE_ORIG": tup})


class FakeSock:
    def __init__(self, entries, fail_delete=None):  # noqa: ANN001
        self.entries, self.fail_delete = entries, fail_delete
        self.deleted, self.dumps, self.closed = [], [], False

    def count(self):  # noqa: ANN201
        return [FakeMsg(0, {"CTA_STATS_GLOBAL_ENTRIES": len(self.entries)})]

    def dump(self, tuple_orig=None):  # noqa: ANN001, ANN201
        self.dumps.append(tuple_orig)
        return iter(self.entries)

    def entry(self, cmd, tuple_orig, zone=None):  # noqa: ANN001, ANN201
        if self.fail_delete is not None:
            raise self.fail_delete
        self.deleted.append(tuple_orig)

    def close(self):  # noqa: ANN201
        self.closed = True


@pytest.fixture
def cleaner(monkeypatch):
    c = ConntrackCleaner(None)
    c.fake = FakeSock([ct_msg("10.9.0.1", "10.0.0.1", 6, 80), ct_msg("10.9.0.1", "10.0.0.1", 6, 22),
                       ct_msg("10.9.0.1", "10.0.0.7", 6, 80)])
    monkeypatch.setattr(c, "_sock", lambda family: c.fake)
    return c


def test_cleaner_deletes_exactly_the_doomed_entries_with_their_full_tuple(cleaner):
    assert cleaner.flush([Flush("tap1", INGRESS, ("10.0.0.1",), (SSH,))]) == 1
    (raw,) = cleaner.fake.deleted
    assert dict(raw["attrs"])["CTA_TUPLE_PROTO"]["attrs"] == [
        ["CTA_PROTO_NUM", 6], ["CTA_PROTO_SRC_PORT", 40000], ["CTA_PROTO_DST_PORT", 80]]


def test_cleaner_skips_the_dump_of_an_empty_table(cleaner):
    cleaner.fake.entries = []
    assert cleaner.flush([Flush("tap1", None, ("10.0.0.1",))]) == 0 and cleaner.fake.dumps == []


def test_cleaner_uses_kernel_filters_only_when_they_save_parsing(cleaner):
    cleaner.flush([Flush("tap1", None, ("10.0.0.1",))])
    assert cleaner.fake.dumps == [None], "3 entries: one full dump is cheaper"
    cleaner.fake.dumps.clear()
    cleaner.fake.entries = cleaner.fake.entries * 200
    cleaner.flush([Flush("tap1", INGRESS, ("10.0.0.1",), ())])
    assert [(d.daddr, d.saddr) for d in cleaner.fake.dumps] == [("10.0.0.1", None)]


def test_cleaner_ignores_entries_gone_meanwhile_and_types_other_errors(cleaner):
    from pyroute2.netlink.exceptions import NetlinkError

    cleaner.fake.fail_delete = NetlinkError(errno.ENOENT)
    assert cleaner.flush([Flush("tap1", None, ("10.0.0.1",))]) == 0
    cleaner.fake.fail_delete = NetlinkError(errno.EPERM)
    with pytest.raises(errors.PermissionDenied) as e:
        cleaner.flush([Flush("tap1", None, ("10.0.0.1",))])
    assert e.value.op == "conntrack_flush"
