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

Integrity. ``save`` also records a CRC-32 of every array leaf's bytes in the ``meta`` item
(reserved key ``_igmda_crc32``; never shown to callers), and every restore checks the restored
leaves against it, so a garbled data file, which orbax would read back as silently wrong values,
is refused instead. :meth:`CheckpointStore.restore_latest` falls back from an unreadable newest
checkpoint (truncated or garbled data, a missing or garbled manifest or metadata, any error orbax
raises) to the previous kept one. Hashing reads each leaf to the host once more on save and on
restore (one leaf at a time; about 1.5 GB/s). Checkpoints saved before the checksums existed are
restored unchecked. An array spread over several processes (``igmda_jax.fused.distributed``) is hashed
where its parts live and the parts' CRCs are combined (:func:`igmda_jax.persist.digests.crc32_combine`): the checksum is
the one a single process records for the same bytes.

Several processes: every process calls ``save`` and ``restore*`` together (orbax writes each
process's shards, process 0 the metadata); the root must be a folder they all see.

Write failures. A failed save (disk full, read-only folder, any error orbax raises while writing,
in the calling thread or in its writer threads) raises :class:`CheckpointWriteError` from
``save`` itself; the partial temporary directory is removed and earlier steps are untouched.

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
import re
import shutil
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from igmda_jax.persist.compat import (
    CheckpointMismatchError,
    abstract_like,
    check_compatible,
    compare_trees,
)
from igmda_jax.persist.digests import is_key, path_str, tree_digests

__all__ = [
    "CheckpointMismatchError",
    "CheckpointStore",
    "CheckpointUnreadableError",
    "CheckpointWriteError",
    "SkippedCheckpoint",
    "abstract_like",
    "check_compatible",
]

PyTree = Any


class _QuietOrbax(logging.Filter):
    """Drop orbax's INFO/DEBUG chatter (logged through absl) and the tracebacks its writer
    threads log for errors that reach the caller anyway (as :class:`CheckpointWriteError`);
    keep its warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        if f"{os.sep}futures{os.sep}" in record.pathname and "raised an exception" in str(
            record.msg
        ):
            return False
        return record.levelno >= logging.WARNING


_absl_logger = logging.getLogger("absl")
if not any(isinstance(f, _QuietOrbax) for f in _absl_logger.filters):
    _absl_logger.addFilter(_QuietOrbax())


class CheckpointUnreadableError(RuntimeError):
    """No kept checkpoint could be read (or not the one asked for); the message says why."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; earlier checkpoints are intact.

    ``errno`` holds the operating-system error number when one is known (e.g. ``ENOSPC``)."""


class SkippedCheckpoint(NamedTuple):
    """A kept checkpoint :meth:`CheckpointStore.restore_latest` could not read, and why."""

    step: int
    reason: str


class _Unreadable(Exception):
    """Internal: one step cannot be read; the message is the one-line reason."""


_DIGESTS = "_igmda_crc32"  # reserved metadata key: {leaf path: CRC-32 of its bytes, hex}
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's in-progress step directory suffix


def _root_cause(e: BaseException) -> BaseException:
    """The innermost exception ``e`` was raised from (orbax wraps tensorstore errors)."""
    seen = {id(e)}
    while True:
        nxt = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
        if nxt is None or id(nxt) in seen:
            return e
        seen.add(id(nxt))
        e = nxt


def _one_line(e: BaseException, limit: int = 300) -> str:
    """First line of the root cause of ``e``, shortened; the type name when it says nothing."""
    cause = _root_cause(e)
    text = " ".join(str(cause).strip().splitlines()[:1]) or type(cause).__name__
    text = text.split(" [tensorstore_spec=")[0]  # drop tensorstore's JSON spec dump
    if isinstance(cause, FileNotFoundError) and cause.filename:
        text = f"{cause.filename} is missing"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _os_error(e: BaseException) -> tuple[int | None, str]:
    """``(errno, "[Errno N] text")`` of the OS error behind ``e`` (Python or tensorstore)."""
    x: BaseException | None = e
    while x is not None:
        if isinstance(x, OSError) and x.errno is not None:
            return x.errno, f"[Errno {x.errno}] {x.strerror or os.strerror(x.errno)}"
        found = re.search(r"os_error_code='?(\d+)", str(x))
        if found:
            code = int(found.group(1))
            return code, f"[Errno {code}] {os.strerror(code)}"
        x = x.__cause__ or x.__context__
    return None, _one_line(e)


def _check_digests(state: PyTree, saved: Mapping[str, str]) -> None:
    """Raise :class:`_Unreadable` naming the first restored leaf whose bytes differ."""
    for path, digest in sorted(tree_digests(state).items()):
        if path in saved and saved[path] != digest:
            raise _Unreadable(f"array data of {path} does not match its checksum (garbled)")


def _check_metadata(meta: Any, require: Iterable[str]) -> dict[str, Any]:
    """The metadata dict without the checksums; :class:`_Unreadable` when it is not a JSON
    object or a key in ``require`` does not hold a JSON object."""
    if not isinstance(meta, dict):
        raise _Unreadable(f"metadata is a {type(meta).__name__}, not a JSON object")
    for key in require:
        if not isinstance(meta.get(key), dict):
            raise _Unreadable(f"metadata has no {key!r} object")
    return {k: v for k, v in meta.items() if k != _DIGESTS}


def _unreadable_message(directory: str, skipped: list[SkippedCheckpoint]) -> str:
    """One line: every step tried and why it failed, and what to do."""
    tried = "; ".join(f"step {s.step}: {s.reason}" for s in skipped)
    return (
        f"no readable checkpoint in {directory} (tried {tried}); start afresh in a new --out "
        f"folder (keep this one for inspection)"
    )


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
        meta = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        return {k: v for k, v in meta.items() if k != _DIGESTS}

    # -- save -------------------------------------------------------------------------------
    def save(self, step: int, state: PyTree, metadata: Mapping[str, Any]) -> None:
        """Write ``state`` and ``metadata`` as checkpoint ``step``; returns when it is final.

        ``step`` must exceed every saved step. ``metadata`` must be JSON-serialisable (checked
        before anything is written); tuples come back as lists. Every write error, whether
        orbax raises it here or in its writer threads (it is synchronous, so they all surface
        before ``save`` returns), raises :class:`CheckpointWriteError` here, after the partial
        step directory is removed; earlier checkpoints stay as they were.
        """
        step = int(step)
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(f"step {step} <= latest saved step {latest} in {self.directory}")
        if _DIGESTS in metadata:
            raise ValueError(f"checkpoint metadata key {_DIGESTS!r} is reserved")
        try:
            meta = json.loads(json.dumps(dict(metadata)))
        except (TypeError, ValueError) as e:
            raise TypeError(f"checkpoint metadata is not JSON-serialisable: {e}") from e
        meta[_DIGESTS] = tree_digests(state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        try:
            saved = self._mgr.save(step, args=args, force=True)
            self._mgr.wait_until_finished()
        except Exception as e:
            raise self._write_error(step, e) from e
        if not saved:
            raise RuntimeError(f"orbax declined to save step {step} in {self.directory}")

    def _write_error(self, step: int, e: BaseException) -> CheckpointWriteError:
        """Clean up after a failed save of ``step``; the error to raise, naming folder and cause."""
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if name.startswith(f"{step}{_TMP_SUFFIX}"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        self._mgr.reload()
        code, cause = _os_error(e)
        latest = self.latest_step()
        kept = (
            "there is no earlier checkpoint"
            if latest is None
            else f"the last good checkpoint (step {latest}) is kept"
        )
        err = CheckpointWriteError(
            f"cannot write checkpoint {step} to {self.directory}: {cause}; {kept}"
        )
        err.errno = code
        return err

    # -- restore ----------------------------------------------------------------------------
    def restore(self, step: int | None, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Load checkpoint ``step`` (None: latest) into the structure, shapes, dtypes of ``like``.

        ``like`` may be concrete or abstract (``jax.eval_shape`` output / :func:`abstract_like`);
        concrete arrays lend their sharding. Raises ``FileNotFoundError`` when there is no such
        step, :class:`CheckpointMismatchError` naming each leaf whose path, shape or dtype
        differs (orbax would otherwise silently cast dtypes), and
        :class:`CheckpointUnreadableError` when the step is damaged (no fallback; see
        :meth:`restore_latest`).
        """
        step = self._resolve(step)
        try:
            return self._read(step, abstract_like(like), ())
        except _Unreadable as e:
            raise CheckpointUnreadableError(
                _unreadable_message(self.directory, [SkippedCheckpoint(step, str(e))])
            ) from e

    def restore_latest(
        self, like: PyTree, *, require: Iterable[str] = (), set_aside: bool = False
    ) -> tuple[PyTree, dict[str, Any], list[SkippedCheckpoint]]:
        """Restore the newest readable kept checkpoint: ``(state, metadata, skipped)``.

        Steps are tried newest first; one that cannot be read (truncated or garbled array data,
        a missing or garbled manifest or metadata, any error orbax raises on it, metadata that
        is not a JSON object or lacks an object under a key in ``require``) is listed in
        ``skipped`` (newest first) and the previous one is tried. Raises
        ``FileNotFoundError`` when there is no checkpoint, :class:`CheckpointUnreadableError`
        when none is readable, and :class:`CheckpointMismatchError` (not skipped: an older step
        would not fit either) when the template does not fit.

        ``set_aside=True`` renames each skipped step directory to ``<step>.unreadable`` (kept
        for inspection, no longer a checkpoint), so that a resumed run can save those steps
        again; a run that resumes should pass it, or ``save`` refuses steps up to the skipped
        ones. Nothing is renamed when no step is readable.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        target = abstract_like(like)
        require = tuple(require)
        skipped: list[SkippedCheckpoint] = []
        for step in steps:
            try:
                state, meta = self._read(step, target, require)
            except _Unreadable as e:
                skipped.append(SkippedCheckpoint(step, str(e)))
                continue
            if set_aside:
                for s in skipped:
                    self._set_aside(s.step)
            return state, meta, skipped
        raise CheckpointUnreadableError(_unreadable_message(self.directory, skipped))

    def _set_aside(self, step: int) -> None:
        """Rename step directory ``step`` to ``<step>.unreadable`` (``.unreadable-N`` if taken)."""
        if jax.process_index() == 0:  # several processes: one renames, all wait for it
            dest, n = os.path.join(self.directory, f"{step}.unreadable"), 1
            while os.path.exists(dest):
                dest, n = os.path.join(self.directory, f"{step}.unreadable-{n}"), n + 1
            os.rename(os.path.join(self.directory, str(step)), dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"igmda checkpoint: set aside {step}")
        self._mgr.reload()

    def _read(
        self, step: int, target: PyTree, require: Iterable[str]
    ) -> tuple[PyTree, dict[str, Any]]:
        """Restore ``step`` into the abstract ``target``; :class:`_Unreadable` when damaged."""
        try:
            saved_meta = self._mgr.item_metadata(step)["state"]
        except Exception as e:
            raise _Unreadable(f"tree metadata: {_one_line(e)}") from e
        problems = compare_trees(saved_meta, target) if saved_meta is not None else []
        if problems:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} does not fit the template:\n  "
                + "\n  ".join(problems[:30])
                + (f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else "")
            )
        meta = self._read_item(step, "meta", ocp.args.JsonRestore())
        metadata = _check_metadata(meta, require)
        state = self._read_item(step, "state", ocp.args.StandardRestore(target))
        flat_want = jax.tree_util.tree_flatten_with_path(target)[0]
        for (path, want), got in zip(flat_want, jax.tree.leaves(state), strict=True):
            if is_key(want.dtype) != is_key(got.dtype):
                raise CheckpointMismatchError(
                    f"{path_str(path)}: saved as {got.dtype} but the template holds "
                    f"{want.dtype}; convert with jax.random.key_data / jax.random.wrap_key_data"
                )
        digests = meta.get(_DIGESTS, {})
        if not isinstance(digests, dict):
            raise _Unreadable("metadata: the checksums are garbled")
        _check_digests(state, digests)
        return state, metadata

    def _read_item(self, step: int, item: str, args: Any) -> Any:
        """One orbax item of ``step``; any error orbax raises becomes :class:`_Unreadable`."""
        try:
            return getattr(self._mgr.restore(step, args=ocp.args.Composite(**{item: args})), item)
        except Exception as e:
            what = "metadata" if item == "meta" else "array data"
            raise _Unreadable(f"{what}: {_one_line(e)}") from e

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Finish pending deletions and release orbax resources."""
        self._mgr.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
