"""Fidelity of the sight-0 setting to SMAC's, and the authors' conventions as Config fields:
own features (no absolute position, move flags), the expert's input without the
available-actions mask, time-outs as terminal, last actions in the state, DMIX's 1-step
default, and masked means that never turn masked-out non-finite values into NaN."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.smax import SmaxEnv
from envs.smax_views import MOVE_DIRECTIONS
from igmda_jax.compiled import make_env
from igmda_jax.core import losses
from igmda_jax.core.acting import build_inputs, make_networks
from igmda_jax.core.mixers import make_mixer
from igmda_jax.core.presets import config_from_dict, make_config
from igmda_jax.fused.rollout import collect
from igmda_jax.fused.train import make_train
from igmda_jax.persist.provenance import record_provenance
from igmda_jax.train_command import parse_train_args


def shifted(env: SmaxEnv, record, offset: tuple[float, float]):
    """The same record with every unit moved by ``offset`` (relative geometry unchanged)."""
    return record.replace(positions=record.positions + jnp.asarray(offset, jnp.float32))


def first_record(env: SmaxEnv):
    timestep, state = env.reset(jax.random.PRNGKey(3))
    return env.record(timestep, state)


def test_smac_own_features_hide_position_at_sight_0_smax_ones_do_not() -> None:
    smac = envs.make("3m", sight_range=0.0, own_features="smac")
    smax = envs.make("3m", sight_range=0.0, own_features="smax")
    record = first_record(smac)
    # 3m spawns near (7, 15) and (23, 16) on a 32 x 32 map: a shift of 2 stays far from edges
    for offset in [(2.0, 0.0), (0.0, -2.0), (1.5, 1.5)]:
        moved = shifted(smac, record, offset)
        np.testing.assert_array_equal(smac.observe(record).obs, smac.observe(moved).obs)
        assert not np.array_equal(smax.observe(record).obs, smax.observe(moved).obs)
        # the mixer's state keeps positions whatever the own features
        assert not np.array_equal(smac.observe(record).state, smac.observe(moved).state)
    # the expert's full-sight view has no absolute position either: a common shift keeps it
    full = envs.make("3m", own_features="smac")
    np.testing.assert_allclose(
        full.observe(record).obs, full.observe(shifted(full, record, (2.0, 1.0))).obs, atol=1e-6
    )


def test_own_block_layout_and_move_flags_at_edges() -> None:
    env = envs.make("3m", sight_range=0.0, own_features="smac")
    n_types = env.spec.n_unit_types
    assert env.info.obs_dim == envs.make("3m").info.obs_dim + 1  # 5 + n_types vs 4 + n_types
    record = first_record(env)
    width, height = env.inner.map_width, env.inner.map_height
    step = float(env.inner.unit_type_velocities[0]) * env.step_distance  # marine: 3.15 * 0.5
    # ally 0 at the west edge, ally 1 at the north edge, ally 2 at the south-east corner
    positions = np.asarray(record.positions).copy()
    positions[0] = (step * 0.5, height / 2)
    positions[1] = (width / 2, height - step * 0.5)
    positions[2] = (width - step * 0.5, step * 0.5)
    obs = np.asarray(env.observe(record.replace(positions=jnp.asarray(positions))).obs)
    own = obs[:, -(5 + n_types) :]
    np.testing.assert_allclose(own[:, 0], 1.0)  # full health
    np.testing.assert_array_equal(own[:, 1 : 1 + n_types], np.eye(n_types)[[0, 0, 0]])
    flags = own[:, 1 + n_types :]  # north, east, south, west
    np.testing.assert_array_equal(flags, [[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 1]])
    # every other block is hidden at sight 0
    np.testing.assert_array_equal(obs[:, : -(5 + n_types)], 0.0)


def test_dead_ally_own_features_are_zero() -> None:
    env = envs.make("3m", sight_range=0.0, own_features="smac")
    record = first_record(env)
    dead = record.replace(health=record.health.at[1].set(0.0))
    obs = np.asarray(env.observe(dead).obs)
    np.testing.assert_array_equal(obs[1], 0.0)
    assert np.all(obs[0, -4:] == 1.0)


def test_move_directions_are_jaxmarls_moves() -> None:
    env = envs.make("3m")
    movement, _ = env.inner._decode_discrete_actions(jnp.arange(4))
    np.testing.assert_allclose(np.asarray(movement), np.asarray(MOVE_DIRECTIONS), atol=1e-6)


def test_own_features_do_not_change_the_enemy_or_the_battle() -> None:
    """Same keys and ally actions: identical enemy actions, observations and trajectories."""
    rollouts = []
    for own in ("smax", "smac"):
        env = envs.make("5m_vs_6m", sight_range=0.0, own_features=own)
        step = jax.jit(env.step)
        timestep, state = env.reset(jax.random.PRNGKey(7))
        rng = np.random.default_rng(0)
        trace = []
        for t in range(40):
            avail = np.asarray(timestep.avail)
            actions = np.array([rng.choice(np.flatnonzero(row)) for row in avail])
            timestep, state = step(jax.random.PRNGKey(100 + t), state, jnp.asarray(actions))
            trace.append(
                (
                    np.asarray(state.enemy_obs),
                    np.asarray(state.smax.unit_positions),
                    np.asarray(state.smax.unit_health),
                    np.asarray(state.smax.prev_attack_actions),
                    float(timestep.reward),
                )
            )
        rollouts.append(trace)
    for smax_step, smac_step in zip(*rollouts, strict=True):
        for a, b in zip(smax_step, smac_step, strict=True):
            np.testing.assert_array_equal(a, b)


def test_train_defaults_to_smac_own_features_and_envs_make_to_smax() -> None:
    config = parse_train_args([]).config
    assert config.own_features == "smac"
    assert make_env(config).own_features == "smac"
    assert envs.make("3m").own_features == "smax"
    assert make_env(make_config(map="3m", own_features="smax")).own_features == "smax"


def test_runs_saved_before_the_new_fields_read_as_they_ran() -> None:
    old = make_config(alg="qmix-da").to_dict()
    for name in ("own_features", "expert_obs_avail", "state_last_action", "timeout_bootstrap"):
        old.pop(name)
    config = config_from_dict(old)
    assert config.own_features == "smax"
    assert config.expert_obs_avail is True
    assert config.state_last_action is False
    assert config.timeout_bootstrap is True


def test_expert_input_has_no_avail_mask_unless_asked_learner_keeps_it() -> None:
    info = envs.make("3m", sight_range=0.0).info
    n, a = info.n_agents, info.n_actions
    for expert_obs_avail in (False, True):
        config = make_config(alg="qmix-da", map="3m", expert_obs_avail=expert_obs_avail)
        nets = make_networks(config, info)
        mask = a if expert_obs_avail else 0
        assert nets.agent_input_dim == info.expert_dim + a + n + mask
        assert nets.learner_input_dim == info.obs_dim + a + n + a
        obs = jnp.zeros((n, info.expert_dim))
        last = jnp.full((n,), -1)
        avail = jnp.ones((n, a), bool)
        agent_in = build_inputs(config, obs, last, avail, network="agent")
        assert agent_in.shape == (n, nets.agent_input_dim)
    plain = make_networks(make_config(alg="qmix", map="3m"), info)
    assert plain.agent_input_dim == info.obs_dim + a + n + a  # a plain agent keeps the mask


def test_state_last_action_in_the_mixer_state() -> None:
    without = make_env(make_config(map="3m"))
    with_actions = make_env(make_config("authors", map="3m"))
    info = without.info
    assert with_actions.info.state_dim == info.state_dim + info.n_agents * info.n_actions
    assert make_config("authors").state_last_action is True
    assert make_config("authors").timeout_bootstrap is False


@pytest.mark.parametrize("bootstrap", [True, False])
def test_timeout_bootstrap_off_stores_time_limit_endings_as_terminal(bootstrap: bool) -> None:
    """3m with a 4-step limit: every episode times out. Its last transition bootstraps only
    with timeout_bootstrap (the default)."""
    config = make_config(
        map="3m", episode_limit=4, timeout_bootstrap=bootstrap, hidden_dim=8, n_envs=4
    )
    env = make_env(config)
    trainer = make_train(config, env)
    state = trainer.init(jax.random.PRNGKey(0))
    episodes, stats = collect(
        env, trainer.nets, config, state.params, jax.random.PRNGKey(1), 4, 1.0, 0.0
    )
    filled = np.asarray(episodes.filled)
    terminated = np.asarray(episodes.terminated)
    assert np.all(filled.sum(axis=1) == 4) and not np.any(np.asarray(stats["won"]))
    np.testing.assert_array_equal(terminated[:, :3], False)
    np.testing.assert_array_equal(terminated[:, 3], not bootstrap)


def test_dmix_defaults_to_one_step_targets_unless_asked() -> None:
    assert make_config(alg="dmix").td_lambda == 0.0
    assert make_config(alg="dmix-da", td_lambda=0.6).td_lambda == 0.6
    assert make_config(alg="qmix").td_lambda == 0.6
    assert parse_train_args(["--alg", "dmix"]).config.td_lambda == 0.0
    assert parse_train_args(["--alg", "dmix-da"]).config.alg == "dmix-da"
    assert parse_train_args(["--alg=dmix", "--td-lambda", "0.6"]).config.td_lambda == 0.6
    assert parse_train_args(["--alg", "qmix"]).config.td_lambda == 0.6
    with pytest.raises(SystemExit, match="unknown algorithm 'qmix-dx'"):
        parse_train_args(["--alg", "qmix-dx"])


def test_masked_mean_and_max_survive_an_all_unavailable_padded_row() -> None:
    """A QPLEX batch whose padded row has no available action: finite loss and gradients."""
    n, a, state_dim = 2, 3, 4
    mixer = make_mixer("qplex", n, state_dim, a, qplex_heads=2)
    q = jnp.array([[[1.0, 2.0, 0.5], [0.3, -1.0, 0.2]], [[0.4, 0.1, 0.9], [1.2, 0.0, -0.3]]])
    avail = jnp.array([[[1, 1, 0], [1, 0, 1]], [[0, 0, 0], [0, 0, 0]]], bool)  # row 1: padding
    actions = jnp.array([[1, 0], [0, 0]])
    states = jnp.ones((2, state_dim))
    params = mixer.init(
        jax.random.PRNGKey(0), q[:, :, 0], q[:, :, 0], jax.nn.one_hot(actions, a), states
    )
    mask = jnp.array([1.0, 0.0])

    def loss(params, q):
        max_q = losses.masked_max(q, avail)
        chosen = losses.select_action_values(q, actions)
        q_tot = mixer.apply(params, chosen, max_q, jax.nn.one_hot(actions, a), states)
        return losses.masked_td_loss(q_tot, jnp.array([1.0, 5.0]), mask)

    np.testing.assert_array_equal(losses.masked_max(q, avail)[1], [0.0, 0.0])
    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(params, q)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))
    # the padded row (mask 0) contributes nothing: the loss is row 0's squared error alone
    max_q = losses.masked_max(q, avail)
    q_tot = mixer.apply(
        params, losses.select_action_values(q, actions), max_q, jax.nn.one_hot(actions, a), states
    )
    np.testing.assert_allclose(float(value), float((q_tot[0] - 1.0) ** 2), rtol=1e-6)
    # a masked-out inf or NaN never reaches the mean
    values = jnp.array([1.0, jnp.inf, jnp.nan, 3.0])
    weights = jnp.array([1.0, 0.0, 0.0, 1.0])
    assert float(losses.masked_td_loss(values, jnp.zeros(4), weights)) == pytest.approx(5.0)


def test_resume_under_other_code_warns_naming_both_commits(tmp_path) -> None:
    assert record_provenance(tmp_path, resume=False) is None
    saved = json.loads((tmp_path / "provenance.json").read_text())
    assert saved["resumed"] == [] and "commit" in saved["started"]
    assert record_provenance(tmp_path, resume=True) is None  # same code: no warning
    saved = json.loads((tmp_path / "provenance.json").read_text())
    saved["started"].update(commit="0123abc", dirty=False)
    (tmp_path / "provenance.json").write_text(json.dumps(saved))
    warning = record_provenance(tmp_path, resume=True)
    assert warning is not None and "0123abc" in warning
    now = json.loads((tmp_path / "provenance.json").read_text())["resumed"][-1]["commit"]
    assert str(now) in warning
    assert len(json.loads((tmp_path / "provenance.json").read_text())["resumed"]) == 2


@pytest.mark.parametrize("map_name", ["3m", "MMM2", "3s5z"])
def test_sight_0_shortcut_equals_the_general_view(map_name: str) -> None:
    """Sight 0 skips the unit-to-unit blocks (none can be visible); a tiny positive sight runs
    the general path: the same observations along a random trajectory."""
    blind = envs.make(map_name, sight_range=0.0, own_features="smac")
    tiny = envs.make(map_name, sight_range=1e-9, own_features="smac")
    step = jax.jit(blind.step)
    timestep, state = blind.reset(jax.random.PRNGKey(5))
    rng = np.random.default_rng(1)
    # the features the networks skip at sight 0 (EnvInfo.obs_live_features): all but the own
    # block, and always zero on the general path too
    live = blind.info.obs_live_features
    assert tiny.info.obs_live_features is None and live[-1] == blind.info.obs_dim - 1
    dead = np.setdiff1d(np.arange(blind.info.obs_dim), live)
    for t in range(15):
        record = blind.record(timestep, state)
        seen, general = blind.observe(record), tiny.observe(record)
        np.testing.assert_array_equal(np.asarray(general.obs)[:, dead], 0.0)
        np.testing.assert_array_equal(seen.obs, general.obs)
        np.testing.assert_array_equal(seen.expert_obs, general.expert_obs)
        np.testing.assert_array_equal(seen.avail, general.avail)
        actions = [rng.choice(np.flatnonzero(row)) for row in np.asarray(timestep.avail)]
        timestep, state = step(jax.random.PRNGKey(t), state, jnp.asarray(actions))
