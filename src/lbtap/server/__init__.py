"""The server: Neutron v2.0 REST API, database and RPC handlers."""
