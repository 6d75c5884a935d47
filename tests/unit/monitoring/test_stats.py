"""Rates, idle and burst flags of ``monitoring.stats`` with injected sample times."""

from __future__ import annotations

import pytest

from lbtap.drivers.host.base import LinkStats
from lbtap.monitoring import stats


def ls(rx=0, tx=0, rxb=0, txb=0, **kw) -> LinkStats:
    return LinkStats(rx_packets=rx, tx_packets=tx, rx_bytes=rxb, tx_bytes=txb, **kw)


def feed(series: list[tuple[float, dict[str, LinkStats]]], params=stats.Params()) -> list[list[stats.DeviceReport]]:
    st = stats.TrafficState()
    return [stats.observe(st, stats.Sample(t, c), params) for t, c in series]


@pytest.mark.parametrize("prev, cur, dt, key, want", [
    (ls(rx=10), ls(rx=30), 2.0, "rx_packets", 10.0),
    (ls(txb=1000), ls(txb=5000), 4.0, "tx_bytes", 1000.0),
    (ls(rx=500), ls(rx=20), 1.0, "rx_packets", 20.0),  # counter reset: device recreated
    (ls(rx_errors=1), ls(rx_errors=4), 0.5, "rx_errors", 6.0),
])
def test_rates(prev, cur, dt, key, want):
    assert stats.rates(prev, cur, dt)[key] == pytest.approx(want)


def test_rates_need_increasing_time():
    with pytest.raises(ValueError):
        stats.rates(ls(), ls(), 0)


def test_first_sample_only_primes_and_flags_never():
    [[r1, r2]] = feed([(0, {"tapa": ls(), "tapb": ls(rx=3)})])
    assert r1.rates is None and r1.flags == ("never",)
    assert r2.flags == ()


def test_idle_after_configurable_time_then_cleared_by_traffic():
    p = stats.Params(idle_after=10)
    series = [(t, {"tap1": ls(rx=5)}) for t in (0, 5, 9, 10, 20)] + [(21, {"tap1": ls(rx=6)})]
    flags = [r[0].flags for r in feed(series, p)]
    assert flags == [(), (), (), ("idle",), ("idle",), ()]
    assert feed(series, p)[4][0].idle_for == 20


def test_burst_far_above_own_baseline():
    p = stats.Params(burst_factor=10, burst_min_pps=100, warmup=3, alpha=0.2)
    rx, series = 0, []
    for t in range(6):  # steady 50 pps
        series.append((float(t), {"tapx": ls(rx=rx)}))
        rx += 50
    series.append((6.0, {"tapx": ls(rx=rx + 5000)}))  # 5050 pps, ~100x its baseline
    reports = feed(series, p)
    assert all("burst" not in r[0].flags for r in reports[:-1])
    assert "burst" in reports[-1][0].flags
    assert reports[-2][0].baseline_pps == pytest.approx(50)


def test_busy_device_at_its_usual_rate_is_not_a_burst():
    p = stats.Params(burst_factor=10, burst_min_pps=100, warmup=3)
    series = [(float(t), {"router": ls(rx=t * 100000)}) for t in range(8)]
    assert all("burst" not in r[0].flags for r in feed(series, p))


def test_small_absolute_rate_on_quiet_port_is_not_a_burst():
    p = stats.Params(burst_factor=10, burst_min_pps=100, warmup=2)
    series = [(0.0, {"t": ls(rx=0)}), (1.0, {"t": ls(rx=0)}), (2.0, {"t": ls(rx=0)}), (3.0, {"t": ls(rx=0)}),
              (4.0, {"t": ls(rx=50)})]
    assert "burst" not in feed(series, p)[-1][0].flags


def test_no_burst_before_warmup():
    p = stats.Params(warmup=3, burst_min_pps=1)
    series = [(0.0, {"t": ls(rx=0)}), (1.0, {"t": ls(rx=1)}), (2.0, {"t": ls(rx=10000)})]
    assert "burst" not in feed(series, p)[-1][0].flags


def test_errors_and_drops_flagged_when_they_grow():
    series = [(0.0, {"t": ls(rx=1, rx_dropped=2)}), (1.0, {"t": ls(rx=2, rx_dropped=2)}),
              (2.0, {"t": ls(rx=3, rx_dropped=3, tx_errors=1)})]
    reports = feed(series)
    assert reports[1][0].flags == ()
    assert set(reports[2][0].flags) == {"drops", "errors"}


def test_deleted_device_is_forgotten_and_restarts_baseline():
    st = stats.TrafficState()
    p = stats.Params()
    stats.observe(st, stats.Sample(0, {"a": ls(rx=1), "b": ls()}), p)
    stats.observe(st, stats.Sample(1, {"a": ls(rx=2)}), p)
    assert set(st.devices) == {"a"}
    [ra, rb] = stats.observe(st, stats.Sample(2, {"a": ls(rx=3), "b": ls(rx=9)}), p)
    assert rb.rates is None and ra.rates["rx_packets"] == 1


def test_select_and_to_dict():
    [[ra, rb]] = feed([(0, {"a": ls(rx=1), "b": ls()})])
    assert stats.select([ra, rb], {"b"}) == [rb]
    assert stats.select([ra, rb], None) == [ra, rb]
    d = rb.to_dict()
    assert d["device"] == "b" and d["rates"] is None and d["flags"] == ["never"]
