"""The L2 agent: a sans-IO decision core (``core/``) and the asyncio runtime driving it."""
