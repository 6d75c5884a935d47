"""DHCP namespace and device names (shared rules live in ``lbtap.drivers.router.naming``)."""

from lbtap.drivers.router.naming import DHCP_NS_PREFIX, dhcp_device, dhcp_namespace, host_device, owned_ids

__all__ = ["DHCP_NS_PREFIX", "dhcp_device", "dhcp_namespace", "host_device", "owned_ids"]
