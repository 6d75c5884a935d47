"""Agents beside the L2 agent: DHCP (``dhcp``) and L3 (``l3``), each one host's process
or a task inside ``lbtap up``. Pure decisions live in ``*_core`` modules."""
