"""Does a checkpoint fit the current run? Config fields compared leaf by leaf
(``check_compatible``), and the arrays on disk against the run's abstract tree
(``compare_trees``, ``abstract_like``); a difference raises ``CheckpointMismatchError`` naming
each field or leaf."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np

from igmda_jax.persist.digests import is_key, path_str

PyTree = Any


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


def stored_spec(x: jax.ShapeDtypeStruct) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype orbax writes for a leaf (typed keys are written as their key data)."""
    if is_key(x.dtype):
        x = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return tuple(x.shape), np.dtype(x.dtype)


def compare_trees(saved_meta: PyTree, target: PyTree) -> list[str]:
    """Differences between on-disk array metadata and the abstract target, one line each."""
    saved = {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(saved_meta)[0]}
    want = {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(target)[0]}
    problems = [f"{p}: in checkpoint only" for p in sorted(set(saved) - set(want))]
    problems += [f"{p}: missing from checkpoint" for p in sorted(set(want) - set(saved))]
    for p in sorted(set(saved) & set(want)):
        shape, dtype = stored_spec(want[p])
        s_shape = tuple(getattr(saved[p], "shape", None) or ())
        s_dtype = getattr(saved[p], "dtype", None)
        if s_shape != shape:
            problems.append(f"{p}: saved shape={s_shape} current={shape}")
        elif s_dtype is not None and np.dtype(s_dtype) != dtype:
            problems.append(f"{p}: saved dtype={np.dtype(s_dtype)} current={dtype}")
    return problems
