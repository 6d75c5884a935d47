"""Plug a port's device on a host, as a hypervisor would.

Two shapes:
* a persistent TAP named ``tap<port_id[:11]>`` for QEMU/Firecracker to open;
* a fake guest: namespace ``guest_netns`` joined by a veth whose host end is the tap
  name and whose guest end (``eth0``) carries the port's MAC, fixed IPs, gateway and
  the network's MTU.

The agent then finds the device and enslaves it; plugging never touches the bridge.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lbtap.domain.naming import tap_name
from lbtap.drivers.host.base import Route

GUEST_IFNAME = "eth0"


@dataclass(frozen=True)
class GuestConfig:
    """What a guest's eth0 gets: derived from the port and its subnets."""

    mac: str
    mtu: int
    addresses: tuple[str, ...]  # CIDR strings
    gateways: tuple[str, ...]  # at most one per IP version


def tap_mac(port_mac: str) -> str:
    """Host-side MAC of a hypervisor TAP: the port MAC with first octet fe (libvirt's way),
    so the host end never answers for the guest's MAC."""
    return "fe:" + port_mac.split(":", 1)[1]


def guest_config(port: dict, subnets: dict[str, dict], mtu: int) -> GuestConfig:
    """Pure: the guest interface configuration for ``port`` given its subnets by id."""
    addresses: list[str] = []
    gateways: dict[int, str] = {}
    for fip in port.get("fixed_ips", []):
        subnet = subnets.get(fip["subnet_id"])
        if subnet is None:
            continue
        net = ipaddress.ip_network(subnet["cidr"])
        addresses.append(f"{fip['ip_address']}/{net.prefixlen}")
        if subnet.get("gateway_ip") and net.version not in gateways:
            gateways[net.version] = subnet["gateway_ip"]
    return GuestConfig(
        mac=port["mac_address"], mtu=mtu, addresses=tuple(addresses), gateways=tuple(gateways.values())
    )


def plug_tap(host_driver, port: dict, mtu: int) -> str:
    """Create the persistent TAP for ``port`` (idempotent) and bring it up."""
    name = tap_name(port["id"])
    host_driver.create_tap(name, mac=tap_mac(port["mac_address"]), mtu=mtu)
    host_driver.set_link(name, up=True)
    return name


def plug_guest(host_driver, guest_driver, guest_netns: str, port: dict, cfg: GuestConfig) -> str:
    """Create a veth between the host and the guest namespace and configure the guest."""
    name = tap_name(port["id"])
    host_driver.create_veth(
        name, GUEST_IFNAME, peer_netns=guest_netns, mac=tap_mac(cfg.mac), peer_mac=cfg.mac, mtu=cfg.mtu
    )
    guest_driver.set_link("lo", up=True)
    guest_driver.set_link(GUEST_IFNAME, up=True, mtu=cfg.mtu)
    for cidr in cfg.addresses:
        guest_driver.add_address(GUEST_IFNAME, cidr)
    for gw in cfg.gateways:
        guest_driver.add_route(Route(dst="default", ifname=GUEST_IFNAME, gateway=gw, family=6 if ":" in gw else 4))
    host_driver.set_link(name, up=True)
    return name


def unplug(host_driver, port_id: str) -> str:
    """Remove the port's host device (a veth takes its guest end with it)."""
    name = tap_name(port_id)
    host_driver.delete_link(name)
    return name
