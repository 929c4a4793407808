"""The environment protocol every igmda-jax environment implements.

An environment is a pair of pure, jittable, vmappable functions plus static facts:

    reset(key)                          -> (TimeStep, EnvState)
    step(key, env_state, actions)       -> (TimeStep, EnvState)
    info                                -> EnvInfo (static, hashable)

Episode boundaries. ``step`` does **not** auto-reset. Once a TimeStep has ``done=True`` the
episode is absorbing: further ``step`` calls return the same observation with ``reward=0``,
``done=True`` and the same ``won``/``truncated`` flags, and the simulator state is frozen. This
lets the trainer collect one whole episode per environment with a fixed-length ``lax.scan`` and
derive padding masks from ``done`` alone. Use :func:`step_autoreset` where a continuous stream of
episodes is wanted (benchmarks, the host worker pool).

Terminal versus time-limit. ``truncated=True`` marks an episode that ended only because the
episode limit was reached; its last transition must bootstrap from the final observation.
``terminated = done & ~truncated`` marks a real terminal transition (win, loss, or draw),
which must not bootstrap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Protocol

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

EnvState = Any
EXPERT_VIEWS = ("full_obs", "state")


@struct.dataclass
class TimeStep:
    """What an environment returns at every step (one environment, no batch axis).

    obs:        [n_agents, obs_dim] float32   what the deployed agent sees (sight-limited)
    expert_obs: [n_agents, expert_dim] float32 full-sight observation or global state + id
    state:      [state_dim] float32           global state, for mixers
    avail:      [n_agents, n_actions] bool    available actions
    reward:     [] float32                    team reward of the transition into this step
    done:       [] bool                       the episode has ended (at or before this step)
    won:        [] bool                       the episode ended in a win
    truncated:  [] bool                       the episode ended by the time limit only
    """

    obs: jax.Array
    expert_obs: jax.Array
    state: jax.Array
    avail: jax.Array
    reward: jax.Array
    done: jax.Array
    won: jax.Array
    truncated: jax.Array

    @property
    def terminated(self) -> jax.Array:
        """True where the episode really ended (no bootstrap): done and not truncated."""
        return jnp.logical_and(self.done, jnp.logical_not(self.truncated))


@dataclasses.dataclass(frozen=True)
class EnvInfo:
    """Static facts about an environment instance (hashable, safe as a jit static arg)."""

    map_name: str
    n_agents: int
    n_enemies: int
    n_actions: int
    obs_dim: int
    expert_dim: int
    state_dim: int
    episode_limit: int
    sight_range: float | None = None
    expert_view: str = "full_obs"
    obs_live_features: tuple[int, ...] | None = None
    """Indices of the ``obs`` features that can ever be nonzero (None: all). At sight 0 the
    other units' blocks are always zero; networks skip their input weights (an exact saving:
    they only ever multiply zeros)."""


class Environment(Protocol):
    """The functional interface of every igmda-jax environment."""

    info: EnvInfo

    def reset(self, key: jax.Array) -> tuple[TimeStep, EnvState]: ...

    def step(
        self, key: jax.Array, env_state: EnvState, actions: jax.Array
    ) -> tuple[TimeStep, EnvState]: ...


def assert_timestep(timestep: TimeStep, info: EnvInfo, batch_shape: tuple[int, ...] = ()) -> None:
    """Check shapes and dtypes of a (possibly batched) TimeStep against ``info``."""
    b = tuple(batch_shape)
    chex.assert_shape(timestep.obs, (*b, info.n_agents, info.obs_dim))
    chex.assert_shape(timestep.expert_obs, (*b, info.n_agents, info.expert_dim))
    chex.assert_shape(timestep.state, (*b, info.state_dim))
    chex.assert_shape(timestep.avail, (*b, info.n_agents, info.n_actions))
    chex.assert_shape([timestep.reward, timestep.done, timestep.won, timestep.truncated], b)
    chex.assert_type([timestep.obs, timestep.expert_obs, timestep.state], jnp.float32)
    chex.assert_type(timestep.reward, jnp.float32)
    chex.assert_type([timestep.avail, timestep.done, timestep.won, timestep.truncated], bool)


def step_autoreset(
    env: Environment, key: jax.Array, env_state: EnvState, actions: jax.Array
) -> tuple[TimeStep, TimeStep, EnvState]:
    """Step, and start a new episode where this step ended one.

    Returns ``(transition, next_timestep, next_state)``: ``transition`` is the step's own
    TimeStep (reward, done, final observation); ``next_timestep`` is what agents act on next,
    which is the fresh episode's first TimeStep where ``transition.done``.
    """
    step_key, reset_key = jax.random.split(key)
    transition, stepped_state = env.step(step_key, env_state, actions)
    reset_timestep, reset_state = env.reset(reset_key)
    pick = lambda fresh, old: jax.lax.select(  # noqa: E731
        jnp.broadcast_to(transition.done, old.shape), fresh, old
    )
    next_timestep = jax.tree.map(pick, reset_timestep, transition)
    next_state = jax.tree.map(pick, reset_state, stepped_state)
    return transition, next_timestep, next_state


# ---------------------------------------------------------------------------- option checks


def validate_sight_range(value: Any, name: str = "sight_range") -> float | None:
    """None (the environment's own sight) or a finite number >= 0, as float; else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be None or a number >= 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (or None), got {value!r}")
    return number


def validate_expert_view(value: Any) -> str:
    """One of EXPERT_VIEWS ("full_obs": full-sight observation, "state": global state + id)."""
    if not isinstance(value, str) or value not in EXPERT_VIEWS:
        raise ValueError(f"expert_view must be one of {EXPERT_VIEWS}, got {value!r}")
    return value


# ---------------------------------------------------------------------------- host-side actions


class InvalidActionError(ValueError):
    """An action is unavailable, out of range or malformed (raised by :func:`check_actions`)."""


def check_actions(
    actions: Any, avail: Any, worker_ids: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """Host-side check of actions against availability; return them as int32.

    actions: [..., n_agents] integers; avail: [..., n_agents, n_actions] bool. With
    ``worker_ids`` ([n], the worker of each row of 2-d actions [n, n_agents]) errors name
    worker and agent, otherwise the index. Inside ``step`` (under jit) environments cannot
    raise; this is the check that can. Raises InvalidActionError (a ValueError) for a wrong
    shape or dtype and for the first unavailable or out-of-range action.
    """
    avail = np.asarray(avail, dtype=bool)
    arr = np.asarray(actions)
    expected = avail.shape[:-1]
    if arr.shape != expected:
        rows = " (workers, agents)" if worker_ids is not None else ""
        raise InvalidActionError(f"actions must have shape {list(expected)}{rows}, got {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidActionError(f"actions must be integers, got dtype {arr.dtype}")
    n_actions = avail.shape[-1]
    in_range = (arr >= 0) & (arr < n_actions)
    chosen = np.take_along_axis(avail, np.clip(arr, 0, n_actions - 1)[..., None], axis=-1)[..., 0]
    bad = ~(in_range & chosen)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        action = int(arr[index])
        what = "not available" if in_range[index] else "out of range"
        available = np.flatnonzero(avail[index]).tolist()
        if worker_ids is None:
            where = f"action {action} at index {index} (last axis = agent)"
        else:
            where = f"worker {int(worker_ids[index[0]])}, agent {index[-1]}: action {action}"
        raise InvalidActionError(f"{where} is {what} (available: {available})")
    return arr.astype(np.int32)


@struct.dataclass
class Observation:
    """The per-step inputs the learner needs, re-derived from a replay record.

    obs [n_agents, obs_dim], expert_obs [n_agents, expert_dim], state [state_dim],
    avail [n_agents, n_actions] bool.
    """

    obs: jax.Array
    expert_obs: jax.Array
    state: jax.Array
    avail: jax.Array


def _record_observation(timestep: TimeStep, env_state: EnvState) -> Observation:
    return Observation(timestep.obs, timestep.expert_obs, timestep.state, timestep.avail)


def _identity(record: Observation) -> Observation:
    return record


def recorder(env: Environment) -> tuple[Any, Any]:
    """``(record, observe)`` for the replay: ``record(timestep, env_state) -> Record`` is what
    is stored per step, ``observe(record) -> Observation`` re-derives the learner's inputs.

    Environments may define compact ``record``/``observe`` methods (the SMAX maps store unit
    positions and health, not observations); otherwise the Observation itself is stored.
    """
    if hasattr(env, "record") and hasattr(env, "observe"):
        return env.record, env.observe
    return _record_observation, _identity
