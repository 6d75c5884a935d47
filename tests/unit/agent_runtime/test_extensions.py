"""Agent extensions see details, removals and their casts; unknown names are refused."""

from __future__ import annotations

import asyncio

import pytest

from lbtap.agent.extensions import BaseExtension, load_extensions
from lbtap.domain.naming import tap_name
from tests.unit.agent_runtime.test_inprocess import make_ports, status, system, wait_until  # noqa: F401


class Recorder(BaseExtension):
    name = "recorder"

    def __init__(self):
        self.details, self.gone, self.casts, self.passes = [], [], [], 0

    def cast_handlers(self):
        return {"fdb_add": lambda kw: self.casts.append(kw)}

    def port_details(self, details):
        self.details.append(details.device)

    def device_gone(self, device):
        self.gone.append(device)

    async def process(self, now):
        self.passes += 1


def test_unknown_extension_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown agent extension 'nope'"):
        load_extensions(("nope",))


async def test_extension_hooks(system):
    s = system
    rec = Recorder()
    rec.bind(s.agent)
    s.agent.extensions.append(rec)
    s.agent._ext_casts.update(rec.cast_handlers())
    net, (port,) = make_ports(s, 1)
    tap = tap_name(port["id"])
    await s.on_host(s.host.create_tap, tap)
    await wait_until(lambda: status(s, port["id"]) == "ACTIVE")
    assert rec.details == [tap] and rec.passes > 0
    await s.agent._handle_cast("fdb_add", {"fdb_entries": {}})
    assert rec.casts == [{"fdb_entries": {}}]
    await s.on_host(s.host.delete_link, tap)
    await wait_until(lambda: rec.gone == [tap])
