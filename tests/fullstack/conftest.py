"""Fixtures for fullstack tests: namespaces and ``lbtap up`` processes, cleaned up."""

from __future__ import annotations

import pytest

from tests.fullstack import harness
from tests.support import require_root, unique_netns


@pytest.fixture
def netns_names():
    """Hands out prefixed namespace names; deletes every one of them afterwards."""
    names: list[str] = []

    def make(tag: str = "") -> str:
        name = unique_netns(tag)
        names.append(name)
        return name

    yield make
    for name in names:
        harness.netns_delete(name)


@pytest.fixture
def lbtap_up(tmp_path, netns_names):
    """Factory: start ``lbtap up`` on a fresh host namespace; stopped at teardown."""
    require_root()
    procs: list[harness.LbtapUp] = []

    def start(config: str = "", host: str | None = None, netns: str | None = None, workdir=None) -> harness.LbtapUp:
        wd = workdir or tmp_path / f"up{len(procs)}"
        wd.mkdir(exist_ok=True)
        # A test-prefixed host: the DHCP/L3 namespaces it creates carry it as suffix.
        up = harness.LbtapUp(wd, netns=netns or netns_names("h"), host=host or unique_netns("h"), config=config)
        procs.append(up)
        return up.start()

    yield start
    for up in procs:
        up.stop()
        # dnsmasq and qdhcp-/qrouter- namespaces outlive an agent by design (a restarted
        # agent adopts them); a test leaves none behind.
        harness.cleanup_network_agents(up)


@pytest.fixture
def deployment(tmp_path, netns_names):
    """Factory: ``lbtap server`` + agents over RabbitMQ in a fresh vhost; all stopped after."""
    from tests.support import service_url

    require_root()
    created: list[tuple[harness.Deployment, str]] = []

    def make(config: str = "", db_url: str | None = None) -> harness.Deployment:
        base = service_url("LBTAP_TEST_AMQP_URL")
        vhost = unique_netns("vh")
        url = harness.rabbit_vhost_url(base, vhost)
        d = harness.Deployment(tmp_path, url, config=config, db_url=db_url)
        created.append((d, vhost))
        return d

    yield make
    for d, vhost in created:
        d.stop()
        harness.rabbit_vhost_delete(vhost)
