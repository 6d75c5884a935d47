"""Pure QoS decisions: Neutron bandwidth-limit rules -> tc parameters and device names."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from lbtap.domain.naming import IFNAMSIZ, TAP_PREFIX, validate_ifname

INGRESS = "ingress"  # toward the guest (Neutron's direction, the guest's point of view)
EGRESS = "egress"  # from the guest
IFB_PREFIX = "ifb"
TBF_LATENCY_US = 50_000  # what Neutron's tc_lib uses
MIN_BURST_BYTES = 3000  # at least two full-size frames, or TBF stalls
U32_MAX = 2**32 - 1
MAX_RATE_KBPS = U32_MAX * 8 // 1000  # TCA_TBF_PARMS rate is 32-bit bytes/s
# psched ticks per microsecond (t2us / us2t of /proc/net/psched: 1000 / 64 on every
# kernel with high-resolution timers). TBF's "buffer" is the burst's transmit time in
# these ticks, a u32: about 275 s worth of the rate at most.
PSCHED_TICKS_PER_US = 1000 / 64
# lbtap's own ifb devices: ifb + a port-id prefix (tap_name), or ifb + 11 hex (hashed).
IFB_NAME_RE = re.compile(r"ifb(?:[0-9a-f]{8}-[0-9a-f]{2}|[0-9a-f]{11})")


def _tbf_fits(rate_bytes: int, burst_bytes: int) -> bool:
    """Whether pyroute2 can encode this TBF: its buffer (the burst's transmit time in
    psched ticks, computed as pyroute2 does) and limit (rate x latency + burst, bytes)
    are u32 fields."""
    buffer = int(int(1_000_000 * (float(burst_bytes) / rate_bytes)) * PSCHED_TICKS_PER_US)
    limit = int(rate_bytes * float(TBF_LATENCY_US) / 1_000_000 + burst_bytes)
    return buffer <= U32_MAX and limit <= U32_MAX


def max_burst_bytes(rate_bytes: int) -> int:
    """The largest burst (bytes) a TBF at ``rate_bytes`` per second can hold."""
    lo, hi = 0, U32_MAX  # _tbf_fits(rate, lo) holds; the answer is below hi + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _tbf_fits(rate_bytes, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_burst_kbps(max_kbps: int) -> int:
    """The largest ``max_burst_kbps`` tc can apply with ``max_kbps`` (the API's bound)."""
    return max_burst_bytes(max_kbps * 1000 // 8) // 125


@dataclass(frozen=True)
class BandwidthLimit:
    """A ``bandwidth_limit`` rule: kilobits (1000 bits) per second and burst kilobits.

    ``max_burst_kbps`` 0 means Neutron's default, 80% of the rate (i.e. 0.8 s worth).
    """

    max_kbps: int
    max_burst_kbps: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_kbps <= MAX_RATE_KBPS:
            raise ValueError(f"max_kbps must be 1-{MAX_RATE_KBPS}, not {self.max_kbps}")
        if self.max_burst_kbps < 0:
            raise ValueError("max_burst_kbps must be >= 0")

    @property
    def rate_bytes(self) -> int:
        """Rate in bytes per second, as tc wants it."""
        return self.max_kbps * 1000 // 8

    @property
    def burst_bytes(self) -> int:
        """Burst in bytes, capped at what tc can express at this rate (the API refuses
        more; a rule stored before that check must not make every retry fail)."""
        kbits = self.max_burst_kbps or int(self.max_kbps * 0.8)
        return min(max(kbits * 1000 // 8, MIN_BURST_BYTES), max_burst_bytes(self.rate_bytes))

    def tbf(self) -> dict[str, int | str]:
        """Keyword arguments of a TBF qdisc for pyroute2's ``tc()``."""
        return {"rate": self.rate_bytes, "burst": self.burst_bytes, "latency": f"{TBF_LATENCY_US}us"}


@dataclass(frozen=True)
class PortLimits:
    """Both directions of a port's limit, from the guest's point of view; None = unlimited."""

    ingress: BandwidthLimit | None = None
    egress: BandwidthLimit | None = None

    @property
    def empty(self) -> bool:
        return self.ingress is None and self.egress is None


def from_rules(rules: Iterable[Mapping]) -> PortLimits:
    """Neutron ``bandwidth_limit_rules`` dicts (max_kbps, max_burst_kbps, direction —
    egress when absent, as in Neutron) -> ``PortLimits``. Other rule types are ignored."""
    out: dict[str, BandwidthLimit] = {}
    for r in rules:
        if r.get("type", "bandwidth_limit") != "bandwidth_limit":
            continue
        direction = r.get("direction") or EGRESS
        if direction not in (INGRESS, EGRESS):
            raise ValueError(f"direction must be ingress or egress, not {direction!r}")
        if direction in out:
            raise ValueError(f"two bandwidth_limit rules for direction {direction}")
        out[direction] = BandwidthLimit(int(r["max_kbps"]), int(r.get("max_burst_kbps") or 0))
    return PortLimits(ingress=out.get(INGRESS), egress=out.get(EGRESS))


def is_lbtap_ifb(name: str) -> bool:
    """Whether ``name`` follows ``ifb_name``'s patterns for lbtap taps (never the
    kernel's own ``ifb0``, ``ifb1``)."""
    return IFB_NAME_RE.fullmatch(name) is not None


def ifb_name(tap: str) -> str:
    """The ifb device that shapes traffic from the guest of ``tap``.

    ``tapXXXXXXXXXXX`` -> ``ifbXXXXXXXXXXX`` (same port-id prefix, so operators can tell
    which port it serves); other names get a hash, still within IFNAMSIZ.
    """
    validate_ifname(tap)
    if tap.startswith(TAP_PREFIX):
        return IFB_PREFIX + tap[len(TAP_PREFIX):]
    digest = hashlib.sha1(tap.encode()).hexdigest()
    return (IFB_PREFIX + digest)[:IFNAMSIZ - 1]
