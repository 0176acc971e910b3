"""Benchmark scripts of the zoo: run as `python -m benchmarks.<name>` from the repository root."""
