"""The compute side (Nova / os-vif's role): plug and unplug a port's device."""
