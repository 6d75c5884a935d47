"""Traffic rates and flags from successive counter samples (pure: ``now`` is injected).

The seed's operators read ``ifconfig`` counters by hand: a rate near zero means a fault
(or no traffic), a very high rate heavy traffic (or a fault, such as a loop or a storm).
Here every device keeps its own baseline, an exponentially weighted moving average of
its packet rate, so "very high" means "far above what *this* device usually does"
rather than one threshold for a busy router port and an idle VM alike.

Usage: ``state = TrafficState()``; for each sample ``reports = observe(state, sample,
params)``. The first sample of a device only primes it (a rate needs two samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lbtap.drivers.host.base import LinkStats

COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")


@dataclass(frozen=True)
class Sample:
    """Counters of every device at time ``t`` (seconds, any monotonic origin)."""

    t: float
    counters: dict[str, LinkStats]


@dataclass(frozen=True)
class Params:
    """``idle_after``: seconds without a packet before a device is flagged "idle".
    ``burst_factor``: a packet rate this many times the baseline is flagged "burst",
    once the baseline has ``warmup`` rates and the rate is at least ``burst_min_pps``
    (so that 0 → 5 packets/s on a quiet port is not an alarm). ``alpha``: EWMA weight.
    """

    idle_after: float = 60.0
    burst_factor: float = 10.0
    burst_min_pps: float = 100.0
    warmup: int = 3
    alpha: float = 0.2


@dataclass
class DeviceState:
    last: LinkStats
    last_t: float
    last_active: float  # time of the last sample where packets moved (or first seen)
    baseline_pps: float | None = None
    rates_seen: int = 0


@dataclass
class TrafficState:
    devices: dict[str, DeviceState] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceReport:
    """One device after one sample: totals, per-second rates (None before the second
    sample) and flags ("idle", "burst", "errors", "drops", "never")."""

    device: str
    totals: LinkStats
    rates: dict[str, float] | None
    baseline_pps: float | None
    idle_for: float
    flags: tuple[str, ...]

    def to_dict(self) -> dict:
        d = {"device": self.device, **{k: getattr(self.totals, k) for k in COUNTERS}}
        d["rates"] = {k: round(v, 3) for k, v in self.rates.items()} if self.rates is not None else None
        d["baseline_pps"] = round(self.baseline_pps, 3) if self.baseline_pps is not None else None
        d["idle_for"] = round(self.idle_for, 3)
        d["flags"] = list(self.flags)
        return d


def delta(prev: int, cur: int) -> int:
    """Counter increase; a decrease means the device was recreated (counters restart)."""
    return cur - prev if cur >= prev else cur


def rates(prev: LinkStats, cur: LinkStats, dt: float) -> dict[str, float]:
    """Per-second rate of every counter between two samples ``dt`` seconds apart."""
    if dt <= 0:
        raise ValueError("samples must be taken at increasing times")
    return {k: delta(getattr(prev, k), getattr(cur, k)) / dt for k in COUNTERS}


def packets(s: LinkStats) -> int:
    return s.rx_packets + s.tx_packets


def observe(state: TrafficState, sample: Sample, params: Params) -> list[DeviceReport]:
    """Fold ``sample`` into ``state`` and report on every device in it.

    Devices missing from the sample are forgotten (deleted), so a recreated device
    starts a new baseline.
    """
    reports: list[DeviceReport] = []
    now = sample.t
    for gone in set(state.devices) - set(sample.counters):
        del state.devices[gone]
    for name in sorted(sample.counters):
        cur = sample.counters[name]
        ds = state.devices.get(name)
        if ds is None:
            state.devices[name] = DeviceState(last=cur, last_t=now, last_active=now)
            flags = ("never",) if packets(cur) == 0 else ()
            reports.append(DeviceReport(name, cur, None, None, 0.0, flags))
            continue
        r = rates(ds.last, cur, now - ds.last_t)
        pps = r["rx_packets"] + r["tx_packets"]
        flags: list[str] = []
        if pps > 0:
            ds.last_active = now
        idle_for = now - ds.last_active
        if idle_for >= params.idle_after:
            flags.append("idle")
        if packets(cur) == 0:
            flags.append("never")
        # Compare with the baseline *before* folding the new rate in, so a spike cannot
        # raise its own bar.
        if (ds.baseline_pps is not None and ds.rates_seen >= params.warmup
                and pps >= params.burst_min_pps and pps > params.burst_factor * max(ds.baseline_pps, 1e-9)):
            flags.append("burst")
        if r["rx_errors"] + r["tx_errors"] > 0:
            flags.append("errors")
        if r["rx_dropped"] + r["tx_dropped"] > 0:
            flags.append("drops")
        ds.baseline_pps = pps if ds.baseline_pps is None else params.alpha * pps + (1 - params.alpha) * ds.baseline_pps
        ds.rates_seen += 1
        ds.last, ds.last_t = cur, now
        reports.append(DeviceReport(name, cur, r, ds.baseline_pps, idle_for, tuple(flags)))
    return reports


def select(reports: list[DeviceReport], devices: set[str] | None) -> list[DeviceReport]:
    """Only the reports of ``devices`` (None: all)."""
    return reports if devices is None else [r for r in reports if r.device in devices]
