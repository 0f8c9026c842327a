"""Benchmarks that prove the pipeline is fast: `python -m benchmarks.run [--quick]` (see docs/performance.md).

Modules: ``common`` (statistics, settings, machine facts, subprocess measurement), ``throughput``
(real data path vs pure compute ceiling, precision/layout grid), ``naive`` (the seed's
ImageFolder loop vs the fast path at equal epochs), ``overhead`` (dvc no-op, prepare, evaluation),
``scaling`` (epoch time vs data size, peak memory, memory-mapped cache), ``worker`` (what each
measured subprocess runs), ``run`` (the CPU entry point), ``gpu`` (the CUDA entry point) and
``report`` (JSON to Markdown).
"""
