"""Records and row layout shared by the host and the worker side of the pool (envs/pool.py).

The exceptions (:class:`WorkerPoolError`, :class:`EpisodeFault`), the records returned by
:class:`~envs.pool.WorkerPool` (:class:`DroppedEpisode`, :class:`StepResult`,
:class:`EpisodeBatch`, :class:`Rollout`), the test-only :class:`FaultInjection`, and the
:data:`Row` layout (one worker's TimeStep as a tuple in :data:`FIELDS` order) with the helpers
that build, slice and pad rows into the fused path's episode layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from envs.spec import EnvInfo, TimeStep

__all__ = [
    "FIELDS",
    "DroppedEpisode",
    "EpisodeBatch",
    "EpisodeFault",
    "FaultInjection",
    "Rollout",
    "Row",
    "StepResult",
    "WorkerPoolError",
]

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TimeStep))
_DTYPES: dict[str, Any] = {
    "obs": np.float32,
    "expert_obs": np.float32,
    "state": np.float32,
    "avail": np.bool_,
    "reward": np.float32,
    "done": np.bool_,
    "won": np.bool_,
    "truncated": np.bool_,
}
Row = tuple[np.ndarray, ...]  # one worker's TimeStep, fields in FIELDS order, no batch axis
_AVAIL, _REWARD, _DONE = FIELDS.index("avail"), FIELDS.index("reward"), FIELDS.index("done")


class WorkerPoolError(RuntimeError):
    """A worker could not be started (or restarted), or broke the worker protocol."""


class EpisodeFault(RuntimeError):
    """Raised inside a worker: the environment gave up on the current episode (drop it)."""


# ---------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class DroppedEpisode:
    """An episode lost to a worker fault.

    worker: worker index; pid: the process that failed; step: transitions the episode had
    taken; reason: what happened; restarted: whether the process was replaced.
    """

    worker: int
    pid: int | None
    step: int
    reason: str
    restarted: bool


@dataclasses.dataclass(frozen=True)
class FaultInjection:
    """Test-only: make worker ``worker`` fail on its ``at_step``-th step command (1-based,
    counted from process start). ``mode="exit"`` kills the process (``os._exit``), ``"raise"``
    raises inside the worker, ``"hang"`` never answers (the pool's ``timeout`` catches it).
    Applies to the first process of that worker only, so the replacement runs normally."""

    worker: int
    at_step: int
    mode: Literal["exit", "raise", "hang"] = "exit"


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What :meth:`WorkerPool.step` returns.

    timestep:  TimeStep, every leaf [n, ...] numpy (n = number of workers stepped); rows of
               dropped episodes are placeholders (zeros, done=True, all actions available)
    worker_ids: [n] int64, the worker of each row
    dropped_mask: [n] bool, True where the episode was dropped during this step
    dropped:   the DroppedEpisode records of this step
    """

    timestep: TimeStep
    worker_ids: np.ndarray
    dropped_mask: np.ndarray
    dropped: tuple[DroppedEpisode, ...]


@dataclasses.dataclass(frozen=True)
class EpisodeBatch:
    """Finished episodes in the fused path's padded layout (numpy), T = info.episode_limit.

    timestep: TimeStep with leaves [B, T + 1, ...]: index 0 is the reset TimeStep, index t + 1
              follows action t. After the episode ends the last TimeStep repeats with reward 0
              (the absorbing semantics of envs/spec.py).
    actions:  [B, T, n_agents] int32; after the end, each agent's first available action
    length:   [B] int32, real transitions per episode (1..T)
    worker:   [B] int32, the worker that played each episode
    """

    timestep: TimeStep
    actions: np.ndarray
    length: np.ndarray
    worker: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """[B, T] bool: transition t is real (the TimeStep it starts from is not done)."""
        return ~np.asarray(self.timestep.done)[:, :-1]

    @property
    def returns(self) -> np.ndarray:
        """[B] float32: undiscounted episode returns."""
        return np.asarray(self.timestep.reward).sum(axis=1, dtype=np.float32)

    @property
    def won(self) -> np.ndarray:
        """[B] bool: the episode ended in a win."""
        return np.asarray(self.timestep.won)[:, -1]

    def __len__(self) -> int:
        return int(self.length.shape[0])


@dataclasses.dataclass(frozen=True)
class Rollout:
    """What :meth:`WorkerPool.run_episodes` returns: exactly ``n_episodes`` finished episodes,
    the episodes dropped on the way, and the number of synchronous rounds it took."""

    episodes: EpisodeBatch
    dropped: tuple[DroppedEpisode, ...]
    rounds: int

    @property
    def env_steps(self) -> int:
        """Transitions in the returned episodes."""
        return int(self.episodes.length.sum())


# ---------------------------------------------------------------------------- episode layout


def _placeholder_row(info: EnvInfo) -> Row:
    """A row for a worker with nothing to show: zeros, done=True, every action available."""
    return (
        np.zeros((info.n_agents, info.obs_dim), np.float32),
        np.zeros((info.n_agents, info.expert_dim), np.float32),
        np.zeros((info.state_dim,), np.float32),
        np.ones((info.n_agents, info.n_actions), bool),
        np.zeros((), np.float32),
        np.ones((), bool),
        np.zeros((), bool),
        np.zeros((), bool),
    )


def _row_at(timestep: TimeStep, k: int) -> Row:
    """Row ``k`` of a TimeStep with leaves [n, ...]."""
    return tuple(np.asarray(getattr(timestep, name))[k] for name in FIELDS)


def _absorbing(row: Row) -> Row:
    """The TimeStep an absorbing episode repeats after its end: the same, with reward 0."""
    out = list(row)
    out[_REWARD] = np.zeros((), np.float32)
    return tuple(out)


def _pad_episodes(
    episodes: Sequence[tuple[int, list[Row], list[np.ndarray]]], info: EnvInfo
) -> EpisodeBatch:
    """Pad (worker, TimeStep rows [L + 1], actions [L]) episodes to T = info.episode_limit."""
    limit = info.episode_limit
    leaves: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}
    actions, lengths, workers = [], [], []
    for worker, steps, acts in episodes:
        length = len(acts)
        padded = steps + [_absorbing(steps[-1])] * (limit - length)
        for k, name in enumerate(FIELDS):
            leaves[name].append(np.stack([row[k] for row in padded]))
        filler = np.argmax(steps[-1][_AVAIL], axis=-1).astype(np.int32)
        actions.append(np.stack(acts + [filler] * (limit - length)))
        lengths.append(length)
        workers.append(worker)
    return EpisodeBatch(
        timestep=TimeStep(**{name: np.stack(v) for name, v in leaves.items()}),
        actions=np.stack(actions).astype(np.int32),
        length=np.asarray(lengths, np.int32),
        worker=np.asarray(workers, np.int32),
    )


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (pickled to the child)."""

    backend: str
    map_name: str
    index: int
    generation: int
    seed: int
    env_options: dict[str, Any]
    make_env: Callable[..., Any] | None
    platform: str | None
    compile_cache_dir: str | None
    crash_at_step: int | None
    crash_mode: str
