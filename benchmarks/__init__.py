"""Benchmarks: each module writes benchmarks/results/<name>.json."""
