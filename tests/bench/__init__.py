"""Benchmarks: `make bench` (python -m tests.bench [NAME ...]). Not tests: they print ratios."""
