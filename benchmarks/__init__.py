"""Benchmarks: each prints one JSON document (python -m benchmarks.NAME)."""
