"""Structured logging: one line per record, ``key=value`` pairs after the message.

Code logs context through ``extra={"device": ..., "port_id": ...}``; those keys are
appended so that a log line can be grepped by device or port and parsed by
``lbtap logs --diagnose``.
"""

from __future__ import annotations

import logging
import sys
import time

_CONTEXT_KEYS = ("device", "port_id", "network_id", "host", "op", "attempt", "retry_in", "error")


class KeyValueFormatter(logging.Formatter):
    """``2026-11-29T00:00:00.123Z INFO lbtap.agent message device=tap1 port_id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{ts}.{int(record.msecs):03d}Z {record.levelname} {record.name} {record.getMessage()}"
        pairs = [f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS if getattr(record, k, None) is not None]
        if pairs:
            line += " " + " ".join(pairs)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", stream=None) -> None:
    """Install the key=value formatter on the root logger (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_lbtap", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler._lbtap = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # uvicorn's access log per request would drown the agent's lines.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # Alembic narrates every plugin and migration step at INFO on each start.
    logging.getLogger("alembic").setLevel(logging.WARNING)
