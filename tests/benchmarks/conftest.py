"""Options of the pytest-benchmark suite: ``--bench-model tiny|detr_resnet50`` (or $DETRTOOL_BENCH_MODEL).

``tiny`` is the reference's tiny checkpoint (minutes on 2 cores); ``detr_resnet50`` is full DETR-R50 with
random weights (latency is what counts there; its AP means nothing). Pass the option with the folder:
``pytest tests/benchmarks --benchmark-only --bench-model detr_resnet50``.
"""

from __future__ import annotations

import os

BENCH_MODELS = ("tiny", "detr_resnet50")


def pytest_addoption(parser):
    parser.addoption("--bench-model", choices=BENCH_MODELS, default=os.environ.get("DETRTOOL_BENCH_MODEL", "tiny"),
                     help="Model of tests/benchmarks/test_bench_runtimes.py (default tiny).")
