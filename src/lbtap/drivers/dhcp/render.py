"""Pure rendering of a network to dnsmasq's command line and its re-readable files.

Follows Neutron's ``neutron.agent.linux.dhcp.Dnsmasq`` output so that guests see the
same DHCP answers: per-subnet tags ``subnet-<id>`` (no per-port tags, see
``render_hosts``), hostnames ``host-<ip-dashed>`` unless the port has a ``dns_name``, the default route
appended to option 121 whenever classless routes are sent (RFC 3442 clients ignore
option 3 then), the same routes as option 249 for old Windows clients, and other
IPv4 subnets of the network announced as on-link routes.

One deliberate difference: the MTU (option 26) goes into the opts file per IPv4
subnet instead of a forced command-line option, so that an MTU change is a SIGHUP,
not a restart. Options from that file are sent to clients that request them, which
every common client does for the MTU.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lbtap.drivers.dhcp.model import DhcpNetwork, Port, Subnet

DEFAULT_DOMAIN = "openstacklocal"
DEFAULT_LEASE_SECONDS = 86400
MAX_LEASES = 2**24  # Neutron's dnsmasq_lease_max default
IPV4_ANY = "0.0.0.0/0"
WIN2K3_STATIC_ROUTES = 249
SUBNET_TAG = "subnet-%s"


@dataclass(frozen=True)
class DnsmasqPaths:
    """Files of one network's dnsmasq, all in its state directory."""

    directory: Path

    @property
    def hosts(self) -> Path:
        return self.directory / "host"

    @property
    def opts(self) -> Path:
        return self.directory / "opts"

    @property
    def addn_hosts(self) -> Path:
        return self.directory / "addn_hosts"

    @property
    def leases(self) -> Path:
        return self.directory / "leases"

    @property
    def pid(self) -> Path:
        return self.directory / "pid"

    @property
    def log(self) -> Path:
        return self.directory / "dnsmasq.log"


@dataclass(frozen=True, order=True)
class Lease:
    """One static lease: what a line of the hosts file says."""

    mac: str
    ip: str
    hostname: str
    port_id: str = ""
    subnet_id: str = ""


def hostname_for(port: Port, ip: str) -> str:
    """The port's ``dns_name``, else ``host-`` + the address with '.'/':' as '-'."""
    if port.dns_name:
        return port.dns_name
    return "host-" + ip.replace(".", "-").replace(":", "-")


def static_leases(network: DhcpNetwork) -> list[Lease]:
    """Every (MAC, address) dnsmasq hands out, sorted for stable output.

    Addresses on subnets dnsmasq does not serve, and on DHCPv6-stateless subnets
    (addresses come from SLAAC there), give no lease.
    """
    served = {s.id for s in network.subnets if s.dhcp_mode is not None and s.stateful}
    out = []
    for port in network.ports:
        mac = port.mac_address.lower()
        for fip in port.fixed_ips:
            if fip.subnet_id in served:
                out.append(Lease(mac, fip.ip_address, hostname_for(port, fip.ip_address), port.id, fip.subnet_id))
    out.sort(key=lambda x: (x.mac, x.ip, x.hostname))
    return out


def _literal(ip: str) -> str:
    """dnsmasq wants IPv6 addresses in brackets where a ',' list could be ambiguous."""
    return f"[{ip}]" if ":" in ip else ip


def render_hosts(network: DhcpNetwork, domain: str = DEFAULT_DOMAIN, leases: list[Lease] | None = None) -> str:
    """The ``--dhcp-hostsfile``: ``mac,fqdn,ip`` per static lease (IPv6 in brackets).

    Unlike Neutron, lines carry no ``set:port-<id>`` tag: dnsmasq 2.90 (Debian 12's)
    crashes with SIGSEGV on SIGHUP when tagged host entries have active leases
    (measured here; a known use-after-free in ``dhcp_netid_free``), and reloading
    without restarts is the point of this driver. Per-port options, if ever needed,
    can match ``tag:known`` plus the MAC instead. DHCPv6-stateless ports need no line:
    their options go by the subnet's tag.
    """
    if leases is None:
        leases = static_leases(network)
    return "".join(f"{x.mac},{x.hostname}.{domain},{_literal(x.ip)}\n" for x in leases)


def render_addn_hosts(network: DhcpNetwork, domain: str = DEFAULT_DOMAIN,
                      leases: list[Lease] | None = None) -> str:
    """The ``--addn-hosts`` file, so that dnsmasq answers DNS for the leases' names.

    ``leases``: ``static_leases(network)`` if the caller has it already.
    """
    if leases is None:
        leases = static_leases(network)
    return "".join(f"{x.ip}\t{x.hostname}.{domain} {x.hostname}\n" for x in leases)


def _opt(subnet: Subnet, option: str | int, *values: str) -> str:
    """``tag:subnet-<id>,option:<name>,v1,...`` (``option6:`` for IPv6; codes stay bare)."""
    if isinstance(option, int):
        name = str(option)
    else:
        name = ("option:" if subnet.ip_version == 4 else "option6:") + option
    return ",".join(("tag:" + SUBNET_TAG % subnet.id, name, *values))


