"""How `lbtap security-group-rule list/show` prints a rule's port range."""

from __future__ import annotations

import pytest

from lbtap.cli.security import _port_range_cell, rule_summary


@pytest.mark.parametrize("protocol,lo,hi,shown", [
    (None, None, None, "any"),
    ("tcp", 22, 22, "22"),
    ("tcp", 8000, 8080, "8000:8080"),
    # One-ended TCP/UDP ranges (refused now, possible in old data) open to 1 / 65535.
    ("tcp", 90, None, "90:65535"),
    ("udp", None, 90, "1:90"),
    ("6", 90, None, "90:65535"),
    # ICMP: TYPE[:CODE]; a type alone means any code.
    ("icmp", 8, None, "8"),
    ("icmp", 3, 1, "3:1"),
    ("ipv6-icmp", 128, 0, "128:0"),
])
def test_port_range_cell(protocol, lo, hi, shown):
    assert _port_range_cell({"protocol": protocol, "port_range_min": lo, "port_range_max": hi}) == shown


def test_rule_summary_shows_the_open_end():
    rule = {"id": "r1", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 90,
            "port_range_max": None, "remote_ip_prefix": None, "remote_group_id": None}
    assert rule_summary(rule) == "ingress IPv4 tcp 90:65535 from any (r1)"
