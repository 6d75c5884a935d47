"""Constants of the Neutron data model that lbtap keeps for compatibility."""

from __future__ import annotations

# Port status values (Neutron: neutron_lib.constants.PORT_STATUS_*).
PORT_STATUS_ACTIVE = "ACTIVE"
PORT_STATUS_BUILD = "BUILD"
PORT_STATUS_DOWN = "DOWN"
PORT_STATUS_ERROR = "ERROR"
PORT_STATUS_NOTAPPLICABLE = "N/A"
PORT_STATUSES = (
    PORT_STATUS_ACTIVE,
    PORT_STATUS_BUILD,
    PORT_STATUS_DOWN,
    PORT_STATUS_ERROR,
    PORT_STATUS_NOTAPPLICABLE,
)

NET_STATUS_ACTIVE = "ACTIVE"
NET_STATUS_DOWN = "DOWN"

# device_owner values.
DEVICE_OWNER_COMPUTE_PREFIX = "compute:"
DEVICE_OWNER_NETWORK_PREFIX = "network:"
DEVICE_OWNER_DHCP = "network:dhcp"
DEVICE_OWNER_ROUTER_INTF = "network:router_interface"
DEVICE_OWNER_ROUTER_GW = "network:router_gateway"
DEVICE_OWNER_FLOATINGIP = "network:floatingip"

# Segment types.
TYPE_LOCAL = "local"
TYPE_FLAT = "flat"
TYPE_VLAN = "vlan"
TYPE_VXLAN = "vxlan"
NETWORK_TYPES = (TYPE_LOCAL, TYPE_FLAT, TYPE_VLAN, TYPE_VXLAN)

# Port binding.
VIF_TYPE_UNBOUND = "unbound"
VIF_TYPE_BINDING_FAILED = "binding_failed"
VIF_TYPE_BRIDGE = "bridge"
VIF_TYPE_TAP = "tap"
VNIC_NORMAL = "normal"

AGENT_TYPE_LINUXBRIDGE = "Linux bridge agent"
AGENT_TYPE_DHCP = "DHCP agent"
AGENT_TYPE_L3 = "L3 agent"
AGENT_BINARY_L2 = "lbtap-agent"

VXLAN_OVERHEAD = 50  # outer IPv4 + UDP + VXLAN + inner Ethernet
VXLAN_OVERHEAD_IPV6 = 70  # the same over an IPv6 underlay
DEFAULT_MTU = 1500
MAX_VLAN_ID = 4094
MAX_VXLAN_VNI = 2**24 - 1
