"""Benchmarks behind docs/performance.md, on the package's public functions: ``run`` (CPU suite),
``gpu`` (CUDA suite), ``throughput`` (data path vs compute ceiling, precision grid), ``naive`` (the
seed's loop vs ``fit``), ``common`` (timings, machine facts, a scored fit) and ``report`` (JSON to Markdown).
"""