def _subnet_opts(network: DhcpNetwork, subnet: Subnet, dhcp_ips: tuple[str, ...], domain: str) -> list[str]:
    opts = []
    net = subnet.network
    if subnet.dns_nameservers:
        opts.append(_opt(subnet, "dns-server", *(_literal(d) for d in subnet.dns_nameservers)))
    else:
        # Neutron offers the DHCP port itself as resolver when the subnet names none:
        # dnsmasq then answers for the network's own hostnames.
        own = [ip for ip in dhcp_ips if ipaddress.ip_address(ip) in net]
        if own:
            opts.append(_opt(subnet, "dns-server", *(_literal(ip) for ip in own)))
    if subnet.ip_version == 6:
        opts.append(_opt(subnet, "domain-search", domain))
        return opts  # routers and MTU come from router advertisements in IPv6

    gateway = subnet.gateway_ip
    routes = []
    for hr in subnet.host_routes:
        if hr.destination == IPV4_ANY:
            gateway = gateway or hr.nexthop
        else:
            routes.append(f"{hr.destination},{hr.nexthop}")
    # The network's other IPv4 subnets share the wire: reach them on-link, not via
    # the gateway.
    for other in network.subnets:
        if other.ip_version == 4 and other.id != subnet.id and other.cidr != subnet.cidr:
            routes.insert(0, f"{other.network},0.0.0.0")
    if routes:
        if gateway:
            routes.append(f"{IPV4_ANY},{gateway}")
        opts.append(_opt(subnet, "classless-static-route", *routes))
        opts.append(_opt(subnet, WIN2K3_STATIC_ROUTES, *routes))
    # An empty "router" option tells dnsmasq not to offer its own address as router.
    opts.append(_opt(subnet, "router", gateway) if gateway else _opt(subnet, "router"))
    if network.mtu:
        opts.append(_opt(subnet, "mtu", str(network.mtu)))
    return opts


def render_opts(network: DhcpNetwork, dhcp_ips: tuple[str, ...] | list[str] = (),
                domain: str = DEFAULT_DOMAIN) -> str:
    """The ``--dhcp-optsfile``: router, DNS servers, routes (121/249) and MTU per subnet.

    ``dhcp_ips`` are the DHCP port's own addresses, offered as DNS server on subnets
    that name none.
    """
    lines = []
    for subnet in network.dhcp_subnets:
        lines.extend(_subnet_opts(network, subnet, tuple(dhcp_ips), domain))
    return "".join(line + "\n" for line in lines)


def _lease_time(seconds: int) -> str:
    return "infinite" if seconds < 0 else f"{seconds}s"


def render_cmdline(network: DhcpNetwork, *, interface: str, paths: DnsmasqPaths,
                   lease_seconds: int = DEFAULT_LEASE_SECONDS, domain: str = DEFAULT_DOMAIN,
                   binary: str = "dnsmasq", user: str | None = None, log_dhcp: bool = False) -> list[str]:
    """dnsmasq's argv for ``network``, served on ``interface`` only.

    Everything that can change while serving (leases, options, names) lives in files
    that dnsmasq re-reads on SIGHUP; this command line changes only when the set of
    served subnets, the interface or the settings change, which needs a restart.
    ``--keep-in-foreground`` keeps the PID we spawn the PID of the server (no fork)
    while dnsmasq still writes its pid file, which is how a restarted agent finds it.
    """
    cmd = [
        binary,
        "--keep-in-foreground",
        "--no-hosts",  # never serve this machine's /etc/hosts to guests
        "--no-resolv",  # and never forward to this machine's resolvers
        "--conf-file=/dev/null",  # nor read /etc/dnsmasq.conf
        f"--pid-file={paths.pid}",
        f"--dhcp-hostsfile={paths.hosts}",
        f"--addn-hosts={paths.addn_hosts}",
        f"--dhcp-optsfile={paths.opts}",
        f"--dhcp-leasefile={paths.leases}",
        f"--log-facility={paths.log}",
        "--bind-interfaces",
        f"--interface={interface}",
        "--except-interface=lo",
    ]
    if user:
        cmd.append(f"--user={user}")
    possible = 0
    for subnet in network.dhcp_subnets:
        net = subnet.network
        tag = SUBNET_TAG % subnet.id
        if subnet.ip_version == 4:
            cmd.append(f"--dhcp-range=set:{tag},{net.network_address},{subnet.dhcp_mode},"
                       f"{net.netmask},{_lease_time(lease_seconds)}")
        else:
            cmd.append(f"--dhcp-range=set:{tag},{net.network_address},{subnet.dhcp_mode},"
                       f"{net.prefixlen},{_lease_time(lease_seconds)}")
        possible += net.num_addresses
    cmd.append(f"--dhcp-lease-max={min(possible, MAX_LEASES)}")
    cmd.append(f"--domain={domain}")
    if log_dhcp:
        cmd.append("--log-dhcp")
    return cmd
