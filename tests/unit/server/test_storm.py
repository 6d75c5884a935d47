"""Storm alarm rules with an injected clock, and their metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from lbtap.server.events.storm import MAX_ALARM_DEVICES, StormCollector, StormDetector


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def detector(clock, **kw):
    raised = []
    d = StormDetector(clock=clock, on_raise=raised.append, **kw)
    return d, raised


def test_single_up_per_transition_raises_nothing():
    clock = Clock()
    d, raised = detector(clock)
    for _ in range(5):  # up, down, up, down ... is the healthy pattern
        d.observe("h1", ["tapa", "tapb"], [])
        clock.t += 1
        d.observe("h1", [], ["tapa", "tapb"])
        clock.t += 1
    assert raised == [] and d.alarms() == []


def test_second_up_without_down_names_host_and_devices():
    clock = Clock()
    d, raised = detector(clock)
    d.observe("h1", ["tapa", "tapb", "tapc"], [])
    d.observe("h2", ["tapa"], [])  # another agent's first report is not a duplicate
    assert raised == []
    clock.t += 2
    d.observe("h1", ["tapa", "tapb"], [])
    (alarm,) = raised
    assert (alarm.host, alarm.reason, sorted(alarm.devices)) == ("h1", "duplicate_up", ["tapa", "tapb"])
    # More duplicates while active join the same alarm instead of raising another.
    clock.t += 2
    d.observe("h1", ["tapc"], [])
    assert len(raised) == 1
    (shown,) = d.alarms()
    assert shown["active"] and shown["devices"] == ["tapa", "tapb", "tapc"] and shown["triggers"] == 2


def test_alarm_clears_after_hold_and_a_new_one_is_raised():
    clock = Clock()
    d, raised = detector(clock, hold=30.0)
    d.observe("h1", ["tapa"], [])
    d.observe("h1", ["tapa"], [])
    assert d.alarms(active_only=True)
    clock.t += 31
    assert d.alarms(active_only=True) == [] and len(d.alarms()) == 1
    d.observe("h1", ["tapa"], [])
    assert len(raised) == 2 and [a["active"] for a in d.alarms()] == [True, False]


def test_report_rate_over_threshold_in_window():
    clock = Clock()
    d, raised = detector(clock, window=10.0, max_reports=10)
    for i in range(5):  # flapping: up/down pairs are never duplicates
        d.observe("h1", ["tapa"], [])
        d.observe("h1", [], ["tapa"])
        clock.t += 1
    assert raised == []
    d.observe("h1", ["tapa"], [])
    (alarm,) = raised
    assert alarm.reason == "report_rate" and alarm.host == "h1" and "tapa" in alarm.devices
    assert "11 device reports" in alarm.detail


def test_reports_leaving_the_window_do_not_count():
    clock = Clock()
    d, raised = detector(clock, window=10.0, max_reports=10)
    for i in range(40):  # 2 reports every 3 s: at most 8 in any 10 s window
        d.observe("h1", [f"tap{i}"], [])
        d.observe("h1", [], [f"tap{i}"])
        clock.t += 3
    assert raised == []


def test_devices_in_one_alarm_are_bounded():
    clock = Clock()
    d, _ = detector(clock, max_reports=10**6)
    names = [f"tap{i:05d}" for i in range(MAX_ALARM_DEVICES + 50)]
    d.observe("h1", names, [])
    d.observe("h1", names, [])
    (a,) = d.alarms()
    assert len(a["devices"]) == MAX_ALARM_DEVICES and a["devices_total"] == MAX_ALARM_DEVICES + 50


def test_metrics_total_and_active():
    clock = Clock()
    d, _ = detector(clock, hold=30.0)
    reg = CollectorRegistry()
    reg.register(StormCollector(d))
    d.observe("h1", ["tapa"], [])
    d.observe("h1", ["tapa"], [])
    text = generate_latest(reg).decode()
    assert 'lbtap_storm_alarms_total{host="h1",reason="duplicate_up"} 1.0' in text
    assert 'lbtap_storm_alarms_active{host="h1",reason="duplicate_up"} 1.0' in text
    clock.t += 60
    text = generate_latest(reg).decode()
    assert 'lbtap_storm_alarms_active{host="h1",reason="duplicate_up"} 0.0' in text
    assert 'lbtap_storm_alarms_total{host="h1",reason="duplicate_up"} 1.0' in text
