"""Host-side DHCP driver: dnsmasq rendering (pure) and a per-network process manager.

- ``model``: ``DhcpNetwork``, ``Subnet``, ``Port`` (from Neutron API dicts).
- ``render``: command line, hosts / opts / addn-hosts files, ``static_leases``.
- ``leases``: ``diff_leases`` / ``diff_ports`` to batch port changes into few reloads.
- ``dnsmasq``: ``DnsmasqProcess`` (start, reload by SIGHUP, ensure_running, stop).
- ``naming``: ``qdhcp-<network_id>[-<host>]`` and ``ns-``/``tap`` device names.
"""

from lbtap.drivers.dhcp.dnsmasq import DnsmasqProcess
from lbtap.drivers.dhcp.leases import LeaseDiff, diff_leases, diff_ports
from lbtap.drivers.dhcp.model import DhcpNetwork, FixedIP, HostRoute, Port, Subnet
from lbtap.drivers.dhcp.naming import dhcp_device, dhcp_namespace
from lbtap.drivers.dhcp.render import (
    DnsmasqPaths,
    Lease,
    hostname_for,
    render_addn_hosts,
    render_cmdline,
    render_hosts,
    render_opts,
    static_leases,
)

__all__ = [
    "DhcpNetwork", "DnsmasqPaths", "DnsmasqProcess", "FixedIP", "HostRoute", "Lease", "LeaseDiff", "Port",
    "Subnet", "dhcp_device", "dhcp_namespace", "diff_leases", "diff_ports", "hostname_for",
    "render_addn_hosts", "render_cmdline", "render_hosts", "render_opts", "static_leases",
]
