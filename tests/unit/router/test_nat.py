"""The router's NAT as one nftables script."""

from __future__ import annotations

import pytest

from lbtap.drivers.router import FloatingIP, Gateway, Router, RouterPort, render_nat

A = RouterPort("pa0000000000", "fa:16:3e:00:0a:01", ("10.0.0.1/24",))
B = RouterPort("pb0000000000", "fa:16:3e:00:0b:01", ("10.1.0.1/24", "2001:db8:1::1/64"))
G = RouterPort("pg0000000000", "fa:16:3e:00:0c:01", ("203.0.113.2/24", "2001:db8:f::2/64"))
QG = "qg-pg000000000"


def router(snat: bool = True, fips: tuple[FloatingIP, ...] = (), gw: RouterPort | None = G) -> Router:
    return Router("r1", (A, B), Gateway(gw, ("203.0.113.1",), snat) if gw else None, floating_ips=fips)


def rules(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines()]


def test_replaces_the_whole_table_in_one_transaction() -> None:
    lines = rules(render_nat(router()))
    assert lines[:3] == ["table ip lbtap_nat {}", "delete table ip lbtap_nat", "table ip lbtap_nat {"]
    assert sum(1 for x in lines if x.startswith("delete")) == 1


def test_no_gateway_means_an_empty_table() -> None:
    assert render_nat(router(gw=None)) == "table ip lbtap_nat {}\ndelete table ip lbtap_nat\ntable ip lbtap_nat {\n}\n"


def test_gateway_without_ipv4_means_no_nat() -> None:
    v6_only = RouterPort("pg0000000000", "fa:16:3e:00:0c:01", ("2001:db8:f::2/64",))
    assert "snat" not in render_nat(router(gw=v6_only))


@pytest.mark.parametrize("snat, expected", [(True, True), (False, False)])
def test_snat_for_internal_subnets_only_with_enable_snat(snat: bool, expected: bool) -> None:
    lines = rules(render_nat(router(snat=snat)))
    assert (f'oifname "{QG}" ip saddr @internal snat to 203.0.113.2' in lines) is expected
    assert "elements = { 10.0.0.0/24, 10.1.0.0/24 }" in lines  # IPv6 subnets are not NATed
    # East-west traffic keeps its addresses whatever enable_snat says.
    assert f'iifname != "{QG}" oifname != "{QG}" ct status & dnat == 0 accept' in lines


def test_floating_ips_as_dnat_snat_pairs() -> None:
    fips = (FloatingIP("203.0.113.11", "10.1.0.7"), FloatingIP("203.0.113.10", "10.0.0.5"))
    lines = rules(render_nat(router(fips=fips)))
    assert "elements = { 203.0.113.10 : 10.0.0.5, 203.0.113.11 : 10.1.0.7 }" in lines
    assert "elements = { 10.0.0.5 : 203.0.113.10, 10.1.0.7 : 203.0.113.11 }" in lines
    assert lines.count("dnat to ip daddr map @fip_dnat") == 2  # prerouting and output
    assert "snat to ip saddr map @fip_snat" in lines
    # The floating-IP SNAT comes before the catch-all gateway SNAT.
    assert lines.index("snat to ip saddr map @fip_snat") < lines.index(
        f'oifname "{QG}" ip saddr @internal snat to 203.0.113.2')


def test_floating_ips_work_without_snat() -> None:
    lines = rules(render_nat(router(snat=False, fips=(FloatingIP("203.0.113.10", "10.0.0.5"),))))
    assert "snat to ip saddr map @fip_snat" in lines
    assert not any("@internal snat" in x for x in lines)


def test_unusable_and_duplicate_floating_ips() -> None:
    fips = (FloatingIP("203.0.113.10", "10.0.0.5"), FloatingIP("203.0.113.10", "10.0.0.6"),  # dup address
            FloatingIP("203.0.113.12", "192.168.0.5"),  # fixed IP behind no interface
            FloatingIP("203.0.113.13", "10.0.0.5"))  # second floating IP for one fixed IP
    script = render_nat(router(fips=fips))
    assert "elements = { 203.0.113.10 : 10.0.0.5, 203.0.113.13 : 10.0.0.5 }" in script
    assert "elements = { 10.0.0.5 : 203.0.113.10 }" in script
    assert "192.168.0.5" not in script and "10.0.0.6" not in script


def test_floating_ips_need_a_gateway() -> None:
    assert "fip" not in render_nat(router(gw=None, fips=(FloatingIP("203.0.113.10", "10.0.0.5"),)))


def test_rendering_is_deterministic() -> None:
    fips = tuple(FloatingIP(f"203.0.113.{i}", f"10.0.0.{i}") for i in range(10, 60))
    assert render_nat(router(fips=fips)) == render_nat(router(fips=tuple(reversed(fips))))
