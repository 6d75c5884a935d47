"""Output of the monitoring commands: aligned tables for people, JSON for scripts.

The JSON form carries the same data as the table, unabbreviated (raw byte counts,
seconds as numbers), so scripts never parse the table.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence


def dumps(obj: Any) -> str:
    """Stable, indented JSON (keys in insertion order, non-JSON values as strings)."""
    return json.dumps(obj, indent=2, default=str)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) or "-"
    return str(value)


def table(rows: Iterable[dict], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A left-aligned table of ``columns`` of each row (missing values print as "-")."""
    headers = list(headers or [c.upper() for c in columns])
    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def human_bytes(n: float | None) -> str:
    """1536 -> "1.5K" (binary units), as ``ip -h`` prints."""
    if n is None:
        return "-"
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def human_age(seconds: float | None) -> str:
    """75 -> "1m15s"; None -> "-"."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def human_rate(per_s: float | None, unit: str = "") -> str:
    if per_s is None:
        return "-"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.1f}M{unit}"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f}k{unit}"
    return f"{per_s:.1f}{unit}"
