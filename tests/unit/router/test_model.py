"""Router model from L3 RPC dicts, and the pure desired-state functions."""

from __future__ import annotations

from lbtap.drivers.host.base import Route
from lbtap.drivers.router import (
    ExtraRoute,
    FloatingIP,
    Gateway,
    Router,
    RouterPort,
    desired_addresses,
    desired_routes,
)

A = RouterPort("pa0000000000", "fa:16:3e:00:0a:01", ("10.0.0.1/24",))
G = RouterPort("pg0000000000", "fa:16:3e:00:0c:01", ("203.0.113.2/24", "2001:db8:f::2/64"))


def test_from_l3_rpc_dict() -> None:
    r = Router.from_dict({
        "id": "r1",
        "enable_snat": False,
        "routes": [{"destination": "10.50.0.0/16", "nexthop": "10.0.0.254"}],
        "_interfaces": [{"id": "pa", "mac_address": "FA:16:3E:00:0A:01", "mtu": 1450,
                         "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.1"}],
                         "subnets": [{"id": "s1", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"}]}],
        "gw_port": {"id": "pg", "mac_address": "fa:16:3e:00:0c:01",
                    "fixed_ips": [{"subnet_id": "e1", "ip_address": "203.0.113.2", "prefixlen": 24}],
                    "subnets": [{"id": "e1", "cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1"}]},
        "_floatingips": [{"id": "f1", "floating_ip_address": "203.0.113.10", "fixed_ip_address": "10.0.0.5"},
                         {"id": "f2", "floating_ip_address": "203.0.113.11", "fixed_ip_address": None}],
    })
    assert r.interfaces == (RouterPort("pa", "fa:16:3e:00:0a:01", ("10.0.0.1/24",), 1450),)
    assert r.gateway == Gateway(RouterPort("pg", "fa:16:3e:00:0c:01", ("203.0.113.2/24",)), ("203.0.113.1",), False)
    assert r.routes == (ExtraRoute("10.50.0.0/16", "10.0.0.254"),)
    assert r.floating_ips == (FloatingIP("203.0.113.10", "10.0.0.5", "f1"),)  # unassociated ones skipped


def test_desired_addresses_put_floating_ips_on_the_gateway() -> None:
    r = Router("r1", (A,), Gateway(G, ("203.0.113.1",)),
               floating_ips=(FloatingIP("203.0.113.10", "10.0.0.5"), FloatingIP("203.0.113.11", "172.16.0.1")))
    assert desired_addresses(r) == {
        "qr-pa000000000": {"10.0.0.1/24"},
        "qg-pg000000000": {"203.0.113.2/24", "2001:db8:f::2/64", "203.0.113.10/32"},
    }


def test_desired_routes_default_and_extra() -> None:
    r = Router("r1", (A,), Gateway(G, ("203.0.113.1", "2001:db8:f::1", "198.51.100.1")),
               routes=(ExtraRoute("10.50.0.0/16", "10.0.0.254"), ExtraRoute("10.60.0.0/16", "192.0.2.99"),
                       ExtraRoute("0.0.0.0/0", "10.0.0.253")))
    routes, problems = desired_routes(r)
    assert routes == [
        Route("default", "qg-pg000000000", "203.0.113.1", family=4),
        Route("default", "qg-pg000000000", "2001:db8:f::1", family=6),
        Route("default", "qr-pa000000000", "10.0.0.253", family=4),
        Route("10.50.0.0/16", "qr-pa000000000", "10.0.0.254", family=4),
    ]
    assert len(problems) == 2 and any("198.51.100.1" in p for p in problems)
    assert any("192.0.2.99" in p for p in problems)


def test_no_gateway_no_default_route() -> None:
    assert desired_routes(Router("r1", (A,))) == ([], [])
