"""The agent <-> server RPC contract: topics, methods and typed client proxies."""
