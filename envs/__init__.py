"""Environments behind one protocol (see envs/spec.py).

``envs.make(map_name, sight_range=None, expert_view="full_obs", **options)`` builds any
registered environment: every SMAX map, the paper's SMAC maps (8m_vs_9m, MMM2 with medivacs),
and the toy games of envs/toy.py.
"""

from __future__ import annotations

import os

# XLA's CPU runtime can wedge: the main thread waits for an execution that no worker runs (every
# Eigen pool thread parked in WaitForWork, ``block_until_ready`` never returns). Seen with jax
# 0.10.2 on small vmapped programs, e.g. ``jit(vmap(init))`` of qmix-da on hidden_cue hung in 4 of
# 8 fresh processes. Turning off XLA's concurrency-optimized thunk scheduler cured it (0 of 24);
# single-threaded Eigen (also reported upstream as a cure: jax#25861, PyAutoFit#1530) and
# synchronous CPU dispatch did not on their own, but are kept: they cost nothing measurable
# here and our host loop waits for every result anyway. IGMDA_XLA_DEFAULTS=1 keeps JAX's defaults.
# The host is split into one XLA CPU device per core (IGMDA_CPU_DEVICES overrides the count):
# XLA runs a small program on one thread, so vmapped seeds only use every core when they are
# sharded over devices (``run.seed_sharding``); single-seed programs still run on device 0.
if os.environ.get("IGMDA_XLA_DEFAULTS", "0") != "1":
    _flags = os.environ.get("XLA_FLAGS", "")
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _cpu_devices = os.environ.get("IGMDA_CPU_DEVICES", str(_cores or 1))
    for _flag in (
        "--xla_cpu_multi_thread_eigen=false",
        "--xla_cpu_enable_concurrency_optimized_scheduler=false",
        f"--xla_force_host_platform_device_count={int(_cpu_devices)}",
    ):
        if _flag.split("=")[0] not in _flags:
            _flags = f"{_flags} {_flag}".strip()
    os.environ["XLA_FLAGS"] = _flags
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)

import contextlib  # noqa: E402
import io
from collections.abc import Callable  # noqa: E402
from typing import Any

from envs.spec import EnvInfo, Environment, TimeStep, assert_timestep, step_autoreset

__all__ = [
    "EnvInfo",
    "Environment",
    "TimeStep",
    "UnknownMapError",
    "assert_timestep",
    "list_maps",
    "make",
    "register",
    "step_autoreset",
]

_REGISTRY: dict[str, Callable[..., Environment]] = {}
_LOADED = False


class UnknownMapError(ValueError):
    """Raised by ``make`` for a name no module registered."""


def register(name: str, factory: Callable[..., Environment]) -> None:
    """Register ``factory(**options) -> Environment`` under ``name``."""
    _REGISTRY[name] = factory


def _load_builtin() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        # jaxmarl prints "Importing submoduled environments..." on import; keep stdout clean
        with contextlib.redirect_stdout(io.StringIO()):
            import envs.smax  # noqa: F401  (registers the SMAC-like maps)
            import envs.toy  # noqa: F401  (registers the toy games)


def list_maps() -> list[str]:
    """All registered environment names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def make(map_name: str, **options: Any) -> Environment:
    """Build the environment ``map_name`` with ``options`` (sight_range, expert_view, ...)."""
    _load_builtin()
    if map_name not in _REGISTRY:
        raise UnknownMapError(
            f"unknown map {map_name!r}; known maps: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[map_name](**options)
