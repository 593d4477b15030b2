"""The benchmark suite behind ``benchmarks/bench.py`` (see the README beside it)."""
