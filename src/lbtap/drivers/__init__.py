"""Drivers: the only code that talks to the kernel (netlink, nftables, tc)."""
