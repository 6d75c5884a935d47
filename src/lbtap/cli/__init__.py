"""The ``lbtap`` command."""
