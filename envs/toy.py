"""Toy environments whose answers are known, for tests and sanity runs.

``matrix_qtran``  one-step 2-agent, 3-action cooperative matrix game with the non-monotonic payoff
                  [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]] of the QTRAN paper, reused by later
                  value-decomposition work (QPLEX's code: ``matrix_game_2``): optimum 8 at (0, 0).
``matrix_qplex``  one-step game [[8, -12, -12], [-12, 6, 0], [-12, 0, 6]]: optimum 8 at (0, 0),
                  two local optima of 6. Table confirmed in the QPLEX authors' released code
                  (wjh720/QPLEX, ``matrix_game_3``); not checked against the paper's PDF text.
``hidden_cue``    a short memory task: the optimal action is a hidden goal that the expert view
                  shows at every step but a sight-0 observation shows only at the first step.
``hidden_cue_long``  hidden_cue with 8 decisions and 5 actions: at sight 0 plain QMIX stays near
                  the memoryless return 0.4 for 150k steps while QMIX-DA reaches the optimum 2.0
                  (tests/test_da.py; ``python experiments/hidden_cue_gap.py``).

All environments follow envs/spec.py exactly: pure ``reset``/``step``, no auto-reset, absorbing
after ``done``. Actions are assumed valid (int32 in ``[0, n_actions)``); they are not checked.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.typing import ArrayLike

from envs import register
from envs.spec import EnvInfo, TimeStep, validate_expert_view, validate_sight_range


def _table(rows: list[list[float]]) -> np.ndarray:
    """A read-only float32 payoff table: [n_actions, n_actions]."""
    arr = np.asarray(rows, dtype=np.float32)
    arr.flags.writeable = False
    return arr


# Payoff tables, indexed [action of agent 0, action of agent 1]: [3, 3] float32.
PAYOFF_QTRAN: np.ndarray = _table([[8, -12, -12], [-12, 0, 0], [-12, 0, 0]])
PAYOFF_QPLEX: np.ndarray = _table([[8, -12, -12], [-12, 6, 0], [-12, 0, 6]])
MATRIX_GAMES: dict[str, np.ndarray] = {"matrix_qtran": PAYOFF_QTRAN, "matrix_qplex": PAYOFF_QPLEX}


def _check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _timestep(
    obs: jax.Array,
    expert_obs: jax.Array,
    state: jax.Array,
    n_actions: int,
    reward: ArrayLike,
    done: jax.Array,
    won: jax.Array,
    truncated: jax.Array,
) -> TimeStep:
    """Assemble a TimeStep with the protocol's dtypes (all actions available).

    obs: [n_agents, obs_dim], expert_obs: [n_agents, expert_dim], state: [state_dim],
    reward/done/won/truncated: [].
    """
    return TimeStep(
        obs=jnp.asarray(obs, jnp.float32),
        expert_obs=jnp.asarray(expert_obs, jnp.float32),
        state=jnp.asarray(state, jnp.float32),
        avail=jnp.ones((obs.shape[0], n_actions), bool),
        reward=jnp.asarray(reward, jnp.float32),
        done=jnp.asarray(done, bool),
        won=jnp.asarray(won, bool),
        truncated=jnp.asarray(truncated, bool),
    )


@struct.dataclass
class MatrixState:
    """Simulator state of a matrix game; every field is []: done, won (bool)."""

    done: jax.Array
    won: jax.Array


@dataclasses.dataclass(frozen=True)
class MatrixGame:
    """One-step cooperative game: team reward = ``payoff[a0, a1]``, then the episode ends.

    obs: [2, 1] constant 1.0; state: [1] constant 1.0; expert_obs: [2, 1] ("full_obs") or
    [2, 3] (state + agent one-hot). won = reward equals the maximal payoff. Never truncated.
    The sight range has no effect (the observation has nothing to hide).
    """

    info: EnvInfo
    payoff: tuple[tuple[float, ...], ...]  # [n_actions, n_actions], hashable

    def _obs(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(obs [2, 1], expert_obs [2, expert_dim], state [1])."""
        obs = jnp.ones((2, 1), jnp.float32)
        state = jnp.ones((1,), jnp.float32)
        if self.info.expert_view == "state":
            expert = jnp.concatenate([jnp.ones((2, 1)), jnp.eye(2)], axis=1)
        else:
            expert = obs
        return obs, expert, state

    def reset(self, key: jax.Array) -> tuple[TimeStep, MatrixState]:
        """Start an episode (``key`` unused): reward 0, not done."""
        del key
        f = jnp.zeros((), bool)
        return _timestep(*self._obs(), 3, 0.0, f, f, f), MatrixState(done=f, won=f)

    def step(
        self, key: jax.Array, env_state: MatrixState, actions: jax.Array
    ) -> tuple[TimeStep, MatrixState]:
        """Pay ``payoff[actions[0], actions[1]]`` once; afterwards absorbing. actions: [2] int32."""
        del key
        table = jnp.asarray(self.payoff, jnp.float32)
        actions = jnp.asarray(actions, jnp.int32)
        payoff = table[actions[0], actions[1]]
        live = jnp.logical_not(env_state.done)
        reward = jnp.where(live, payoff, 0.0)
        won = jnp.where(live, payoff == jnp.max(table), env_state.won)
        new = MatrixState(done=jnp.ones((), bool), won=won)
        return _timestep(*self._obs(), 3, reward, new.done, won, jnp.zeros((), bool)), new


