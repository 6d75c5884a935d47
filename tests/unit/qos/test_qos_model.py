"""QoS decisions: Neutron rules to tc parameters, ifb names, the fake driver."""

from __future__ import annotations

import pytest

from lbtap.domain.naming import IFNAMSIZ, tap_name
from lbtap.drivers.qos import BandwidthLimit, FakeQos, PortLimits, TcQosDriver, from_rules, ifb_name, max_burst_kbps
from lbtap.drivers.qos.model import MAX_RATE_KBPS, MIN_BURST_BYTES


@pytest.mark.parametrize("limit, rate, burst", [
    (BandwidthLimit(8000), 1_000_000, 800_000),  # default burst: 80% of a second
    (BandwidthLimit(8000, 1000), 1_000_000, 125_000),
    (BandwidthLimit(10), 1250, MIN_BURST_BYTES),  # never below two full frames
    (BandwidthLimit(1_000_000, 100_000), 125_000_000, 12_500_000),
])
def test_tbf_parameters(limit, rate, burst):
    assert (limit.rate_bytes, limit.burst_bytes) == (rate, burst)
    assert limit.tbf() == {"rate": rate, "burst": burst, "latency": "50000us"}


@pytest.mark.parametrize("kw", [{"max_kbps": 0}, {"max_kbps": MAX_RATE_KBPS + 1}, {"max_kbps": 10, "max_burst_kbps": -1}])
def test_invalid_limits(kw):
    with pytest.raises(ValueError):
        BandwidthLimit(**kw)


def test_from_rules_maps_neutron_directions():
    assert from_rules([]) == PortLimits()
    assert from_rules([{"max_kbps": 1000}]) == PortLimits(egress=BandwidthLimit(1000))  # Neutron's default
    got = from_rules([
        {"type": "bandwidth_limit", "max_kbps": 2000, "max_burst_kbps": 200, "direction": "ingress"},
        {"type": "bandwidth_limit", "max_kbps": 1000, "max_burst_kbps": None, "direction": "egress"},
        {"type": "dscp_marking", "dscp_mark": 26},
    ])
    assert got == PortLimits(ingress=BandwidthLimit(2000, 200), egress=BandwidthLimit(1000))
    with pytest.raises(ValueError, match="two"):
        from_rules([{"max_kbps": 1}, {"max_kbps": 2, "direction": "egress"}])
    with pytest.raises(ValueError, match="direction"):
        from_rules([{"max_kbps": 1, "direction": "up"}])


@pytest.mark.parametrize("tap, expected", [
    (tap_name("0123456789abcdef"), "ifb0123456789a"),
    ("tapqa", "ifbqa"),
])
def test_ifb_name_follows_the_tap(tap, expected):
    assert ifb_name(tap) == expected


def test_ifb_name_of_other_devices_is_hashed_and_fits():
    name = ifb_name("veth-something1")
    assert name.startswith("ifb") and len(name) < IFNAMSIZ
    assert name != ifb_name("veth-something2")
    with pytest.raises(ValueError):
        ifb_name("x" * 16)


def test_fake_qos_records_limits():
    q = FakeQos()
    q.set_limits("tapa", BandwidthLimit(1000), None)
    q.set_limits("tapb", None, BandwidthLimit(2000))
    assert q.limits("tapa") == PortLimits(ingress=BandwidthLimit(1000))
    q.set_limits("tapa", None, None)
    q.clear("tapb")
    assert q.limits_by_tap == {} and q.limits("tapb").empty and q.calls == 4


def test_real_driver_refuses_unknown_egress_mode():
    with pytest.raises(ValueError):
        TcQosDriver(None, egress_mode="magic")


def test_burst_bound_follows_tbf_u32_fields():
    from lbtap.drivers.qos.model import U32_MAX, _tbf_fits, max_burst_bytes

    # TBF's buffer is the burst's transmit time in psched ticks (15.625 per us), a u32:
    # about 274.9 s of the rate; at the top rates the limit (rate x 50 ms + burst) binds.
    assert max_burst_kbps(1000) == 274_877
    assert max_burst_kbps(1) == 274
    assert max_burst_kbps(MAX_RATE_KBPS) < MAX_RATE_KBPS
    for rate in (125, 125_000, MAX_RATE_KBPS * 125):
        top = max_burst_bytes(rate)
        assert _tbf_fits(rate, top) and not _tbf_fits(rate, top + 1)
    assert max_burst_bytes(125_000) * 15.625 * 1_000_000 / 125_000 <= U32_MAX


def test_an_overlong_burst_is_capped_not_passed_to_tc():
    from lbtap.drivers.qos.model import max_burst_bytes

    capped = BandwidthLimit(1000, 1_000_000)  # accepted by an older API: 1000 s of 1 Mbit/s
    assert capped.tbf()["burst"] == capped.burst_bytes == max_burst_bytes(125_000)
    assert BandwidthLimit(1000, 10_000).burst_bytes == 1_250_000, "bursts within the bound are kept"
