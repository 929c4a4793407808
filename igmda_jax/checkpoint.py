"""Save and restore the whole training state with orbax-checkpoint (the only module that does).

A checkpoint step is a directory ``<root>/<step>/`` with two orbax items: ``state``, the
TrainState pytree (``args.StandardSave``: zarr arrays in an OCDBT store), and ``meta``, a JSON
dict beside it (``args.JsonSave``: resolved run config, seed count, counters).

Atomicity. :meth:`CheckpointStore.save` is synchronous: it returns once the step is final. Orbax
writes into ``<root>/<step>.orbax-checkpoint-tmp``, adds ``commit_success.txt`` and renames the
directory to ``<root>/<step>`` (an atomic ``rename`` on POSIX filesystems; on GCS the commit file
marks completion). Only finalized step directories are ever listed, so a crash mid-save leaves
earlier steps restorable; the stale temporary directory is ignored, and a store reopened on the
root deletes it (``cleanup_tmp_directories``) before its first save. Steps beyond
``max_to_keep`` are deleted only after the new step is final. Being synchronous, ``save`` also
lets the caller donate the state's buffers to the next jitted step as soon as it returns.

Memory. Orbax moves each device array to host memory once (on the CPU backend this is a view)
and streams it through tensorstore, at most ``save_concurrent_gb`` (96 GB) in flight; measured
on CPU, saving a 1 GiB array adds no measurable peak RSS. Restore targets an abstract tree
(:func:`abstract_like`), so no template is allocated; each array passes through a host read
buffer before it is placed on device (peak about 2x a 1 GiB array on CPU).

PRNG keys: raw ``jax.random.PRNGKey`` uint32 arrays are ordinary arrays; typed keys
(``jax.random.key``) are stored as key data plus the key implementation and come back typed.
Restoring a raw key into a typed-key template (or the reverse) raises
:class:`CheckpointMismatchError`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


class _QuietOrbax(logging.Filter):
    """Drop orbax's INFO/DEBUG chatter (logged through absl); keep its warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


_absl_logger = logging.getLogger("absl")
if not any(isinstance(f, _QuietOrbax) for f in _absl_logger.filters):
    _absl_logger.addFilter(_QuietOrbax())


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the current run (config fields or tree leaves differ)."""


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": leaf}; an empty nested dict is kept as a leaf."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def check_compatible(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()
) -> None:
    """Raise :class:`CheckpointMismatchError` naming every field where ``saved != current``.

    Nested dicts are compared leaf by leaf under dotted names (``env.sight_range``); a field on
    one side only is reported with ``<missing>`` on the other. ``ignore`` holds dotted names to
    skip; a name also skips everything below it (``"env"`` skips ``env.*``). Both sides are
    normalised through JSON first, so tuples compare equal to the lists a saved config holds.
    """
    flat_s = _flatten(json.loads(json.dumps(saved)))
    flat_c = _flatten(json.loads(json.dumps(current)))
    ignored = tuple(ignore)

    def skipped(field: str) -> bool:
        return any(field == i or field.startswith(i + ".") for i in ignored)

    diffs = []
    for field in sorted(set(flat_s) | set(flat_c)):
        s, c = flat_s.get(field, _MISSING), flat_c.get(field, _MISSING)
        if not skipped(field) and (s != c or isinstance(s, bool) != isinstance(c, bool)):
            diffs.append(f"{field}: saved={s!r} current={c!r}")
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint does not match the current run in {len(diffs)} field(s):\n  "
            + "\n  ".join(diffs)
        )


def abstract_like(tree: PyTree) -> PyTree:
    """Same tree with every leaf a ``jax.ShapeDtypeStruct`` (sharding kept for jax.Arrays)."""

    def one(x: Any) -> jax.ShapeDtypeStruct:
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return jax.ShapeDtypeStruct(np.shape(x), jax.dtypes.canonicalize_dtype(np.result_type(x)))

    return jax.tree.map(one, tree)


def _path_str(path: tuple) -> str:
    """Key path -> "opt/0/mu/w" (attribute, dict and sequence keys alike, as orbax stores)."""
    parts = [str(getattr(k, a)) for k in path for a in ("key", "name", "idx") if hasattr(k, a)]
    return "/".join(parts) or "<root>"


def _is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _stored_spec(x: jax.ShapeDtypeStruct) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype orbax writes for a leaf (typed keys are written as their key data)."""
    if _is_key(x.dtype):
        x = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return tuple(x.shape), np.dtype(x.dtype)