def make_matrix_game(
    name: str, sight_range: float | None = None, expert_view: str = "full_obs", **options: Any
) -> MatrixGame:
    """Build the matrix game ``name`` (a key of MATRIX_GAMES); it takes no further options."""
    sight_range = validate_sight_range(sight_range)
    expert_view = validate_expert_view(expert_view)
    if options:
        raise ValueError(f"{name} takes no options besides sight_range/expert_view: {options}")
    info = EnvInfo(
        map_name=name,
        n_agents=2,
        n_enemies=0,
        n_actions=3,
        obs_dim=1,
        expert_dim=3 if expert_view == "state" else 1,
        state_dim=1,
        episode_limit=1,
        sight_range=sight_range,
        expert_view=expert_view,
    )
    return MatrixGame(info=info, payoff=tuple(tuple(map(float, r)) for r in MATRIX_GAMES[name]))


@struct.dataclass
class CueState:
    """Simulator state of hidden_cue; every field is []: h (int32 goal), t (int32 steps taken),
    done, won, truncated (bool)."""

    h: jax.Array
    t: jax.Array
    done: jax.Array
    won: jax.Array
    truncated: jax.Array


@dataclasses.dataclass(frozen=True)
class HiddenCue:
    """Memory task with a hidden goal ``h`` ~ Uniform{0..n_actions-1} drawn at reset.

    Each episode has ``length`` decisions (t = 0..length-1). Only the last one is rewarded:
    reward = (#agents with action == h) / n_agents + 1[all agents correct]; won = all correct.
    That step is a true terminal (done, not truncated). With ``time_limit < length`` the episode
    is cut after ``time_limit`` decisions instead: done=True, truncated=True, return 0.

    obs: [n_agents, n_actions + length + 1 + n_agents] = [cue, one-hot(t) over length+1,
         agent one-hot]; cue = one-hot(h) if t == 0 or sight is None or sight > 0, else zeros.
    expert_obs: "full_obs" -> obs with the cue always shown; "state" -> [state, agent one-hot].
    state: [n_actions + length + 1] = [one-hot(h), one-hot(t)].

    Optimal return 2.0 (every agent plays h at the last step). At sight 0 a memoryless policy
    gets at most 2 / n_actions in expectation; a recurrent one can reach 2.0.
    """

    info: EnvInfo
    length: int
    time_limit: int | None

    def _views(self, s: CueState) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(obs [n_agents, obs_dim], expert_obs [n_agents, expert_dim], state [state_dim])."""
        n, k, sight = self.info.n_agents, self.info.n_actions, self.info.sight_range
        cue = jax.nn.one_hot(s.h, k)
        clock = jax.nn.one_hot(s.t, self.length + 1)
        ids = jnp.eye(n)
        tile = lambda v: jnp.broadcast_to(v, (n, v.shape[0]))  # noqa: E731
        shown = s.t == 0 if sight is not None and sight <= 0 else jnp.ones((), bool)
        full = jnp.concatenate([tile(cue), tile(clock), ids], axis=1)
        obs = jnp.concatenate([tile(cue * shown), tile(clock), ids], axis=1)
        state = jnp.concatenate([cue, clock])
        expert = (
            full
            if self.info.expert_view == "full_obs"
            else jnp.concatenate([tile(state), ids], axis=1)
        )
        return obs, expert, state

    def reset(self, key: jax.Array) -> tuple[TimeStep, CueState]:
        """Draw the hidden goal from ``key``; reward 0, not done."""
        f = jnp.zeros((), bool)
        h = jax.random.randint(key, (), 0, self.info.n_actions, dtype=jnp.int32)
        s = CueState(h=h, t=jnp.zeros((), jnp.int32), done=f, won=f, truncated=f)
        return _timestep(*self._views(s), self.info.n_actions, 0.0, f, f, f), s

    def step(
        self, key: jax.Array, env_state: CueState, actions: jax.Array
    ) -> tuple[TimeStep, CueState]:
        """Advance one decision (``key`` unused). actions: [n_agents] int32; absorbing after done."""
        del key
        s = env_state
        correct = jnp.asarray(actions, jnp.int32) == s.h
        all_correct = jnp.all(correct)
        t_next = s.t + 1
        last = t_next == self.length
        cut = jnp.zeros((), bool)
        if self.time_limit is not None and self.time_limit < self.length:
            cut = t_next == self.time_limit
        live = jnp.logical_not(s.done)
        final = jnp.mean(correct.astype(jnp.float32)) + all_correct.astype(jnp.float32)
        reward = jnp.where(live & last, final, 0.0)
        new = CueState(
            h=s.h,
            t=jnp.where(live, t_next, s.t),
            done=s.done | last | cut,
            won=jnp.where(live, last & all_correct, s.won),
            truncated=jnp.where(live, cut, s.truncated),
        )
        views = self._views(new)
        ts = _timestep(*views, self.info.n_actions, reward, new.done, new.won, new.truncated)
        return ts, new


def make_hidden_cue(
    sight_range: float | None = None,
    expert_view: str = "full_obs",
    n_agents: int = 2,
    n_actions: int = 3,
    length: int = 6,
    time_limit: int | None = None,
    map_name: str = "hidden_cue",
    **options: Any,
) -> HiddenCue:
    """Build hidden_cue (see HiddenCue). Options: n_agents>=1, n_actions>=2, length>=1, time_limit;
    ``map_name`` names a registered variant in EnvInfo."""
    sight_range = validate_sight_range(sight_range)
    expert_view = validate_expert_view(expert_view)
    if options:
        raise ValueError(
            f"unknown hidden_cue option(s) {sorted(options)}; "
            "known: n_agents, n_actions, length, time_limit"
        )
    n = _check_int("n_agents", n_agents, 1)
    k = _check_int("n_actions", n_actions, 2)
    length = _check_int("length", length, 1)
    if time_limit is not None:
        time_limit = _check_int("time_limit", time_limit, 1)
    state_dim = k + length + 1
    info = EnvInfo(
        map_name=map_name,
        n_agents=n,
        n_enemies=0,
        n_actions=k,
        obs_dim=state_dim + n,
        expert_dim=state_dim + n,
        state_dim=state_dim,
        episode_limit=min(length, time_limit or length),
        sight_range=sight_range,
        expert_view=expert_view,
    )
    return HiddenCue(info=info, length=length, time_limit=time_limit)


def optimal_return(env: EnvInfo | MatrixGame | HiddenCue | str, **options: Any) -> float:
    """Best achievable (undiscounted) episode return: max payoff for a matrix game; for
    hidden_cue 2.0, or 0.0 when ``time_limit < length`` cuts the episode before its reward.

    ``env`` is an environment of this module, its EnvInfo, or a registered name plus options.
    """
    if isinstance(env, str):
        if env not in (*MATRIX_GAMES, *HIDDEN_CUES):
            raise ValueError(f"no known optimal return for {env!r}")
        env = (
            make_matrix_game(env, **options) if env in MATRIX_GAMES else HIDDEN_CUES[env](**options)
        )
    info = env if isinstance(env, EnvInfo) else env.info
    if info.map_name in MATRIX_GAMES:
        return float(MATRIX_GAMES[info.map_name].max())
    if info.map_name in HIDDEN_CUES:
        length = info.state_dim - info.n_actions - 1  # state = [one-hot(h), one-hot(t) over L+1]
        return 2.0 if info.episode_limit == length else 0.0
    raise ValueError(f"no known optimal return for {info.map_name!r}")


for _name in MATRIX_GAMES:
    register(_name, functools.partial(make_matrix_game, _name))
HIDDEN_CUES: dict[str, Any] = {
    "hidden_cue": make_hidden_cue,
    "hidden_cue_long": functools.partial(
        make_hidden_cue, length=8, n_actions=5, map_name="hidden_cue_long"
    ),
}
for _name, _factory in HIDDEN_CUES.items():
    register(_name, _factory)
