"""dnsmasq rendering: command line, hosts, opts and addn-hosts files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbtap.drivers.dhcp import (
    DhcpNetwork,
    DnsmasqPaths,
    FixedIP,
    HostRoute,
    Port,
    Subnet,
    hostname_for,
    render_addn_hosts,
    render_cmdline,
    render_hosts,
    render_opts,
)

V4 = Subnet("s4", "10.0.0.0/24", 4, "10.0.0.1", ("198.51.100.53", "198.51.100.54"))
V4B = Subnet("s4b", "10.0.1.0/24", 4, "10.0.1.1")
V6_STATEFUL = Subnet("s6", "2001:db8::/64", 6, "2001:db8::1", ipv6_address_mode="dhcpv6-stateful",
                     ipv6_ra_mode="dhcpv6-stateful")
V6_STATELESS = Subnet("s6l", "2001:db8:1::/64", 6, "2001:db8:1::1", ipv6_address_mode="dhcpv6-stateless",
                      ipv6_ra_mode="dhcpv6-stateless")
V6_SLAAC = Subnet("s6s", "2001:db8:2::/64", 6, "2001:db8:2::1", ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
V4_OFF = Subnet("off", "10.9.0.0/24", 4, "10.9.0.1", enable_dhcp=False)
PATHS = DnsmasqPaths(Path("/var/lib/lbtap/dhcp/n1"))


def port(pid: str, mac: str, *ips: tuple[str, str], dns_name: str = "") -> Port:
    return Port(pid, mac, tuple(FixedIP(s, ip) for s, ip in ips), dns_name=dns_name)


@pytest.mark.parametrize("p, ip, expected", [
    (port("a", "fa:16:3e:00:00:01"), "10.0.0.5", "host-10-0-0-5"),
    (port("a", "fa:16:3e:00:00:01"), "2001:db8::5", "host-2001-db8--5"),
    (port("a", "fa:16:3e:00:00:01", dns_name="web1"), "10.0.0.5", "web1"),
])
def test_hostname(p: Port, ip: str, expected: str) -> None:
    assert hostname_for(p, ip) == expected


def test_hosts_one_line_per_served_address() -> None:
    net = DhcpNetwork("n1", (V4, V6_STATEFUL, V6_STATELESS, V6_SLAAC, V4_OFF), (
        port("p2", "FA:16:3E:00:00:02", ("s4", "10.0.0.6"), dns_name="db"),
        port("p1", "fa:16:3e:00:00:01", ("s4", "10.0.0.5"), ("s6", "2001:db8::5"), ("s6l", "2001:db8:1::5"),
             ("s6s", "2001:db8:2::5"), ("off", "10.9.0.5"), ("unknown", "10.8.0.5")),
    ))
    assert render_hosts(net) == (
        "fa:16:3e:00:00:01,host-10-0-0-5.openstacklocal,10.0.0.5\n"
        "fa:16:3e:00:00:01,host-2001-db8--5.openstacklocal,[2001:db8::5]\n"
        "fa:16:3e:00:00:02,db.openstacklocal,10.0.0.6\n"
    )
    assert render_addn_hosts(net, "example.org") == (
        "10.0.0.5\thost-10-0-0-5.example.org host-10-0-0-5\n"
        "2001:db8::5\thost-2001-db8--5.example.org host-2001-db8--5\n"
        "10.0.0.6\tdb.example.org db\n"
    )


def test_hosts_lines_carry_no_tags() -> None:
    # dnsmasq 2.90 segfaults on SIGHUP with tagged host entries that have leases.
    net = DhcpNetwork("n1", (V4,), (port("p1", "fa:16:3e:00:00:01", ("s4", "10.0.0.5")),))
    assert "set:" not in render_hosts(net)


OPTS_CASES = [
    pytest.param(
        DhcpNetwork("n", (V4,), mtu=1450), (),
        ["tag:subnet-s4,option:dns-server,198.51.100.53,198.51.100.54",
         "tag:subnet-s4,option:router,10.0.0.1",
         "tag:subnet-s4,option:mtu,1450"], id="dns-router-mtu"),
    pytest.param(
        DhcpNetwork("n", (Subnet("s", "10.0.0.0/24", 4, "10.0.0.1"),)), ("10.0.0.2", "10.5.0.2"),
        ["tag:subnet-s,option:dns-server,10.0.0.2",
         "tag:subnet-s,option:router,10.0.0.1",
         "tag:subnet-s,option:mtu,1500"], id="dhcp-port-as-dns-when-none-given"),
    pytest.param(
        DhcpNetwork("n", (Subnet("s", "10.0.0.0/24", 4, "10.0.0.1",
                                 host_routes=(HostRoute("10.50.0.0/16", "10.0.0.254"),)),)), (),
        ["tag:subnet-s,option:classless-static-route,10.50.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1",
         "tag:subnet-s,249,10.50.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1",
         "tag:subnet-s,option:router,10.0.0.1",
         "tag:subnet-s,option:mtu,1500"], id="host-routes-then-default"),
    pytest.param(
        DhcpNetwork("n", (Subnet("s", "10.0.0.0/24", 4, None,
                                 host_routes=(HostRoute("0.0.0.0/0", "10.0.0.254"),)),)), (),
        ["tag:subnet-s,option:router,10.0.0.254",
         "tag:subnet-s,option:mtu,1500"], id="default-host-route-is-the-gateway"),
    pytest.param(
        DhcpNetwork("n", (Subnet("s", "10.0.0.0/24", 4, None),)), (),
        ["tag:subnet-s,option:router",
         "tag:subnet-s,option:mtu,1500"], id="no-gateway-suppresses-router"),
    pytest.param(
        DhcpNetwork("n", (Subnet("a", "10.0.0.0/24", 4, "10.0.0.1"), Subnet("b", "10.0.1.0/24", 4, None))), (),
        ["tag:subnet-a,option:classless-static-route,10.0.1.0/24,0.0.0.0,0.0.0.0/0,10.0.0.1",
         "tag:subnet-a,249,10.0.1.0/24,0.0.0.0,0.0.0.0/0,10.0.0.1",
         "tag:subnet-a,option:router,10.0.0.1",
         "tag:subnet-a,option:mtu,1500",
         "tag:subnet-b,option:classless-static-route,10.0.0.0/24,0.0.0.0",
         "tag:subnet-b,249,10.0.0.0/24,0.0.0.0",
         "tag:subnet-b,option:router",
         "tag:subnet-b,option:mtu,1500"], id="sibling-subnets-on-link"),
    pytest.param(
        DhcpNetwork("n", (Subnet("s6", "2001:db8::/64", 6, "2001:db8::1", ("2001:db8::53",),
                                 ipv6_address_mode="dhcpv6-stateless"),)), (),
        ["tag:subnet-s6,option6:dns-server,[2001:db8::53]",
         "tag:subnet-s6,option6:domain-search,openstacklocal"], id="ipv6-no-router-no-mtu"),
    pytest.param(
        DhcpNetwork("n", (V6_SLAAC, V4_OFF)), ("10.9.0.2",), [], id="unserved-subnets-have-no-options"),
]


@pytest.mark.parametrize("net, dhcp_ips, expected", OPTS_CASES)
def test_opts(net: DhcpNetwork, dhcp_ips: tuple[str, ...], expected: list[str]) -> None:
    assert render_opts(net, dhcp_ips).splitlines() == expected


def ranges(cmd: list[str]) -> list[str]:
    return [a.split("=", 1)[1] for a in cmd if a.startswith("--dhcp-range=")]


@pytest.mark.parametrize("subnets, lease, expected", [
    ((V4,), 86400, ["set:subnet-s4,10.0.0.0,static,255.255.255.0,86400s"]),
    ((V4,), -1, ["set:subnet-s4,10.0.0.0,static,255.255.255.0,infinite"]),
    ((V6_STATEFUL, V6_STATELESS, V6_SLAAC), 600,
     ["set:subnet-s6,2001:db8::,static,64,600s", "set:subnet-s6l,2001:db8:1::,static,64,600s"]),
    ((Subnet("n6", "2001:db8:3::/64", 6),), 600, ["set:subnet-n6,2001:db8:3::,static,64,600s"]),
    ((Subnet("big", "2001:db8::/56", 6, ipv6_address_mode="dhcpv6-stateful"), V4_OFF), 600, []),
])
def test_cmdline_ranges(subnets: tuple[Subnet, ...], lease: int, expected: list[str]) -> None:
    cmd = render_cmdline(DhcpNetwork("n", subnets), interface="ns-abc", paths=PATHS, lease_seconds=lease)
    assert ranges(cmd) == expected


def test_cmdline_never_leaks_to_the_host_resolver_nor_other_interfaces() -> None:
    cmd = render_cmdline(DhcpNetwork("n", (V4, V4B)), interface="ns-abc", paths=PATHS, user="nobody")
    assert cmd[0] == "dnsmasq"
    for flag in ("--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces",
                 "--interface=ns-abc", "--except-interface=lo", "--keep-in-foreground", "--user=nobody"):
        assert flag in cmd
    assert f"--dhcp-hostsfile={PATHS.hosts}" in cmd and f"--dhcp-optsfile={PATHS.opts}" in cmd
    assert f"--addn-hosts={PATHS.addn_hosts}" in cmd and f"--dhcp-leasefile={PATHS.leases}" in cmd
    assert "--dhcp-lease-max=512" in cmd
    assert not any(a.startswith("--server") for a in cmd)


def test_lease_max_is_capped() -> None:
    cmd = render_cmdline(DhcpNetwork("n", (V6_STATEFUL,)), interface="ns-abc", paths=PATHS)
    assert "--dhcp-lease-max=16777216" in cmd


def test_network_from_api_dicts() -> None:
    net = DhcpNetwork.from_dict(
        {"id": "n1", "mtu": 1450},
        subnets=[{"id": "s1", "cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.1",
                  "dns_nameservers": ["198.51.100.53"], "enable_dhcp": True,
                  "host_routes": [{"destination": "10.1.0.0/16", "nexthop": "10.0.0.9"}]},
                 {"id": "s6", "cidr": "2001:db8::/64", "ipv6_address_mode": "slaac", "enable_dhcp": True}],
        ports=[{"id": "p1", "mac_address": "FA:16:3E:00:00:01", "dns_name": None,
                "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}]}],
    )
    assert net.mtu == 1450 and net.subnets[1].ip_version == 6
    assert net.subnets[0].host_routes == (HostRoute("10.1.0.0/16", "10.0.0.9"),)
    assert net.ports[0].mac_address == "fa:16:3e:00:00:01" and net.ports[0].dns_name == ""
    assert [s.id for s in net.dhcp_subnets] == ["s1"]
