"""Topic and method names on the bus (Neutron's, where Neutron has one)."""

PLUGIN = "q-plugin"  # agents -> server calls
REPORTS = "q-reports-plugin"  # report_state heartbeats
AGENT_FANOUT = "q-agent-notifier"  # server -> every L2 agent


def agent_host_topic(host: str) -> str:
    """Topic of one host's L2 agent (casts meant for that host only)."""
    return f"{AGENT_FANOUT}.{host}"


# agent -> server
GET_DEVICES_DETAILS_LIST = "get_devices_details_list"
UPDATE_DEVICE_LIST = "update_device_list"
UPDATE_DEVICE_UP = "update_device_up"
UPDATE_DEVICE_DOWN = "update_device_down"
REPORT_STATE = "report_state"
GET_FDB_ENTRIES = "get_fdb_entries"  # l2population resync (lbtap extension)

# server -> agents
PORT_UPDATE = "port_update"
# lbtap: details of ports bound to the host, pushed when they are created or change,
# so a tap that appears needs no get_devices_details_list round trip.
DEVICES_DETAILS = "devices_details"
PORT_DELETE = "port_delete"
NETWORK_UPDATE = "network_update"
NETWORK_DELETE = "network_delete"
FDB_ADD = "fdb_add"
FDB_REMOVE = "fdb_remove"
