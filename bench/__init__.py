"""Benchmark suite comparing model-serving stacks; run with ``python -m bench.run``."""
