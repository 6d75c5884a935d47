"""Namespace and device names of routers and DHCP servers."""

from __future__ import annotations

import pytest

from lbtap.drivers.router.naming import (
    NETNS_NAME_MAX,
    dhcp_device,
    dhcp_namespace,
    gateway_device,
    host_device,
    internal_device,
    owned_ids,
    router_namespace,
)

RID = "8d4c1b2e-3f4a-4b5c-8d9e-0a1b2c3d4e5f"


@pytest.mark.parametrize("fn, prefix", [(router_namespace, "qrouter-"), (dhcp_namespace, "qdhcp-")])
@pytest.mark.parametrize("host, suffix", [(None, ""), ("", ""), ("compute-1", "-compute-1"),
                                          ("h1.example.org", "-h1.example.org")])
def test_namespace_names(fn, prefix: str, host: str | None, suffix: str) -> None:
    assert fn(RID, host) == f"{prefix}{RID}{suffix}"


def test_unsafe_host_is_sanitised_and_disambiguated() -> None:
    a, b = router_namespace(RID, "a/b"), router_namespace(RID, "a b")
    assert "/" not in a and " " not in b
    assert a != b  # both would become "a_b" without the hash


def test_long_host_is_shortened_but_unique() -> None:
    a = router_namespace(RID, "h" * 400 + "1")
    b = router_namespace(RID, "h" * 400 + "2")
    assert len(a) <= NETNS_NAME_MAX and len(b) <= NETNS_NAME_MAX and a != b
    assert a.startswith(f"qrouter-{RID}-hhh")


@pytest.mark.parametrize("bad", ["", "a/b"])
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        router_namespace(bad)


def test_owned_ids_finds_this_hosts_namespaces_only() -> None:
    names = [router_namespace(RID), router_namespace(RID, "h1"), router_namespace("r2", "h1"),
             router_namespace("r3", "h2"), dhcp_namespace(RID, "h1"), "qrouter-not-a-uuid", "lbtt-x"]
    assert owned_ids(names, "qrouter-", "h1") == [RID, "r2"]
    assert owned_ids(names, "qrouter-") == [RID]
    assert owned_ids(names, "qdhcp-", "h1") == [RID]


@pytest.mark.parametrize("fn, name", [(internal_device, "qr-8d4c1b2e-3f"), (gateway_device, "qg-8d4c1b2e-3f"),
                                      (dhcp_device, "ns-8d4c1b2e-3f"), (host_device, "tap8d4c1b2e-3f")])
def test_device_names_fit_ifnamsiz(fn, name: str) -> None:
    assert fn(RID) == name and len(name) <= 15
