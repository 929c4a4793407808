"""Test session setup: one persistent XLA compilation cache shared by every test and the
subprocesses they start, so a configuration compiled once is not compiled again."""

from __future__ import annotations

import os
import tempfile

import jax

# Two host devices even on a one-core machine, so seed sharding is always exercised.
os.environ.setdefault("IGMDA_CPU_DEVICES", "2")
# The suite compiles far more than it runs: XLA's backend at optimization level 0 compiles
# faster and runs slower (experiments/bench_tests.py, cold, one process: 299 s against 363 s for
# five compile-heavy files; the learning tests of test_host.py and test_train.py gain little).
# Exported, so the `igmda` subprocesses of the tests compile the same way. Set XLA_FLAGS to
# test with other flags.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import envs  # noqa: E402, F401  (first: applies the XLA CPU flags before JAX starts)

_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "igmda-jax-test-xla-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
