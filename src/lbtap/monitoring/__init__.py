"""Metrics, structured logs and diagnosis."""
