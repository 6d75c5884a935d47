"""Backoff schedule and status-report bookkeeping."""

from __future__ import annotations

import pytest

from lbtap.agent.core.reporter import Reporter
from lbtap.agent.core.retry import Backoff


@pytest.mark.parametrize("attempts,expected", [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (500, 30.0)])
def test_backoff_delays_double_to_the_cap(attempts, expected):
    assert Backoff(0.5, 30.0).delay(attempts) == expected


def test_backoff_schedule_and_next_due():
    b = Backoff(1.0, 8.0)
    assert b.due("x", 0) and b.next_due(0) is None
    assert b.failed("x", 10.0) == 11.0
    assert not b.due("x", 10.5) and b.due("x", 11.0)
    assert b.failed("x", 11.0) == 13.0
    assert b.failed("y", 11.0, retriable=False) == 19.0  # non-retriable: slow lane
    assert b.next_due(11.0) == 13.0
    b.succeeded("x")
    assert b.next_due(11.0) == 19.0 and b.attempts("x") == 0
    assert b.next_due(19.0) is None  # due now: the caller acts, no future wakeup


def _ack(up, down, failed_up=()):
    return {"devices_up": [d for d in up if d not in failed_up], "devices_down": down,
            "failed_devices_up": list(failed_up), "failed_devices_down": []}


def test_one_up_per_transition_and_batching():
    r = Reporter(0.5, 30)
    for d in ("t1", "t2", "t3"):
        r.want(d, True)
    up, down = r.take(0)
    assert (up, down) == (["t1", "t2", "t3"], [])
    assert r.take(0) == ([], [])  # in flight: never twice
    r.sent(up, down, _ack(up, down), 0)
    r.want("t1", True)  # re-verified wiring: no new report
    assert r.take(1) == ([], [])
    r.want("t2", False)  # admin down
    assert r.take(1) == ([], ["t2"])


def test_server_outage_keeps_batch_pending_without_duplicates():
    r = Reporter(0.5, 30)
    r.want("t1", True)
    r.want("t2", True)
    up, down = r.take(0)
    r.sent(up, down, None, 0)  # unreachable
    assert r.take(0.1) == ([], [])  # server in backoff
    assert r.unsure() == ["t1", "t2"]  # their report may have landed: read the status first
    r.device_gone("t2")  # left before its up was acked: send down, not up
    r.server_status("t1", False)  # read again: the server never got it
    r.want("t3", True)
    assert r.next_due(0.1) == 0.5
    up, down = r.take(0.5)
    assert (up, down) == (["t1", "t3"], ["t2"])
    r.sent(up, down, _ack(up, down), 0.5)
    assert r.take(1) == ([], []) and r.pending_count == 0
    assert r.acked("t2") is None  # forgotten once its down was acked


def test_failed_devices_retried_alone_with_backoff():
    r = Reporter(0.5, 30)
    r.want("t1", True)
    r.want("t2", True)
    up, down = r.take(0)
    r.sent(up, down, _ack(up, down, failed_up=["t2"]), 0)
    r.want("t4", True)
    assert r.take(0.1) == (["t4"], [])  # t2 waits, others proceed
    r.sent(["t4"], [], _ack(["t4"], []), 0.1)
    assert r.take(0.5) == (["t2"], [])


def test_server_status_seeds_acked_state():
    r = Reporter(0.5, 30)
    r.server_status("t1", True)  # ACTIVE before a restart
    r.want("t1", True)
    assert r.take(0) == ([], [])
    r.server_status("t2", False)
    r.want("t2", True)
    assert r.take(0) == (["t2"], [])


def test_device_gone_never_reported_sends_nothing():
    r = Reporter(0.5, 30)
    r.device_gone("ghost")
    assert r.take(0) == ([], [])
    r.server_status("t1", False)
    r.device_gone("t1")  # server already holds DOWN
    assert r.take(0) == ([], [])


def test_up_in_flight_then_gone_sends_down_after_ack():
    r = Reporter(0.5, 30)
    r.want("t1", True)
    up, _ = r.take(0)
    r.device_gone("t1")
    r.sent(up, [], _ack(up, []), 0)
    assert r.take(0) == ([], ["t1"])


def test_lost_answer_of_an_applied_report_is_not_sent_again():
    r = Reporter(0.5, 30)
    r.want("t1", True)
    up, down = r.take(0)
    r.sent(up, down, None, 0)  # the answer was lost, the server applied it
    assert r.take(1) == ([], [])  # unsure: nothing is sent on a guess
    r.want("t1", True)  # re-wiring meanwhile changes nothing
    assert r.take(1) == ([], [])
    r.server_status("t1", True)  # details read again: ACTIVE already
    assert r.take(1) == ([], []) and r.pending_count == 0 and r.unsure() == []


def test_unsure_device_with_no_server_status_is_reported():
    r = Reporter(0.5, 30)
    r.want("t1", True)
    up, down = r.take(0)
    r.sent(up, down, None, 0)
    r.server_status("t1", None)  # the server says nothing: report what we want
    assert r.take(1) == (["t1"], [])
