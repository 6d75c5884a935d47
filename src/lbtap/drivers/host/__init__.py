"""Host driver: links, addresses, routes and FDB of one network namespace."""
