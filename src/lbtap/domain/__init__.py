"""Domain model shared by server, agents and tools: names, constants, value types."""
