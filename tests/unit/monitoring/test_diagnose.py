"""Log signatures: lines produced by lbtap's own formatter, and foreign (Neutron) lines."""

from __future__ import annotations

import io
import logging

import pytest

from lbtap.monitoring import diagnose as dg
from lbtap.monitoring.logs import KeyValueFormatter


def lbtap_lines(*records: tuple[int, str, dict]) -> list[str]:
    """Log through the real formatter, as the agent does."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(KeyValueFormatter())
    log = logging.getLogger("lbtap.test.diagnose")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        for level, msg, extra in records:
            log.log(level, msg, extra=extra)
    finally:
        log.removeHandler(handler)
    return buf.getvalue().splitlines(keepends=True)


def test_parse_line_splits_message_and_fields_error_to_end_of_line():
    [line] = lbtap_lines((logging.ERROR, "device setup failed", {
        "device": "tapabc", "port_id": "p-1", "op": "add_address",
        "error": "add_address brqx: (17, 'File exists') more=words"}))
    rec = dg.parse_line(line)
    assert rec.level == "ERROR" and rec.logger == "lbtap.test.diagnose"
    assert rec.message == "device setup failed"
    assert rec.fields == {"device": "tapabc", "port_id": "p-1", "op": "add_address",
                          "error": "add_address brqx: (17, 'File exists') more=words"}


def test_parse_line_rejects_free_text():
    assert dg.parse_line("RTNETLINK answers: File exists") is None


@pytest.mark.parametrize("text, sig", [
    ("add_address brq1234: (17, 'File exists')", "address-exists"),
    ("RTNETLINK answers: File exists ip addr add 192.168.44.160/32 dev brqx", "address-exists"),
    ("Unable to add tapx to brqy! Exception: can't enslave a bridge device to a bridge device", "enslave-bridge"),
    ("link event socket overflow (ENOBUFS): full reconcile", "netlink-overflow"),
    ("oslo_messaging.exceptions.MessagingTimeout: Timed out waiting for a reply", "rpc-timeout"),
    ("status report of 3 up / 0 down not delivered, will resend: CallTimeout", "rpc-timeout"),
    ("sqlite3.OperationalError: database is locked", "db-locked"),
    ("set_link tap1: (19, 'No such device')", "no-such-device"),
    ("dnsmasq: failed to create listening socket for 10.0.0.2: Address already in use", "dnsmasq"),
    ("create_bridge brq1: (17, 'File exists')", "exists"),
    ("create_vlan eth1.100: (95, 'Operation not supported')", "not-supported"),
    ("Error in agent loop. Devices info: {...}", "resync"),
    # lbtap's own messages (agent runtime, executor, bus)
    ("link event socket overflowed; full reconcile", "netlink-overflow"),
    ("device details unavailable, will retry: call get_devices_details_list timed out", "rpc-timeout"),
    ("device tap12345678901 not wired (attempt 3): add_address brq1: (17, 'File exists'); retry in 4.0s",
     "address-exists"),
    ("could not restore route default on eth1 after a failed move: (101, 'Network is unreachable')", "route-lost"),
    ("memory bus backlog full: dropping the oldest message", "bus-backlog"),
    ("FAULT INJECTION ENABLED (testing only): add_address", "fault-injection"),
])
def test_signatures(text, sig):
    assert dg.classify(dg.Record(None, "ERROR", None, text, {}, text)).id == sig


def test_unknown_error_is_unmatched():
    groups, summary = dg.diagnose(["2026-11-29T00:00:00.000Z ERROR x something odd happened\n"])
    assert groups == [] and summary["unmatched_errors"] == 1


def test_grouped_with_counts_devices_and_port_ids():
    lines = lbtap_lines(
        (logging.INFO, "agent started", {}),
        *[(logging.ERROR, "device failed, will retry", {"device": "tapaaa", "port_id": "pa", "op": "add_address",
                                                        "error": "add_address brq1: (17, 'File exists')"})] * 3,
        (logging.ERROR, "device failed, will retry", {"device": "tapbbb", "op": "add_address",
                                                      "error": "(17, 'File exists')"}),
        (logging.WARNING, "status report of 2 up / 0 down not delivered, will resend: CallTimeout", {}),
    )
    groups, summary = dg.diagnose(lines)
    assert [(g.signature.id, g.count) for g in groups] == [("address-exists", 4), ("rpc-timeout", 1)]
    d = groups[0].to_dict()
    assert d["devices"] == {"tapaaa": 3, "brq1": 3, "tapbbb": 1} and d["port_ids"] == {"pa": 3}
    assert d["first"] and d["last"] and "doctor --fix" in d["remedy"]
    assert summary["records"] == 6 and summary["errors"] == 5 and summary["unmatched_errors"] == 0


def test_traceback_lines_belong_to_their_record():
    lines = [
        "2026-11-29T00:00:01.000Z ERROR lbtap.agent apply failed device=tap111\n",
        "Traceback (most recent call last):\n",
        "  File \"x.py\", line 1, in f\n",
        "pyroute2.netlink.exceptions.NetlinkError: (17, 'File exists') add_address\n",
        "2026-11-29T00:00:02.000Z INFO lbtap.agent fine\n",
    ]
    recs = list(dg.records(lines))
    assert len(recs) == 2 and "NetlinkError" in recs[0].text
    groups, _ = dg.diagnose(lines)
    assert groups[0].signature.id == "address-exists" and dict(groups[0].devices) == {"tap111": 1}


def test_foreign_neutron_log_lines_pick_devices_from_text():
    lines = [
        "2016-09-01 10:00:00.123 1234 ERROR neutron.plugins.ml2.drivers.linuxbridge.agent "
        "Unable to add 192.168.44.160/32 to brqf4a2b3c4-d5: RTNETLINK answers: File exists add_address\n",
        "random text without a header mentioning tap12345678-9a: No such device\n",
    ]
    groups, summary = dg.diagnose(lines)
    got = {g.signature.id: dict(g.devices) for g in groups}
    assert got == {"address-exists": {"brqf4a2b3c4-d5": 1}, "no-such-device": {"tap12345678-9a": 1}}
    assert summary["records"] == 2
