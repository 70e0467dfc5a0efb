"""Metrics: distribution distances and explanation metrics."""
