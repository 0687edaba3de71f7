"""Benchmark machinery for tempattn: cases, anchors, measurement, and the report.

``python -m tempattn.bench`` (``make bench``) runs the pytest-benchmark suites under
``benchmarks/``, converts the raw JSON to ``benchmarks/report/results.csv`` and writes
``benchmarks/report/REPORT.md`` with plots. The suites import :mod:`tempattn.bench.cases`
(what to measure), :mod:`tempattn.bench.anchors` (the implementations to compare),
:mod:`tempattn.bench.measure` (how to time one case) and :mod:`tempattn.bench.memory`;
the per-call latency suite uses :mod:`tempattn.bench.latency` (pairs timed alternately).
"""
