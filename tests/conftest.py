"""Test session setup: one persistent XLA compilation cache shared by every test and the
subprocesses they start, so a configuration compiled once is not compiled again."""

from __future__ import annotations

import os
import tempfile

import jax

# Two host devices even on a one-core machine, so seed sharding is always exercised.
os.environ.setdefault("IGMDA_CPU_DEVICES", "2")

import envs  # noqa: E402, F401  (first: applies the XLA CPU flags before JAX starts)

_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "igmda-jax-test-xla-cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
