"""lbtap: Linux bridge + TAP tenant networks with a Neutron v2.0-compatible API."""

__version__ = "0.1.0"
