"""Tests of the SMAX-based SMAC-like maps (envs/smax.py, envs/smax_views.py, envs/smax_maps.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

import envs
from envs.smax import STOP_ACTION, SmaxEnv
from envs.smax_maps import EPISODE_LIMITS, MAPS, MEDIVAC, medivac_heal
from envs.smax_views import available_actions
from envs.spec import check_actions

PAPER_MAPS = ["3s5z", "5m_vs_6m", "MMM2", "8m", "3s_vs_5z", "8m_vs_9m"]


class Jitted:
    """An environment with its reset/step compiled once, shared across tests."""

    def __init__(self, env: SmaxEnv) -> None:
        self.env = env
        self.reset = jax.jit(env.reset)
        self.step = jax.jit(env.step)


@pytest.fixture(scope="module")
def env3m_sight0() -> Jitted:
    return Jitted(envs.make("3m", sight_range=0.0))


@pytest.fixture(scope="module")
def env3m_default() -> Jitted:
    return Jitted(envs.make("3m"))


def random_actions(rng: np.random.Generator, avail: np.ndarray) -> np.ndarray:
    """One uniformly random available action per agent: [n_agents]."""
    return np.array([rng.choice(np.flatnonzero(row)) for row in np.asarray(avail)])


def other_unit_blocks(env: SmaxEnv, obs: np.ndarray) -> np.ndarray:
    """The other-unit part of an observation: [n_agents, (n_units - 1) * F]."""
    return np.asarray(obs)[:, : (env.n_units - 1) * env.n_unit_features]


@pytest.mark.parametrize("expert_view", ["full_obs", "state"])
def test_every_map_timestep_shapes_and_dtypes(expert_view: str) -> None:
    assert set(PAPER_MAPS) <= set(envs.list_maps())
    for name in MAPS:
        env = envs.make(name, sight_range=0.0, expert_view=expert_view)
        info = env.info
        key = jax.random.PRNGKey(0)
        timestep, state = jax.eval_shape(env.reset, key)
        envs.assert_timestep(timestep, info)
        actions = jax.ShapeDtypeStruct((info.n_agents,), jnp.int32)
        next_timestep, _ = jax.eval_shape(env.step, key, state, actions)
        envs.assert_timestep(next_timestep, info)
        assert info.n_actions == 5 + info.n_enemies
        expected_expert = (
            info.obs_dim if expert_view == "full_obs" else info.state_dim + info.n_agents
        )
        assert info.expert_dim == expected_expert, name


@pytest.mark.parametrize("map_name", ["3m", "3s5z"])
def test_default_sight_reproduces_jaxmarl_trajectory(map_name: str) -> None:
    env = envs.make(map_name)
    reference = HeuristicEnemySMAX(
        scenario=map_name_to_scenario(map_name), max_steps=env.episode_limit
    )
    step = jax.jit(env.step)
    rng = np.random.default_rng(1)
    key = jax.random.PRNGKey(7)
    timestep, state = jax.jit(env.reset)(key)
    ref_obs, ref_state = reference.reset(key)
    for t in range(env.episode_limit):
        ref_avail = reference.get_avail_actions(ref_state)
        ref_avail = np.stack([ref_avail[a] for a in reference.agents]).astype(bool)
        np.testing.assert_array_equal(np.asarray(timestep.avail), ref_avail)
        np.testing.assert_allclose(
            np.asarray(timestep.obs),
            np.stack([ref_obs[a] for a in reference.agents]),
            atol=1e-6,
            err_msg=f"step {t}",
        )
        actions = random_actions(rng, ref_avail)
        key, step_key = jax.random.split(key)
        timestep, state = step(step_key, state, jnp.asarray(actions))
        ref_obs, ref_state, ref_reward, ref_done, _ = reference.step(
            step_key, ref_state, {a: actions[i] for i, a in enumerate(reference.agents)}
        )
        np.testing.assert_allclose(float(timestep.reward), float(ref_reward["ally_0"]), atol=1e-5)
        assert bool(timestep.done) == bool(ref_done["__all__"])
        if bool(timestep.done):
            break
    assert t > 5  # a real episode was compared


def test_sight_zero_hides_others_but_enemies_still_fight(env3m_sight0: Jitted) -> None:
    env = env3m_sight0.env
    timestep, state = env3m_sight0.reset(jax.random.PRNGKey(0))
    start_health = float(state.smax.unit_health[: env.n_agents].sum())
    stop = jnp.full((env.n_agents,), STOP_ACTION, jnp.int32)
    key = jax.random.PRNGKey(1)
    saw_attack_available = False
    for _ in range(env.episode_limit):
        assert not other_unit_blocks(env, timestep.obs).any()
        own = np.asarray(timestep.obs)[:, (env.n_units - 1) * env.n_unit_features :]
        alive = np.asarray(state.smax.unit_alive[: env.n_agents])
        assert (own[alive, 0] > 0).all()  # own health still visible
        saw_attack_available |= bool(np.asarray(timestep.avail)[:, 5:].any())
        key, step_key = jax.random.split(key)
        timestep, state = env3m_sight0.step(step_key, state, stop)
        if timestep.done:
            break
    end_health = float(state.smax.unit_health[: env.n_agents].sum())
    assert end_health < start_health - 20, "the enemy must still shoot when allies are blind"
    assert saw_attack_available, "attack availability follows shoot range, not sight"


def test_expert_views_full_obs_and_state(env3m_default: Jitted) -> None:
    key = jax.random.PRNGKey(3)
    blind = envs.make("3m", sight_range=0.0)
    blind_ts, _ = jax.jit(blind.reset)(key)
    default_ts, _ = env3m_default.reset(key)
    np.testing.assert_array_equal(blind_ts.expert_obs, default_ts.obs)
    assert np.any(other_unit_blocks(blind, default_ts.obs))

    state_view = envs.make("3m", sight_range=0.0, expert_view="state")
    ts, _ = jax.jit(state_view.reset)(key)
    n = state_view.info.n_agents
    np.testing.assert_array_equal(
        ts.expert_obs[:, :-n], np.broadcast_to(ts.state, (n, ts.state.shape[0]))
    )
    np.testing.assert_array_equal(ts.expert_obs[:, -n:], np.eye(n))


def test_attack_requires_sight_option_is_stricter() -> None:
    key = jax.random.PRNGKey(5)
    env = envs.make("3m", sight_range=2.0, attack_requires_sight=True)
    loose = envs.make("3m", sight_range=2.0)
    _, state = jax.jit(env.reset)(key)
    # put enemy 0 at distance 4 from ally 0: in shoot range (5) but beyond sight (2)
    positions = state.smax.unit_positions.at[3].set(
        state.smax.unit_positions[0] + jnp.array([4.0, 0.0])
    )
    smax_state = state.smax.replace(unit_positions=positions)
    distances = jnp.linalg.norm(positions[:, None] - positions[None], axis=-1)
    assert bool(available_actions(loose.inner, loose.view_spec, smax_state, distances)[0, 5])
    assert not bool(available_actions(env.inner, env.view_spec, smax_state, distances)[0, 5])


def test_medivac_heals_most_injured_ally_in_range() -> None:
    positions = jnp.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [0.5, 0.0], [1.5, 0.0]])
    max_health = jnp.array([150.0, 45.0, 45.0, 45.0, 45.0, 45.0])
    health = jnp.array([100.0, 40.0, 20.0, 5.0, 1.0, 44.9])
    alive = jnp.array([True, True, True, True, True, True])
    teams = jnp.array([0, 0, 0, 0, 1, 0])
    is_healer = jnp.array([True, False, False, False, False, False])
    healable = jnp.array([False, True, True, True, True, True])
    healed = medivac_heal(
        health, max_health, alive, positions, teams, is_healer, healable, 4.0, 3.0
    )
    # unit 2 (20/45) is the most injured ally in range; unit 3 is out of range, unit 4 is an
    # enemy, the medivac itself is never a target
    np.testing.assert_allclose(healed, [100.0, 40.0, 23.0, 5.0, 1.0, 44.9])

    capped = medivac_heal(
        health.at[1].set(45.0).at[2].set(45.0),
        max_health,
        alive,
        positions,
        teams,
        is_healer,
        healable,
        4.0,
        3.0,
    )
    # units 1 and 2 are at full health: unit 5 (44.9 / 45) is healed, capped at its maximum
    np.testing.assert_allclose(capped[5], 45.0)
    np.testing.assert_allclose(capped[1:3], [45.0, 45.0])

    dead = medivac_heal(
        health, max_health, alive.at[2].set(False), positions, teams, is_healer, healable, 4.0, 3.0
    )
    np.testing.assert_allclose(dead[1], 43.0)  # unit 2 is dead, unit 1 (40/45) is next
    no_healer = medivac_heal(
        health, max_health, alive.at[0].set(False), positions, teams, is_healer, healable, 4.0, 3.0
    )
    np.testing.assert_allclose(no_healer, health)


def test_mmm2_medivac_heals_in_the_battle() -> None:
    env = envs.make("MMM2", sight_range=0.0)
    types = np.asarray(env.spec.unit_types)
    assert types[:10].tolist().count(MEDIVAC) == 1 and types[10:].tolist().count(MEDIVAC) == 1
    assert types[:10].tolist().count(1) == 2 and types[:10].tolist().count(0) == 7
    assert types[10:].tolist().count(1) == 3 and types[10:].tolist().count(0) == 8
    _, state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    medivac = int(np.flatnonzero(types[:10] == MEDIVAC)[0])
    patient = (medivac + 1) % 10
    smax_state = state.smax.replace(
        unit_health=state.smax.unit_health.at[patient].set(10.0),
        unit_positions=state.smax.unit_positions.at[patient].set(
            state.smax.unit_positions[medivac] + 1.0
        ),
    )
    state = state.replace(smax=smax_state)
    stop = jnp.full((env.n_agents,), STOP_ACTION, jnp.int32)
    timestep, next_state = jax.jit(env.step)(jax.random.PRNGKey(1), state, stop)
    gained = float(next_state.smax.unit_health[patient]) - 10.0
    expected = env.heal_amount * env.inner.world_steps_per_env_step
    np.testing.assert_allclose(gained, expected, rtol=1e-4)
    assert not np.asarray(timestep.avail)[medivac, 5:].any(), "a medivac never attacks"


def test_compositions_and_episode_limits() -> None:
    info = envs.make("8m_vs_9m").info
    assert (info.n_agents, info.n_enemies, info.episode_limit) == (8, 9, 120)
    assert set(MAPS["8m_vs_9m"].unit_types) == {0}
    expected = {
        "3m": 60,
        "8m": 120,
        "8m_vs_9m": 120,
        "5m_vs_6m": 70,
        "3s5z": 150,
        "3s_vs_5z": 250,
        "MMM2": 180,
    }
    for name, limit in expected.items():
        assert envs.make(name).info.episode_limit == limit == EPISODE_LIMITS[name]
    assert envs.make("3m", episode_limit=7).info.episode_limit == 7


def test_time_limit_is_truncated_and_absorbing() -> None:
    env = envs.make("3m", sight_range=0.0, episode_limit=3)
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    timestep, state = reset(jax.random.PRNGKey(0))
    stop = jnp.full((env.n_agents,), STOP_ACTION, jnp.int32)
    for t in range(3):
        assert not bool(timestep.done)
        timestep, state = step(jax.random.PRNGKey(t), state, stop)
    assert bool(timestep.done) and bool(timestep.truncated) and not bool(timestep.won)
    assert not bool(timestep.terminated)
    after, after_state = step(jax.random.PRNGKey(9), state, stop)
    assert bool(after.done) and bool(after.truncated) and float(after.reward) == 0.0
    np.testing.assert_array_equal(after.obs, timestep.obs)
    np.testing.assert_array_equal(after_state.smax.unit_positions, state.smax.unit_positions)


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(envs.UnknownMapError, match="known maps: .*3m"):
        envs.make("4m")
    for bad in (-1.0, float("nan"), float("inf"), "far", True):
        with pytest.raises(ValueError, match="sight_range"):
            envs.make("3m", sight_range=bad)
    with pytest.raises(ValueError, match="expert_view"):
        envs.make("3m", expert_view="oracle")
    with pytest.raises(ValueError, match="unknown option"):
        envs.make("3m", sight=3)
    with pytest.raises(ValueError, match="episode_limit"):
        envs.make("3m", episode_limit=0)
    avail = np.array([[True, True, True, True, True, False, False, False]] * 3)
    with pytest.raises(ValueError, match="action 5 at index \\(1,\\)"):
        check_actions(np.array([4, 5, 0]), avail)
    check_actions(np.array([4, 4, 0]), avail)


def test_unavailable_actions_become_stop_inside_jit(env3m_sight0: Jitted) -> None:
    _, state = env3m_sight0.reset(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(4)
    # at reset the enemies are ~16 apart: no attack is available; 99 is out of range
    bad = jnp.array([5, 7, 99], jnp.int32)
    stop = jnp.full((3,), STOP_ACTION, jnp.int32)
    bad_ts, bad_state = env3m_sight0.step(key, state, bad)
    stop_ts, stop_state = env3m_sight0.step(key, state, stop)
    np.testing.assert_array_equal(bad_state.last_actions, stop)
    np.testing.assert_array_equal(bad_ts.obs, stop_ts.obs)


def test_jit_and_vmap_over_64_envs(env3m_sight0: Jitted) -> None:
    env = env3m_sight0.env
    n_envs = 64

    @jax.jit
    def rollout(key: jax.Array):
        timestep, state = jax.vmap(env.reset)(jax.random.split(key, n_envs))

        def body(carry, step_key):
            timestep, state = carry
            action_key, env_key = jax.random.split(step_key)
            logits = jnp.where(timestep.avail, 0.0, -jnp.inf)
            actions = jax.random.categorical(action_key, logits)
            transition, timestep, state = jax.vmap(
                lambda k, s, a: envs.step_autoreset(env, k, s, a)
            )(jax.random.split(env_key, n_envs), state, actions)
            return (timestep, state), transition

        _, transitions = jax.lax.scan(body, (timestep, state), jax.random.split(key, 80))
        return transitions

    transitions = rollout(jax.random.PRNGKey(0))
    envs.assert_timestep(transitions, env.info, (80, n_envs))
    assert int(transitions.done.sum()) >= n_envs  # every env finished at least one episode
    assert not bool(jnp.any(transitions.won & transitions.truncated))


@pytest.mark.parametrize(("reward", "kill_value"), [("smac", 10.0), ("smac_no_kill", 0.0)])
def test_smac_reward_shaping_damage_kills_and_win(reward: str, kill_value: float) -> None:
    """reward="smac": same battle as the default, reward = (health damage + 10 per kill + 200
    on a win) * 20 / (enemy health + 10 * n_enemies + 200); a won episode returns exactly 20.
    "smac_no_kill" is the same with 0 per kill. The JaxMARL heuristic plays our side so that
    some episodes are won."""
    from jaxmarl.environments.smax.heuristic_enemy import (
        create_heuristic_policy,
        get_heuristic_policy_initial_state,
    )

    smax_env, smac_env = envs.make("3m"), envs.make("3m", reward=reward)
    n, limit = smax_env.n_agents, smax_env.episode_limit
    enemy_health = 3 * 45.0  # marines
    scale = 20.0 / (enemy_health + kill_value * 3 + 200)
    policy = create_heuristic_policy(smax_env.inner, 0, shoot=True)

    def episode(key):
        timestep, state = smax_env.reset(key)
        _, smac_state = smac_env.reset(key)
        policy_state = jax.tree.map(
            lambda *x: jnp.stack(x), *([get_heuristic_policy_initial_state()] * n)
        )

        def body(carry, step_key):
            timestep, state, smac_state, policy_state = carry
            act_key, env_key = jax.random.split(step_key)
            actions, policy_state = jax.vmap(policy)(
                jax.random.split(act_key, n), policy_state, timestep.obs
            )
            next_timestep, next_state = smax_env.step(env_key, state, actions)
            smac_timestep, smac_state = smac_env.step(env_key, smac_state, actions)
            killed = jnp.sum(state.smax.unit_alive[n:] & ~next_state.smax.unit_alive[n:])
            won_now = next_timestep.won & ~timestep.done
            damage_hp = (next_timestep.reward - won_now) * enemy_health
            expected = (damage_hp + kill_value * killed + 200 * won_now) * scale
            out = (smac_timestep.reward, expected, smac_timestep.done == next_timestep.done)
            return (next_timestep, next_state, smac_state, policy_state), out

        keys = jax.random.split(key, limit)
        (last, *_), (smac_rewards, expected, same_done) = jax.lax.scan(
            body, (timestep, state, smac_state, policy_state), keys
        )
        return smac_rewards, expected, same_done, last.won

    smac_rewards, expected, same_done, won = jax.jit(jax.vmap(episode))(
        jax.random.split(jax.random.PRNGKey(3), 64)
    )
    assert np.asarray(same_done).all()
    np.testing.assert_allclose(np.asarray(smac_rewards), np.asarray(expected), atol=1e-4)
    returns, won = np.asarray(smac_rewards.sum(axis=1)), np.asarray(won)
    assert 0 < won.sum() < len(won)  # both outcomes occur
    np.testing.assert_allclose(returns[won], 20.0, rtol=1e-4)
    best_lost = enemy_health + kill_value * 3
    assert (returns[~won] < 20.0 * best_lost / (best_lost + 200)).all()
    with pytest.raises(ValueError, match="unknown reward"):
        envs.make("3m", reward="sc2")