def _compare_trees(saved_meta: PyTree, target: PyTree) -> list[str]:
    """Differences between on-disk array metadata and the abstract target, one line each."""
    saved = {_path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(saved_meta)[0]}
    want = {_path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(target)[0]}
    problems = [f"{p}: in checkpoint only" for p in sorted(set(saved) - set(want))]
    problems += [f"{p}: missing from checkpoint" for p in sorted(set(want) - set(saved))]
    for p in sorted(set(saved) & set(want)):
        shape, dtype = _stored_spec(want[p])
        s_shape = tuple(getattr(saved[p], "shape", None) or ())
        s_dtype = getattr(saved[p], "dtype", None)
        if s_shape != shape:
            problems.append(f"{p}: saved shape={s_shape} current={shape}")
        elif s_dtype is not None and np.dtype(s_dtype) != dtype:
            problems.append(f"{p}: saved dtype={np.dtype(s_dtype)} current={dtype}")
    return problems


class CheckpointStore:
    """Numbered checkpoints of (state pytree, JSON metadata) in one directory; keeps the last N.

    ``save`` is synchronous and atomic (see the module docstring); there is nothing to wait for.
    Use as a context manager or call :meth:`close`. Not thread-safe; one writer per directory.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 3) -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None (keep all), got {max_to_keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        for args_type in (ocp.args.StandardSave, ocp.args.StandardRestore):
            registry.add("state", args_type)
        for args_type in (ocp.args.JsonSave, ocp.args.JsonRestore):
            registry.add("meta", args_type)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._mgr = ocp.CheckpointManager(
            self.directory, options=options, handler_registry=registry
        )

    # -- queries ----------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """Newest finalized step, or None when the directory holds none."""
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        """All finalized steps, ascending (temporary directories of interrupted saves excluded)."""
        return sorted(self._mgr.all_steps())

    def _resolve(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        elif int(step) not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; have {self.all_steps()}"
            )
        return int(step)

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of ``step`` (default latest) without reading any array."""
        step = self._resolve(step)
        return self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    # -- save / restore ---------------------------------------------------------------------
    def save(self, step: int, state: PyTree, metadata: Mapping[str, Any]) -> None:
        """Write ``state`` and ``metadata`` as checkpoint ``step``; returns when it is final.

        ``step`` must exceed every saved step. ``metadata`` must be JSON-serialisable (checked
        before anything is written); tuples come back as lists.
        """
        step = int(step)
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(f"step {step} <= latest saved step {latest} in {self.directory}")
        try:
            meta = json.loads(json.dumps(dict(metadata)))
        except (TypeError, ValueError) as e:
            raise TypeError(f"checkpoint metadata is not JSON-serialisable: {e}") from e
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if not self._mgr.save(step, args=args, force=True):
            raise RuntimeError(f"orbax declined to save step {step} in {self.directory}")
        self._mgr.wait_until_finished()

    def restore(self, step: int | None, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Load checkpoint ``step`` (None: latest) into the structure, shapes, dtypes of ``like``.

        ``like`` may be concrete or abstract (``jax.eval_shape`` output / :func:`abstract_like`);
        concrete arrays lend their sharding. Raises ``FileNotFoundError`` when there is no such
        step and :class:`CheckpointMismatchError` naming each leaf whose path, shape or dtype
        differs (orbax would otherwise silently cast dtypes).
        """
        step = self._resolve(step)
        target = abstract_like(like)
        saved_meta = self._mgr.item_metadata(step)["state"]
        problems = _compare_trees(saved_meta, target) if saved_meta is not None else []
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} does not fit the template:\n  "
                + "\n  ".join(problems[:30])
                + (f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else "")
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
        )
        try:
            restored = self._mgr.restore(step, args=args)
        except ValueError as e:  # structure/shape errors orbax finds that we did not
            raise CheckpointMismatchError(f"checkpoint step {step} does not fit: {e}") from e
        flat_want = jax.tree_util.tree_flatten_with_path(target)[0]
        for (path, want), got in zip(flat_want, jax.tree.leaves(restored.state), strict=True):
            if _is_key(want.dtype) != _is_key(got.dtype):
                raise CheckpointMismatchError(
                    f"{_path_str(path)}: saved as {got.dtype} but the template holds "
                    f"{want.dtype}; convert with jax.random.key_data / jax.random.wrap_key_data"
                )
        return restored.state, restored.meta

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Finish pending deletions and release orbax resources."""
        self._mgr.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
