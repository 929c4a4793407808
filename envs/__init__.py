"""Environments behind one protocol (see envs/spec.py).

``envs.make(map_name, sight_range=None, expert_view="full_obs", **options)`` builds any
registered environment: every SMAX map, the paper's SMAC maps (8m_vs_9m, MMM2 with medivacs),
and the toy games of envs/toy.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import mmap
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

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
#
# XLA aborts the process on a flag it does not know (at the first use of JAX, "Unknown flag in
# XLA_FLAGS"), and flags come and go between releases, so each flag is added only where the
# installed jaxlib (and any JAX plugin: GPU/TPU builds) knows it; see _known_xla_flags.
_XLA_CPU_FLAGS = (
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
)
# A flag every XLA build has had for years: a shared library holding it parses XLA_FLAGS.
_XLA_MARKER_FLAG = "xla_dump_to"
_LIBRARY_SUFFIXES = (".so", ".dylib", ".pyd", ".dll")


def _flag_name(flag: str) -> str:
    """'--xla_foo=1' -> 'xla_foo'."""
    return flag.lstrip("-").split("=", 1)[0]


def _default_xla_flags() -> tuple[str, ...]:
    """igmda's XLA flags: the CPU settings above and one host device per core."""
    value = os.environ.get("IGMDA_CPU_DEVICES")
    if value is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        value = str(cores or os.cpu_count() or 1)
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"IGMDA_CPU_DEVICES must be a positive integer, got {value!r}")
    return (*_XLA_CPU_FLAGS, f"--xla_force_host_platform_device_count={int(value)}")


def _xla_libraries() -> list[Path]:
    """Shared libraries of jaxlib and of JAX's PJRT plugins (the ``jax_plugins`` namespace:
    CUDA/ROCm/TPU builds), found without importing them; each may hold a copy of XLA."""
    folders: list[str] = []
    for package in ("jaxlib", "jax_plugins"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            folders.extend(spec.submodule_search_locations)
    return sorted(
        {
            path
            for folder in folders
            for path in Path(folder).rglob("*")
            if any(path.name.endswith(s) or f"{s}." in path.name for s in _LIBRARY_SUFFIXES)
            and path.is_file()
        }
    )


def _library_holds(path: Path, names: Sequence[str]) -> dict[str, bool]:
    """For each of ``names``: does the library hold it as a whole C string (``\\0name\\0``),
    the way XLA registers a flag? Help texts and proto field names do not match. An unreadable
    or empty library holds nothing."""
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return {name: data.find(b"\0" + name.encode() + b"\0") != -1 for name in names}
    except (OSError, ValueError):
        return dict.fromkeys(names, False)


def _cache_file() -> Path | None:
    """$XDG_CACHE_HOME/igmda-jax/xla_flags.json (~/.cache without XDG_CACHE_HOME)."""
    try:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home directory
        return None
    return Path(root) / "igmda-jax" / "xla_flags.json"


def _read_cache(path: Path | None) -> dict[str, Any]:
    """The cache's content ({} when absent or unreadable)."""
    try:
        data = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path | None, data: dict[str, Any]) -> None:
    """Replace the cache atomically; a cache that cannot be written is not an error."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)


@functools.cache
def _known_xla_flags(names: tuple[str, ...]) -> frozenset[str]:
    """The flag names among ``names`` that this install's XLA accepts in XLA_FLAGS: those that
    every XLA library of jaxlib and its plugins (a library holding ``xla_dump_to``) registers;
    none when no such library is found. The answer per library (keyed by path, size and mtime)
    is cached in :func:`_cache_file`: a scan reads jaxlib's ~350 MB once (about 1 s)."""
    wanted = list(dict.fromkeys((_XLA_MARKER_FLAG, *names)))
    cache_path = _cache_file()
    cache = {k: v for k, v in _read_cache(cache_path).items() if Path(k).exists()}
    changed, xla_entries = False, []
    for library in _xla_libraries():
        try:
            stat = library.stat()
        except OSError:  # removed meanwhile
            continue
        fingerprint = [stat.st_size, stat.st_mtime_ns]
        entry = cache.get(str(library), {})
        holds = entry.get("holds", {}) if entry.get("fingerprint") == fingerprint else {}
        missing = [name for name in wanted if name not in holds]
        if missing:
            holds = {**holds, **_library_holds(library, missing)}
            cache[str(library)] = {"fingerprint": fingerprint, "holds": holds}
            changed = True
        if holds[_XLA_MARKER_FLAG]:
            xla_entries.append(holds)
    if changed:
        _write_cache(cache_path, cache)
    if not xla_entries:
        return frozenset()
    return frozenset(name for name in names if all(holds[name] for holds in xla_entries))


def _with_known_flags(xla_flags: str, flags: Sequence[str]) -> str:
    """``xla_flags`` (an XLA_FLAGS value) plus each of ``flags`` ("--name=value") whose name it
    does not set already and that the installed XLA knows."""
    present = {_flag_name(token) for token in xla_flags.split()}
    candidates = [flag for flag in flags if _flag_name(flag) not in present]
    known = _known_xla_flags(tuple(_flag_name(flag) for flag in candidates))
    added = [flag for flag in candidates if _flag_name(flag) in known]
    return " ".join(part for part in (xla_flags.strip(), *added) if part)


def _configure_xla(flags: Sequence[str] | None = None) -> None:
    """Add ``flags`` (default :func:`_default_xla_flags`) to XLA_FLAGS where XLA knows them and
    turn off JAX's asynchronous CPU dispatch. Effective only before JAX starts its backend."""
    flags = _default_xla_flags() if flags is None else flags
    os.environ["XLA_FLAGS"] = _with_known_flags(os.environ.get("XLA_FLAGS", ""), flags)
    import jax

    with contextlib.suppress(AttributeError):  # an option a later JAX may drop
        jax.config.update("jax_cpu_enable_async_dispatch", False)


if os.environ.get("IGMDA_XLA_DEFAULTS", "0") != "1":
    _configure_xla()


# ---------------------------------------------------------------------------------------------
# jaxmarl prints two lines on import ("Importing submoduled environments..."), which would
# corrupt machine-readable output such as ``igmda envs --json``. Its first import, wherever it
# happens (envs.smax, envs.smax_maps, ...), runs with stdout silenced at the descriptor level.


def _flush_stdout() -> None:
    """Flush Python's and C's stdout buffers (C: ``fflush(NULL)`` where libc is at hand)."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Send what is written to stdout meanwhile (by Python, or by C to file descriptor 1) to
    os.devnull; descriptor 1 and sys.stdout are restored afterwards, also on error."""
    _flush_stdout()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1: only Python's stdout can be silenced
        saved = None
    try:
        if saved is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        _flush_stdout()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Wraps a module's loader: executes the module with stdout silenced."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            with _stdout_silenced():
                self._loader.exec_module(module)
        finally:  # leave no trace of the wrapper on the module
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader


class _QuietJaxmarlImport(importlib.abc.MetaPathFinder):
    """On sys.meta_path until jaxmarl is first imported: that import runs silenced."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "jaxmarl":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


if "jaxmarl" not in sys.modules and not any(
    type(finder).__name__ == _QuietJaxmarlImport.__name__ for finder in sys.meta_path
):
    sys.meta_path.insert(0, _QuietJaxmarlImport())

from envs.spec import EnvInfo, Environment, TimeStep, assert_timestep, step_autoreset  # noqa: E402

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
        import envs.smax  # noqa: F401  (registers the SMAC-like maps; jaxmarl silenced)
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
