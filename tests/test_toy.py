"""Tests of envs/toy.py: matrix games and hidden_cue against their known answers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import toy
from envs.spec import Environment, TimeStep, assert_timestep

KEY = jax.random.key(0)
N_ENVS = 64


Rollout = Callable[[jax.Array, int], tuple[TimeStep, TimeStep]]


def make_rollout(env: Environment, n_steps: int) -> Rollout:
    """jit(vmap over keys): (keys [B], a []) -> (first TimeStep [B], trajectory [B, n_steps]).

    Every agent plays action ``a`` at every step, or the hidden goal when ``a < 0``.
    """

    def run(key: jax.Array, a: int) -> tuple[TimeStep, TimeStep]:
        ts0, s0 = env.reset(key)
        actions = lambda s: jnp.full((env.info.n_agents,), jnp.where(a < 0, s.h, a), jnp.int32)  # noqa: E731

        def body(s, _):
            ts, s = env.step(key, s, actions(s))
            return s, ts

        _, traj = jax.lax.scan(body, s0, None, length=n_steps)
        return ts0, traj

    return jax.jit(jax.vmap(run, in_axes=(0, None)))


def keys(n: int = N_ENVS) -> jax.Array:
    """n PRNG keys: [n]."""
    return jax.random.split(KEY, n)


@pytest.fixture(scope="module")
def cue0() -> toy.HiddenCue:
    """hidden_cue with the default options at sight 0 (obs_dim 12)."""
    return toy.make_hidden_cue(sight_range=0.0)


@pytest.fixture(scope="module")
def play(cue0: toy.HiddenCue) -> Rollout:
    """Shared compiled rollout of hidden_cue at sight 0, 2 steps past the end (absorption)."""
    return make_rollout(cue0, cue0.length + 2)


@pytest.fixture(scope="module")
def right(play: Rollout) -> tuple[TimeStep, TimeStep]:
    """Every agent plays the hidden goal at every step: (first TimeStep, trajectory)."""
    return play(keys(), -1)


@pytest.fixture(scope="module")
def const0(play: Rollout) -> tuple[TimeStep, TimeStep]:
    """Every agent plays action 0 at every step: (first TimeStep, trajectory)."""
    return play(keys(), 0)


ALL_ENVS = [
    ("matrix_qtran", {}),
    ("matrix_qplex", {"expert_view": "state"}),
    ("hidden_cue", {"sight_range": 0}),
    ("hidden_cue", {"expert_view": "state", "n_agents": 3, "n_actions": 4, "length": 2}),
    ("hidden_cue", {"sight_range": 1.5, "time_limit": 2}),
]


def build(name: str, **kw: Any) -> Environment:
    """A toy environment through its factory (not the registry)."""
    if name in toy.MATRIX_GAMES:
        return toy.make_matrix_game(name, **kw)
    return toy.make_hidden_cue(**kw)


@pytest.mark.parametrize(("name", "kw"), ALL_ENVS)
def test_timestep_shapes_and_dtypes(name, kw):
    env = build(name, **kw)
    ts, state = env.reset(KEY)
    assert_timestep(ts, env.info)
    assert float(ts.reward) == 0.0
    assert not (bool(ts.done) or bool(ts.won) or bool(ts.truncated))
    ts, _ = env.step(KEY, state, jnp.zeros((env.info.n_agents,), jnp.int32))
    assert_timestep(ts, env.info)
    assert bool(jnp.all(ts.avail))


@pytest.mark.parametrize("name", sorted(toy.MATRIX_GAMES))
def test_matrix_payoffs_for_all_joint_actions(name):
    env = toy.make_matrix_game(name)
    table = toy.MATRIX_GAMES[name]
    joint = jnp.asarray(list(itertools.product(range(3), repeat=2)), jnp.int32)  # [9, 2]
    _, s = env.reset(KEY)
    ts, _ = jax.jit(jax.vmap(lambda a: env.step(KEY, s, a)))(joint)
    expected = np.array([table[a, b] for a, b in itertools.product(range(3), repeat=2)])
    np.testing.assert_array_equal(np.asarray(ts.reward), expected)
    np.testing.assert_array_equal(np.asarray(ts.won), expected == 8.0)
    assert bool(jnp.all(ts.done)) and not bool(jnp.any(ts.truncated))
    assert np.unravel_index(np.argmax(table), table.shape) == (0, 0)
    assert toy.optimal_return(env) == 8.0 == toy.optimal_return(name)


def test_payoff_tables():
    np.testing.assert_array_equal(toy.PAYOFF_QTRAN, [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]])
    np.testing.assert_array_equal(toy.PAYOFF_QPLEX, [[8, -12, -12], [-12, 6, 0], [-12, 0, 6]])
    with pytest.raises(ValueError):
        toy.PAYOFF_QTRAN[0, 0] = 0.0


@pytest.mark.parametrize(("first", "then"), [((0, 0), (1, 0)), ((1, 0), (0, 0))])
def test_matrix_absorbing_after_done(first, then):
    env = toy.make_matrix_game("matrix_qtran", expert_view="state")
    _, s = env.reset(KEY)
    ts1, s = env.step(KEY, s, jnp.array(first, jnp.int32))
    ts2, s = env.step(KEY, s, jnp.array(then, jnp.int32))
    assert float(ts1.reward) == toy.PAYOFF_QTRAN[first] and bool(ts1.terminated)
    assert bool(ts1.won) == (first == (0, 0))
    assert float(ts2.reward) == 0.0 and bool(ts2.done) and not bool(ts2.truncated)
    assert bool(ts2.won) == bool(ts1.won)
    np.testing.assert_array_equal(ts2.obs, ts1.obs)
    np.testing.assert_array_equal(ts2.expert_obs, ts1.expert_obs)


def cue_of(obs: jax.Array, k: int = 3) -> np.ndarray:
    """The cue block of hidden_cue observations: [..., n_agents, n_actions]."""
    return np.asarray(obs[..., :k])


def test_cue_visible_only_at_first_step_with_sight_zero(cue0, right):
    ts0, traj = right
    goal = np.asarray(jax.nn.one_hot(ts0.state[:, :3].argmax(-1), 3))  # [B, 3]
    np.testing.assert_array_equal(cue_of(ts0.obs), np.broadcast_to(goal[:, None], (N_ENVS, 2, 3)))
    assert not np.any(cue_of(traj.obs))  # all later steps: cue hidden
    # the expert view shows the cue at every step
    np.testing.assert_array_equal(
        cue_of(traj.expert_obs), np.broadcast_to(goal[:, None, None], (N_ENVS, 8, 2, 3))
    )


@pytest.mark.parametrize("sight", [None, 0.5])
@pytest.mark.parametrize("view", ["full_obs", "state"])
def test_cue_visible_every_step_with_sight(sight, view):
    env = toy.make_hidden_cue(sight_range=sight, expert_view=view)
    ts, s = env.reset(KEY)
    goal = np.asarray(jax.nn.one_hot(s.h, 3))
    for _ in range(env.length):
        for x in (ts.obs, ts.expert_obs):
            np.testing.assert_array_equal(cue_of(x), np.broadcast_to(goal, (2, 3)))
        ts, s = env.step(KEY, s, jnp.zeros((2,), jnp.int32))


def test_expert_state_view_is_state_plus_agent_id():
    env = toy.make_hidden_cue(sight_range=0, expert_view="state", n_agents=3)
    ts, s = env.reset(KEY)
    ts, _ = env.step(KEY, s, jnp.zeros((3,), jnp.int32))
    expected = np.concatenate([np.tile(np.asarray(ts.state), (3, 1)), np.eye(3)], axis=1)
    np.testing.assert_array_equal(np.asarray(ts.expert_obs), expected)


def test_optimal_policy_gets_optimal_return(cue0, right):
    ts0, traj = right
    returns = np.asarray(traj.reward.sum(axis=1))
    np.testing.assert_allclose(returns, toy.optimal_return(cue0))
    assert toy.optimal_return(cue0) == 2.0
    last = cue0.length - 1
    assert np.all(np.asarray(traj.reward[:, :last]) == 0.0)
    assert np.all(np.asarray(traj.won[:, last])) and np.all(np.asarray(traj.terminated[:, last]))
    assert not np.any(np.asarray(traj.done[:, :last]))


def test_constant_policy_gets_less_and_cue_is_uniform(cue0, const0):
    ts0, traj = const0
    h = np.asarray(ts0.state[:, :3].argmax(-1))
    returns = np.asarray(traj.reward.sum(axis=1))
    np.testing.assert_allclose(returns, np.where(h == 0, 2.0, 0.0))
    assert np.all(returns[h != 0] < toy.optimal_return(cue0))
    assert set(h.tolist()) == {0, 1, 2}


def test_partial_credit():
    env = toy.make_hidden_cue(length=1)
    ts, s = env.reset(KEY)
    h = int(s.h)
    ts, _ = env.step(KEY, s, jnp.array([h, (h + 1) % 3], jnp.int32))
    assert float(ts.reward) == 0.5 and bool(ts.done) and not bool(ts.won)


def test_hidden_cue_absorbing_after_done(cue0, right):
    _, traj = right
    last = cue0.length - 1
    for extra in (last + 1, last + 2):
        for field in ("obs", "expert_obs", "state", "done", "won", "truncated"):
            np.testing.assert_array_equal(
                getattr(traj, field)[:, extra], getattr(traj, field)[:, last]
            )
        assert np.all(np.asarray(traj.reward[:, extra]) == 0.0)


def test_time_limit_truncates():
    env = toy.make_hidden_cue(time_limit=3)
    assert env.info.episode_limit == 3 and toy.optimal_return(env) == 0.0
    ts0, traj = make_rollout(env, 5)(keys(4), -1)
    done, trunc = np.asarray(traj.done), np.asarray(traj.truncated)
    assert not done[:, :2].any() and done[:, 2:].all() and trunc[:, 2:].all()
    assert not np.asarray(traj.terminated).any() and not np.asarray(traj.won).any()
    assert float(traj.reward.sum()) == 0.0
    np.testing.assert_array_equal(traj.obs[:, 3], traj.obs[:, 2])
    # a limit at or beyond the length changes nothing
    long = toy.make_hidden_cue(time_limit=6)
    assert long.info.episode_limit == 6 and toy.optimal_return(long.info) == 2.0


def test_jit_vmap_batch(cue0, right):
    ts0, traj = right
    assert_timestep(ts0, cue0.info, (N_ENVS,))
    assert_timestep(jax.tree.map(lambda x: x[:, 0], traj), cue0.info, (N_ENVS,))
    assert traj.obs.shape == (N_ENVS, cue0.length + 2, 2, cue0.info.obs_dim)


def test_sizes_and_optimal_return_from_info():
    env = toy.make_hidden_cue(n_agents=3, n_actions=4, length=5)
    assert (env.info.obs_dim, env.info.expert_dim, env.info.state_dim) == (13, 13, 10)
    assert toy.optimal_return(env.info) == 2.0
    assert toy.optimal_return("hidden_cue", length=4, time_limit=2) == 0.0
    m = toy.make_matrix_game("matrix_qplex", expert_view="state")
    assert (m.info.obs_dim, m.info.expert_dim, m.info.state_dim) == (1, 3, 1)
    with pytest.raises(ValueError):
        toy.optimal_return("3m")


@pytest.mark.parametrize(
    "kw",
    [
        {"sight_range": -1.0},
        {"sight_range": math.nan},
        {"sight_range": math.inf},
        {"sight_range": "far"},
        {"sight_range": True},
        {"expert_view": "oracle"},
        {"colour": "red"},
        {"n_actions": 1},
        {"n_agents": 1.5},
        {"length": 0},
        {"time_limit": 0},
    ],
)
def test_bad_input_raises(kw):
    with pytest.raises(ValueError):
        toy.make_hidden_cue(**kw)
    if set(kw) <= {"sight_range", "expert_view", "colour"}:
        with pytest.raises(ValueError):
            toy.make_matrix_game("matrix_qtran", **kw)


def test_registered():
    for name in ("matrix_qtran", "matrix_qplex", "hidden_cue"):
        assert envs._REGISTRY[name]().info.map_name == name
    env = envs._REGISTRY["hidden_cue"](sight_range=0, length=3)
    assert env.info.episode_limit == 3


def test_make_goes_through_registry():
    env = envs.make("matrix_qtran", sight_range=0)
    assert env.info.map_name == "matrix_qtran" and env.info.sight_range == 0
    assert {"matrix_qtran", "matrix_qplex", "hidden_cue"} <= set(envs.list_maps())
